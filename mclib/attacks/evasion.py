"""Evasion attacks in pixel space [0, 1], batched: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mclib import _check as check
from mclib.optim import RowAdam, check_input_grad, input_grad, total_variation
from mclib.torchutil import channels_last, eval_mode

NORMS = ("linf", "l2")


def check_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise one clear error unless ``x`` is a floating-point batch of finite pixels in [0, 1]
    (``mclib._check.pixels``: a 0-255 image would be silently clamped into an all-white image, and an
    integer image would make every random start and step round away)."""
    check.pixels(x, name)


def check_labels(y: torch.Tensor, num_classes: int, name: str = "y") -> torch.Tensor:
    """``y`` as int64 class labels in ``[0, num_classes)`` (``mclib._check.labels``), or one clear error."""
    return check.labels(y, name, num_classes=num_classes)


def _check(x: torch.Tensor, y, eps: float, norm: str, name: str = "y") -> torch.Tensor:
    """Check an attack's common arguments; returns ``y`` as int64 labels on ``x``'s device."""
    check_images(x)
    y = check.labels(y, name, n=x.shape[0], device=x.device, range_later=True)   # classes: at the first pass
    check.non_negative_float(eps, "eps")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return y


def _first_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """The first forward pass of an attack, checked (``mclib._check.model_call``: dtypes, input shape,
    a model that returns a tuple or dict) and the labels ``y`` (called ``name``) checked against the model's
    number of outputs."""
    logits = check.model_call(model, x, "x")
    check.labels(y, name, num_classes=logits.shape[1])
    return logits


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool, first: bool = True,
               extra: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x L, logits)`` with ``L`` the summed CE toward ``y`` (negated when ``targeted``) minus the sum of
    ``extra(x)`` (a term the attacker minimises); ``first`` checks the model's output, the labels against
    its number of outputs and that the loss depends on ``x`` (once per attack is enough)."""
    x = x.clone().requires_grad_(True)
    logits = _first_logits(model, x, y, "y (the target)" if targeted else "y") if first else model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    obj = -loss if targeted else loss
    if extra is not None:
        obj = obj - extra(x).sum()
    grad = input_grad(obj, x, "the attack")       # a model that detaches its input: one clear error
    return grad, logits.detach()


def _l2_normalise(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def logit_margin(logits: torch.Tensor, y: torch.Tensor, targeted: bool = True) -> torch.Tensor:
    """The attack's confidence in the logits (Carlini & Wagner 2017, the quantity their ``kappa`` bounds), (N,).

    Targeted (``y`` the target): ``z_y - max_{j != y} z_j``, how far the target's logit leads every other
    class. Untargeted (``y`` the true label): ``max_{j != y} z_j - z_y``, how far the best wrong class leads
    the true one. Positive exactly when the attack has succeeded; ``kappa = 0`` is "just across the decision
    boundary", a large ``kappa`` a confidently misclassified input.
    """
    y = torch.as_tensor(y, device=logits.device).long().view(-1, 1)
    own = logits.gather(1, y)[:, 0]
    best_other = logits.scatter(1, y, float("-inf")).amax(1)
    return own - best_other if targeted else best_other - own


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)


def _start(x: torch.Tensor, eps: float, norm: str, random_start: bool,
           generator: torch.Generator | None) -> torch.Tensor:
    """PGD's starting point: ``x`` itself, or a random point of the ``norm`` ball around it, in [0, 1].

    L-inf draws uniformly from the cube; L2 draws a Gaussian direction scaled by ``eps * U(0, 1)``.
    """
    if not random_start or eps <= 0:
        return x.clamp(0, 1)
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator).to(x) * 2 - 1) * eps
    else:
        direction = _l2_normalise(torch.randn(x.shape, generator=generator).to(x))  # drawn first, as before
        radius = eps * torch.rand(x.shape[0], generator=generator).to(x).view(-1, *([1] * (x.dim() - 1)))
        delta = direction * radius
    return (x + _project(delta, eps, norm)).clamp(0, 1)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` (L-inf): ``clip(x + eps * sign(grad_x L(x, y)), 0, 1)``.

    Untargeted it raises the loss of the true label ``y``; targeted it lowers the loss of target ``y``.
    """
    y = _check(x, y, eps, "linf")
    with eval_mode(model):
        g, _ = _loss_grad(model, x, y, targeted)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        step_size: float | None = None, norm: str = "linf", random_start: bool = True,
        targeted: bool = False, generator: torch.Generator | None = None,
        stop_on_success: bool = False, extra_steps: int = 0,
        extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the ``norm`` ball of radius ``eps`` around ``x``.

    Each step moves by ``step_size`` along sign(grad) (L-inf) or grad/||grad|| (L2), projects back onto
    the ball and clips to [0, 1]. ``step_size`` defaults to ``2.5 * eps / steps``. Random start draws
    uniformly from the L-inf ball (L-inf) or a Gaussian direction scaled into the ball (L2).

    ``eps`` has no default: it is in pixel units of [0, 1] and depends on the data (0.3 is the usual
    MNIST L-inf radius, 8/255 ~ 0.031 the usual CIFAR one); the chapters take it from their preset.
    ``y`` is the true label (untargeted: the loss of ``y`` is raised) or the target (``targeted``).

    ``stop_on_success``: each input stops at the first iterate (the random start included) where the
    attack has succeeded -- the prediction differs from ``y`` (untargeted) or equals it (targeted) --
    and keeps that point: the "stopped at the first misclassification" strength, the weakest
    successful example PGD finds, against the full-strength attack that uses every step.

    ``extra_steps`` (with ``stop_on_success``): each input takes that many more steps after its first
    successful iterate, then stops -- the attack pushed a controlled distance past the decision boundary
    (0 is the first success). The search for a first success still ends after ``steps`` steps, so an
    input that first succeeds late still gets all its extra steps (at most ``steps + extra_steps`` in all);
    an input that never succeeds keeps its last iterate, as without the option.

    ``extra_loss(x_adv, rows)``: a differentiable term the attacker also minimises, for the inputs
    ``rows`` (indices into the batch) at their current iterates ``x_adv`` (len(rows), ...); it returns their
    summed term (a scalar) or one value per row (summed here). Each step then follows the gradient of
    ``CE(f(x'), y) + extra`` downhill (targeted) or of ``CE(f(x'), y) - extra`` uphill (untargeted): an
    adaptive attacker's penalty on what a detector measures (:func:`adaptive_pgd`).
    """
    y = _check(x, y, eps, norm, "y (the target)" if targeted else "y")
    steps = check.positive_int(steps, "steps")
    extra_steps = check.non_negative_int(extra_steps, "extra_steps")
    if extra_steps and not stop_on_success:
        raise ValueError(f"extra_steps = {extra_steps} counts steps after the first success; it needs "
                         "stop_on_success=True (without it every input takes all `steps` steps)")
    step_size = 2.5 * eps / steps if step_size is None else check.positive_float(step_size, "step_size")
    with eval_mode(model), channels_last(model):
        return _pgd_loop(model, x.detach(), y, eps, steps, step_size, norm,
                         random_start, targeted, generator, stop_on_success, extra_steps, extra_loss)


def _pgd_loop(model, x, y, eps, steps, step_size, norm, random_start, targeted, generator, stop_on_success,
              extra_steps, extra_loss) -> torch.Tensor:
    """PGD's iterations (arguments checked by :func:`pgd`, the model in eval mode)."""
    adv = _start(x, eps, norm, random_start, generator)
    active = torch.arange(x.shape[0], device=x.device)       # inputs still being attacked
    since = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)   # steps since first success; -1: none yet
    for i in range(steps + extra_steps):
        rows = active
        extra = None if extra_loss is None else (lambda xa: extra_loss(xa, rows))
        g, logits = _loss_grad(model, adv[active], y[active], targeted, first=i == 0, extra=extra)
        if stop_on_success:
            hit = logits.argmax(1) == y[active]
            hit = hit if targeted else ~hit          # untargeted: still right means not yet successful
            first = hit & (since[active] < 0)
            since[active[first]] = 0
            done = since[active] >= extra_steps
            if i >= steps:                          # the search for a first success is over
                done |= since[active] < 0
            active, g = active[~done], g[~done]
            if active.numel() == 0:
                break
        step = g.sign() if norm == "linf" else _l2_normalise(g)
        xa = x[active]
        adv[active] = (xa + _project(adv[active] + step_size * step - xa, eps, norm)).clamp(0, 1)
        if stop_on_success:
            since[active] += (since[active] >= 0).long()
    return adv.detach()


