"""One inference engine for input-space work: many forward passes of a fixed model, fast and checked.

Paths (:mod:`mclib.paths`), synthetic-pair evaluation (:mod:`mclib.synth`), detection features
(:mod:`mclib.detect`) and the evaluation helpers of :mod:`mclib.train` all send thousands of inputs through
one model without gradients. They all go through :func:`forward_chunks` (or :func:`logits`), which

1. **prepares the model once** (:func:`prepare`): a private copy in eval mode with its weights in
   channels-last (NHWC) memory format, so convolutions and -- above all -- max-pooling run on oneDNN's
   NHWC kernels (the eager NCHW ``max_pool2d_with_indices`` took 62% of a path evaluation on the quick CNN).
   The user's model is never modified (its mode, weights and memory format stay as they were); a model
   with forward hooks (feature capture) runs itself, eagerly, so its hooks fire. The copy is
   cached per (model object, parameter/buffer versions, storage and values, module tree, input shape,
   precision, device), so repeated calls do not prepare again, and a model trained in place in between
   (``barrier_evolution``), written through ``.data`` or given a new submodule gets a fresh copy (the
   values are checked by a sum and a norm per tensor: about 0.1 ms per call for the quick CNN, see
   ``_checksum``; once per block inside :func:`pinned`, for a caller that holds the weights fixed);
2. on the CPU in fp32, **the second call with unchanged weights freezes the copy into a graph** (trace,
   freeze, ``optimize_for_inference``: constant-folded weights, oneDNN layout kept between layers, and
   max-pooling moved before ReLU -- exact, and it spares the ReLU three quarters of its work:
   ``_pool_before_relu``). Freezing costs tens of milliseconds (the quick CNN: trace 14 ms, freeze and
   optimise 5 ms, on one core), about two eager passes over 500 images, so a model evaluated once (one probe
   of a model that trains in between) is not frozen; a model evaluated repeatedly (a trained model in a
   chapter) is.
   TorchScript is deprecated in current torch, whose replacement (``torch.compile``, freezing) costs
   14-49 s on the first call -- far too slow for the quick book. The frozen graph is used only if it
   reproduces the eager copy on two batch sizes within the fp32 tolerance below; a model that cannot be
   traced or frozen (unsupported ops), or whose graph differs from the eager copy on the first inputs of
   any later call (data-dependent control flow), falls back to the channels-last eager copy with ONE
   warning per model. That per-call comparison is skipped for a model built only of modules that cannot
   branch on their input (:func:`static_forward`: torch.nn's layers, mclib's networks): it was 2 ms of a
   12 ms segment check in :func:`mclib.paths.bypass` on the quick CNN;
3. **chooses the chunk size** (inputs per forward pass) from the input size and the device's memory
   (:func:`chunk_size`): on a CPU about ``2**18`` input scalars per pass (1x28x28: 334 images; 3x32x32: 85),
   large enough that per-call overhead is negligible, small enough that activations stay in cache; on a GPU
   as many as a quarter of free memory holds, estimated at 64 activations per input scalar;
4. offers ``precision="bf16"`` (opt-in): bfloat16 autocast on the channels-last copy, 4-6x on CPUs with
   AVX-512-BF16/AMX, losses off by up to about 1e-3 -- for exploration, not for recorded claims.

**fp32 tolerance.** The engine computes the same function as the eager model; only the order of
floating-point summation differs (other convolution algorithms, fused kernels). With float32 rounding
``u = 6e-8`` and dot products of a few thousand terms the logits agree to ``~1e-6`` relative; the engine
promises (and ``tests/test_infer.py`` checks) ``|engine - eager| <= 1e-4 + 1e-4 |eager|`` elementwise on
logits and cross-entropies, and observes about 2e-7.

**CUDA** (not measured here: no GPU was available): the copy is channels-last (tensor-core friendly NHWC
convolutions) and ``torch.backends.cudnn.benchmark`` is switched on while the engine runs, so cuDNN
autotunes each convolution shape once per chunk size; no graph freezing (TorchScript on CUDA gains little
over cuDNN). ``precision="bf16"`` uses CUDA autocast.

**Gradient passes** (bypass, FVO, attacks) stay eager, on the user's model in channels-last
(:func:`mclib.torchutil.channels_last`) and, for FVO and bypass, with its BatchNorm folded into the
convolutions (:func:`mclib.torchutil.fold_batchnorm`). Both change float rounding, which Adam amplifies over
hundreds of steps into different optimised inputs (``mclib.synth``'s docstring): issue 31 made them deliberate
changes, checked by comparing every claim's verdict before and after.

**Threads**: :func:`configure_threads` fixes torch/OpenMP threads and the OpenMP wait policy for a shared
machine (see its docstring for the measurement behind the choice).
"""
from __future__ import annotations

