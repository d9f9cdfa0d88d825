"""Internal codes read with self-organising maps (Lee & Vijayan, arXiv 2205.10952, claims B1-B3).

The pipeline of the paper (its Sections 2-3):

1. **Layer code.** A layer's output for input ``x`` is turned into a vector, its *code*:
   a conv output ``(C, H, W)`` becomes the ``C`` channel means ``a_c = mean_{h,w} A[c, h, w]``
   (:func:`vectorise`), a dense output is kept as it is. :func:`activations` collects the codes of
   any ``nn.Module`` through forward hooks, batched and without gradients.
2. **Self-organising map** (Kohonen 1982). A ``rows x cols`` grid of units with weights
   ``w_k in R^D``. An input's *internal code* is its best-matching unit (BMU),
   ``k*(a) = argmin_k ||a - w_k||_2`` (ties: lowest row-major index, as in MiniSom).
   :func:`fit_som` trains with mclib's batched PyTorch batch map (the default, ``backend="torch"``) or
   with MiniSom's online rule (``backend="minisom"``, the tests' oracle): each iteration assigns every input to its
   BMU and sets ``w_k = sum_i h(k, k*_i) a_i / sum_i h(k, k*_i)`` with a Gaussian neighbourhood
   ``h(k, l) = exp(-|g_k - g_l|^2 / (2 sigma_t^2))`` on the grid coordinates ``g`` and ``sigma_t``
   decaying exponentially from ``sigma`` to ``sigma_end`` (Kohonen's batch map). Both give a
   :class:`SOM`, whose BMU rule and errors are checked against MiniSom's in the tests.
   ``benchmarks/bench_som.py`` measures both at equal quantisation/topographic error as paired medians at
   one thread: the batch map at its defaults (10 iterations to sigma 1.5) reached lower quantisation
   error than two MiniSom epochs and was 12x faster on 1000 x 64 codes with a 10 x 10 map and 10x on
   5000 x 256 codes with a 20 x 20 map, so it is the default.
3. **Code metrics** per layer (:func:`code_metrics`): distinct BMUs used, entropy of the BMU
   distribution, class purity and mutual information I(BMU; label), within-class BMU spread on the
   grid, quantisation error (mean distance to the BMU) and topographic error (share of inputs whose
   best and second-best units are not grid neighbours). The paper's claim B1/B2: shallow layers map
   inputs of different classes onto the same (homogeneous) codes, deep layers onto diverse,
   class-specific ones.
4. **Vulnerability** (claim B3, the paper's Section 3.3): per input, how homogeneous its shallow code
   is (:func:`bmu_homogeneity`: label entropy and number of classes at its BMU), read against the smallest PGD
   radius that flips its prediction. That study -- the radius search, the B3 condition map over layers, SOM
   sizes and protocols, the share of inputs whose BMU changes under attack -- is
   :mod:`mclib.studies.codes`; :func:`pre_activation` names the code before a layer's activation.

The paper does not specify SOM size, sigma, learning rate, iterations or the exact vectorisation;
the choices here are arguments with defaults, and the chapter states which it used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mclib import _check as check
from mclib.torchutil import device_of, eval_mode

REDUCTIONS = ("mean", "max", "flatten")
BACKENDS = ("torch", "minisom")


# --------------------------------------------------------------------------- layer codes
def vectorise(out: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """A layer output ``(N, ...)`` as codes ``(N, D)``.

    ``(N, C, H, W)``: per-channel mean over ``H, W`` (``reduce="mean"``, the default), per-channel max
    (``"max"``) or everything flattened (``"flatten"``); ``(N, C, L)`` likewise over ``L``;
    ``(N, D)`` is kept as it is.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; valid: {', '.join(REDUCTIONS)}")
    if out.dim() < 2:
        raise ValueError(f"layer output must be batched (N, ...), got shape {tuple(out.shape)}")
    if out.dim() == 2 or reduce == "flatten":
        return out.flatten(1)
    spatial = tuple(range(2, out.dim()))
    return out.mean(spatial) if reduce == "mean" else out.amax(spatial)


def _body(model: nn.Module) -> tuple[str, nn.Module]:
    """``("1.", body)`` for mclib models ``Sequential(Normalize, body)``, else ``("", model)``."""
    from mclib.models import Normalize

    if isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[0], Normalize):
        return "1.", model[1]
    return "", model


