"""Training and evaluation, with checkpoints cached by a hash of the whole recipe.

A :class:`Recipe` names everything that determines a trained model: architecture, dataset, seed,
sizes, optimiser, and optional *hooks* given as importable names (``"module:function"``) with keyword
arguments, so that they hash like everything else:

* ``data_hook(X, y, generator=..., **kw) -> (X, y)`` changes the training set once before training
  (e.g. backdoor poisoning, :func:`mclib.attacks.backdoor.poison`);
* ``batch_hook(model, x, y, **kw) -> x`` changes every batch before the step
  (e.g. PGD adversarial training, :func:`mclib.attacks.evasion.pgd`).

Hooks are named rather than passed because a recipe must be hashable, JSON-serialisable data; they are
imported from mclib (or packages allowed with :func:`allow_hooks`) only, see :func:`resolve`.

The model cache (:func:`train`) promises:

* **Nothing read back is unchecked.** One SHA-256 covers the format, the recipe, the code hash, the
  stored metrics (``test_acc``, ...) and every tensor (name, dtype, shape, bytes). A checkpoint that is
  corrupt, truncated, for another recipe or written by other model/training code (:func:`code_hash`)
  is retrained with a warning, never used.
* **Atomic writes that respect the umask.** A checkpoint is written to a temporary file in the same
  folder (created with mode ``0o666 & ~umask``, like any other file), then renamed. Temporary files
  that a killed process left behind are removed by the next process that saves or loads there.
* **Train once, wait, then load.** Processes sharing a cache (Slurm jobs, several GPUs) take a lock
  per checkpoint (``<checkpoint>.lock``, an OS-level ``flock`` through the ``filelock`` package): the
  first trains, the others wait and then load its checkpoint. The OS releases the lock when its holder
  dies, however it dies (``kill -9``, node reboot on a local disk), so a killed job never blocks others;
  a process that *hangs* while training does keep others waiting.
* **No lost training.** Writability of the cache and its free space (against the checkpoint's size,
  :func:`checkpoint_bytes`) are checked before training; a read-only or full cache makes :func:`train` warn
  and cache into a per-user temporary folder instead (``--cache-dir`` or ``$MCLIB_CACHE`` choose a writable
  one), and stops before training if that cannot take it either. A save that still fails after training
  (the disk filled up meanwhile: ``ENOSPC``, a quota) goes to that temporary folder, or else the trained
  model is kept in memory for the rest of the run, with one warning naming the path that could not be
  written -- the weights are never dropped.
* **Formats side by side.** The checkpoint format is part of the file name (:func:`checkpoint_path`), so
  mclib versions with different formats share a cache without evicting each other's checkpoints.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import errno
import functools
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import filelock
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib import _check as check
from mclib import data, infer, models, runtime, torchutil

OPTIMIZERS = ("adam", "sgd")


def _freeze(kw: Mapping[str, Any] | None) -> tuple:
    """A hashable, order-independent form of a keyword dict (nested dicts and lists allowed)."""
    def norm(v):
        if isinstance(v, Mapping):
            return tuple(sorted((k, norm(x)) for k, x in v.items()))
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        return v
    return norm(dict(kw or {}))


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model. Equal recipes give the same cached checkpoint."""

    arch: str
    dataset: str
    seed: int = 0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    n_train: int | None = None
    arch_kwargs: tuple = ()
    data_hook: str | None = None
    data_hook_kwargs: tuple = ()
    batch_hook: str | None = None
    batch_hook_kwargs: tuple = ()
    tag: str = ""
    augment: str = "none"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        data.info(self.dataset)
        runtime.check_seed(self.seed)
        check.positive_int(self.epochs, "Recipe epochs")       # 0 steps would cache an untrained model
        check.positive_int(self.batch_size, "Recipe batch_size")
        check.positive_float(self.lr, "Recipe lr")
        check.non_negative_float(self.weight_decay, "Recipe weight_decay")
        check.probability(self.momentum, "Recipe momentum")
        if self.n_train is not None:
            check.positive_int(self.n_train, "Recipe n_train")
        if self.augment not in data.AUGMENTATIONS:
            raise ValueError(f"unknown augment {self.augment!r}; valid: {', '.join(data.AUGMENTATIONS)}")
        for name in ("arch_kwargs", "data_hook_kwargs", "batch_hook_kwargs"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _freeze(value))

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (dict-valued kwargs are frozen automatically)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The recipe as canonical JSON, with the data split's version (a new split retrains).

        Fields added after the first cached models (:data:`LATER_FIELDS`) are left out at their default value, so
        a recipe that does not use them keeps its key (and its checkpoint)."""
        fields = dict(dataclasses.asdict(self), split_version=data.SPLIT_VERSION)
        for name, default in LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        return json.dumps(fields, sort_keys=True, default=list)

    @property
    def key(self) -> str:
        """The checkpoint's file name, a short hash of the whole recipe."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def build(self) -> nn.Module:
        """A freshly initialised model of this recipe's architecture (seeded by the recipe's seed)."""
        torch.manual_seed(self.seed)
        return models.build(self.arch, dataset=self.dataset, **_unfreeze(self.arch_kwargs))