import copy
import math
import os
import warnings
import weakref
from contextlib import contextmanager, nullcontext
from typing import Callable

import torch
import torch.nn as nn

from mclib.torchutil import device_of, eval_mode, has_forward_hooks

__all__ = ["prepare", "Prepared", "forward_chunks", "logits", "chunk_size", "configure_threads", "clear_cache",
           "pinned", "static_forward", "PRECISIONS", "RTOL", "ATOL", "CPU_CHUNK_SCALARS"]

PRECISIONS = ("fp32", "bf16")
#: the engine's fp32 promise against eager fp32: ``|engine - eager| <= ATOL + RTOL * |eager|``
RTOL = ATOL = 1e-4
#: input scalars per forward pass on a CPU (measured best between 2**17 and 2**19 on the quick CNN)
CPU_CHUNK_SCALARS = 2 ** 18

_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_WARNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_PINNED: "weakref.WeakKeyDictionary[nn.Module, int]" = weakref.WeakKeyDictionary()   # pinned(): open blocks


# ------------------------------------------------------------------------------------ checks
def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _check_chunk(chunk) -> int | None:
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, (int,)) and not (isinstance(chunk, float) and chunk.is_integer()):
        raise TypeError(f"chunk_size must be a positive integer or None (automatic), got {chunk!r}")
    if int(chunk) < 1:
        raise ValueError(f"chunk_size must be a positive integer or None (automatic), got {chunk}")
    return int(chunk)


def check_inputs(name: str, X: torch.Tensor, allow_empty: bool = False) -> None:
    """One clear error for inputs the engine cannot evaluate: not a float tensor, no batch dimension,
    empty (unless ``allow_empty``), or holding NaN/Inf values."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() < 2:
        raise ValueError(f"{name} must have a leading batch dimension, shape (N, C, H, W) or (N, D); "
                         f"got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (pixel values), got dtype {X.dtype}")
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)}): give at least one input")
    bad = ~torch.isfinite(X)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite values (NaN or Inf) of {X.numel()}: "
                         f"inputs must be finite pixel values")


# ------------------------------------------------------------------------------------ chunk size
def chunk_size(per_input: int, device: torch.device | str = "cpu") -> int:
    """Inputs per forward pass for inputs of ``per_input`` scalars on ``device`` (see the module docstring)."""
    dev = torch.device(device)
    per = max(1, int(per_input))
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(min(8192, max(64, free // 4 // (per * 4 * 64))))
    if dev.type == "mps":
        return int(min(4096, max(64, 2 ** 21 // per)))
    return int(min(1024, max(16, CPU_CHUNK_SCALARS // per)))


# ------------------------------------------------------------------------------------ preparation
def _structure(model: nn.Module) -> tuple:
    """The module tree: every submodule's name, class, identity and settings (``extra_repr``: a layer's
    slope, stride, eps, ...). Changes when a submodule is swapped (``m[1][1] = nn.Tanh()``) or reconfigured."""
    return tuple((name, type(m), id(m), m.extra_repr()) for name, m in model.named_modules())


@torch.no_grad()
def _checksum(tensors: list[torch.Tensor]) -> tuple[float, ...]:
    """Per tensor its sum and sum of squares (float64), in one reduction per kind over all tensors.

    Writes through ``.data`` (``w.data.mul_(0)``, ``w.data.copy_(v)``) change a tensor's values without
    bumping its version counter or moving its storage; the checksum sees them (a write that keeps both the
    sum and the sum of squares of every tensor -- a permutation of a tensor's entries -- is the blind spot).
    """
    if not tensors:
        return ()
    sums = torch.stack([t.detach().sum(dtype=torch.float64) for t in tensors if not t.is_complex()])
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    norms = torch.stack(torch._foreach_norm(floats)).double() if floats else sums.new_zeros(0)
    values = torch.cat([sums, norms.to(sums.device)]).tolist()
    return tuple(v if v == v else "nan" for v in values)      # NaN != NaN would never match


def _signature(model: nn.Module) -> tuple:
    """Changes whenever the function the model computes can have changed: a parameter or buffer modified in
    place (``_version``), replaced (storage) or written through ``.data`` (values: ``_checksum``), or the
    module tree changed (``_structure``)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return (tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype) for t in tensors), _structure(model),
            _checksum(tensors))


