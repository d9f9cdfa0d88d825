"""Optimising inputs: a row-wise Adam with per-row freezing, and the total-variation regulariser.

Three procedures of the papers move *inputs*, not weights, by Adam, one independent problem per row of a
batch: the bypass of a barrier (:mod:`mclib.paths`), feature-visualisation optimisation
(:func:`mclib.synth.fvo`) and the optimisation attack (:func:`mclib.attacks.evasion.optimisation_attack`).
Each row stops on its own criterion and must then leave the batch untouched, so ``torch.optim.Adam`` (one
step counter and no row selection) does not fit; :class:`RowAdam` is the same update on plain tensors, with
a step counter per row and ``rows`` selecting the rows to step.

* :class:`RowAdam` -- Adam (Kingma & Ba, 2015) on the rows of a batch, each row with its own moments and
  step count;
* :func:`total_variation` -- the anisotropic total variation per input (Olah et al., 2017), the smoothness
  term of FVO, of bypass and of the optimisation attack;
* :func:`check_input_grad` -- the one clear error for a model whose output does not depend on its input
  through autograd (nothing to optimise); :func:`input_grad` takes the gradient and raises that error.
"""
from __future__ import annotations

import torch

__all__ = ["RowAdam", "total_variation", "check_input_grad", "input_grad"]

_NO_INPUT_GRAD = ("model: its output has no gradient with respect to its input (it runs under no_grad, "
                  "detaches the input or is a traced/frozen graph without autograd); {name} optimises the "
                  "input and needs d loss / d input -- pass an ordinary nn.Module")


class RowAdam:
    """Adam (Kingma & Ba, 2015) on a batch of independent rows, each with its own moments and step count.

    For row ``i`` at its ``k``-th step, with gradient ``g`` (plus ``weight_decay * x``, classic L2 added to
    the gradient as ``torch.optim.Adam`` does):

    .. math::

        m \\leftarrow \\beta_1 m + (1-\\beta_1) g,\\quad v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2,\\quad
        x \\leftarrow x - \\frac{\\mathrm{lr}}{1-\\beta_1^k}\\,
        \\frac{m}{\\sqrt{v / (1-\\beta_2^k)} + \\varepsilon}.

    :meth:`step` updates only the rows it is given; the others keep their iterate, moments and count (a
    *frozen* row). The state lives on plain tensors (``m``, ``v`` like ``x``; ``t`` (N,) steps per row).

    ``scalar_bias`` chooses the arithmetic of the bias corrections ``1 - beta^k`` (the same math, different
    float rounding, so each caller keeps the one its recorded results were computed with):

    * ``False`` (default): per row, in ``x``'s dtype, so stepped rows may have taken different numbers of
      steps (used by bypass and the optimisation attack);
    * ``True``: as Python floats (double) from the one step count all stepped rows share (checked), the step
      applied as ``x - (lr / (1 - beta1^k)) * m / denom`` -- ``torch.optim.Adam``'s step-size arithmetic,
      used by FVO.
    """

    def __init__(self, x: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, scalar_bias: bool = False):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
            raise TypeError(f"x must be a floating-point tensor with a leading row dimension, got "
                            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else f'{x.dtype} {tuple(x.shape)}'}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {tuple(betas)}")
        self.lr, self.b1, self.b2, self.eps, self.wd = float(lr), b1, b2, float(eps), float(weight_decay)
        self.scalar_bias = bool(scalar_bias)
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)

    def step(self, x: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """New values of ``x[rows]`` (of all of ``x`` if ``rows`` is None) after one Adam step with ``grad``
        (the gradient for those rows). ``x`` is not modified: the caller writes the result back (after
        clamping or projecting it), which keeps this one primitive for every constrained use."""
        sel = slice(None) if rows is None else rows
        xs = x if rows is None else x[rows]
        if self.scalar_bias:
            if not len(xs):
                return xs.clone()
            lo, hi = (int(c) for c in self.t[sel].aminmax())
            if lo != hi:   # checked before any state changes, so the optimiser stays usable
                raise ValueError(f"RowAdam(scalar_bias=True) steps rows with one shared step count; these rows have "
                                 f"taken between {lo} and {hi} steps (use scalar_bias=False)")
        g = grad + self.wd * xs if self.wd else grad
        self.t[sel] += 1
        m = self.m[sel].mul(self.b1).add_(g, alpha=1 - self.b1)
        v = self.v[sel].mul(self.b2).addcmul_(g, g, value=1 - self.b2)
        self.m[sel], self.v[sel] = m, v
        if self.scalar_bias:
            k = hi + 1
            denom = (v / (1 - self.b2 ** k)).sqrt_().add_(self.eps)
            return xs.addcdiv(m, denom, value=-(self.lr / (1 - self.b1 ** k)))
        t = self.t[sel].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        denom = (v / (1 - self.b2 ** t)).sqrt_().add_(self.eps)
        return xs - self.lr * (m / (1 - self.b1 ** t)) / denom


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per input, (N,), of a batch ``x`` (N, ...):

    .. math:: \\mathrm{TV}(x_n) = \\sum_{c,i,j} |x_{n,c,i+1,j} - x_{n,c,i,j}| + |x_{n,c,i,j+1} - x_{n,c,i,j}|,

    the last two dimensions being the image's height and width and any between them and N (channels) summed
    over: (N, C, H, W) or (N, H, W). An input with fewer than two spatial dimensions, (N,) or (N, D), has no
    neighbours and gives 0. The TV regulariser of feature visualisation (Olah et al., 2017), of the bypass
    objective and of the optimisation attack (Vrabel et al., 2025, on ``TV(x - B)``).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor batch (N, ...), got {type(x).__name__}")
    if x.dim() == 0 or x.dim() > 4:
        raise ValueError(f"total_variation expects a batch (N, C, H, W), (N, H, W) or (N, D), got shape {tuple(x.shape)}")
    if x.dim() < 3:
        return x.new_zeros(x.shape[0])
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    return dh + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)


def check_input_grad(loss: torch.Tensor, x: torch.Tensor, name: str) -> None:
    """Raise one clear error, naming the procedure ``name``, unless ``loss`` depends on ``x`` through autograd.

    Costs one extra backward pass, so callers check once, on their first step.
    """
    g = (torch.autograd.grad(loss.sum(), x, retain_graph=True, allow_unused=True)[0]
         if loss.requires_grad else None)
    if g is None:
        raise ValueError(_NO_INPUT_GRAD.format(name=name))


def input_grad(loss: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """``d loss.sum() / d x``, or the one clear error of :func:`check_input_grad` (naming the procedure ``name``)
    if ``loss`` does not depend on ``x`` through autograd -- at no extra cost: the gradient is the one the
    caller needed anyway."""
    g = torch.autograd.grad(loss.sum(), x, allow_unused=True)[0] if loss.requires_grad else None
    if g is None:
        raise ValueError(_NO_INPUT_GRAD.format(name=name))
    return g