#: Recipe fields added later, with the default at which :meth:`Recipe.to_json` leaves them out.
LATER_FIELDS = {"augment": "none"}


def recipe_defaults(ctx_or_preset) -> dict[str, Any]:
    """The standard recipe's training fields of a preset, from ``mclib/presets/recipe.toml``: ``optimizer``,
    ``momentum``, ``weight_decay`` and ``augment`` (sizes, epochs and the learning rate are in ``base.toml``).
    The learning-rate schedule follows the optimiser (:func:`make_optimizer`: Adam constant, SGD cosine)."""
    section = ctx_or_preset.section("recipe")
    return {k: section[k] for k in ("optimizer", "momentum", "weight_decay", "augment")}


def _unfreeze(kw: tuple) -> dict:
    def back(v):
        if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
            return {k: back(x) for k, x in v}
        return v
    return back(kw) if kw else {}


def recipe_for(ctx_or_preset, arch: str | None = None, seed: int = 0, **changes) -> Recipe:
    """The book's standard recipe for a preset (dataset, epochs, sizes from ``presets/base.toml``).

    Chapters that use the same architecture and seed share one cached model.
    """
    p = getattr(ctx_or_preset, "preset", ctx_or_preset)
    arch = arch or p.arch
    # the preset's architecture arguments (recipe.toml's arch_kwargs: {} but at paper-smoke, whose narrower VGG-16
    # keeps the paper's layers at test cost); a chapter's own arch_kwargs= replaces them
    shape = dict(p.section("recipe").get("arch_kwargs", {}).get(arch, {}))
    base = Recipe(arch=arch, dataset=p.dataset, seed=seed, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                  n_train=p.n_train, **({"arch_kwargs": shape} if shape else {}), **recipe_defaults(p))
    return base.replace(**changes) if changes else base


#: Top-level packages whose functions a recipe may name as hooks (:func:`resolve`); extend with :func:`allow_hooks`.
HOOK_PACKAGES: frozenset[str] = frozenset({"mclib"})


def allow_hooks(*packages: str) -> frozenset[str]:
    """Let recipes name hooks in the modules ``packages`` (and their submodules), e.g. ``allow_hooks("mylab")``
    for ``"mylab.attacks:poison"``; returns the allowed packages. mclib's own are always allowed."""
    global HOOK_PACKAGES
    for p in packages:
        if not isinstance(p, str) or not p or not all(part.isidentifier() for part in p.split(".")):
            raise ValueError(f"allow_hooks: {p!r} is not a module name; allowed: dotted Python identifiers such as 'mylab'")
    HOOK_PACKAGES = HOOK_PACKAGES | frozenset(packages)
    return HOOK_PACKAGES


def resolve(name: str) -> Callable:
    """The hook function named ``"package.module:function"`` (e.g. ``"mclib.attacks.backdoor:poison"``).

    Why hooks are names, not functions: a :class:`Recipe` is the key of the model cache, so it must be
    hashable, JSON-serialisable data (its hash names the checkpoint; the checkpoint stores it as JSON and
    compares it on load). A function object is neither, so a recipe names its hooks and this function imports
    them when the model is trained. That is why this core module reaches upper ones (:mod:`mclib.attacks`) at
    run time without an import statement: the dependency is chosen by the recipe, not by this module.

    Importing runs code, so only modules inside :data:`HOOK_PACKAGES` (``mclib`` and what :func:`allow_hooks`
    added) are imported; a recipe naming anything else -- say one read back from a file -- is refused before any
    import. Raises ValueError for a malformed name, a module outside those packages, or a hook that cannot be
    imported or is not callable.
    """
    if not isinstance(name, str) or name.count(":") != 1:
        raise ValueError(f"hook {name!r} must be written 'module:function'")
    mod, fn = name.split(":", 1)
    if not all(part.isidentifier() for part in mod.split(".")) or not fn.isidentifier():
        raise ValueError(f"hook {name!r} must be written 'module:function' with Python identifiers")
    if not any(mod == p or mod.startswith(p + ".") for p in HOOK_PACKAGES):
        raise ValueError(f"hook {name!r} is in module {mod!r}, outside the packages hooks may come from "
                         f"({', '.join(sorted(HOOK_PACKAGES))}); allow its package first with "
                         f"mclib.train.allow_hooks({mod.split('.')[0]!r})")
    try:
        hook = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import hook {name!r}: {err}") from None
    if not callable(hook):
        raise ValueError(f"hook {name!r} is a {type(hook).__name__}, not a function")
    return hook


