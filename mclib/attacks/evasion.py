"""Evasion attacks in pixel space [0, 1], batched: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("linf", "l2")


def _check(x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y differ in batch size: {x.shape[0]} vs {y.shape[0]}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad


def _l2_normalise(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, targeted: bool = False) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` (L-inf): ``clip(x + eps * sign(grad_x L(x, y)), 0, 1)``.

    Untargeted it raises the loss of the true label ``y``; targeted it lowers the loss of target ``y``.
    """
    _check(x, y, eps, "linf")
    was = model.training
    model.eval()
    g = _loss_grad(model, x, y, targeted)
    model.train(was)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.3, steps: int = 10,
        step_size: float | None = None, norm: str = "linf", random_start: bool = True,
        targeted: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the ``norm`` ball of radius ``eps`` around ``x``.

    Each step moves by ``step_size`` along sign(grad) (L-inf) or grad/||grad|| (L2), projects back onto
    the ball and clips to [0, 1]. ``step_size`` defaults to ``2.5 * eps / steps``. Random start draws
    uniformly from the L-inf ball (L-inf) or a Gaussian direction scaled into the ball (L2).
    """
    _check(x, y, eps, norm)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    was = model.training
    model.eval()
    x = x.detach()
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator).to(x) * 2 - 1 if norm == "linf" else \
            _l2_normalise(torch.randn(x.shape, generator=generator).to(x)) * eps * torch.rand(
                x.shape[0], generator=generator).to(x).view(-1, *([1] * (x.dim() - 1)))
        delta = _project(noise * (eps if norm == "linf" else 1.0), eps, norm)
    else:
        delta = torch.zeros_like(x)
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        g = _loss_grad(model, adv, y, targeted)
        step = g.sign() if norm == "linf" else _l2_normalise(g)
        adv = x + _project(adv + step_size * step - x, eps, norm)
        adv = adv.clamp(0, 1).detach()
    model.train(was)
    return adv