def _call_order(body: nn.Module) -> list[str]:
    """Names of the leaf modules ``body``'s forward calls, in execution order, from a ``torch.fx`` trace
    (symbolic: no input needed). Raises ``ValueError`` naming the candidates when the forward cannot be
    traced (data-dependent control flow)."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(body).graph
    except Exception as e:       # fx raises many types (TraceError, TypeError, ...) for untraceable code
        leaves = [n for n, m in body.named_modules() if n and not list(m.children())]
        raise ValueError(f"cannot find the layers of this model from its graph ({type(e).__name__}: {e}); pass "
                         f"layers=[...] explicitly, chosen from its leaf modules: {', '.join(leaves)}") from None
    return list(dict.fromkeys(str(n.target) for n in graph.nodes if n.op == "call_module"))


def default_layers(model: nn.Module) -> list[str]:
    """Module names whose outputs make a sensible input-to-output sequence of codes.

    * ResNets (a body with ``layer1``, ``layer2``, ...): the stem, every residual block of every stage
      (the paper's "composite layers"), and the read-out. The stem is ``stem`` (mclib's CIFAR ResNet),
      ``relu`` (torchvision's ResNet-18), or else -- third-party code that applies its ReLU as a function
      -- the last module the forward pass calls before ``layer1`` (e.g. ``bn1``: the stem's code is then
      taken before its ReLU). The read-out is ``fc``, or else the last module called (e.g. ``linear``).
      Call order comes from a ``torch.fx`` trace of the forward pass;
    * a ``Sequential`` body (mclib's MLP, CNN, VGG): every ``ReLU`` and the last module (the logits);
    * anything else: every ``ReLU`` module, or else the direct children.

    Names are those of ``model.named_modules()``, usable as ``layers=`` in :func:`activations`. Where the
    stem or read-out cannot be found this raises ``ValueError`` listing the candidate modules rather than
    silently leaving them out.
    """
    prefix, body = _body(model)
    names: list[str]
    if all(hasattr(body, s) for s in ("layer1", "layer2", "layer3")):
        blocks = []
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            if hasattr(body, stage):
                blocks += [f"{stage}.{i}" for i in range(len(getattr(body, stage)))]
        stem = "stem" if hasattr(body, "stem") else ("relu" if hasattr(body, "relu") else None)
        head = "fc" if hasattr(body, "fc") else None
        if stem is None or head is None:
            order = _call_order(body)
            first = next((i for i, n in enumerate(order) if n.startswith("layer1.")), None)
            if stem is None and first:
                stem = order[first - 1]
            if head is None and order and not order[-1].startswith(tuple(s + "." for s in ("layer1", "layer2",
                                                                                          "layer3", "layer4"))):
                head = order[-1]
            if stem is None or head is None:
                what = " and ".join(w for w, v in (("stem", stem), ("read-out", head)) if v is None)
                raise ValueError(f"cannot tell the {what} of this ResNet; pass layers=[...] explicitly. Modules "
                                 f"in call order: {', '.join(prefix + n for n in order)}")
        names = [stem] + blocks + [head]
    elif isinstance(body, nn.Sequential):
        names = [str(i) for i, m in enumerate(body) if isinstance(m, nn.ReLU)] + [str(len(body) - 1)]
    else:
        names = [n for n, m in body.named_modules() if isinstance(m, nn.ReLU)] or [n for n, _ in body.named_children()]
    return [prefix + n for n in names]


def pre_activation(model: nn.Module, layer: str, explain: bool = False):
    """Name of the module whose output the ReLU ``layer`` reads -- the code *before* the activation -- or None.

    ``explain=True`` returns ``(name or None, reason)``, the reason a sentence saying why that module, or
    why there is none (e.g. a residual block of a third-party ResNet applies its ReLU functionally inside
    ``forward``: no module holds the pre-activation, and a hook on ``layer`` sees the output after the ReLU).

    ``layer`` an ``nn.ReLU`` inside an ``nn.Sequential``: its preceding sibling (mclib's CNN: ``"1.1"`` ->
    ``"1.0"``, the first convolution); ``layer`` an ``nn.Sequential`` ending in an ``nn.ReLU``: its second-last
    child (a ResNet stem ``conv, bn, relu``: ``"1.stem"`` -> ``"1.stem.1"``, the BatchNorm); another ``nn.ReLU``
    module: the module the forward pass calls just before it (torchvision's ResNet-18: ``"1.relu"`` ->
    ``"1.bn1"``). Anything else (a functional ReLU, a residual block) has no separate pre-activation module: None.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} is not a module of the model; names look like: "
                         f"{', '.join(list(n for n in modules if n)[:12])}, ...")
    name, reason = _pre_activation(model, modules, layer)
    return (name, reason) if explain else name


