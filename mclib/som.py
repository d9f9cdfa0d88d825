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
   is (:func:`bmu_homogeneity`: label entropy and number of classes at its BMU) against the smallest
   PGD radius that flips its prediction (:func:`minimal_eps`), with a bootstrap interval for the
   Spearman correlation (:func:`spearman_ci`); per layer, the share of inputs whose BMU changes under
   attack (:func:`bmu_change`).

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

from mclib import stats
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
    before :meth:`SOM.bmu` (:func:`fit_layers` and :func:`bmu_change` do this for you).
    """
    X = check_codes(X)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError(f"a SOM needs at least 2 units, got {rows}x{cols}")
    sigma = max(rows, cols) / 2 if sigma is None else float(sigma)
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
    """Counts ``(n_units, n_classes)``: how many inputs of each class have each unit as BMU."""
    bmus, labels = torch.as_tensor(bmus).long(), torch.as_tensor(labels).long()
    if bmus.shape != labels.shape:
        raise ValueError(f"bmus and labels differ in shape: {tuple(bmus.shape)} vs {tuple(labels.shape)}")
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    return torch.bincount(bmus * n_classes + labels, minlength=n_units * n_classes).view(n_units, n_classes).double()


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
    h_y = float(_entropy(py))
    h_y_given_k = float((pk / N * _entropy(n, 1)).sum())
    mi = h_y - h_y_given_k
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
        "purity": float(n.max(1).values.sum() / N),
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


def fit_layers(acts: Mapping[str, torch.Tensor], labels: torch.Tensor, progress: bool = False, **som_kw) -> LayerCodes:
    """Fit one SOM per layer (:func:`fit_som` with ``som_kw``) and compute :func:`code_metrics` plus
    quantisation and topographic error for each; returns a :class:`LayerCodes`."""
    import pandas as pd

    labels = torch.as_tensor(labels).long()
    n_classes = int(labels.max()) + 1
    soms, bmus, rows = {}, {}, []
    for depth, (name, A) in enumerate(tqdm(acts.items(), desc="SOMs", disable=not progress, leave=False)):
        if len(A) != len(labels):
            raise ValueError(f"layer {name!r} has {len(A)} codes but there are {len(labels)} labels")
        som = fit_som(A, **som_kw)
        Z = standardise(som, A)
        b = som.bmu(Z)
        soms[name], bmus[name] = som, b
        rows.append({"layer": name, "depth": depth, "dim": int(A.shape[1]),
                     **code_metrics(b, labels, som.grid, n_classes),
                     "quantization_error": som.quantization_error(Z), "topographic_error": som.topographic_error(Z)})
    return LayerCodes(list(acts), soms, bmus, pd.DataFrame(rows).set_index("layer"))


# --------------------------------------------------------------------------- vulnerability
@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def minimal_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_max: float,
    resolution: int = 64,
    steps: int = 10,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    progress: bool = False,
    stop_on_success: bool = False,
) -> torch.Tensor:
    """Smallest PGD radius that flips each input's prediction, by binary search on ``eps``.

    The search runs on the grid ``eps_j = eps_max * j / resolution``: every bisection step attacks
    every still-open input once with ``mclib.attacks.pgd`` (``steps`` steps, random start),
    grouping inputs that share the same midpoint into one batched call, so the work is
    ``N * log2(resolution)`` attacks. Returns ``(N,)`` radii: 0 for inputs already misclassified,
    ``inf`` for inputs PGD cannot flip at ``eps_max``; otherwise the smallest grid radius found
    to flip (accurate to ``eps_max / resolution``, assuming success is monotone in eps).

    ``stop_on_success``: each attack stops an input at its first misclassified iterate (``pgd``'s option), so an
    input counts as flipped when any of the ``steps`` iterates flips it, and flipped inputs cost no further steps.
    """
    from mclib.attacks import pgd

    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if eps_max <= 0 or resolution < 1:
        raise ValueError(f"need eps_max > 0 and resolution >= 1, got {eps_max}, {resolution}")
    device = device_of(model)
    x, y = x.to(device), y.to(device)

    def flips(idx: torch.Tensor, j: int) -> torch.Tensor:
        adv = pgd(model, x[idx], y[idx], eps=eps_max * j / resolution, steps=steps, norm=norm, generator=generator,
                  stop_on_success=stop_on_success)
        return _predict(model, adv) != y[idx]

    with eval_mode(model):
        out = torch.full((len(x),), float("inf"))
        wrong = (_predict(model, x) != y).cpu()
        out[wrong] = 0.0
        open_ = (~wrong).nonzero().flatten()
        hit = flips(open_.to(device), resolution).cpu() if len(open_) else torch.zeros(0, dtype=torch.bool)
        lo = torch.zeros(len(x), dtype=torch.long)          # known not to flip (index 0: clean input)
        hi = torch.full((len(x),), resolution, dtype=torch.long)  # known to flip
        todo = open_[hit]
        todo = todo[hi[todo] - lo[todo] > 1]
        bar = tqdm(total=max(1, math.ceil(math.log2(resolution))), desc="eps search", disable=not progress, leave=False)
        while len(todo):
            mid = (lo[todo] + hi[todo]) // 2
            for j in mid.unique().tolist():
                sel = todo[mid == j]
                f = flips(sel.to(device), j).cpu()
                hi[sel[f]] = j
                lo[sel[~f]] = j
            todo = todo[hi[todo] - lo[todo] > 1]
            bar.update(1)
        bar.close()
        done = open_[hit]
        out[done] = hi[done].float() * eps_max / resolution
        return out


def bmu_change(model: nn.Module, X: torch.Tensor, X_adv: torch.Tensor, codes: LayerCodes,
               batch_size: int = 256, reduce: str = "mean") -> dict[str, float]:
    """Per layer, the share of inputs whose BMU differs between ``X`` and its attacked copy ``X_adv``
    (both mapped through the layer's SOM from ``codes``)."""
    if X.shape != X_adv.shape:
        raise ValueError(f"X and X_adv differ in shape: {tuple(X.shape)} vs {tuple(X_adv.shape)}")
    a = activations(model, X, codes.layers, batch_size, reduce)
    b = activations(model, X_adv, codes.layers, batch_size, reduce)
    out = {}
    for n in codes.layers:
        som = codes.soms[n]
        out[n] = float((som.bmu(standardise(som, a[n])) != som.bmu(standardise(som, b[n]))).float().mean())
    return out


def spearman_ci(a, b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho between ``a`` and ``b`` with a percentile bootstrap interval over pairs
    (:func:`mclib.stats.correlation`, same seed, same resamples).

    Ranks use average ties, so ``inf`` entries (inputs no radius flips) tie at the top. They are ranked here
    and the ranks handed on: ranking is invariant under the monotone map value -> rank, so every bootstrap
    resample ranks exactly as the raw values would. Returns ``(rho, low, high)``.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"need two 1-D arrays of equal length >= 3, got {a.shape} and {b.shape}")
    c = stats.correlation(rankdata(a), rankdata(b), n_boot=n_boot, seed=seed, level=level)
    return c["spearman"], c["spearman_lo"], c["spearman_hi"]


# --------------------------------------------------------------------------- plots
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
            ax.text(k % cols, k // cols, int(hits[k]), ha="center", va="center", fontsize=6)
    ax.set_xticks([]), ax.set_yticks([])
    ax.grid(False)
    ax.set_title(title)
    return ax


def class_legend(fig, n_classes: int = 10, **kw):
    """A figure legend with the class colours used by :func:`plot_som_map`."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cmap = plt.get_cmap("tab10")
    handles = [Patch(color=cmap(c % 10), label=str(c)) for c in range(n_classes)]
    kw.setdefault("loc", "outside lower center")
    kw.setdefault("ncols", n_classes)
    kw.setdefault("title", "majority class")
    return fig.legend(handles=handles, **kw)


# --------------------------------------------------------------------------- B3 condition map
# The paper leaves the shallow layer, the SOM size and the SOM protocol open, so claim B3 is measured over a
# small map of these choices (issue 16). The expensive part, the minimal flipping radius of every evaluated input
# (:func:`minimal_eps`), is computed once per model and vulnerability measure and reused by every SOM setting.

#: Keys a SOM protocol (:func:`fit_protocol`) may hold, and what each means.
PROTOCOL_KEYS = {
    "backend": "'minisom' (online rule) or 'torch' (batch map)",
    "standardize": "z-score each code dimension before fitting (bool)",
    "sigma": "initial neighbourhood width (default: half the longer map side)",
    "sigma_end": "final neighbourhood width (batch map only; MiniSom's schedule always ends at 1)",
    "epochs": "passes over the fitting codes (MiniSom: epochs * N single-sample updates; batch map: epochs passes)",
    "learning_rate": "MiniSom's initial learning rate",
    "fit_on": "name of the code set the SOM is fitted on (e.g. 'test', 'train', 'evaluated')",
}


def spearman_n_for_power(rho: float, level: float = 0.95, power: float = 0.8) -> int:
    """Inputs needed so that a Spearman correlation of ``|rho|`` excludes zero from its ``level`` interval with
    probability ``power``.

    Fisher's ``z = atanh(r_s)`` of a Spearman correlation is close to normal with variance ``1.06 / (n - 3)``
    (Fieller, Hartley & Pearson 1957), so ``n = 3 + 1.06 ((z_{(1+level)/2} + z_power) / atanh|rho|)^2``,
    rounded up. ``rho = 0.15`` at 95 % and 80 % power needs 368 inputs; the interval's half-width at
    ``rho = 0`` is :func:`spearman_halfwidth`.
    """
    from scipy.stats import norm

    if not 0 < abs(rho) < 1:
        raise ValueError(f"rho must lie in (-1, 1) without 0, got {rho!r}")
    if not 0 < level < 1 or not 0 < power < 1:
        raise ValueError(f"level and power must lie in (0, 1), got level={level!r}, power={power!r}")
    z = (norm.ppf((1 + level) / 2) + norm.ppf(power)) / math.atanh(abs(rho))
    return math.ceil(3 + 1.06 * z * z)


def spearman_halfwidth(n: int, level: float = 0.95) -> float:
    """Half-width of the ``level`` interval of a Spearman correlation near 0 from ``n`` inputs:
    ``tanh(z_{(1+level)/2} sqrt(1.06 / (n - 3)))`` (Fisher's z with the Fieller-Hartley-Pearson variance);
    100 inputs give 0.20, 400 give 0.10."""
    from scipy.stats import norm

    if n < 4:
        raise ValueError(f"n must be at least 4, got {n!r}")
    return math.tanh(norm.ppf((1 + level) / 2) * math.sqrt(1.06 / (n - 3)))


def pre_activation(model: nn.Module, layer: str) -> str | None:
    """Name of the module whose output the ReLU ``layer`` reads -- the code *before* the activation -- or None.

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
    mod = modules[layer]
    if isinstance(mod, nn.Sequential) and len(mod) >= 2 and isinstance(mod[-1], nn.ReLU):
        return f"{layer}.{len(mod) - 2}"
    parent, _, last = layer.rpartition(".")
    if isinstance(mod, nn.ReLU) and isinstance(modules.get(parent), nn.Sequential) and last.isdigit() and int(last) > 0:
        return f"{parent}.{int(last) - 1}" if parent else str(int(last) - 1)
    if isinstance(mod, nn.ReLU):
        # a ReLU module used outside a Sequential (torchvision's ResNet stem, relu after bn1): the module the
        # forward pass calls just before it, from the torch.fx call order, unless that is the ReLU's second call
        prefix, body = _body(model)
        try:
            order = _call_order(body)
        except ValueError:
            return None
        name = layer[len(prefix):]
        i = order.index(name) if name in order else 0
        return prefix + order[i - 1] if i > 0 else None
    return None


def shallow_layers(model: nn.Module) -> dict[str, str]:
    """The shallow codes B3 can read, ``{label: module name}``: ``"L1"`` the first hooked layer of
    :func:`default_layers` (after its activation), ``"L1 pre-ReLU"`` the same layer before its activation where
    the model has it as a module (:func:`pre_activation`), and ``"L2"`` the second hooked layer."""
    names = default_layers(model)
    out = {"L1": names[0]}
    pre = pre_activation(model, names[0])
    if pre is not None:
        out["L1 pre-ReLU"] = pre
    if len(names) > 2:           # the last hooked layer is the logits, not a shallow code
        out["L2"] = names[1]
    return out


def fit_protocol(X: torch.Tensor, rows: int, cols: int, protocol: Mapping, seed: int = 0) -> SOM:
    """:func:`fit_som` with a SOM protocol given as a mapping (keys ``PROTOCOL_KEYS``; ``fit_on`` is read by
    the caller, not here). ``epochs`` counts passes over ``X``; missing keys take :func:`fit_som`'s defaults,
    except ``backend`` which defaults to ``"minisom"`` so a protocol means the same whatever fit_som's default."""
    unknown = sorted(set(protocol) - set(PROTOCOL_KEYS))
    if unknown:
        raise ValueError(f"unknown SOM protocol key(s) {unknown}; allowed: {', '.join(PROTOCOL_KEYS)}")
    p = dict(protocol)
    p.pop("fit_on", None)
    backend = p.pop("backend", "minisom")
    epochs = p.pop("epochs", None)
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise ValueError(f"protocol epochs must be a positive integer, got {epochs!r}")
    if backend == "minisom" and "sigma_end" in p:
        raise ValueError("protocol key sigma_end needs backend='torch'; MiniSom's neighbourhood always decays to 1")
    iterations = None if epochs is None else int(epochs) * (len(X) if backend == "minisom" else 1)
    return fit_som(X, rows, cols, backend=backend, iterations=iterations, seed=seed, **p)


def one_at_a_time(base: Mapping, variations: Mapping[str, Sequence]) -> list[dict]:
    """A one-at-a-time design: ``base`` first, then for each key of ``variations`` each of its values that
    differs from the base, with every other key at its base value. ``variations`` may only vary keys of
    ``base``."""
    extra = sorted(set(variations) - set(base))
    if extra:
        raise ValueError(f"variations name keys {extra} that the base setting {dict(base)} lacks")
    out = [dict(base)]
    for key, values in variations.items():
        out += [{**base, key: v} for v in values if v != base[key] and {**base, key: v} not in out]
    return out


def _size(som_size: str) -> tuple[int, int]:
    try:
        rows, cols = (int(s) for s in str(som_size).lower().split("x"))
    except ValueError:
        raise ValueError(f"a SOM size is written 'ROWSxCOLS' (e.g. '10x10'), got {som_size!r}") from None
    return rows, cols


def _rank_finite(eps: torch.Tensor) -> np.ndarray:
    """Radii with ``inf`` (not flipped within the search) replaced by a value above every finite radius: the
    ranks, and so Spearman's rho, are those of the censored radii with the censored inputs tied at the top."""
    e = torch.as_tensor(eps, dtype=torch.float64).numpy().copy()
    fin = np.isfinite(e)
    e[~fin] = (e[fin].max() if fin.any() else 0.0) * 2 + 1
    return e


def homogeneity(A_fit: torch.Tensor, y_fit: torch.Tensor, A_eval: torch.Tensor, som_size: str, protocol: Mapping,
                seed: int = 0, n_classes: int | None = None) -> tuple[torch.Tensor, SOM, torch.Tensor]:
    """Per evaluated input, the label entropy (bits) at its BMU on a SOM fitted to the codes ``A_fit`` (labels
    ``y_fit``) with ``protocol`` (:func:`fit_protocol`) and size ``som_size`` (``"ROWSxCOLS"``).

    The unit statistics come from the fitting set only (:func:`bmu_homogeneity` with ``query`` the evaluated
    inputs' BMUs), so when the SOM is fitted on other inputs an evaluated input's own label does not enter its
    homogeneity. Returns ``(label_entropy (N_eval,), the SOM, the fitting codes in the SOM's space)``.
    """
    rows, cols = _size(som_size)
    y_fit = torch.as_tensor(y_fit).long()
    m = fit_protocol(A_fit, rows, cols, protocol, seed)
    Z = standardise(m, A_fit)
    query = m.bmu(standardise(m, check_codes(A_eval, "evaluated codes")))
    h = bmu_homogeneity(m.bmu(Z), y_fit, m.n_units, n_classes=n_classes, query=query)["label_entropy"]
    return h, m, Z


def condition_map(model: nn.Module, X_eval: torch.Tensor, y_eval: torch.Tensor, eps: Mapping[str, torch.Tensor],
                  settings: Sequence[Mapping], layers: Mapping[str, str], protocols: Mapping[str, Mapping],
                  fit_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_boot: int = 2000, seed: int = 0,
                  batch_size: int = 256, tag: Mapping | None = None, progress: bool = False) -> list[dict]:
    """Spearman's rho between shallow-code homogeneity and vulnerability, for each setting of a condition map.

    Each setting is a mapping with ``layer`` (a key of ``layers``, which maps it to a module name), ``som``
    (``"ROWSxCOLS"``), ``protocol`` (a key of ``protocols``, see :func:`fit_protocol`; its ``fit_on`` names a key
    of ``fit_sets``, or ``"evaluated"`` for ``X_eval`` itself) and ``vulnerability`` (a key of ``eps``: one radius
    per evaluated input from :func:`minimal_eps`, computed once and shared by all settings). Per setting: the
    layer's codes of the fitting set get a SOM; each evaluated input's homogeneity is the label entropy at its
    BMU among the fitting set's inputs (:func:`bmu_homogeneity`); rho is :func:`mclib.stats.correlation`'s
    Spearman estimate with its pairs-bootstrap interval, inputs not flipped within the search ranked last.

    Returns one entry per setting, ``{"setting": {**tag, **setting}, "measured": {"spearman": {estimate, lo, hi,
    n, p}, "module", "censored", "units_used", "quantization_error", "topographic_error"}}``, the form claims
    record under ``values["conditions"]``. Codes are computed once per (fitting set, module).
    """

    y_eval = torch.as_tensor(y_eval).long()
    sets = {**fit_sets, "evaluated": (X_eval, y_eval)}
    for s in settings:
        missing = [k for k in ("layer", "som", "protocol", "vulnerability") if k not in s]
        if missing:
            raise ValueError(f"setting {dict(s)} lacks {missing}")
        for key, table in (("layer", layers), ("protocol", protocols), ("vulnerability", eps)):
            if s[key] not in table:
                raise ValueError(f"setting {dict(s)}: unknown {key} {s[key]!r}; known: {', '.join(map(str, table))}")
        fit_on = protocols[s["protocol"]].get("fit_on", "evaluated")
        if fit_on not in sets:
            raise ValueError(f"protocol {s['protocol']!r} fits on {fit_on!r}, not a code set; known: {', '.join(sets)}")
        if len(eps[s["vulnerability"]]) != len(X_eval):
            raise ValueError(f"vulnerability {s['vulnerability']!r} has {len(eps[s['vulnerability']])} radii for "
                             f"{len(X_eval)} evaluated inputs")
    needed: dict[str, set] = {}
    for s in settings:
        needed.setdefault(protocols[s["protocol"]].get("fit_on", "evaluated"), set()).add(layers[s["layer"]])
    needed.setdefault("evaluated", set()).update(layers[s["layer"]] for s in settings)
    codes = {name: activations(model, sets[name][0], sorted(mods), batch_size) for name, mods in needed.items()}
    out = []
    for s in tqdm(settings, desc="condition map", disable=not progress, leave=False):
        proto, module = protocols[s["protocol"]], layers[s["layer"]]
        fit_on = proto.get("fit_on", "evaluated")
        h, m, Z = homogeneity(codes[fit_on][module], sets[fit_on][1], codes["evaluated"][module], s["som"], proto,
                              seed, n_classes=int(max(torch.as_tensor(sets[fit_on][1]).max(), y_eval.max())) + 1)
        e = eps[s["vulnerability"]]
        c = stats.correlation(h.double().numpy(), _rank_finite(e), n_boot=n_boot, seed=seed)
        out.append({"setting": {**(tag or {}), **s}, "measured": {
            "spearman": {"estimate": c["spearman"], "lo": c["spearman_lo"], "hi": c["spearman_hi"], "n": c["n"],
                         "p": c["spearman_p"]},
            "module": module, "censored": int(torch.isinf(torch.as_tensor(e)).sum()),
            "units_used": int(m.bmu(Z).unique().numel()), "quantization_error": m.quantization_error(Z),
            "topographic_error": m.topographic_error(Z)}})
    return out


def summarise_conditions(conditions: Sequence[Mapping], key: str = "spearman", effect: float = 0.15,
                         alpha: float = 0.05) -> dict:
    """Where a correlation lives across a condition map: counts of settings whose interval of ``measured[key]``
    lies below 0 (``negative``), above 0 (``positive``), spans 0 but lies inside ``(-effect, effect)`` (``small``:
    no effect of ``|rho| >= effect`` either way), or spans 0 and reaches beyond ``±effect`` (``undecided``), plus
    ``settings``, the largest interval half-width and the range of the estimates. Settings without a finite
    interval count as ``undecided``.

    Many settings make some intervals miss 0 by chance (``alpha`` times the number of settings, expected, when
    there is no effect anywhere), so ``holm`` counts the settings whose p-value (``measured[key]["p"]``) survives
    Holm's step-down correction at family-wise level ``alpha``: with the ``m`` p-values sorted, the ``i``-th
    smallest (from 0) is rejected while ``p_(i) <= alpha / (m - i)``.
    """
    out = {"settings": len(conditions), "negative": 0, "positive": 0, "small": 0, "undecided": 0}
    halves, ests = [], []
    for c in conditions:
        iv = c["measured"][key]
        lo, hi, est = iv.get("lo"), iv.get("hi"), iv.get("estimate")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            out["undecided"] += 1
            continue
        halves.append((hi - lo) / 2)
        if est is not None and math.isfinite(est):
            ests.append(est)
        kind = ("negative" if hi < 0 else "positive" if lo > 0 else "small" if -effect < lo and hi < effect
                else "undecided")
        out[kind] += 1
    out["max_halfwidth"] = max(halves) if halves else math.nan
    out["estimate_range"] = (min(ests), max(ests)) if ests else (math.nan, math.nan)
    ps = sorted(p for c in conditions if (p := c["measured"][key].get("p")) is not None and math.isfinite(p))
    out["holm"] = next((i for i, p in enumerate(ps) if p > alpha / (len(ps) - i)), len(ps))
    out["expected_by_chance"] = alpha * len(conditions)
    return out


def plot_conditions(conditions: Sequence[Mapping], key: str = "spearman", effect: float = 0.15, ax=None,
                    label_keys: Sequence[str] | None = None, xlabel: str = "Spearman's rho"):
    """Dot-and-whisker plot of a condition map: one row per setting, the estimate of ``measured[key]`` with its
    interval, zero and ``±effect`` marked, one colour per ``setting["model"]`` (if recorded). Row labels show the
    setting's ``label_keys`` (default: the keys, other than ``model``, whose value differs between settings)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.32 * len(conditions) + 1.2), constrained_layout=True)
    models_ = list(dict.fromkeys(str(c["setting"].get("model", "")) for c in conditions))
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(models_)}
    ypos = np.arange(len(conditions))[::-1]
    if label_keys is None:
        keys_ = list(dict.fromkeys(k for c in conditions for k in c["setting"] if k != "model"))
        label_keys = [k for k in keys_ if len({str(c["setting"].get(k)) for c in conditions}) > 1] or keys_
    labels = []
    for yp, c in zip(ypos, conditions):
        iv, st = c["measured"][key], c["setting"]
        est, lo, hi = (np.nan if iv.get(k) is None else iv[k] for k in ("estimate", "lo", "hi"))
        colour = colours[str(st.get("model", ""))]
        ax.errorbar([est], [yp], xerr=[[est - lo], [hi - est]], fmt="o", color=colour, ms=4, capsize=2)
        labels.append(", ".join(str(st[k]) for k in label_keys if k in st))
    ax.axvline(0, color="black", lw=0.8)
    for x in (-effect, effect):
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_yticks(ypos, labels, fontsize=7)
    ax.set_xlabel(f"{xlabel} (95% bootstrap interval); dashed: ±{effect:g}")
    if len(models_) > 1 or models_[0]:
        from matplotlib.lines import Line2D
        ax.legend([Line2D([], [], marker="o", color=colours[m], ls="") for m in models_], models_, fontsize=7,
                  loc="best")
    return ax