def logits(model: nn.Module, X: torch.Tensor, batch_size: int | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Model outputs for ``X`` (float32, on the CPU), through the inference engine (:func:`mclib.infer.logits`):
    a prepared eval-mode copy of the model, no gradients, ``batch_size`` inputs per forward pass (None: the
    engine's choice from the input size). Equal to eager fp32 within ``infer.ATOL + infer.RTOL * |logit|``."""
    return infer.logits(model, X, chunk=batch_size, device=device)


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and accuracy ``acc`` of ``model`` on ``(X, y)``."""
    y = torch.as_tensor(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must hold one label per row of X, shape ({len(X)},); got shape {tuple(y.shape)}")
    out = logits(model, X, batch_size)
    return {"loss": F.cross_entropy(out, y).item(), "acc": (out.argmax(1) == y).float().mean().item()}


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default training loss of :func:`fit`: mean cross-entropy :math:`\\mathrm{CE}(f(x), y)`."""
    return F.cross_entropy(check.model_call(model, x, "X"), y)


def make_optimizer(params: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float, momentum: float,
                   total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser of :func:`fit` and its schedule: Adam at a constant rate, or SGD with ``momentum`` and a
    cosine decay over ``total_steps`` (the usual schedule for SGD on these small problems)."""
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay), None
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def fit(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    generator: torch.Generator | None = None,
    batch_hook: Callable | None = None,
    callback: Callable[[int, nn.Module, float], Any] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss,
    batch_modules: Callable[[torch.Generator | None, int], Sequence[nn.Module]] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[float]:
    """Minimise ``loss`` (default cross-entropy) of ``model`` on ``(X, y)`` with minibatches; returns the
    per-batch losses. The one training loop of mclib: :func:`mclib.curves.train_curve` runs through it too.

    Every epoch shuffles ``X`` (``torch.randperm`` from ``generator``) and takes one optimiser step per
    batch of ``batch_size`` rows on the trainable parameters of ``model`` (``requires_grad``), with
    ``optimizer`` ``"adam"`` or ``"sgd"`` (:func:`make_optimizer`; ``weight_decay`` is the optimiser's).

    Per batch, in this order:

    1. ``batch_modules(generator, n_batches)`` (optional), called once per epoch right after the shuffle,
       gives the module each batch of the epoch trains *through* -- e.g. the point :math:`w(t)` of a curve at a
       freshly drawn :math:`t` (:func:`mclib.curves.train_curve`). Without it every batch uses ``model``.
       Call it ``m``;
    2. ``augment(x) -> x`` (optional; e.g. :func:`mclib.data.crop_flip`) transforms the batch, then
       ``batch_hook(m, x, y) -> x`` (optional) replaces it (e.g. PGD adversarial training);
    3. ``model`` is put in training mode and one step is taken on ``loss(m, x, y)``, a scalar tensor
       differentiable in ``model``'s parameters (gradients a hook left are discarded first);
    4. ``callback(step, model, loss)`` (optional) is called after the step (used to watch barriers
       evolve during training, claim A7); it may raise to stop training.

    On the CPU a model with 2-d convolutions trained on image batches (N, C, H, W) runs in the channels-last
    memory format (weights and batches; oneDNN's fast convolution layout, 1.3-1.4x per step for the quick
    CNN and VGG-BN, issue 31): the same arithmetic in another summation order, so losses agree with the
    NCHW loop to float32 rounding. The model's tensors are back in their own layout and storage when ``fit``
    returns or raises (:func:`mclib.torchutil.channels_last`). Not for ``batch_modules`` (a curve's weights
    are formed per batch; :func:`mclib.curves.objective` lays them out channels-last itself).

    The model ends in eval mode on ``device``.
    """
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if len(X) == 0:
        raise ValueError("X is empty: fit needs at least one training input")
    epochs, batch_size = check.positive_int(epochs, "epochs"), check.positive_int(batch_size, "batch_size")
    lr = check.non_negative_float(lr, "lr")       # 0 is allowed here: a probe of the gradients (tests)
    if loss is cross_entropy_loss:
        y = check.labels(y, "y", n=len(X))
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    opt, sched = make_optimizer(params, optimizer, lr, weight_decay, momentum, epochs * steps_per_epoch)
    losses: list[float] = []
    step = 0
    # channels-last convolutions on the CPU (see the docstring); the layout is restored on leaving
    fmt = (torch.channels_last if device.type == "cpu" and X.dim() == 4 and batch_modules is None
           and any(isinstance(mod, nn.Conv2d) for mod in model.modules()) else None)
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False)
    with torchutil.channels_last(model) if fmt is not None else contextlib.nullcontext():
        for _ in range(epochs):
            order = torch.randperm(len(X), generator=generator)
            through = batch_modules(generator, steps_per_epoch) if batch_modules is not None else None
            for j, i in enumerate(range(0, len(X), batch_size)):
                idx = order[i:i + batch_size]
                xb, yb = X[idx].to(device), y[idx].to(device)
                if augment is not None:
                    xb = augment(xb)
                m = through[j] if through is not None else model
                if batch_hook is not None:
                    xb = batch_hook(m, xb, yb).detach()
                if fmt is not None:
                    xb = xb.contiguous(memory_format=fmt)
                model.train()
                value = loss(m, xb, yb)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                losses.append(value.item())
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if callback is not None:
                    callback(step, model, losses[-1])
    bar.close()
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------ code hash
#: Whole modules whose code defines the networks and the pixels they are trained on.
CODE_MODULES = ("mclib.models", "mclib.data")


def _normalised(source: str) -> str:
    """The code of ``source`` without its docstrings, comments and layout (a dump of its syntax tree).

    Editing a comment, a docstring or the line breaks keeps the hash; changing any statement,
    default value, name or error message changes it.
    """
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _digest(source: str) -> str:
    return hashlib.sha256(_normalised(source).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _module_digest(name: str) -> str:
    """Digest of a module's source as first read in this process (the code that is running)."""
    return _digest(inspect.getsource(importlib.import_module(name)))


def _code_parts(recipe: Recipe) -> dict[str, str]:
    """Name -> digest of every piece of code that :func:`code_hash` covers for ``recipe``."""
    parts = {name: _module_digest(name) for name in CODE_MODULES}
    parts[f"{__name__}:training"] = _TRAINING_DIGEST
    for hook in (recipe.data_hook, recipe.batch_hook):
        if hook:
            parts[f"hook {hook}"] = _hook_digest(hook)
    return parts


def _hook_digest(hook: str) -> str:
    """Digest of the module a hook lives in; of the hook alone where that module has no source file
    (a module made at run time, a notebook's ``__main__``), and of its bytecode where it has none either."""
    fn = resolve(hook)  # a hook that cannot be imported fails here, with resolve's message
    name = hook.split(":", 1)[0]
    with contextlib.suppress(OSError, TypeError):
        return _module_digest(name)
    with contextlib.suppress(OSError, TypeError):
        return _digest(inspect.getsource(fn))
    code = getattr(fn, "__code__", None)
    return hashlib.sha256(code.co_code if code is not None else hook.encode()).hexdigest()


def code_hash(recipe: Recipe) -> str:
    """A hash of the code that turns ``recipe`` into weights and metrics; a checkpoint of other code is retrained.

    Covered (docstrings, comments and layout excluded, see ``_normalised``):

    * :mod:`mclib.models` and :mod:`mclib.data`, whole: the architectures, their initialisation and
      normalisation, and the loading, scaling and splitting of the training images;
    * the training path of this module (:data:`TRAINING_CODE`: :meth:`Recipe.build`, :func:`fit`,
      :func:`evaluate`, :func:`logits`, ...), which decide the weights and the stored metrics;
    * the whole module of every hook the recipe names (e.g. :mod:`mclib.attacks.evasion` for PGD
      training), since a hook calls helpers of its module.

    Not covered: the cache machinery of this module (hashing, checksums, locks, saving) -- it does not
    change a model, and the checkpoint format has its own version (``CHECKPOINT_FORMAT``); other mclib
    modules that a hook imports; torch, numpy and the hardware, which change rounding but not what the
    model is. The sources are read once per process, so the hash describes the code that runs.
    The hash is kept in the checkpoint rather than in its file name: a code change then replaces the
    old checkpoint (with a warning saying why) instead of leaving it behind.
    """
    parts = _code_parts(recipe)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ checkpoints
#: Version of the checkpoint layout; files of another version are retrained.
CHECKPOINT_FORMAT = 2
#: The checksummed text fields of a checkpoint (its tensors are checksummed too).
_RECORD = ("format", "recipe", "code", "metrics")
#: Temporary files of :func:`save_checkpoint`: ``.<checkpoint>.<pid>.<random>.tmp``.
_TEMP = re.compile(r"^\.(?P<target>.+)\.\d+\.[0-9a-f]+\.tmp$")


def _checksum(record: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the record (format, recipe, code hash, metrics) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: record[k] for k in _RECORD}, sort_keys=True).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_path(recipe: Recipe, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`train` caches ``recipe``'s model: ``models/<arch>-<dataset>-<recipe key>-f<format>.pt``.

    The checkpoint format (``CHECKPOINT_FORMAT``) is part of the name, so mclib versions that write
    different formats keep their checkpoints side by side in one shared cache instead of each discarding
    (and retraining over) the other's.
    """
    name = f"{recipe.arch}-{recipe.dataset}-{recipe.key}-f{CHECKPOINT_FORMAT}.pt"
    return runtime.cache_dir(cache_dir) / "models" / name


def lock_path(path: Path) -> Path:
    """The lock file that guards the checkpoint ``path`` (kept after release, so waiters share one inode)."""
    return path.with_name(path.name + ".lock")


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a fresh temporary file next to ``path``.

    Mode ``0o666`` filtered by the umask, as for any other file (``mkstemp`` would force ``0o600``
    and lock other users of a shared cache out).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return fd, tmp


def _write_and_rename(fd: int, tmp: Path, path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` into the open temporary file, flush it to disk, then rename it to ``path``."""
    try:
        with os.fdopen(fd, "wb") as fh:
            buf = io.BytesIO()
            torch.save(dict(payload), buf)
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never expose a file whose bytes are still in flight
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _payload(recipe: Recipe, model: nn.Module, metrics: Mapping[str, Any]) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    record = {"format": CHECKPOINT_FORMAT, "recipe": recipe.to_json(), "code": code_hash(recipe),
              "metrics": json.dumps(dict(metrics), sort_keys=True)}
    return {**record, "state_dict": state, "checksum": _checksum(record, state)}


def save_checkpoint(path: Path, recipe: Recipe, model: nn.Module, metrics: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder (umask respected), then ``os.replace``.

    :func:`train` holds the checkpoint's lock around this; other callers that share a cache should too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    _write_and_rename(fd, tmp, path, _payload(recipe, model, metrics))


def clean_stale_temps(folder: Path, holding: Path | None = None) -> list[Path]:
    """Remove temporary files left by saves that died; returns the removed paths.

    A temporary file of checkpoint ``c`` is stale when nobody holds ``c``'s lock (writers hold it from
    creating the file until the rename; ``holding`` is the checkpoint whose lock the caller holds). Other
    ``*.tmp`` files are not mclib's and are left alone, as are files that cannot be removed (read-only cache).
    """
    removed = []
    for tmp in sorted(folder.glob("*.tmp")):
        try:
            match = _TEMP.match(tmp.name)
            if match is None:
                continue
            target = folder / match["target"]
            if target == holding:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
                continue
            lock = filelock.FileLock(lock_path(target))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue  # its writer is alive
            try:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
            finally:
                lock.release()
        except OSError:
            continue
    return removed


class CheckpointInvalid(Exception):
    """A cached checkpoint that must not be used (corrupt, truncated, for another recipe or other code)."""


def load_checkpoint(path: Path, recipe: Recipe) -> tuple[nn.Module, dict]:
    """Load and validate a checkpoint; raise :class:`CheckpointInvalid` saying why it cannot be used.

    Everything returned is checksummed: the weights, the metrics and the recipe and code they belong to.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, ...
        raise CheckpointInvalid(f"unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or {"recipe", "state_dict", "checksum"} - set(payload):
        raise CheckpointInvalid("not an mclib checkpoint")
    if payload.get("format") != CHECKPOINT_FORMAT or set(_RECORD) - set(payload):
        raise CheckpointInvalid(f"checkpoint format {payload.get('format', 1)!r}, this mclib writes {CHECKPOINT_FORMAT}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointInvalid("its state_dict is not a dict of tensors")
    try:
        intact = _checksum(payload, state) == payload["checksum"]
    except (TypeError, KeyError, ValueError, RuntimeError):
        intact = False
    if not intact:
        raise CheckpointInvalid("checksum mismatch (weights, metrics or recipe changed after writing)")
    if payload["recipe"] != recipe.to_json():
        raise CheckpointInvalid("written for another recipe")
    if payload["code"] != code_hash(recipe):
        raise CheckpointInvalid("written by other model or training code (see mclib.train.code_hash)")
    model = recipe.build()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointInvalid(f"its tensors do not fit the model: {err}") from None
    return model.eval(), json.loads(payload["metrics"])


# ------------------------------------------------------------------------------------------ train
def _train_fresh(recipe: Recipe, device: torch.device, data_root, progress: bool) -> tuple[nn.Module, dict]:
    """Train ``recipe``'s model from scratch; returns it on the CPU with its metrics."""
    X, y = data.load(recipe.dataset, "train", n=recipe.n_train, data_root=data_root)
    gen = torch.Generator().manual_seed(recipe.seed)
    if recipe.data_hook:
        X, y = resolve(recipe.data_hook)(X, y, generator=gen, **_unfreeze(recipe.data_hook_kwargs))
    hook = None
    if recipe.batch_hook:
        fn, kw = resolve(recipe.batch_hook), _unfreeze(recipe.batch_hook_kwargs)
        hook = lambda m, xb, yb: fn(m, xb, yb, **kw)  # noqa: E731
    model = recipe.build()
    start = time.perf_counter()
    losses = fit(model, X, y, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay, momentum=recipe.momentum, generator=gen, batch_hook=hook,
        augment=data.augmentation(recipe.augment, gen),
        device=device, progress=progress, desc=f"train {recipe.arch}/{recipe.dataset} seed {recipe.seed}")
    seconds = time.perf_counter() - start
    if not losses:        # never cache (or return) a model that took no step as if it were trained
        raise RuntimeError(f"training {recipe.arch}/{recipe.dataset} took no optimiser step; nothing to cache")
    Xt, yt = data.load(recipe.dataset, "test", data_root=data_root)
    # evaluated where it was trained (the inference engine runs on the model's device), then moved to the CPU
    tr, te = evaluate(model, X[:2000], y[:2000]), evaluate(model, Xt, yt)
    model.cpu()
    metrics = {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"],
               "seconds": seconds}
    check_learned(recipe, metrics, losses)
    return model, metrics


#: :func:`check_learned`: eval-mode accuracy at most this many times chance counts as "at chance" ...
AT_CHANCE_FACTOR = 1.5
#: ... while a train-mode cross-entropy (last tenth of the batches, median) below this fraction of ln K -- the
#: cross-entropy of guessing among K classes -- says that the model did fit its training batches.
LEARNED_CE_FRACTION = 0.5


def check_learned(recipe: Recipe, metrics: Mapping[str, float], losses: Sequence[float]) -> None:
    r"""Stop (``RuntimeError``) when a freshly trained model fits its batches in training mode but is at chance in
    evaluation mode, before it is cached and every later chapter measures a constant-prediction model.

    At chance: eval-mode accuracy on the training rows and on the test split both at most
    :data:`AT_CHANCE_FACTOR` :math:`/K`. Fitted: the median train-mode cross-entropy of the last tenth of the
    batches (``losses``, as :func:`fit` returns them) below :data:`LEARNED_CE_FRACTION` :math:`\cdot \ln K`.
    Both together mean that the model behaves differently in the two modes: BatchNorm running statistics that did
    not settle (too few steps for the momentum, or batches too small), or dropout. The message names the recipe
    and what to change. A model at chance in both modes is left to the claims' judges (inconclusive evidence).
    """
    k = data.info(recipe.dataset).num_classes
    if not losses or k < 2:
        return
    tail = sorted(losses[-max(1, len(losses) // 10):])
    fitted_ce = tail[len(tail) // 2]
    chance = 1.0 / k
    at_chance = max(metrics["train_acc"], metrics["test_acc"]) <= AT_CHANCE_FACTOR * chance
    if at_chance and fitted_ce < LEARNED_CE_FRACTION * math.log(k):
        steps = len(losses)
        raise RuntimeError(
            f"the model of recipe {recipe.arch}/{recipe.dataset} seed {recipe.seed} (epochs={recipe.epochs}, "
            f"batch_size={recipe.batch_size}, lr={recipe.lr:g}, optimizer={recipe.optimizer}, {steps} steps; "
            f"checkpoint key {recipe.key}) fits its training batches in training mode (cross-entropy "
            f"{fitted_ce:.3f}, guessing gives {math.log(k):.3f}) but is at chance in evaluation mode (accuracy "
            f"{metrics['train_acc']:.1%} on training images, {metrics['test_acc']:.1%} on the test split; chance "
            f"{chance:.0%}). Likely cause: BatchNorm running statistics that have not settled -- too few steps "
            f"({steps}) or too small batches for the running averages -- so train more steps (epochs, n_train) or "
            "use an architecture without BatchNorm at this size; it was not cached")


def _signature(path: Path) -> tuple | None:
    """Identity of the file now at ``path`` (None if absent): a rename by another process changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _load_valid(path: Path, recipe: Recipe, warn: bool = True) -> tuple[nn.Module, dict] | None:
    """The checkpoint at ``path`` if it exists and is valid; an invalid one is reported (warning) and skipped."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, recipe)
    except CheckpointInvalid as why:
        if warn:
            warnings.warn(f"cached checkpoint {path.name} ignored and retrained: {why}", stacklevel=3)
        return None


def _check_writable(folder: Path) -> None:
    """Raise :class:`OSError` unless a file can be created in ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = _open_temp(folder / ".write-probe")
    os.close(fd)
    probe.unlink()


def fallback_cache_dir() -> Path:
    """The per-user temporary cache used when the configured one is read-only."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"mclib-cache-{user}"


def checkpoint_bytes(recipe: Recipe) -> int:
    """The disk space a checkpoint of ``recipe`` needs, over-estimated: its tensors' bytes plus 5% and 1 MiB
    for the archive's own records (a fresh model of the recipe is built to count them)."""
    state = recipe.build().state_dict()
    return int(1.05 * sum(t.numel() * t.element_size() for t in state.values())) + 2 ** 20


def _check_space(folder: Path, need: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``folder`` unless it has ``need`` bytes free (checked before training:
    an empty probe file can still be created on a full disk)."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.1f} MiB free, the checkpoint needs about "
                                    f"{need / 2**20:.1f} MiB", str(folder))


def _writable_path(recipe: Recipe, path: Path | None, why: OSError | None, need: int = 0) -> Path:
    """``path`` if its folder is writable and has ``need`` bytes free, else the fallback cache's path (with a
    warning naming the fix)."""
    if why is None:
        try:
            _check_writable(path.parent)
            _check_space(path.parent, need)
            return path
        except OSError as err:
            why = err
    where = path.parent.parent if path is not None else "the configured cache folder"
    fix = "pass a writable --cache-dir (cache_dir=...) with free space or set MCLIB_CACHE"
    try:
        fallback = checkpoint_path(recipe, fallback_cache_dir())
        _check_writable(fallback.parent)
        _check_space(fallback.parent, need)
    except OSError as err:
        cls = PermissionError if isinstance(why, PermissionError) and isinstance(err, PermissionError) else OSError
        raise cls(f"cannot cache the model of {recipe.arch}/{recipe.dataset}: {where} is not writable "
                  f"({why}) and neither is {fallback_cache_dir()} ({err}); {fix}") from None
    warnings.warn(f"model cache {where} is not writable ({why}); caching {fallback.name} in {fallback.parent} "
                  f"instead, which is temporary; {fix}", stacklevel=3)
    return fallback


#: Models trained in this process whose checkpoint could not be written (full disk): kept for the run, so a
#: later :func:`train` of the same recipe returns them instead of training again. Keyed by checkpoint path,
#: recipe and code hash; values are ``(state_dict, metrics)`` on the CPU.
_UNSAVED: dict[tuple[str, str, str], tuple[dict[str, torch.Tensor], dict]] = {}
_UNSAVED_WARNED: set[str] = set()


def _unsaved_key(recipe: Recipe, path: Path) -> tuple[str, str, str]:
    return str(path), recipe.to_json(), code_hash(recipe)


def _from_unsaved(recipe: Recipe, path: Path | None) -> tuple[nn.Module, dict] | None:
    """The model of ``recipe`` kept in memory by an earlier failed save in this process, or None."""
    if path is None:
        return None
    kept = _UNSAVED.get(_unsaved_key(recipe, path))
    if kept is None:
        return None
    model = recipe.build()
    model.load_state_dict(kept[0])
    return model.eval(), dict(kept[1])


def _save_elsewhere(recipe: Recipe, failed: Path, model: nn.Module, metrics: dict, err: OSError) -> bool:
    """After the checkpoint ``failed`` could not be written: save into the fallback cache instead (as for a
    read-only cache), with a warning naming both; False if that is the same place or cannot be written either."""
    fallback = checkpoint_path(recipe, fallback_cache_dir())
    if fallback == failed:
        return False
    try:
        _check_writable(fallback.parent)
        _check_space(fallback.parent, checkpoint_bytes(recipe))
        with filelock.FileLock(lock_path(fallback)):
            save_checkpoint(fallback, recipe, model, metrics)
    except OSError:
        return False
    warnings.warn(f"could not write the checkpoint {failed} ({err.strerror or err}); cached it in {fallback} "
                  f"instead, which is temporary: free space there or pass a writable --cache-dir (cache_dir=...)",
                  stacklevel=3)
    return True


def _keep_unsaved(recipe: Recipe, path: Path, model: nn.Module, metrics: dict, err: OSError) -> None:
    """Keep a trained model whose checkpoint ``path`` could not be written, and say so once per path."""
    _UNSAVED[_unsaved_key(recipe, path)] = ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                                            dict(metrics))
    if str(path) not in _UNSAVED_WARNED:
        _UNSAVED_WARNED.add(str(path))
        warnings.warn(f"could not write the checkpoint {path} ({err.strerror or err}); the trained model is kept "
                      f"in memory for this run only and will be trained again next run: free space there or "
                      f"pass a writable --cache-dir (cache_dir=...)", stacklevel=3)


@dataclass(frozen=True, eq=False)
class Trained:
    """A trained model with what describes it: ``model`` (eval mode, on the run's device), its ``metrics``
    (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``seconds``; read-only) and its ``recipe``.
    Returned by :func:`train` and :meth:`mclib.config.Context.model`; nothing is attached to the module."""

    model: nn.Module
    metrics: Mapping[str, float]
    recipe: Recipe


def _result(model: nn.Module, metrics: dict, recipe: Recipe, device: torch.device) -> Trained:
    return Trained(model.to(device).eval(), MappingProxyType(dict(metrics)), recipe)


def train(
    recipe: Recipe,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> Trained:
    """The model of ``recipe``: loaded from the cache if a valid checkpoint exists, else trained and cached.

    Returns a :class:`Trained`: ``.model`` in eval mode on ``device``, ``.metrics`` (train/test loss and
    accuracy, training time) and ``.recipe``.

    Order of events: a valid checkpoint is loaded without any lock (renames are atomic, so a reader
    never sees half a file). Otherwise the cache is checked for writability (falling back to
    :func:`fallback_cache_dir` with a warning), the checkpoint's lock is taken -- waiting while
    another process trains the same recipe, then loading its result -- stale temporary files are
    removed, the temporary file is created, and only then is the model trained.
    """
    device = runtime.get_device(device if not isinstance(device, torch.device) else str(device))
    try:
        path, why = checkpoint_path(recipe, cache_dir), None
    except OSError as err:  # the cache folder itself cannot be created
        path, why = None, err
    seen = None
    if path is not None and not retrain:
        seen = _signature(path)
        hit = _load_valid(path, recipe)
        if hit is not None:
            with contextlib.suppress(OSError):
                clean_stale_temps(path.parent)
            return _result(*hit, recipe, device)
    kept = None if retrain else _from_unsaved(recipe, path)
    if kept is not None:                        # trained earlier in this run, its checkpoint could not be written
        return _result(*kept, recipe, device)
    target = _writable_path(recipe, path, why, checkpoint_bytes(recipe))
    if target != path:
        seen = None
    lock = filelock.FileLock(lock_path(target))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(f"waiting for another process that trains {target.name} (lock {lock.lock_file})", file=sys.stderr)
        lock.acquire()
    try:
        clean_stale_temps(target.parent, holding=target)
        if not retrain and _signature(target) not in (None, seen):  # written while we waited
            hit = _load_valid(target, recipe)
            if hit is not None:
                return _result(*hit, recipe, device)
        fd, tmp = _open_temp(target)
        try:
            model, metrics = _train_fresh(recipe, device, data_root, progress)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        try:
            _write_and_rename(fd, tmp, target, _payload(recipe, model, metrics))
        except OSError as err:                  # a full disk (ENOSPC), a quota, an I/O error: keep the weights
            if not _save_elsewhere(recipe, target, model, metrics, err):
                _keep_unsaved(recipe, path if path is not None else target, model, metrics, err)
    finally:
        lock.release()
    return _result(model, metrics, recipe, device)


#: The functions of this module that decide a trained model's weights and stored metrics (hashed by
#: :func:`code_hash`; taken when the module is imported, so a patched function does not change it).
TRAINING_CODE = (Recipe.build, _unfreeze, cross_entropy_loss, make_optimizer, fit, logits, evaluate, _train_fresh)
_TRAINING_DIGEST = hashlib.sha256("".join(_digest(inspect.getsource(f)) for f in TRAINING_CODE).encode()).hexdigest()