def _pre_activation(model: nn.Module, modules: dict, layer: str) -> tuple[str | None, str]:
    mod = modules[layer]
    kind = type(mod).__name__
    if isinstance(mod, nn.Sequential) and len(mod) >= 2 and isinstance(mod[-1], nn.ReLU):
        pre = f"{layer}.{len(mod) - 2}"
        return pre, f"{layer!r} is a Sequential ending in nn.ReLU: its second-last child {pre!r} holds the pre-activation"
    parent, _, last = layer.rpartition(".")
    if isinstance(mod, nn.ReLU) and isinstance(modules.get(parent), nn.Sequential) and last.isdigit() and int(last) > 0:
        pre = f"{parent}.{int(last) - 1}" if parent else str(int(last) - 1)
        return pre, f"{layer!r} is an nn.ReLU inside a Sequential: it reads its preceding sibling {pre!r}"
    if isinstance(mod, nn.ReLU):
        # a ReLU module used outside a Sequential (torchvision's ResNet stem, relu after bn1): the module the
        # forward pass calls just before it, from the torch.fx call order, unless that is the ReLU's second call
        prefix, body = _body(model)
        try:
            order = _call_order(body)
        except ValueError as err:
            return None, f"{layer!r} is an nn.ReLU outside a Sequential and the model cannot be traced ({err})"
        name = layer[len(prefix):]
        i = order.index(name) if name in order else 0
        if i > 0:
            return prefix + order[i - 1], f"{layer!r} is an nn.ReLU called right after {prefix + order[i - 1]!r} (torch.fx call order)"
        return None, f"{layer!r} is an nn.ReLU that the traced forward pass does not call after another module"
    if not any(isinstance(m, nn.ReLU) for m in mod.modules()):
        return None, (f"{layer!r} is a {kind} without an nn.ReLU module: either it is not followed by an activation "
                      f"(e.g. the logits) or its forward applies a functional ReLU (F.relu), so no module holds the "
                      f"pre-activation (if a functional ReLU follows this layer, its own output is that pre-activation); hook "
                      f"the module that feeds the ReLU (e.g. a block's last BatchNorm) to read it")
    return None, (f"{layer!r} is a {kind}, not an activation: its output is already past its own activations, and "
                  f"a block's inner pre-activation is not this layer's; pass the inner module by name to read it")