class Prepared:
    """A prepared model: call it on a batch of inputs to get float32 logits (no gradients).

    ``kind`` is ``"graph"`` (frozen channels-last TorchScript graph), ``"channels_last"`` (eager copy in
    NHWC) or ``"eager"`` (the copy as is: inputs that are not images, or a model that cannot be converted).
    """

    def __init__(self, module, kind: str, precision: str, device: torch.device, nhwc: bool, static: bool = False):
        self.module, self.kind, self.precision, self.device, self.nhwc = module, kind, precision, device, nhwc
        self.static = static            # no module can branch on the input's values (static_forward)
        self.calls = 0
        self.no_graph = False           # freezing was tried and failed: do not try again
        self.eager = module             # the eager copy, kept to check the graph against

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        if self.nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the model must return a logits tensor, got {type(out).__name__}")
        return out.float()


def _warn_once(model: nn.Module, message: str) -> None:
    if model not in _WARNED:
        _WARNED.add(model)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _copy(model: nn.Module, device: torch.device, nhwc: bool) -> tuple[nn.Module, bool]:
    """An eval-mode copy of ``model`` on ``device`` without gradients, channels-last when ``nhwc``."""
    try:
        m = copy.deepcopy(model)
    except Exception as err:         # a model that cannot be copied is run as it is
        _warn_once(model, f"mclib.infer: cannot copy {type(model).__name__} ({type(err).__name__}: {err}); "
                          f"running it eagerly without the fast path")
        return model, False
    m = m.to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    if nhwc:
        m = m.to(memory_format=torch.channels_last)
    return m, True


#: ``max_pool2d(relu(x))`` written as ``relu(max_pool2d(x))``, for ``relu`` and in-place ``relu_``
_POOL_FIRST = tuple((f"""
graph(%x, %k, %s, %p, %d, %c):
    %r = aten::{relu}(%x)
    %y = aten::max_pool2d(%r, %k, %s, %p, %d, %c)
    return (%y)""", f"""
graph(%x, %k, %s, %p, %d, %c):
    %m = aten::max_pool2d(%x, %k, %s, %p, %d, %c)
    %y = aten::{relu}(%m)
    return (%y)""") for relu in ("relu", "relu_"))


def _pool_before_relu(graph) -> None:
    r"""Rewrite ``max_pool2d(relu(x))`` as ``relu(max_pool2d(x))`` in a TorchScript graph: the same numbers,
    with the ReLU on the pooled tensor (a quarter of the elements for 2x2 pooling).

    Exact, bit for bit: ReLU is monotone, so :math:`\max_i \max(x_i, 0) = \max(\max_i x_i, 0)` for every
    pooling window (padding is :math:`-\infty`, which neither side selects over a real element; a NaN
    propagates through both). On the quick CNN the ReLU after each convolution took 8-10% of a path
    evaluation (oneDNN does not fuse it into the convolution here). TorchScript's rewriter leaves a match
    alone when the ReLU's output has other uses.
    """
    for pattern, replacement in _POOL_FIRST:
        torch._C._jit_pass_custom_pattern_based_rewrite_graph(pattern, replacement, graph)


