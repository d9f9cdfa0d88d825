"""Model repair along weight-space curves with limited bonafide data, and its baselines.

Zhao et al. (2020, "Bridging mode connectivity in loss landscapes and adversarial robustness",
sec. 3) repair two *tampered* models -- backdoored (sec. 3.1) or error-injected (sec. 3.2) -- that
share an architecture: a quadratic Bezier curve (:class:`mclib.curves.Curve`) joins them, its bend is
trained on :math:`N` clean (*bonafide*) samples only, and a point :math:`w(t)` inside the path keeps
clean accuracy while losing the tampering. The bonafide data are drawn from one half of the test
split; every number is measured on the other half (:func:`split_bonafide`).

Baselines get the same bonafide data and the same budget (epochs, batch size, learning rate)
(Zhao et al. sec. 3.1, Table 1): :func:`finetune` an endpoint, train :func:`from_scratch`,
:func:`prune_finetune` (L1 filter pruning of the last convolution, Li et al. 2017, then fine-tuning;
cf. fine-pruning, Liu et al. 2018) and :func:`weight_noise` (a Gaussian perturbation of an endpoint
as far from it, in L2, as the curve point). :func:`clean_and_asr` measures clean accuracy and attack
success rate (ASR) of a repaired model; :func:`trigger_gradient_mass` says what bonafide data can teach the
weights that read a trigger. The chapters' study -- sweeps over the bonafide size N, Table 1's comparison of
every method, the condition maps -- is :mod:`mclib.studies.bonafide`.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mclib import curves, train
from mclib.attacks import backdoor
from mclib.torchutil import device_of, eval_mode

#: The training budget every repair method shares unless told otherwise.
DEFAULT_BUDGET = {"epochs": 50, "batch_size": 64, "lr": 1e-2, "optimizer": "sgd", "weight_decay": 5e-4}


def split_bonafide(X_test: torch.Tensor, y_test: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   seed: int = 2020):
    """``(X_bona, y_bona, X_eval, y_eval)``: ``n`` bonafide samples from one half of the test split, the other half for evaluation.

    The halves are fixed (a permutation seeded by ``seed``, independent of the run) and disjoint, so
    every method and every ``n`` is evaluated on the same images. Within the bonafide half the ``n``
    samples are the first ``n`` of an order drawn from ``generator`` (the half's fixed order without
    one), so smaller sets are subsets of larger ones. Zhao et al. sec. 3: N = 50 .. 2500 of CIFAR-10's
    5000-image half.
    """
    if len(X_test) != len(y_test):
        raise ValueError(f"X_test and y_test differ in length: {len(X_test)} vs {len(y_test)}")
    perm = torch.randperm(len(X_test), generator=torch.Generator().manual_seed(seed))
    half = len(X_test) // 2
    bona, evaluation = perm[:half], perm[half:]
    if not isinstance(n, int) or not 0 < n <= half:
        raise ValueError(f"n must be an int in 1..{half} (half of the {len(X_test)} test images), got {n!r}")
    if generator is not None:
        bona = bona[torch.randperm(half, generator=generator)]
    bona = bona[:n]
    return X_test[bona], y_test[bona], X_test[evaluation], y_test[evaluation]


def training_budget(kw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training budget every repair method shares: :data:`DEFAULT_BUDGET` updated by ``kw`` (unknown keys
    raise, naming the valid ones)."""
    b = dict(DEFAULT_BUDGET)
    b.update(kw or {})
    unknown = set(b) - set(DEFAULT_BUDGET)
    if unknown:
        raise ValueError(f"unknown budget keys {sorted(unknown)}; valid: {sorted(DEFAULT_BUDGET)}")
    return b