# ------------------------------------------------------------------------------- optimisation attack
def _per_input(value, n: int, device, name: str) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32, device=device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
    return t


def optimisation_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, lr: float = 0.005,
                        steps: int = 1024, mse_weight: float = 0.1, tv_weight: float = 1e-8,
                        stop_loss=None, stop_on_success: bool = False, stop_margin=None, targeted: bool = True,
                        clamp: bool = True, betas=(0.9, 0.999), return_info: bool = False,
                        progress: bool = False, loss: str = "ce"):
    """The input-space paper's optimisation attack (Vrabel et al. 2025, section 4.4), batched.

    Each input ``x_i`` (pixel space [0, 1]) is moved by Adam (``lr``, ``betas``) on

        sign * CE(f(x'), target_i) + mse_weight * MSE(x' - x_i) + tv_weight * TV(x' - x_i),

    with ``sign = +1`` when ``targeted`` (descend toward class ``target_i``; the paper's setting,
    lr 0.005, MSE weight 0.1, 512-1024 steps) and ``-1`` otherwise (``target`` is then the true label,
    whose loss is raised). MSE is the mean of squares over the pixels of one input, TV the anisotropic
    total variation (:func:`mclib.optim.total_variation`). After every step ``x'`` is clipped to [0, 1] (``clamp``).

    ``loss="margin"`` replaces ``sign * CE`` by ``-`` :func:`logit_margin` (Carlini & Wagner's margin loss
    f6 without its clamp at ``kappa``; ``stop_margin`` does the clamp's work, so pair the two). Its gradient
    does not fade as the input grows confident, as the cross-entropy's does (``1 - p_target``), so the
    attack reaches a large margin that the CE version, held back by the MSE term, stalls below.

    Per-input early stop, whichever comes first (the stopped input keeps its current value and leaves
    the batch, so later steps cost less):

    * ``stop_on_success``: the prediction is ``target_i`` (targeted) or differs from it (untargeted):
      the "stopped at the first misclassification" strength;
    * ``stop_loss`` (float or (N,) tensor): the CE toward ``target_i`` is below it (targeted) or above it
      (untargeted): with the loss of a real image of the target class this is "run to high confidence",
      the paper's stopping rule;
    * ``stop_margin`` (float or (N,) tensor, Carlini & Wagner's confidence ``kappa``): the
      :func:`logit_margin` toward ``target_i`` is at least it: the attack stopped at a chosen confidence,
      ``stop_margin = 0`` being the first success.

    Every input's objective is independent of the others (losses summed over the batch, Adam is
    elementwise). Returns the adversarial inputs (N, ...), or with ``return_info`` the pair
    ``(x_adv, info)`` where ``info`` holds ``steps`` (N,) Adam steps taken, ``loss`` (N,) final CE
    toward ``target`` and ``success`` (N,) bool.
    """
    check_images(x)
    tgt = check.labels(target, "target", n=x.shape[0], device=x.device, range_later=True)
    if loss not in ("ce", "margin"):
        raise ValueError(f"loss must be 'ce' or 'margin', got {loss!r}")
    steps, lr = check.non_negative_int(steps, "steps"), check.positive_float(lr, "lr")
    mse_weight = check.non_negative_float(mse_weight, "mse_weight")
    tv_weight = check.non_negative_float(tv_weight, "tv_weight")
    src = x.detach()
    N = src.shape[0]
    thr = _per_input(stop_loss, N, src.device, "stop_loss")
    kappa = _per_input(stop_margin, N, src.device, "stop_margin")
    sign = 1.0 if targeted else -1.0
    adv = src.clone()
    opt = RowAdam(src, lr, betas=betas, eps=1e-8)
    taken = opt.t                                # Adam steps per input
    active = torch.arange(N, device=src.device)
    it = range(int(steps))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="optimisation attack", leave=False)

    def finished(logits: torch.Tensor, ce: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        done = torch.zeros_like(ce, dtype=torch.bool)
        if stop_on_success:
            hit = logits.argmax(1) == tgt[idx]
            done |= hit if targeted else ~hit
        if thr is not None:
            done |= (ce < thr[idx]) if targeted else (ce > thr[idx])
        if kappa is not None:
            done |= logit_margin(logits, tgt[idx], targeted) >= kappa[idx]
        return done

    with eval_mode(model), channels_last(model):
        for _ in it:
            xa = adv[active].requires_grad_(True)
            first = not taken.any()
            logits = _first_logits(model, xa, tgt[active], "target") if first else model(xa)
            ce = F.cross_entropy(logits, tgt[active], reduction="none")
            if first:      # a model that detaches its input would leave x unchanged, silently
                check_input_grad(ce, xa, "optimisation_attack")
            with torch.no_grad():
                keep = ~finished(logits, ce, active)
            if not keep.all():                      # stopped inputs leave before this step
                active = active[keep]
                if active.numel() == 0:
                    break
                xa = adv[active].requires_grad_(True)
                logits = model(xa)
                ce = F.cross_entropy(logits, tgt[active], reduction="none")
            diff = xa - src[active]
            attack_term = sign * ce.sum() if loss == "ce" else -logit_margin(logits, tgt[active], targeted).sum()
            obj = attack_term + mse_weight * diff.pow(2).flatten(1).mean(1).sum()
            if tv_weight:
                obj = obj + tv_weight * total_variation(diff).sum()
            (g,) = torch.autograd.grad(obj, xa)
            with torch.no_grad():
                new = opt.step(adv, g, active)
                adv[active] = new.clamp(0, 1) if clamp else new
    adv = adv.detach()
    if not return_info:
        return adv
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([model(adv[i:i + 1024]) for i in range(0, N, 1024)]) if N else adv.new_zeros(0, 1)
        ce = F.cross_entropy(logits, tgt, reduction="none") if N else adv.new_zeros(0)
        hit = logits.argmax(1) == tgt
    return adv, {"steps": taken.cpu(), "loss": ce.cpu(), "success": (hit if targeted else ~hit).cpu()}


# ------------------------------------------------------------------------------- adaptive attack
def barrier_surrogate(model: nn.Module, x: torch.Tensor, references: torch.Tensor, target: torch.Tensor,
                             num_points: int = 8, barrier: str = "mean", temperature: float = 1.0) -> torch.Tensor:
    """Differentiable barrier surrogate of each input ``x_i`` to its references, (N,).

    ``references``: (N, K, C, H, W). For every reference ``r_ik`` the linear path
    ``x(a) = (1 - a) r_ik + a x_i`` (the detector's paths, :mod:`mclib.detect`) is sampled at
    ``num_points`` interior positions ``a = j / (num_points + 1)`` and the cross-entropy toward
    ``target_i`` taken at each; the surrogate averages over the K references either the mean loss along
    the path (``barrier="mean"``) or its smooth max ``temperature * logsumexp(L / temperature)``
    (``"smoothmax"``, an upper bound of the barrier max that tends to it as the temperature falls).
    """
    if references.dim() != x.dim() + 1 or references.shape[0] != x.shape[0] or references.shape[2:] != x.shape[1:]:
        raise ValueError(f"references must have shape (N, K, {', '.join(map(str, x.shape[1:]))}) with N = {x.shape[0]}; "
                         f"got {tuple(references.shape)}")
    if barrier not in ("mean", "smoothmax"):
        raise ValueError(f"barrier must be 'mean' or 'smoothmax', got {barrier!r}")
    num_points = check.positive_int(num_points, "num_points")
    temperature = check.positive_float(temperature, "temperature")
    N, K = references.shape[:2]
    a = torch.arange(1, num_points + 1, dtype=x.dtype, device=x.device) / (num_points + 1)
    a = a.view(1, 1, -1, *([1] * (x.dim() - 1)))
    pts = (1 - a) * references[:, :, None] + a * x[:, None, None]        # (N, K, T, C, H, W)
    logits = model(pts.reshape(-1, *x.shape[1:]))
    L = F.cross_entropy(logits, target.repeat_interleave(K * num_points), reduction="none").view(N, K, num_points)
    per = L.mean(2) if barrier == "mean" else temperature * torch.logsumexp(L / temperature, 2)
    return per.mean(1)


def adaptive_pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, references: torch.Tensor,
                 eps: float, steps: int = 20, step_size: float | None = None, barrier_weight: float = 1.0,
                 num_points: int = 8, barrier: str = "mean", temperature: float = 1.0, norm: str = "linf",
                 random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """An attacker who knows the barrier detector: targeted PGD that also flattens the barrier.

    Minimises, inside the ``norm`` ball of radius ``eps`` around ``x`` and the pixel box [0, 1],

        CE(f(x'), target) + barrier_weight * B(x'),

    where ``B`` is :func:`barrier_surrogate`: the mean (or smooth max) loss toward ``target`` along
    the linear paths from the detector's references of class ``target`` (``references``, (N, K, C, H, W))
    to ``x'``. If the attack succeeds, the detector will predict ``target`` and draw exactly these paths,
    so a low ``B`` means a low measured barrier. This is :func:`pgd` (targeted, ``B`` its ``extra_loss``):
    signed gradient steps for L-inf, normalised ones for L2; ``step_size`` defaults to
    ``2.5 * eps / steps``; ``eps`` has no default.
    """
    tgt = _check(x, target, eps, norm, "target")
    check_images(references, "references")
    num_points = check.positive_int(num_points, "num_points")
    barrier_weight = check.non_negative_float(barrier_weight, "barrier_weight")
    temperature = check.positive_float(temperature, "temperature")
    x = x.detach()
    refs = references.detach().to(x)

    def flatness(xa: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return barrier_weight * barrier_surrogate(model, xa, refs[rows], tgt[rows], num_points, barrier,
                                                  temperature).sum()

    return pgd(model, x, tgt, eps, steps, step_size, norm, random_start, targeted=True, generator=generator,
               extra_loss=flatness if barrier_weight else None)