def _freeze(module: nn.Module, example: torch.Tensor):
    """Trace, freeze and optimise ``module`` for inference on ``example`` (channels-last), or raise.

    Between freezing and oneDNN's optimisation, max-pooling is moved before ReLU (``_pool_before_relu``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # TorchScript's deprecation notices
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
            _pool_before_relu(frozen.graph)
            return torch.jit.optimize_for_inference(frozen)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True).all())


def static_forward(model: nn.Module) -> bool:
    """True when no module of ``model`` can branch on the values of its input, so one trace is the model on
    every input.

    That holds for torch.nn's own layers and containers, and for a class that declares it in its own body
    (``static_forward = True``; mclib's :class:`~mclib.models.Normalize`, :class:`~mclib.models.PoolFirst`,
    :class:`~mclib.models.BasicBlock`, :class:`~mclib.models.ResNet` and :class:`~mclib.models.ResNet18Cifar`
    do). The flag is not inherited: a subclass that overrides ``forward`` must declare it again. Any other
    class (a user's module, a lambda layer) counts as possibly data-dependent. :func:`forward_chunks`
    compares a frozen graph with the eager copy on every call only for models that are not static;
    a static model's graph was checked once, on two batch sizes, when it was frozen.
    """
    return all(type(m).__dict__.get("static_forward") is True or type(m).__module__.startswith("torch.nn.modules.")
               for m in model.modules())


class _InEval:
    """Calls the user's model itself in eval mode (restored afterwards): for models with hooks."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model

    def __call__(self, x):
        with eval_mode(self.model):
            return self.model(x)


def _validate(model: nn.Module) -> dict:
    """The model's cache entry, emptied if its signature changed since the last call (weights, modules)."""
    sig = _signature(model)
    per_model = _CACHE.setdefault(model, {})
    if per_model.get("signature") != sig:        # weights changed: drop every stale preparation
        per_model.clear()
        per_model["signature"] = sig
    return per_model


def prepare(model: nn.Module, example: torch.Tensor, precision: str = "fp32", device=None,
            graph: bool | None = None) -> Prepared:
    """The prepared form of ``model`` for inputs shaped like ``example`` (a batch), cached (module docstring).

    ``graph``: None (default) freezes on the CPU in fp32 from the second call with unchanged weights;
    True freezes at once; False never. The user's model is not modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_precision(precision)
    check_inputs("example", example)
    dev = device_of(model, device)
    shape = tuple(example.shape[1:])
    if has_forward_hooks(model):      # hooks are side effects (feature capture) that only the model itself has
        return Prepared(_InEval(model, dev), "eager", precision, dev, False)
    per_model = _CACHE.get(model) if _PINNED.get(model) else None    # inside pinned(model): checked on entry
    if per_model is None:
        per_model = _validate(model)
    key = (shape, precision, str(dev))
    prep = per_model.get(key)
    nhwc = len(shape) == 3
    if prep is None:
        module, copied = _copy(model, dev, nhwc)
        kind = "channels_last" if (nhwc and copied) else "eager"
        prep = per_model[key] = Prepared(module, kind, precision, dev, nhwc and copied, static_forward(model))
    want_graph = (graph is True) or (graph is None and prep.calls >= 1)
    if (want_graph and graph is not False and prep.kind == "channels_last" and not prep.no_graph
            and precision == "fp32" and dev.type == "cpu"):
        _upgrade(model, prep, example)
    prep.calls += 1
    return prep


def _upgrade(model: nn.Module, prep: Prepared, example: torch.Tensor) -> None:
    """Replace ``prep``'s eager copy by a frozen graph if the graph reproduces it on two batch sizes."""
    x = example[:8].to(prep.device, torch.float32).contiguous(memory_format=torch.channels_last)
    x2 = x[:max(1, len(x) // 2 + 1 if len(x) > 1 else 1)]
    try:
        frozen = _freeze(prep.module, x)
        with torch.no_grad():
            ok = all(_close(frozen(xx).float(), prep.module(xx).float()) for xx in (x, x2))
    except Exception as err:        # untraceable model: keep the eager copy
        _warn_once(model, f"mclib.infer: {type(model).__name__} cannot be frozen into a graph "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                          f"using the eager channels-last copy")
        prep.no_graph = True
        return
    if not ok:
        _warn_once(model, f"mclib.infer: the frozen graph of {type(model).__name__} differs from the eager model "
                          f"beyond the fp32 tolerance (data-dependent control flow?); using the eager copy")
        prep.no_graph = True
        return
    prep.module, prep.kind = frozen, "graph"


def _check_graph(model: nn.Module, prep: Prepared, x: torch.Tensor) -> None:
    """Compare the frozen graph with the eager copy on the first inputs of a call; fall back if they differ.

    A traced graph records one path through the model's Python code; a model whose control flow depends on
    the data would silently compute something else on other inputs. Checking a few inputs of every call
    (about 8 eager forward passes) catches that.
    """
    xx = x[:8].to(prep.device, torch.float32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        same = _close(prep.module(xx).float(), prep.eager(xx).float())
    if not same:
        _warn_once(model, f"mclib.infer: the frozen graph of {type(model).__name__} differs from the eager model "
                          f"beyond the fp32 tolerance on new inputs (data-dependent control flow?); using the eager copy")
        prep.module, prep.kind, prep.no_graph = prep.eager, "channels_last", True


@contextmanager
def pinned(model: nn.Module):
    """A block in which the caller promises that ``model``'s weights, buffers and modules do not change.

    :func:`prepare` then checks the model's signature (a sum and a norm of every tensor, about 1 ms for the
    quick CNN and 2 ms for ResNet-8) once, on the first call, instead of on every call: what the input-space
    optimisations need (:func:`mclib.paths.bypass` evaluates its candidate segments thousands of times on a model
    it never changes). The results are the same as without the block. Blocks nest.
    """
    if not _PINNED.get(model):
        _validate(model)            # weights changed before the block: its first call prepares afresh
    _PINNED[model] = _PINNED.get(model, 0) + 1
    try:
        yield model
    finally:
        _PINNED[model] -= 1
        if not _PINNED[model]:
            del _PINNED[model]


def clear_cache() -> None:
    """Forget every prepared model."""
    _CACHE.clear()


# ------------------------------------------------------------------------------------ forward passes
def forward_chunks(model: nn.Module, n: int, make: Callable[[int, int], torch.Tensor],
                   consume: Callable[[int, int, torch.Tensor], None], per_input: int,
                   chunk: int | None = None, precision: str = "fp32", device=None, progress: bool = False,
                   desc: str = "forward") -> None:
    """Run ``n`` inputs through ``model`` in chunks: ``consume(s, e, logits)`` for ``make(s, e)`` (inputs s..e-1).

    ``per_input``: scalars per input (for the automatic chunk size); ``chunk``: inputs per pass (None:
    :func:`chunk_size`). The model is prepared once (:func:`prepare`) on the first chunk. Inputs are made
    lazily, so N path points never exist at once.
    """
    _check_precision(precision)
    chunk = _check_chunk(chunk)
    dev = device_of(model, device)
    step = chunk or chunk_size(per_input, dev)
    starts = range(0, int(n), step)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=desc, leave=False)
    prep = None
    bench = torch.backends.cudnn.benchmark
    try:
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True        # autotune each convolution shape once
        for s in starts:
            e = min(int(n), s + step)
            x = make(s, e)
            if prep is None:
                prep = prepare(model, x, precision, dev)
                if prep.kind == "graph" and not prep.static:
                    _check_graph(model, prep, x)
            consume(s, e, prep(x))
    finally:
        torch.backends.cudnn.benchmark = bench


def logits(model: nn.Module, X: torch.Tensor, chunk: int | None = None, precision: str = "fp32", device=None,
           progress: bool = False, name: str = "X", allow_empty: bool = False) -> torch.Tensor:
    """Logits of ``model`` for every row of ``X`` (float32, on the CPU), through the engine.

    ``X`` must be a non-empty floating-point batch of finite values (checked, ``name`` in the message). With
    ``allow_empty`` an empty ``X`` gives ``(0, classes)``: the model itself runs once on the empty batch
    (eagerly, in eval mode, no gradients), so the result still has the right number of classes.
    """
    check_inputs(name, X, allow_empty=allow_empty)
    if len(X) == 0:
        with torch.no_grad(), eval_mode(model):
            return model(X.to(device_of(model, device))).float().cpu()
    out: list[torch.Tensor] = []
    forward_chunks(model, len(X), lambda s, e: X[s:e], lambda s, e, z: out.append(z.cpu()),
                   per_input=int(math.prod(X.shape[1:])), chunk=chunk, precision=precision, device=device,
                   progress=progress, desc="logits")
    return torch.cat(out)


# ------------------------------------------------------------------------------------ threads
def configure_threads(threads: int | None = None, wait_policy: str = "PASSIVE") -> dict:
    """Thread settings for a (possibly shared) machine; returns what was set.

    ``threads``: torch intra-op threads (None: ``OMP_NUM_THREADS`` if set, else 1). ``wait_policy`` is
    written to ``OMP_WAIT_POLICY`` unless the environment already sets it.

    Measured on this project's shared 2-core machine (load average 9-13 from other jobs, plus one process
    spinning on a core; the quick CNN's ``linear_losses``, 32 pairs x 200 points, engine prepared; median
    of 5 calls, two rounds): 1 thread 4.2-7.4 s wall / 0.43-0.47 s CPU under either policy; 2 threads with
    the default (active) policy 17-20 s wall / 2.8-3.0 s CPU (OpenMP threads spin waiting for each other:
    6.5x the CPU for the same work); 2 threads with ``PASSIVE`` 1.7-3.2 s wall / 0.41-0.47 s CPU. So the
    active policy is what costs 4-10x, and ``PASSIVE`` removes it. The library defaults to ``PASSIVE`` and
    to one thread (a fair share on a shared machine, and reproducible timings); on a dedicated many-core
    machine pass ``threads`` explicitly. ``OMP_WAIT_POLICY`` takes effect only if set before the OpenMP
    runtime starts (before torch's first parallel region), so the runner exports it for kernels; here it
    is set for child processes and for a runtime not yet started.
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if wait_policy not in ("PASSIVE", "ACTIVE"):
        raise ValueError(f"wait_policy must be 'PASSIVE' or 'ACTIVE', got {wait_policy!r}")
    os.environ.setdefault("OMP_WAIT_POLICY", wait_policy)
    torch.set_num_threads(int(threads))
    return {"threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