def path_repair(m0: nn.Module, m1: nn.Module, X_bona: torch.Tensor, y_bona: torch.Tensor, kind: str = "bezier",
                num_bends: int = 1, generator: torch.Generator | None = None, device=None, progress: bool = False,
                **budget) -> curves.Curve:
    """Path connection repair (Zhao et al. sec. 3): a curve between two tampered models trained on bonafide data only.

    Builds ``Curve([m0, m1], kind, num_bends)`` (bend on the straight line) and trains it with
    :func:`mclib.curves.train_curve` on ``(X_bona, y_bona)`` with the budget ``epochs``, ``batch_size``,
    ``lr``, ``optimizer``, ``weight_decay`` (defaults :data:`DEFAULT_BUDGET`). The training losses are
    in ``curve.losses`` (:class:`mclib.curves.Curve`). Evaluate points with ``curve.at(t, bn_data=X_bona)``.
    """
    b = training_budget(budget)
    curve = curves.Curve([m0, m1], kind=kind, num_bends=num_bends)
    curves.train_curve(curve, X_bona, y_bona, generator=generator, device=device, progress=progress,
                       desc="path repair", **b)
    return curve


def _fit(model: nn.Module, X, y, b: Mapping[str, Any], generator, device, progress, desc) -> nn.Module:
    train.fit(model, X, y, epochs=b["epochs"], batch_size=b["batch_size"], lr=b["lr"], optimizer=b["optimizer"],
              weight_decay=b["weight_decay"], generator=generator, device=device_of(model, device),
              progress=progress, desc=desc)
    return model.eval()


def finetune(model: nn.Module, X_bona: torch.Tensor, y_bona: torch.Tensor, generator: torch.Generator | None = None,
             device=None, progress: bool = False, **budget) -> nn.Module:
    """Baseline: a copy of ``model`` fine-tuned on the bonafide data with the same budget (Zhao et al. Table 1)."""
    return _fit(copy.deepcopy(model), X_bona, y_bona, training_budget(budget), generator, device, progress, "fine-tune")


def reinitialise(model: nn.Module, generator_seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters reset (``reset_parameters``) under a fixed seed."""
    fresh = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    torch.manual_seed(generator_seed)
    try:
        for m in fresh.modules():
            if m is not fresh and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(state)
    return fresh


def from_scratch(model: nn.Module, X_bona: torch.Tensor, y_bona: torch.Tensor, generator: torch.Generator | None = None,
                 device=None, progress: bool = False, init_seed: int = 0, **budget) -> nn.Module:
    """Baseline: the same architecture, freshly initialised (:func:`reinitialise`), trained on the bonafide data only."""
    return _fit(reinitialise(model, init_seed), X_bona, y_bona, training_budget(budget), generator, device, progress,
                "from scratch")


def last_conv(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` module in ``model`` (the layer :func:`prune_finetune` prunes).

    Residual shortcut/downsample projections are skipped: in a ResNet the last conv of the main path is pruned.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
             and not any(k in n for k in ("shortcut", "downsample"))]
    if not names:
        raise ValueError("the model has no Conv2d layer to prune; pass layer=... naming a Linear layer instead")
    return names[-1]


def prunable_layer(model: nn.Module) -> str:
    """The layer :func:`prune_filters` prunes by default: :func:`last_conv`, or for a model without convolutions
    (an MLP) the last hidden ``nn.Linear`` (the one before the read-out), whose output units play the filters' part."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return last_conv(model)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(names) < 2:
        raise ValueError("the model has no Conv2d and no hidden Linear layer to prune")
    return names[-2]


def prune_filters(model: nn.Module, amount: float = 0.5, layer: str | None = None) -> tuple[nn.Module, torch.Tensor]:
    """A copy of ``model`` whose ``layer`` (default :func:`prunable_layer`) loses the ``amount`` fraction of filters with the smallest L1 norm.

    L1 filter pruning (Li et al. 2017) with :func:`torch.nn.utils.prune.ln_structured` (``n=1``,
    ``dim=0``); the bias of a pruned filter is masked too, so the filter's output is exactly zero
    before the next layer. The pruning masks stay attached (pruned weights remain zero while
    fine-tuning); :func:`prune_finetune` makes them permanent. Returns ``(model, kept)`` with
    ``kept`` the boolean mask of surviving filters.
    """
    from torch.nn.utils import prune

    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    layer = layer or prunable_layer(pruned)
    mod = pruned.get_submodule(layer)
    prune.ln_structured(mod, "weight", amount=amount, n=1, dim=0)
    kept = mod.weight_mask.flatten(1).any(1)
    if getattr(mod, "bias", None) is not None:
        prune.custom_from_mask(mod, "bias", kept.to(mod.bias.dtype))
    return pruned, kept


def _make_permanent(model: nn.Module) -> nn.Module:
    from torch.nn.utils import prune

    for m in model.modules():
        for name in ("weight", "bias"):
            if hasattr(m, f"{name}_mask"):
                prune.remove(m, name)
    return model


def prune_finetune(model: nn.Module, X_bona: torch.Tensor, y_bona: torch.Tensor, amount: float = 0.5,
                   layer: str | None = None, generator: torch.Generator | None = None, device=None,
                   progress: bool = False, **budget) -> nn.Module:
    """Baseline: :func:`prune_filters` of the last convolution, then fine-tuning on the bonafide data (same budget)."""
    pruned, _ = prune_filters(model, amount, layer)
    _fit(pruned, X_bona, y_bona, training_budget(budget), generator, device, progress, "prune + fine-tune")
    return _make_permanent(pruned).eval()


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def weight_noise(model: nn.Module, distance: float, generator: torch.Generator | None = None) -> nn.Module:
    """Baseline: a copy of ``model`` moved by ``distance`` (L2, over all parameters) in a uniformly random direction.

    The direction is a standard Gaussian vector over every parameter, normalised; Zhao et al. compare
    with random perturbations as far from the endpoint as the curve point :math:`w(t)` is
    (:func:`curve_distance`). Buffers (BatchNorm statistics) are kept.
    """
    if distance < 0:
        raise ValueError(f"distance must be >= 0, got {distance}")
    noisy = copy.deepcopy(model)
    params = list(noisy.parameters())
    noise = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params]
    norm = torch.sqrt(sum((z.double() ** 2).sum() for z in noise)).item()
    with torch.no_grad():
        for p, z in zip(params, noise):
            p.add_(z.to(p.device) * (distance / max(norm, 1e-12)))
    return noisy.eval()


