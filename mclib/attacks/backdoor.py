"""Backdoor triggers, data poisoning, attack success rate, and the error-injection attack.

Zhao et al. (2020, "Bridging mode connectivity in loss landscapes and adversarial robustness",
sec. 3) tamper with models in two ways and then repair them along a curve:

* **Backdoor** (BadNets, Gu et al. 2017): a small *trigger* -- by default a 3x3 white square at the
  bottom-right corner -- is stamped on a fraction ``rate`` (10%) of the training images, whose labels
  are changed to the attacker's choice: *single-target* (every class -> ``target``) or *all-to-all*
  (class ``i -> (i + 1) mod K``). The attack success rate (ASR) is the fraction of triggered test
  images classified as the attacker wanted, counted over images whose true class is not the target
  (single-target) or over all images (all-to-all).
* **Error injection** (Liu et al. 2017, "Fault injection attack on deep neural network"; Zhao et al.
  sec. 3.2): the weights of ONE layer are changed so that a few chosen images get chosen wrong labels
  while other images keep their right labels, by minimising a hinge (margin) loss.

Everything works in pixel space [0, 1] on whole batches, for any ``nn.Module`` classifier and any
image shape (1x8x8 digits, 1x28x28 MNIST, 3x32x32 CIFAR-10).

Where the trigger sits matters: on MNIST the bottom-right 3x3 corner is zero in every clean image,
so the weights that read it receive no gradient from clean (bonafide) data. :class:`Trigger` takes any
position (``"bottom_right"``, ``"center"``, or a ``(row, col)`` top-left corner) so the chapters can
compare the paper's corner trigger with a trigger inside the digits' support.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mclib.torchutil import channels_last, device_of, eval_mode

MODES = ("single", "all2all")
POSITIONS = ("bottom_right", "center", "top_left")


class Trigger:
    """A square patch stamped onto images: ``size`` x ``size`` pixels at ``position`` set to ``value`` or ``pattern``.

    Only JSON-able numbers are needed to describe a fixed trigger, so it can travel inside a
    :class:`mclib.train.Recipe` as ``data_hook_kwargs={"trigger": {"size": 3, "position": "center"}}``.

    Parameters
    ----------
    size
        Side of the square in pixels (3 in the paper).
    position
        ``"bottom_right"`` (the paper's; flush with the corner), ``"center"``, ``"top_left"``, or a
        ``(row, col)`` pair for the patch's top-left pixel; negative numbers count from the far edge as
        in Python indexing (``(-3, -3)`` is the bottom-right 3x3 square).
    value
        The pixel value(s) written into the patch: a number (1.0 = white) or one number per channel.
    pattern
        Optional ``(C, size, size)`` tensor (or nested lists) of values in [0, 1] written instead of
        ``value`` -- e.g. a trigger optimised by an attacker (:func:`optimise_trigger`).
    """

    def __init__(self, size: int = 3, position: str | Sequence[int] = "bottom_right",
                 value: float | Sequence[float] = 1.0, pattern: torch.Tensor | Sequence | None = None):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"trigger size must be a positive int, got {size!r}")
        if isinstance(position, str):
            if position not in POSITIONS:
                raise ValueError(f"unknown trigger position {position!r}; use one of {POSITIONS} or (row, col)")
        else:
            position = tuple(int(p) for p in position)
            if len(position) != 2:
                raise ValueError(f"trigger position must be a name or (row, col), got {position!r}")
        self.size, self.position = size, position
        self.value = value if isinstance(value, (int, float)) else tuple(float(v) for v in value)
        if pattern is not None:
            pattern = torch.as_tensor(pattern, dtype=torch.float32)
            if pattern.dim() == 2:
                pattern = pattern.unsqueeze(0)
            if pattern.dim() != 3 or tuple(pattern.shape[1:]) != (size, size):
                raise ValueError(f"trigger pattern must have shape (C, {size}, {size}), got {tuple(pattern.shape)}")
        self.pattern = pattern

    @classmethod
    def make(cls, spec: "Trigger | Mapping[str, Any] | None") -> "Trigger":
        """A :class:`Trigger` from a Trigger, a dict of its arguments (as in a Recipe's kwargs), or None (default)."""
        if spec is None:
            return cls()
        if isinstance(spec, Trigger):
            return spec
        if isinstance(spec, Mapping):
            return cls(**dict(spec))
        raise TypeError(f"trigger must be a Trigger, a dict of its arguments or None, got {type(spec).__name__}")

    def corner(self, height: int, width: int) -> tuple[int, int]:
        """Top-left pixel ``(row, col)`` of the patch in an image of the given size."""
        s = self.size
        if s > min(height, width):
            raise ValueError(f"a {s}x{s} trigger does not fit in a {height}x{width} image")
        if self.position == "bottom_right":
            r, c = height - s, width - s
        elif self.position == "center":
            r, c = (height - s) // 2, (width - s) // 2
        elif self.position == "top_left":
            r, c = 0, 0
        else:
            r, c = self.position
            r, c = (r + height if r < 0 else r), (c + width if c < 0 else c)
        if not (0 <= r <= height - s and 0 <= c <= width - s):
            raise ValueError(f"trigger at {self.position} (top-left {r}, {c}) of size {s} leaves a {height}x{width} image")
        return r, c

    def mask(self, shape: Sequence[int]) -> torch.Tensor:
        """Boolean ``(H, W)`` mask of the pixels the trigger overwrites, for images of shape ``(..., H, W)``."""
        h, w = int(shape[-2]), int(shape[-1])
        r, c = self.corner(h, w)
        m = torch.zeros(h, w, dtype=torch.bool)
        m[r:r + self.size, c:c + self.size] = True
        return m

    def patch(self, channels: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """The ``(C, size, size)`` values written into the patch."""
        if self.pattern is not None:
            p = self.pattern.to(dtype=dtype, device=device)
            return p.expand(channels, -1, -1) if p.shape[0] == 1 else p
        v = torch.as_tensor(self.value, dtype=dtype, device=device).reshape(-1, 1, 1)
        if v.shape[0] not in (1, channels):
            raise ValueError(f"trigger value has {v.shape[0]} channels, images have {channels}")
        return v.expand(channels, self.size, self.size)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the images ``x`` (``(N, C, H, W)`` or ``(C, H, W)``) with the trigger stamped on.

        Differentiable with respect to a ``pattern`` that requires grad (used to optimise triggers).
        """
        if x.dim() not in (3, 4):
            raise ValueError(f"images must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
        r, c = self.corner(x.shape[-2], x.shape[-1])
        s = self.size
        patch = self.patch(x.shape[-3], dtype=x.dtype, device=x.device)
        out = x.clone()
        out[..., r:r + s, c:c + s] = patch
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able arguments of a fixed trigger (without ``pattern``)."""
        pos = self.position if isinstance(self.position, str) else list(self.position)
        val = self.value if isinstance(self.value, (int, float)) else list(self.value)
        return {"size": self.size, "position": pos, "value": val}

    def __repr__(self) -> str:
        extra = ", pattern=<optimised>" if self.pattern is not None else ""
        return f"Trigger(size={self.size}, position={self.position!r}, value={self.value!r}{extra})"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown backdoor mode {mode!r}; valid: {', '.join(MODES)}")


def attack_labels(y: torch.Tensor, mode: str = "single", target: int = 0, num_classes: int = 10) -> torch.Tensor:
    """The labels the attacker wants: ``target`` everywhere (single) or ``(y + 1) mod K`` (all-to-all)."""
    _check_mode(mode)
    if mode == "single":
        return torch.full_like(y, int(target))
    return (y + 1) % num_classes


def poison(X: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
           trigger: Trigger | Mapping[str, Any] | None = None, mode: str = "single", target: int = 0,
           rate: float = 0.1, num_classes: int = 10, return_index: bool = False):
    """BadNets poisoning (Gu et al. 2017; Zhao et al. sec. 3.1): stamp the trigger on a fraction of the images.

    ``round(rate * len(X))`` images are drawn (with ``generator``) from those that can carry the attack
    -- images whose class is not ``target`` in single-target mode, all images in all-to-all mode -- and
    replaced in place (the set keeps its size) by their triggered copies relabelled with
    :func:`attack_labels`. Returns new tensors ``(X, y)`` (and the poisoned indices if ``return_index``).

    Usable directly as a training-set hook:
    ``Recipe(..., data_hook="mclib.attacks.backdoor:poison", data_hook_kwargs={"mode": "all2all",
    "trigger": {"size": 3, "position": "center"}})``.
    """
    _check_mode(mode)
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poisoning rate must be in [0, 1], got {rate}")
    trig = Trigger.make(trigger)
    eligible = torch.nonzero(y != target).flatten() if mode == "single" else torch.arange(len(y))
    k = int(round(rate * len(X)))
    if k > len(eligible):
        raise ValueError(f"cannot poison {k} images: only {len(eligible)} are eligible in {mode} mode")
    idx = eligible[torch.randperm(len(eligible), generator=generator)[:k]].sort().values
    X, y = X.clone(), y.clone()
    X[idx] = trig.apply(X[idx])
    y[idx] = attack_labels(y[idx], mode, target, num_classes)
    return (X, y, idx) if return_index else (X, y)


def triggered_set(X: torch.Tensor, y: torch.Tensor, trigger: Trigger | Mapping | None = None, mode: str = "single",
                  target: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The ASR evaluation set: triggered images and the labels the attacker wants.

    Single-target mode drops images whose true class is already ``target``; the accuracy of a model on
    this set is its attack success rate (so any accuracy routine, e.g. ``curves.evaluate_along``, gives
    ASR along a curve).
    """
    _check_mode(mode)
    keep = (y != target) if mode == "single" else torch.ones_like(y, dtype=torch.bool)
    Xk, yk = X[keep], y[keep]
    return Trigger.make(trigger).apply(Xk), attack_labels(yk, mode, target, num_classes)


@torch.no_grad()
def _predict_logits_width(model: nn.Module, x: torch.Tensor) -> int:
    """The number of classes ``model`` outputs (one forward pass on ``x``, eval mode)."""
    with eval_mode(model):
        return int(model(x.to(device_of(model))).shape[1])


@torch.no_grad()
def _predict(model: nn.Module, X: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    from mclib.train import logits

    return logits(model, X, batch_size).argmax(1)


def asr(model: nn.Module, X: torch.Tensor, y: torch.Tensor, trigger: Trigger | Mapping | None = None,
        mode: str = "single", target: int = 0, num_classes: int = 10, batch_size: int = 512) -> float:
    """Attack success rate: the fraction of triggered images classified as the attacker wants.

    Single-target: over images whose true class is not ``target`` (success = predicts ``target``).
    All-to-all: over all images (success = predicts ``(y + 1) mod K``). Zhao et al. sec. 3.1.
    """
    if mode == "single" and not 0 <= int(target) < num_classes:
        raise ValueError(f"target = {target} is not a class; allowed: 0..{num_classes - 1} (num_classes = {num_classes})")
    Xt, yt = triggered_set(X, y, trigger, mode, target, num_classes)
    if len(Xt) == 0:
        raise ValueError("no image is eligible for the ASR (every image belongs to the target class)")
    from mclib.train import logits
    out = logits(model, Xt, batch_size)
    if mode == "single" and int(target) >= out.shape[1]:
        raise ValueError(f"target = {target} is not a class; allowed: 0..{out.shape[1] - 1} "
                         f"(the model has {out.shape[1]} outputs)")
    return (out.argmax(1) == yt).float().mean().item()


# -- path-aware attacker (claim C5) ----------------------------------------------------------------
INITS = ("random", "trigger")


def trigger_margin_loss(out: torch.Tensor, labels: torch.Tensor, kappa: float = 5.0) -> torch.Tensor:
    """Carlini-Wagner margin loss per image: :math:`\\max(\\max_{j \\ne c} z_j - z_c, -\\kappa)`.

    ``c`` is the label the attacker wants. Unlike cross-entropy, whose gradient vanishes on images the
    trigger already fools, the loss keeps pushing until the wanted logit leads by ``kappa`` and then
    stops exactly (zero gradient), so the images the trigger does *not* yet fool dominate the step.
    """
    return (-_margin(out, labels)).clamp_min(-float(kappa))


def _start_pattern(init, trig: Trigger, channels: int, generator: torch.Generator | None) -> torch.Tensor:
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} or a ({channels}, {trig.size}, {trig.size}) tensor, got {init!r}")
        if init == "trigger":
            return trig.patch(channels).clone()
        return torch.rand(channels, trig.size, trig.size, generator=generator)
    p = torch.as_tensor(init, dtype=torch.float32)
    if p.shape != (channels, trig.size, trig.size) or p.min() < 0 or p.max() > 1:
        raise ValueError(f"init must be one of {INITS} or a ({channels}, {trig.size}, {trig.size}) tensor in [0, 1], "
                         f"got shape {tuple(p.shape)}")
    return p.clone()


def optimise_trigger(curve_or_models, X: torch.Tensor, y: torch.Tensor, trigger: Trigger | Mapping | None = None,
                     mode: str = "single", target: int = 0, num_classes: int = 10, steps: int = 200,
                     lr: float = 0.05, batch_size: int = 128, n_t: int = 4, kappa: float = 5.0,
                     init: str | torch.Tensor = "random", generator: torch.Generator | None = None,
                     progress: bool = False) -> Trigger:
    """A trigger pattern optimised against a whole curve: maximise the attack averaged over ``t``.

    The attacker knows the path (claim C5, Zhao et al. sec. 3.3): it keeps the trigger's size and
    position and learns its pixel values :math:`p \\in [0, 1]^{C \\times s \\times s}` by projected Adam
    (a step on :math:`p` itself, then clipping to [0, 1]) on

    .. math:: \\frac{1}{n_t} \\sum_{k=1}^{n_t} \\frac{1}{|B|} \\sum_{x \\in B}
              \\max\\big(\\max_{j \\ne c} z_j - z_c, -\\kappa\\big)\\big(f_{w(t_k)}(\\mathrm{apply}(x, p))\\big),

    a margin loss (:func:`trigger_margin_loss`) on one minibatch ``B`` of attackable images at ``n_t``
    stratified points :math:`t_k = (k - 1 + u_k) / n_t` of the path per step (the learning rate decays
    by a cosine from ``lr`` to 0). Why not the obvious sigmoid + cross-entropy: a sigmoid pixel pushed
    to the box edge saturates and cannot come back within the budget, and cross-entropy sends no
    gradient from images already fooled -- together they left the white square unchanged.

    ``curve_or_models`` is a :class:`mclib.curves.Curve` or a list of models (each step averages over
    all of them, e.g. one backdoored endpoint as the control that the optimiser must beat). ``init``:
    ``"random"`` (a uniform pattern from ``generator``, default), ``"trigger"`` (the given trigger's
    pattern, the white square) or a tensor. Returns a :class:`Trigger` carrying the optimised
    ``pattern``, with the starting pattern as ``.start``.

    Only :math:`p` is differentiated (``torch.autograd.grad``): no gradient of the models' weights or the
    curve's bends is computed (:meth:`mclib.curves.Curve.forward_frozen`), and none is left in their ``.grad``.
    The networks run channels-last on the CPU (the models' weights through :func:`mclib.torchutil.channels_last`,
    the curve's points through ``forward_frozen``; issue 31: the same arithmetic in another summation order,
    float32 rounding).
    """
    from tqdm.auto import tqdm

    from mclib.curves import Curve

    _check_mode(mode)
    if steps < 1 or n_t < 1:
        raise ValueError(f"steps and n_t must be >= 1, got steps={steps}, n_t={n_t}")
    trig = Trigger.make(trigger)
    Xa, ya = X, attack_labels(y, mode, target, num_classes)
    if mode == "single":
        Xa, ya = X[y != target], ya[y != target]
    if len(Xa) == 0:
        raise ValueError("no attackable images (all belong to the target class)")
    is_curve = isinstance(curve_or_models, Curve)
    models = None if is_curve else list(curve_or_models)
    if not is_curve and not models:
        raise ValueError("curve_or_models must be a Curve or a non-empty list of models")
    ref = curve_or_models if is_curve else models[0]
    device = device_of(ref)
    start = _start_pattern(init, trig, X.shape[1], generator)
    p = start.clone().to(device).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for m in ([curve_or_models] if is_curve else models):
        m.eval()
    n_views = n_t if is_curve else len(models)
    with contextlib.ExitStack() as stack:
        for m in models or ():
            stack.enter_context(channels_last(m))
        for _ in tqdm(range(steps), desc="optimise trigger", disable=not progress, leave=False):
            idx = torch.randint(len(Xa), (min(batch_size, len(Xa)),), generator=generator)
            xb, yb = Xa[idx].to(device), ya[idx].to(device)
            xt = Trigger(trig.size, trig.position, pattern=p).apply(xb)
            if is_curve:
                ts = (torch.arange(n_t, dtype=torch.float64)
                      + torch.rand(n_t, generator=generator, dtype=torch.float64)) / n_t
                outs = [curve_or_models.forward_frozen(xt, t) for t in ts]
            else:
                outs = [m(xt) for m in models]
            loss = sum(trigger_margin_loss(o, yb, kappa).mean() for o in outs) / n_views
            p.grad = torch.autograd.grad(loss, p)[0]
            opt.step()
            sched.step()
            with torch.no_grad():
                p.clamp_(0.0, 1.0)  # projection onto the pixel box: a pixel at an edge can leave it at the next step
    out = Trigger(trig.size, trig.position, pattern=p.detach().cpu())
    out.start = start
    return out


# -- error injection (claim C4) --------------------------------------------------------------------
def support_fraction(X: torch.Tensor, trigger, threshold: float = 0.1) -> float:
    """Share of the images ``X`` (N, C, H, W) with at least one pixel value above ``threshold`` (any channel) inside
    ``trigger``'s patch: how much of the clean data lies where the trigger writes.

    Zhao et al.'s 3x3 corner square sits outside MNIST's support (0%: no clean digit marks the corner, so clean
    data sends no gradient to the weights reading it) but inside CIFAR-10's (every photograph has pixels there);
    the chapter measures it rather than assuming it.
    """
    X = torch.as_tensor(X)
    if X.dim() != 4 or len(X) == 0:
        raise ValueError(f"X must be a non-empty batch of images (N, C, H, W), got shape {tuple(X.shape)}")
    mask = Trigger.make(trigger).mask(X.shape)
    inside = X[:, :, mask]                       # (N, C, size*size)
    return float((inside > threshold).flatten(1).any(1).float().mean())


def default_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` (else the last conv) module: the layer :func:`inject_errors` changes."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = names or [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError("the model has no Linear or Conv2d layer to inject errors into; pass layer=...")
    return names[-1]


def _margin(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_label - max_{j != label} z_j`` per row."""
    z = out.gather(1, labels[:, None]).squeeze(1)
    other = out.masked_fill(F.one_hot(labels, out.shape[1]).bool(), float("-inf")).amax(1)
    return z - other


def inject_errors(model: nn.Module, X_chosen: torch.Tensor, wrong_labels: torch.Tensor, X_keep: torch.Tensor,
                  y_keep: torch.Tensor, layer: str | None = None, kappa: float = 2.0, steps: int = 200,
                  lr: float = 1e-2, keep_weight: float = 2.0, batch_size: int = 128,
                  tol: float = 0.01, generator: torch.Generator | None = None, progress: bool = False) -> nn.Module:
    """Error-injection attack (Liu et al. 2017; Zhao et al. sec. 3.2): a copy of ``model`` whose ONE layer is changed.

    Only the parameters of the module called ``layer`` (default :func:`default_layer`, the last linear
    layer) are trained, by Adam on the hinge loss

    .. math:: \\frac{1}{|C|} \\sum_{i \\in C} \\max(0, \\kappa - m(x_i, \\tilde y_i))
              + \\lambda \\frac{1}{|B|} \\sum_{j \\in B} \\max(0, \\kappa - m(x_j, y_j)),

    with the margin :math:`m(x, c) = z_c(x) - \\max_{k \\ne c} z_k(x)`: the chosen images :math:`C` are
    pushed to their wrong labels :math:`\\tilde y` with margin :math:`\\kappa` while a minibatch ``B`` of
    other images keeps its right labels (``keep_weight`` :math:`= \\lambda`). Only the images of
    ``X_keep`` that the original model classifies right are kept right (the others cannot be "kept").
    Stops early once every chosen image is flipped with margin :math:`\\kappa` and at most a fraction
    ``tol`` of the minibatch is wrong. The input model is not modified; the layer changed is ``layer`` or,
    when None, ``default_layer(model)`` -- the caller knows it without asking the returned copy.
    """
    if len(X_chosen) != len(wrong_labels) or len(X_keep) != len(y_keep):
        raise ValueError("X_chosen/wrong_labels and X_keep/y_keep must have matching lengths")
    with torch.no_grad():       # labels are checked against the model's outputs before any training
        n_out = _predict_logits_width(model, X_chosen[:1])
    from mclib.attacks.evasion import check_labels
    wrong_labels = check_labels(wrong_labels, n_out, "wrong_labels")
    y_keep = check_labels(y_keep, n_out, "y_keep")
    layer = layer or default_layer(model)
    out_model = copy.deepcopy(model).eval()
    try:
        target_mod = out_model.get_submodule(layer)
    except AttributeError:
        names = [n for n, m in out_model.named_modules() if n and list(m.parameters(recurse=False))]
        raise ValueError(f"no layer {layer!r} in the model; layers with parameters: {names}") from None
    params = list(target_mod.parameters(recurse=False))
    if not params:
        raise ValueError(f"layer {layer!r} has no parameters of its own")
    for p in out_model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    device = params[0].device
    Xc, yc = X_chosen.to(device), wrong_labels.to(device)
    right = _predict(model, X_keep).cpu() == y_keep.cpu()
    X_keep, y_keep = X_keep[right], y_keep[right]
    if len(X_keep) == 0:
        raise ValueError("the model classifies none of X_keep right: nothing to keep")
    opt = torch.optim.Adam(params, lr=lr)
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="inject errors", disable=not progress, leave=False):
        idx = torch.randint(len(X_keep), (min(batch_size, len(X_keep)),), generator=generator)
        xk, yk = X_keep[idx].to(device), y_keep[idx].to(device)
        out = out_model(torch.cat([Xc, xk]))
        mc, mk = _margin(out[:len(Xc)], yc), _margin(out[len(Xc):], yk)
        if bool((mc >= kappa).all()) and (mk <= 0).float().mean().item() <= tol:
            break
        loss = F.relu(kappa - mc).mean() + keep_weight * F.relu(kappa - mk).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in out_model.parameters():
        p.requires_grad_(True)
    return out_model.eval()


def injection_success(model: nn.Module, X_chosen: torch.Tensor, wrong_labels: torch.Tensor) -> float:
    """Fraction of the chosen images that ``model`` classifies as their injected wrong labels."""
    return (_predict(model, X_chosen) == wrong_labels.to(torch.long)).float().mean().item()