@torch.no_grad()
def activations(
    model: nn.Module,
    X: torch.Tensor,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    reduce: str = "mean",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Codes ``{layer name: (N, D) float tensor on the CPU}`` of ``model`` for inputs ``X``.

    A forward hook on each named module (``layers``, default :func:`default_layers`) vectorises its
    output with :func:`vectorise` (channel means for conv outputs, the raw vector for dense ones).
    Runs in eval mode, in batches of ``batch_size``, without gradients; a module called more than once
    in one forward keeps its last output.
    """
    if len(X) == 0:
        raise ValueError("X is empty")
    layers = default_layers(model) if layers is None else list(layers)
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        some = ", ".join(list(n for n in modules if n)[:12])
        raise ValueError(f"layers {missing} are not modules of the model; names look like: {some}, ...")
    device = device_of(model, device)
    store: dict[str, torch.Tensor] = {}

    def hook_for(name):
        def hook(_mod, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            store[name] = vectorise(out, reduce)
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in layers]
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    try:
        with eval_mode(model):
            for i in tqdm(range(0, len(X), batch_size), desc="activations", disable=not progress, leave=False):
                store.clear()
                model(X[i:i + batch_size].to(device))
                for n in layers:
                    if n not in store:
                        raise RuntimeError(f"layer {n!r} was not called in the model's forward pass")
                    parts[n].append(store[n].float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in parts.items()}


# --------------------------------------------------------------------------- SOM
def _grid(rows: int, cols: int) -> torch.Tensor:
    """Grid coordinates ``(rows*cols, 2)`` of the units in row-major order (MiniSom's order)."""
    ii, jj = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([ii.flatten(), jj.flatten()], 1).float()


def _sq_dists(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, K)``, clipped at 0 (the expanded form can go slightly negative)."""
    return ((X * X).sum(1, keepdim=True) - 2 * X @ W.T + (W * W).sum(1)).clamp_min_(0)


@dataclass
class SOM:
    """A fitted rectangular SOM: ``weights`` of shape ``(rows, cols, D)``; ``backend`` says who trained it.

    Methods take codes ``X (N, D)`` and work in batches; unit indices are row-major ``k = i * cols + j``.
    """

    weights: torch.Tensor
    backend: str = "torch"
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.weights.shape[0]), int(self.weights.shape[1])

    @property
    def n_units(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def grid(self) -> torch.Tensor:
        return _grid(*self.shape)

    def _flat(self) -> torch.Tensor:
        return self.weights.reshape(self.n_units, -1)

    def _check(self, X: torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(X, dtype=self.weights.dtype)
        if X.dim() != 2 or X.shape[1] != self.weights.shape[2]:
            raise ValueError(f"codes must be (N, {self.weights.shape[2]}), got {tuple(X.shape)}")
        return X

    def distances(self, X: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Euclidean distances ``(N, K)`` from each code to each unit."""
        X, W = self._check(X), self._flat()
        return torch.cat([_sq_dists(X[i:i + chunk], W).sqrt_() for i in range(0, len(X), chunk)])

    def bmu(self, X: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Best-matching unit per code, ``argmin_k ||x - w_k||`` (first index on ties), as row-major ``k``."""
        X, W = self._check(X), self._flat()
        return torch.cat([_sq_dists(X[i:i + chunk], W).argmin(1) for i in range(0, len(X), chunk)])

    def quantization_error(self, X: torch.Tensor) -> float:
        """Mean distance from each code to its BMU's weight vector (MiniSom's definition)."""
        X = self._check(X)
        return float((X - self._flat()[self.bmu(X)]).norm(dim=1).mean())

    def topographic_error(self, X: torch.Tensor, chunk: int = 4096) -> float:
        """Share of codes whose best and second-best units are not grid neighbours (distance > 1.42,
        so the 8 surrounding units count as neighbours, as in MiniSom's rectangular topology)."""
        X, W, g = self._check(X), self._flat(), self.grid
        if self.n_units < 2:
            return float("nan")
        top2 = torch.cat([_sq_dists(X[i:i + chunk], W).topk(2, dim=1, largest=False).indices
                          for i in range(0, len(X), chunk)])
        return float(((g[top2[:, 0]] - g[top2[:, 1]]).norm(dim=1) > 1.42).float().mean())


def _pca_init(X: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Weights spread over the plane of the first two principal components, ±1 standard deviation."""
    mean = X.mean(0)
    Xc = X - mean
    _, s, Vt = torch.linalg.svd(Xc[: min(len(X), 10000)], full_matrices=False)
    std = s / math.sqrt(max(len(Xc[:10000]) - 1, 1))
    v1 = Vt[0] * std[0]
    v2 = Vt[1] * std[1] if len(std) > 1 else torch.zeros_like(v1)
    a = torch.linspace(-1, 1, rows).view(rows, 1, 1)
    b = torch.linspace(-1, 1, cols).view(1, cols, 1)
    return mean + a * v1 + b * v2


def _fit_torch(X: torch.Tensor, rows: int, cols: int, sigma: float, sigma_end: float, iterations: int,
               init: str, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    N, D = X.shape
    K = rows * cols
    if init == "pca":
        W = _pca_init(X, rows, cols).reshape(K, D)
    elif init == "random":
        W = X[torch.randint(0, N, (K,), generator=generator)].clone()
    else:
        raise ValueError(f"unknown init {init!r}; valid: pca, random")
    X, W = X.to(device), W.to(device)
    g = _grid(rows, cols).to(device)
    gd2 = torch.cdist(g, g).pow(2)
    for t in range(iterations):
        s = sigma * (sigma_end / sigma) ** (t / max(iterations - 1, 1))
        bmu = torch.cat([_sq_dists(X[i:i + 8192], W).argmin(1) for i in range(0, N, 8192)])
        counts = torch.bincount(bmu, minlength=K).to(X.dtype)
        sums = torch.zeros(K, D, dtype=X.dtype, device=device).index_add_(0, bmu, X)
        H = torch.exp(-gd2 / (2 * s * s))
        num, den = H @ sums, H @ counts
        ok = den > 1e-12
        W[ok] = num[ok] / den[ok, None]
    return W.cpu().reshape(rows, cols, D)


def _fit_minisom(X: np.ndarray, rows: int, cols: int, sigma: float, learning_rate: float, iterations: int,
                 seed: int) -> np.ndarray:
    from minisom import MiniSom

    som = MiniSom(rows, cols, X.shape[1], sigma=sigma, learning_rate=learning_rate,
                  neighborhood_function="gaussian", random_seed=seed,
                  sigma_decay_function="inverse_decay_to_one", decay_function="inverse_decay_to_zero")
    som.pca_weights_init(X)
    som.train(X, iterations, random_order=True)
    return som.get_weights()


def check_codes(X: torch.Tensor, name: str = "codes") -> torch.Tensor:
    """``X`` as a float32 (N >= 2, D) tensor of finite codes, or one clear error (a NaN code would make
    every distance NaN and the whole map NaN)."""
    X = torch.as_tensor(X, dtype=torch.float32)
    if X.dim() != 2 or len(X) < 2:
        raise ValueError(f"{name} must be (N >= 2, D), got {tuple(X.shape)}")
    bad = ~torch.isfinite(X)
    if bad.any():
        rows = bad.any(1).nonzero()[:, 0]
        raise ValueError(f"{name} hold {int(bad.sum())} NaN/Inf values in {len(rows)} of {len(X)} rows "
                         f"(first rows {rows[:5].tolist()}); allowed: finite values (check the model's outputs)")
    return X


def fit_som(
    X: torch.Tensor,
    rows: int = 10,
    cols: int = 10,
    sigma: float | None = None,
    sigma_end: float = 1.5,
    iterations: int | None = None,
    backend: str = "torch",
    learning_rate: float = 0.5,
    init: str = "pca",
    standardize: bool = True,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> SOM:
    """Fit a ``rows x cols`` SOM to codes ``X (N, D)``.

    ``backend="torch"`` (the default: at equal quantisation and topographic error 10-12x faster than
    MiniSom, ``benchmarks/bench_som.py``): Kohonen's batch map (see the module docstring),
    ``iterations`` full passes (default 10), ``sigma`` (default ``max(rows, cols) / 2``) decaying
    exponentially to ``sigma_end``, PCA (or ``"random"``-sample) initialisation; runs on ``device``;
    ``learning_rate`` is not used (the batch map has none).
    ``backend="minisom"``: MiniSom's online rule, ``iterations`` single-sample updates in random order
    (default ``2 * N``, two epochs), learning rate ``learning_rate`` with inverse decay to zero and
    ``sigma`` with inverse decay to one, PCA initialisation, seeded by ``seed``. ``iterations`` means
    different things for the two backends: pass it only together with an explicit ``backend``.

    With ``standardize`` each code dimension is z-scored first (dimensions of a layer can differ in
    scale by orders of magnitude); the returned SOM then lives in that standardised space, and
    ``som.info["mean"], som.info["std"]`` hold the transform; map new codes with :func:`standardise`
    before :meth:`SOM.bmu` (:func:`fit_layers` and :func:`mclib.studies.codes.bmu_change` do this for you).
    """
    X = check_codes(X)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    rows, cols = check.positive_int(rows, "rows"), check.positive_int(cols, "cols")
    if rows * cols < 2:
        raise ValueError(f"a SOM needs at least 2 units, got {rows}x{cols}")
    sigma = max(rows, cols) / 2 if sigma is None else check.positive_float(sigma, "sigma")
    sigma_end = check.positive_float(sigma_end, "sigma_end")
    learning_rate = check.positive_float(learning_rate, "learning_rate")
    if iterations is not None:
        iterations = check.positive_int(iterations, "iterations")
    info = {"rows": rows, "cols": cols, "sigma": sigma, "iterations": iterations, "seed": seed}
    if standardize:
        mean, std = X.mean(0), X.std(0).clamp_min(1e-8)
        X = (X - mean) / std
        info.update(mean=mean, std=std)
    if iterations is None:
        iterations = 10 if backend == "torch" else 2 * len(X)
    info["iterations"] = iterations
    if backend == "torch":
        gen = torch.Generator().manual_seed(seed)
        W = _fit_torch(X, rows, cols, sigma, min(sigma_end, sigma), iterations, init, gen, torch.device(device))
        info.update(sigma_end=sigma_end, init=init)
    else:
        W = torch.as_tensor(_fit_minisom(X.double().numpy(), rows, cols, sigma, learning_rate, iterations, seed),
                            dtype=torch.float32)
        info.update(learning_rate=learning_rate)
    return SOM(W, backend, info)


def standardise(som: SOM, X: torch.Tensor) -> torch.Tensor:
    """Codes in the space ``som`` was fitted in (z-scored with the fit's mean/std, if it used any)."""
    X = torch.as_tensor(X, dtype=torch.float32)
    if "mean" in som.info:
        return (X - som.info["mean"]) / som.info["std"]
    return X


# --------------------------------------------------------------------------- metrics
def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in bits along ``dim`` of (unnormalised, non-negative) weights ``p``."""
    p = p / p.sum(dim, keepdim=True).clamp_min(1e-300)
    return -(p * torch.log2(p.clamp_min(1e-300))).sum(dim)


def contingency(bmus: torch.Tensor, labels: torch.Tensor, n_units: int, n_classes: int | None = None) -> torch.Tensor:
    """Counts ``(n_units, n_classes)``: how many inputs of each class have each unit as BMU.

    ``bmus`` must be units in ``0..n_units - 1`` and ``labels`` classes in ``0..n_classes - 1`` (one per
    BMU; ``n_classes`` defaults to the largest label + 1): a label outside would be counted in a
    neighbouring unit's cell, so it raises.
    """
    n_units = check.positive_int(n_units, "n_units")
    bmus = check.labels(bmus, "bmus", num_classes=n_units)
    if n_classes is not None:
        n_classes = check.positive_int(n_classes, "n_classes")
    labels = check.labels(labels, "labels", n=len(bmus), num_classes=n_classes)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    return torch.bincount(bmus * n_classes + labels, minlength=n_units * n_classes).view(n_units, n_classes).double()


def _information(n: torch.Tensor) -> tuple[float, float, float]:
    """From counts ``n(k, c)``: ``H(Y)``, ``H(Y|K)`` and ``I(K; Y) = H(Y) - H(Y|K)``, in bits."""
    N, pk, py = n.sum(), n.sum(1), n.sum(0)
    h_y = float(_entropy(py))
    h_y_given_k = float((pk / N * _entropy(n, 1)).sum())
    return h_y, h_y_given_k, h_y - h_y_given_k


def _purity(n: torch.Tensor) -> float:
    """From counts ``n(k, c)``: ``sum_k max_c n(k, c) / N``."""
    return float(n.max(1).values.sum() / n.sum())


def purity(bmus, labels) -> float:
    """``sum_k max_c n(k, c) / N``: the share of inputs whose BMU's majority class is their own (as in
    :func:`code_metrics`, for BMUs of any map: the units are ``0 .. max(bmus)``)."""
    b, y = torch.as_tensor(bmus).long(), torch.as_tensor(labels).long()
    return _purity(contingency(b, y, int(b.max()) + 1))


def nmi(bmus, labels) -> float:
    """``I(K; Y) / H(Y)`` of BMU and label, in bits (0 when the labels are constant), as in :func:`code_metrics`."""
    b, y = torch.as_tensor(bmus).long(), torch.as_tensor(labels).long()
    h_y, _, mi = _information(contingency(b, y, int(b.max()) + 1))
    return mi / h_y if h_y > 0 else 0.0


def code_metrics(bmus: torch.Tensor, labels: torch.Tensor, grid: torch.Tensor, n_classes: int | None = None) -> dict[str, float]:
    """How inputs spread over a SOM's units, and how much the units say about the label.

    With counts ``n(k, c)`` (:func:`contingency`), ``p(k) = n(k)/N``:

    * ``units_used``: number of distinct BMUs; ``bmu_entropy`` ``H(K)`` in bits and
      ``bmu_entropy_norm`` ``H(K) / log2(n_units)``;
    * ``purity``: ``sum_k max_c n(k, c) / N`` (1 when every unit holds one class);
    * ``mi``: mutual information ``I(K; Y) = H(Y) - H(Y|K)`` in bits, and ``nmi = I / H(Y)``;
    * ``label_entropy_at_bmu``: ``H(Y|K)``, the mean label entropy at an input's BMU;
    * ``within_class_spread``: mean grid distance of an input's BMU to the centroid of its class's
      BMUs (grid units; 0 when each class sits on one unit).
    """
    grid = torch.as_tensor(grid, dtype=torch.float64)
    n = contingency(bmus, labels, len(grid), n_classes)
    N = n.sum()
    pk, py = n.sum(1), n.sum(0)
    h_y, h_y_given_k, mi = _information(n)
    labels = torch.as_tensor(labels).long()
    pos = grid[torch.as_tensor(bmus).long()]
    centroid = (n.T @ grid) / py.clamp_min(1)[:, None]  # (classes, 2)
    spread = float((pos - centroid[labels]).norm(dim=1).mean())
    used = int((pk > 0).sum())
    h_k = float(_entropy(pk))
    return {
        "units_used": used,
        "bmu_entropy": h_k,
        "bmu_entropy_norm": h_k / math.log2(len(grid)) if len(grid) > 1 else 0.0,
        "purity": _purity(n),
        "mi": mi,
        "nmi": mi / h_y if h_y > 0 else 0.0,
        "label_entropy_at_bmu": h_y_given_k,
        "within_class_spread": spread,
    }


def bmu_homogeneity(bmus: torch.Tensor, labels: torch.Tensor, n_units: int, n_classes: int | None = None,
                    query: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per input, how homogeneous its code is: label statistics of the inputs sharing its BMU.

    The unit statistics come from ``(bmus, labels)`` (the SOM's fitting set); they are read at
    ``query`` BMUs (default: ``bmus``). Returns ``label_entropy`` (bits; high = many classes share
    the code, i.e. a homogeneous, class-unspecific code), ``n_classes`` (classes present at the unit)
    and ``hits`` (inputs at the unit).
    """
    n = contingency(bmus, labels, n_units, n_classes)
    q = torch.as_tensor(bmus if query is None else query).long()
    return {"label_entropy": _entropy(n, 1)[q].float(), "n_classes": (n > 0).sum(1)[q],
            "hits": n.sum(1)[q].long()}


@dataclass
class LayerCodes:
    """Codes of one model: per-layer SOMs, BMUs and metrics (a ``pandas.DataFrame``, layers in order)."""

    layers: list[str]
    soms: dict[str, SOM]
    bmus: dict[str, torch.Tensor]
    metrics: "object"  # pandas.DataFrame


def held_out_metrics(som: SOM, fit_bmus: torch.Tensor, fit_labels: torch.Tensor, A: torch.Tensor,
                     labels: torch.Tensor, n_classes: int | None = None) -> dict[str, float]:
    """Metrics of a fitted SOM on codes it was *not* fitted on: :func:`code_metrics` of their BMUs (the
    unit-label association measured on new inputs) and ``majority_acc``, the share of new inputs whose label
    is the majority class of their BMU in the fitting set (a unit no fitting input reached counts as wrong)
    -- the held-out counterpart of ``purity``, which is measured on the inputs that shaped the map."""
    labels = torch.as_tensor(labels).long()
    n_classes = int(n_classes or max(int(labels.max()), int(torch.as_tensor(fit_labels).max())) + 1)
    b = som.bmu(standardise(som, A))
    fit = contingency(fit_bmus, fit_labels, som.n_units, n_classes)
    majority = torch.where(fit.sum(1) > 0, fit.argmax(1), torch.full((som.n_units,), -1, dtype=torch.long))
    out = code_metrics(b, labels, som.grid, n_classes)
    out["majority_acc"] = float((majority[b.long()] == labels).double().mean())
    return out


def fit_layers(acts: Mapping[str, torch.Tensor], labels: torch.Tensor, progress: bool = False,
               held_out: tuple[Mapping[str, torch.Tensor], torch.Tensor] | None = None, **som_kw) -> LayerCodes:
    """Fit one SOM per layer (:func:`fit_som` with ``som_kw``) and compute :func:`code_metrics` plus
    quantisation and topographic error for each; returns a :class:`LayerCodes`.

    These metrics are *in sample*: the SOM was fitted on the same codes, so purity and NMI are optimistic
    (a large map can give every input a unit of its own). ``held_out=(acts_new, labels_new)`` -- codes of the
    same layers for other inputs -- adds the :func:`held_out_metrics` of each layer next to them, as columns
    ``<metric>_held_out`` (``purity_held_out``, ``nmi_held_out``, ``majority_acc_held_out``, ...).
    """
    import pandas as pd

    labels = check.labels(labels, "labels")
    n_classes = int(labels.max()) + 1
    if held_out is not None:
        acts_new, labels_new = held_out
        labels_new = torch.as_tensor(labels_new).long()
        missing = [n for n in acts if n not in acts_new]
        if missing:
            raise ValueError(f"held_out codes lack the layers {missing}; compute them with the same layers")
        n_classes = max(n_classes, int(labels_new.max()) + 1)
    soms, bmus, rows = {}, {}, []
    for depth, (name, A) in enumerate(tqdm(acts.items(), desc="SOMs", disable=not progress, leave=False)):
        if len(A) != len(labels):
            raise ValueError(f"layer {name!r} has {len(A)} codes but there are {len(labels)} labels")
        som = fit_som(A, **som_kw)
        Z = standardise(som, A)
        b = som.bmu(Z)
        soms[name], bmus[name] = som, b
        row = {"layer": name, "depth": depth, "dim": int(A.shape[1]), **code_metrics(b, labels, som.grid, n_classes),
               "quantization_error": som.quantization_error(Z), "topographic_error": som.topographic_error(Z)}
        if held_out is not None:
            if len(acts_new[name]) != len(labels_new):
                raise ValueError(f"held-out layer {name!r} has {len(acts_new[name])} codes but there are "
                                 f"{len(labels_new)} held-out labels")
            row.update({f"{k}_held_out": v for k, v in
                        held_out_metrics(som, b, labels, acts_new[name], labels_new, n_classes).items()})
        rows.append(row)
    return LayerCodes(list(acts), soms, bmus, pd.DataFrame(rows).set_index("layer"))


# --- plots
def plot_layer_metrics(tables: Mapping[str, "object"], metrics: Iterable[str] = ("purity", "nmi", "bmu_entropy_norm",
                       "within_class_spread", "quantization_error", "topographic_error"), axes=None):
    """Per-layer metric curves, input to output, one line per model (``tables``: name -> metrics frame)."""
    import matplotlib.pyplot as plt

    metrics = list(metrics)
    if axes is None:
        cols = 3
        _, axes = plt.subplots((len(metrics) + cols - 1) // cols, cols, figsize=(10, 3.0 * ((len(metrics) + 2) // 3)),
                               constrained_layout=True, squeeze=False)
    axes = np.asarray(axes).ravel()
    for ax, m in zip(axes, metrics):
        for name, t in tables.items():
            depth = np.linspace(0, 1, len(t)) if len(t) > 1 else np.zeros(1)
            ax.plot(depth, t[m].to_numpy(), "o-", label=name, ms=4)
        ax.set_title(m.replace("_", " "))
        ax.set_xlabel("relative depth (0 = first layer, 1 = logits)")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend()
    return axes


def plot_som_map(ax, som: SOM, bmus: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None, title: str = ""):
    """A SOM's grid: each unit coloured by its majority class (opacity = purity), with its hit count."""
    import matplotlib.pyplot as plt

    rows, cols = som.shape
    n = contingency(bmus, labels, som.n_units, n_classes).numpy()
    hits = n.sum(1)
    cmap = plt.get_cmap("tab10")
    img = np.ones((rows, cols, 4))
    for k in range(som.n_units):
        if hits[k] > 0:
            c = np.array(cmap(int(n[k].argmax()) % 10))
            c[3] = 0.25 + 0.75 * n[k].max() / hits[k]
            img[k // cols, k % cols] = c
    ax.imshow(img, interpolation="nearest")
    for k in range(som.n_units):
        if hits[k] > 0:
            ax.text(k % cols, k // cols, int(hits[k]), ha="center", va="center", fontsize="small")
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)
    ax.set_title(title)
    return ax


def plot_class_legend(fig, n_classes: int = 10, **kw):
    """A figure legend with the class colours used by :func:`plot_som_map`."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cmap = plt.get_cmap("tab10")
    handles = [Patch(color=cmap(c % 10), label=str(c)) for c in range(n_classes)]
    kw.setdefault("loc", "outside lower center")
    kw.setdefault("ncols", n_classes)
    kw.setdefault("title", "majority class")
    return fig.legend(handles=handles, **kw)