def curve_distance(curve: curves.Curve, t: float, end: int = 0) -> float:
    """:math:`\\lVert w(t) - w_{end} \\rVert_2` over all parameters (the radius used by :func:`weight_noise`)."""
    with torch.no_grad():
        return (curve.flat_weights(t) - curve.ends[end]).norm().item()


def clean_and_asr(model: nn.Module, X_eval: torch.Tensor, y_eval: torch.Tensor,
                  trigger: backdoor.Trigger | Mapping | None = None, mode: str = "single", target: int = 0) -> dict:
    """``{"clean_acc", "asr"}`` of one model on the evaluation half (ASR as in :func:`mclib.attacks.backdoor.asr`)."""
    return {"clean_acc": train.evaluate(model, X_eval, y_eval)["acc"],
            "asr": backdoor.asr(model, X_eval, y_eval, trigger, mode, target)}


def along_curve(curve: curves.Curve, ts, X_eval: torch.Tensor, y_eval: torch.Tensor,
                metrics: Mapping[str, Callable[[nn.Module], float]], bn_data: torch.Tensor | None = None):
    """DataFrame ``t, loss, acc`` (clean, on the evaluation half) plus one column per extra metric, along the curve."""
    return curves.evaluate_along(curve, ts, X_eval, y_eval, bn_data=bn_data, metrics=metrics)


def backdoor_along(curve: curves.Curve, ts, X_eval: torch.Tensor, y_eval: torch.Tensor,
                   trigger: backdoor.Trigger | Mapping | None = None, mode: str = "single", target: int = 0,
                   bn_data: torch.Tensor | None = None):
    """Clean accuracy (``acc``) and attack success rate (``asr``) on the evaluation half at every ``t``."""
    Xt, yt = backdoor.triggered_set(X_eval, y_eval, trigger, mode, target)
    return along_curve(curve, ts, X_eval, y_eval, bn_data=bn_data,
                       metrics={"asr": lambda m: train.evaluate(m, Xt, yt)["acc"]})




# -- what bonafide data can teach the weights that read a trigger ------------------------------------
def first_weight_layer(model: nn.Module) -> str:
    """Name of the first ``nn.Conv2d`` or ``nn.Linear`` in ``model`` (the layer that reads the input pixels)."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return name
    raise ValueError("the model has no Conv2d or Linear layer that reads its input")


def trigger_gradient_mass(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                          trigger: backdoor.Trigger | Mapping | None = None, layer: str | None = None) -> dict:
    r"""The gradient mass that clean data ``(X, y)`` send to the first-layer weights that read the trigger's pixels.

    The first weight layer ``W`` (``layer``, default :func:`first_weight_layer`) reads the pixels through an
    affine map (the model's :class:`~mclib.models.Normalize`, a flatten): its input is
    :math:`a(x) = A x + a_0`. Written on raw pixels, the layer is linear in the weights, and the cross-entropy
    gradient splits over the pixels: with :math:`\delta_n` the gradient of the mean loss with respect to the
    layer's output for image :math:`n`,

    .. math:: G = \sum_n \delta_n \otimes A x_n = G_T + G_R, \quad
              G_T = \sum_n \delta_n \otimes A (x_n \odot 1_T), \quad G_R = \sum_n \delta_n \otimes A (x_n \odot 1_{\bar T})

    (:math:`\otimes` the layer's weight-gradient form: an outer product for a linear layer, a correlation of
    output gradients with input patches for a convolution). :math:`G_T` is what the data teach the weights
    about the trigger's pixels :math:`T`; :math:`\partial L / \partial W = G + \sum_n \delta_n \otimes a_0` differs
    from :math:`G` only by what a constant input would send, i.e. a bias. If every image is exactly zero on
    :math:`T`, :math:`G_T = 0` exactly: the clean loss cannot tell a model that reacts to the patch from one
    that ignores it.

    Returns ``{"trigger", "rest"}`` (L1 masses :math:`\sum |G_T|`, :math:`\sum |G_R|`), ``{"trigger_pixels",
    "rest_pixels"}`` (pixel counts) and ``"per_pixel_ratio"`` = (trigger mass per pixel) / (rest mass per pixel).
    """
    import torch.nn.functional as F

    trig = backdoor.Trigger.make(trigger)
    if X.dim() != 4 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"X must be a non-empty (N, C, H, W) batch with one label each, got X {tuple(X.shape)}, "
                         f"y {tuple(y.shape)}")
    name = layer or first_weight_layer(model)
    mod = model.get_submodule(name)
    if not isinstance(mod, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"layer must name a Conv2d or Linear module, got {name!r} ({type(mod).__name__})")
    seen: dict[str, torch.Tensor] = {}

    def hook(_, inputs, output):
        seen["a"], seen["z"] = inputs[0].detach(), output

    handle = mod.register_forward_hook(hook)
    try:
        with eval_mode(model):
            loss = F.cross_entropy(model(X), y)
            delta = torch.autograd.grad(loss, seen["z"])[0].detach()
            a = seen["a"]
            with torch.no_grad():
                model(torch.zeros_like(X[:1]))
                a0 = seen["a"]
                region = trig.mask(X.shape).to(X.dtype).expand_as(X[:1])
                model(region)
                in_region = (seen["a"] - a0) != 0   # where the trigger's pixels land in the layer's input
    finally:
        handle.remove()
    lin = a - a0                              # A x: the part of the layer's input that the pixels carry
    W = mod.weight

    def grad_for(inp):
        out = (F.conv2d(inp, W, None, mod.stride, mod.padding, mod.dilation, mod.groups)
               if isinstance(mod, nn.Conv2d) else F.linear(inp, W))
        return torch.autograd.grad((out * delta).sum(), W)[0]

    g_t = grad_for(lin * in_region).abs().sum().item()
    g_r = grad_for(lin * ~in_region).abs().sum().item()
    n_t = int(trig.mask(X.shape).sum()) * X.shape[1]
    n_r = X[0].numel() - n_t
    ratio = (g_t / n_t) / (g_r / n_r) if g_r > 0 else float("nan")
    return {"trigger": g_t, "rest": g_r, "trigger_pixels": n_t, "rest_pixels": n_r, "per_pixel_ratio": ratio}
