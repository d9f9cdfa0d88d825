"""Weight-space curves between two trained networks, for any ``nn.Module``.

A curve joins two *endpoints* (trained models with weights :math:`w_0` and :math:`w_1`) through
trainable *bends* :math:`\\theta_1..\\theta_K`, as in Garipov et al. (2018, "Loss surfaces, mode
connectivity and fast ensembling of DNNs", sec. 3) and Zhao et al. (2020, "Bridging mode
connectivity in loss landscapes and adversarial robustness", sec. 2). Writing the control points
:math:`p_0 = w_0, p_1..p_K = \\theta_1..\\theta_K, p_{K+1} = w_1` and :math:`n = K + 1`:

* **Bezier** (``kind="bezier"``): :math:`w(t) = \\sum_{k=0}^{n} \\binom{n}{k} t^k (1-t)^{n-k} p_k`
  (Bernstein polynomials). With one bend this is the paper's quadratic curve
  :math:`(1-t)^2 w_0 + 2t(1-t)\\theta + t^2 w_1`.
* **Polygonal chain** (``kind="polychain"``): :math:`w(t) = \\sum_k \\max(0, 1 - |nt - k|)\\, p_k`
  (hat functions on the knots :math:`k/n`); with one bend, :math:`w_0 \\to \\theta` for
  :math:`t \\le 1/2` and :math:`\\theta \\to w_1` after.
* ``num_bends=0`` is the straight line :math:`(1-t) w_0 + t w_1` for either kind (:func:`line`).

One generic implementation serves every architecture: the curve keeps a deep copy of endpoint 0 as
the *template* and evaluates the network at :math:`w(t)` with :func:`torch.func.functional_call` -- no
mirror class per layer type. The control points are combined *per parameter tensor*,
:math:`w_j(t) = \\sum_k c_k(t)\\, p_{k,j}` for every tensor :math:`j`, as Garipov et al.'s curve layers
do: the endpoints' part :math:`c_0 w_{0,j} + c_n w_{1,j}` needs no gradient, each bend enters with one
scaled add, and the backward pass writes each bend's gradient straight into its own tensor -- no
concatenation of, and no matrix product over, one flattened vector of all P parameters (that cost
about 10% of a VGG-16 step; ``benchmarks/bench_curves.py``). The point and the squared norm of the
weight-decay term are one autograd node with a written-out backward (``_CurvePoint``): on VGG-16
(15M parameters) that took the curve step from 1.25x to 1.12x a plain step (1 thread, paired medians);
writing :math:`w(t)` into buffers reused between steps and the bends' gradients in place took it to
1.07x on one machine (480 MB L3) and 1.02x on another (AMD EPYC, 32 MB L3); foreach calls for the
small tensors took the ResNet-20 step (65 tensors, 0.3M parameters) from 4.0 to 3.0 ms of curve
arithmetic per step.

Training (:func:`train_curve`) follows Garipov et al. sec. 3.2: every minibatch draws
:math:`t \\sim U(0, 1)` and takes a step on :math:`\\mathrm{CE}(f_{w(t)}(x), y) +
\\tfrac{\\lambda}{2}\\lVert w(t) \\rVert^2` (weight decay on the point of the curve, not on the
bends), with the endpoints frozen and only the bends trained. Bends start on the straight line.

Buffers (BatchNorm running statistics, normalisation constants) are not trained. The curve's own
forward pass uses the endpoints' buffers interpolated linearly in :math:`t` (floating buffers; integer
ones such as ``num_batches_tracked`` are taken from endpoint 0), so it is exact at :math:`t=0, 1`;
in training mode BatchNorm uses the batch's statistics as usual. Inside the curve, running statistics
of an interior point are not meaningful: :meth:`Curve.at` re-estimates them on data (Garipov et al.
sec. 3.2; Zhao et al. sec. 2), which is how every interior point of a BatchNorm curve should be evaluated.
At :math:`t = 0` and :math:`t = 1` the point *is* an endpoint, whose own running statistics were estimated
on its training distribution (augmented data included); re-estimating them on other data (clean,
unaugmented test-like images) degrades a pretrained endpoint (a public CIFAR ResNet-20: accuracy 0.918 ->
0.889), and a barrier measured against the degraded endpoint is too low. So the endpoints keep their own
statistics by default (``endpoint_bn="keep"``; ``"recompute"`` re-estimates them too), and ``bn_data``
should follow the endpoints' training distribution (the same preprocessing and augmentation).
"""
from __future__ import annotations

import copy
import math
import warnings
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from mclib import torchutil as _torchutil
from mclib.torchutil import device_of, show_progress

KINDS = ("bezier", "polychain")
#: per curve, the tensors its last point was written into (``Curve._point_buffers``); weak, so a curve
#: that is dropped takes its buffers along, and copying or pickling a curve does not copy them
_POINT_BUFFERS: "weakref.WeakKeyDictionary[nn.Module, list[torch.Tensor]]" = weakref.WeakKeyDictionary()
#: parameter tensors with fewer elements are combined by foreach calls into fresh tensors (``_CurvePoint``):
#: there per-call overhead, not memory traffic, is the cost (ResNet-20's 65 tensors of at most 37K elements)
_BUFFER_MIN = 2 ** 16
_BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
#: what :meth:`Curve.at` does with the BatchNorm statistics of the endpoints themselves (t = 0, 1) given ``bn_data``
ENDPOINT_BN = ("keep", "recompute")


def _describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"


def _module_signature(m: nn.Module) -> str:
    """A module's type and its constructor settings (``extra_repr``: stride, padding, ...), e.g.
    ``"Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2))"``."""
    return f"{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})"


def _check_same_modules(endpoints: Sequence[nn.Module]) -> None:
    """Raise a ValueError naming the first module in which the endpoints' structure differs.

    The curve evaluates every point with endpoint 0's modules (:func:`torch.func.functional_call` on its
    copy): endpoints with equal parameter shapes but other modules (``nn.ReLU`` against ``nn.Tanh``, another
    stride) would be evaluated as endpoint 0's network at every t, endpoint 1 included. Functions called
    inside ``forward`` (a functional activation, a lambda) cannot be compared and are not checked.
    """
    ref = [(n, _module_signature(m)) for n, m in endpoints[0].named_modules()]
    for i, other in enumerate(endpoints[1:], start=1):
        mods = [(n, _module_signature(m)) for n, m in other.named_modules()]
        for (na, sa), (nb, sb) in zip(ref, mods):
            if (na, sa) != (nb, sb):
                where = f"module {na or '(the model)'!r}" if na == nb else f"module {na!r} (endpoint {i}: {nb!r})"
                raise ValueError(f"endpoints have different module structures: {where} is {sa} in endpoint 0 but "
                                 f"{sb} in endpoint {i}; a curve evaluates every t with endpoint 0's modules, so both "
                                 f"endpoints must be the same architecture")
        if len(ref) != len(mods):
            longer, k = (0, len(mods)) if len(ref) > len(mods) else (i, len(ref))
            extra = (ref if longer == 0 else mods)[k]
            raise ValueError(f"endpoints have different module structures: module {extra[0]!r} ({extra[1]}) of "
                             f"endpoint {longer} has no counterpart in endpoint {i if longer == 0 else 0}")


def _check_same_architecture(endpoints: Sequence[nn.Module]) -> None:
    """Raise a ValueError naming the first parameter, buffer or module in which the endpoints differ."""
    ref = endpoints[0]
    for i, other in enumerate(endpoints[1:], start=1):
        for what, a, b in (("parameter", dict(ref.named_parameters()), dict(other.named_parameters())),
                           ("buffer", dict(ref.named_buffers()), dict(other.named_buffers()))):
            for name, ta in a.items():
                if name not in b:
                    raise ValueError(f"endpoints have different architectures: {what} {name!r} {_describe(ta)} "
                                     f"of endpoint 0 is missing from endpoint {i}")
                tb = b[name]
                if ta.shape != tb.shape or ta.dtype != tb.dtype:
                    raise ValueError(f"endpoints have different architectures: {what} {name!r} is "
                                     f"{_describe(ta)} in endpoint 0 but {_describe(tb)} in endpoint {i}")
            extra = [n for n in b if n not in a]
            if extra:
                raise ValueError(f"endpoints have different architectures: {what} {extra[0]!r} "
                                 f"{_describe(b[extra[0]])} of endpoint {i} is missing from endpoint 0")
    _check_same_modules(endpoints)


def bernstein(t: float | torch.Tensor, n: int) -> torch.Tensor:
    """Bernstein basis of degree ``n`` at ``t``: :math:`\\binom{n}{k} t^k (1-t)^{n-k}`, ``k = 0..n`` (float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    k = torch.arange(n + 1, dtype=torch.float64)
    binom = torch.tensor([math.comb(n, int(j)) for j in k], dtype=torch.float64)
    return binom * t ** k * (1 - t) ** (n - k)


def hat(t: float | torch.Tensor, n: int) -> torch.Tensor:
    """Hat functions on the knots ``k/n``, ``k = 0..n``: :math:`\\max(0, 1 - |nt - k|)` (float64)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    k = torch.arange(n + 1, dtype=torch.float64)
    return (1 - (n * t - k).abs()).clamp_min(0)


def _square_norm(ws: Sequence[torch.Tensor]) -> torch.Tensor:
    """:math:`\\sum_j \\lVert w_j \\rVert^2` with one fused reduction per tensor (``torch.dot``: one read, no
    temporary :math:`w_j^2`)."""
    with torch.no_grad():
        return sum(torch.dot(w.reshape(-1), w.reshape(-1)) for w in ws)


def _sole_owner(t: torch.Tensor) -> bool:
    """Whether nothing but the caller's own reference holds ``t`` (no view, no autograd graph, no user).

    ``Tensor._use_count`` counts the references to the tensor's implementation: a view (what
    ``_CurvePoint`` hands out) and every tensor an autograd graph saved from it hold one each. Where the
    private method is missing (another torch), the answer is no, and callers fall back to fresh tensors.
    """
    count = getattr(t, "_use_count", None)
    return count is not None and count() == 1


class _CurvePoint(torch.autograd.Function):
    r"""The curve's point and its squared norm as one autograd node, for every parameter tensor ``j``:

    .. math:: w_j = \sum_{k=0}^{K+1} c_k\, p_{k,j}, \qquad s = \sum_j \lVert w_j \rVert^2

    with :math:`p_0 = w_0`, :math:`p_{K+1} = w_1` the (constant) endpoints and :math:`p_1..p_K` the bends
    (``bends[j]`` of shape ``(K, *shape_j)``). The backward pass is written out: with upstream gradients
    :math:`\bar w_j` and :math:`\bar s`,

    .. math:: \bar p_{k,j} = c_k\, g_j, \qquad g_j = \bar w_j + 2 \bar s\, w_j \quad (k = 1..K).

    Why by hand: on VGG-16 (15M parameters) a curve step moves 60 MB per pass over the weights, and
    the step is memory-bound there. Autograd on the plain formula would add passes (the temporary
    :math:`w_j^2`, its reduction and backward, the stacking of the bends' gradients) and fresh
    allocations, and every fresh 60 MB costs page faults (the allocator hands such blocks back to the
    system between steps: 9,000 faults a step measured). So:

    * the point is written into ``outs`` (the curve's own buffers, reused from step to step when nothing
      holds them any more -- ``_sole_owner``; a graph still alive gets fresh ones) and handed out as views;
    * :math:`s` is one ``dot`` per tensor;
    * with one bend, the bend's gradient :math:`c_1 (\bar w_j + 2 \bar s\, w_j)` is formed in place in
      the upstream gradient when this node is its only holder (two passes, no allocation), else in a
      fresh tensor. ``square=False`` leaves :math:`s` out (only the :math:`w_j` are returned).

    The forward arithmetic (``mul`` by :math:`c_1`, then ``add_`` of the other bends and of the
    endpoints) is the same as before the buffers, so :math:`w(t)` is bit for bit unchanged.
    """

    @staticmethod
    def forward(ctx, c, e0, e1, square, outs, *bends):
        ws = [None] * len(bends)
        small = [j for j, out in enumerate(outs) if out is None]
        if small:                           # a handful of foreach calls instead of four calls per tensor
            shapes = [bends[j].shape[1:] for j in small]
            w_s = torch._foreach_mul([bends[j][0] for j in small], c[1])
            for k in range(1, len(c) - 2):
                torch._foreach_add_(w_s, [bends[j][k] for j in small], alpha=c[k + 1])
            torch._foreach_add_(w_s, [e0[j].view(sh) for j, sh in zip(small, shapes)], alpha=c[0])
            torch._foreach_add_(w_s, [e1[j].view(sh) for j, sh in zip(small, shapes)], alpha=c[-1])
            for j, w in zip(small, w_s):
                ws[j] = w
        for j, out in enumerate(outs):
            if out is None:
                continue
            B = bends[j]
            w = torch.mul(B[0], c[1], out=out)
            for k in range(1, B.shape[0]):
                w.add_(B[k], alpha=c[k + 1])
            w.add_(e0[j].view(out.shape), alpha=c[0]).add_(e1[j].view(out.shape), alpha=c[-1])
            ws[j] = w.view_as(w)            # a view: the buffer itself never joins a graph
        ctx.c, ctx.square, ctx.small = c, square, small
        ctx.set_materialize_grads(False)
        if not square:
            return tuple(ws)
        ctx.save_for_backward(*ws)
        return tuple(ws) + (_square_norm(ws),)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        c, n = ctx.c, len(ctx.c) - 2
        g_s = grads[-1] if ctx.square else None
        if g_s is None:
            ws, k = [None] * (len(grads) - ctx.square), 0.0
        else:                               # one scalar: float() costs one synchronisation per step on a GPU
            ws, k = ctx.saved_tensors, 2.0 * float(g_s)
        out = [None] * len(ws)
        small = set(ctx.small) if n == 1 else set()
        fused = [j for j in sorted(small) if grads[j] is not None]
        if fused:                           # small tensors, one bend: c_1 (g_j + k w_j) by foreach calls
            gs = [grads[j] for j in fused]
            if g_s is not None:
                gs = torch._foreach_add(gs, [ws[j] for j in fused], alpha=k)
                torch._foreach_mul_(gs, c[1])
            else:
                gs = torch._foreach_mul(gs, c[1])
            for j, g in zip(fused, gs):
                out[j] = g.unsqueeze(0)
        for j, (g, w) in enumerate(zip(grads, ws)):
            if (j in small and g is not None) or (g is None and w is None):
                continue
            if g is None:                   # only the weight decay reaches w_j
                g = torch.mul(w, k)
            elif w is not None:             # g_j = grad w_j + 2 grad_s w_j
                g = g.add_(w, alpha=k) if _sole_owner(g) else torch.add(g, w, alpha=k)
            if n == 1:                      # c_1 g_j, in place unless g_j is still the caller's
                out[j] = (g.mul_(c[1]) if _sole_owner(g) else torch.mul(g, c[1])).unsqueeze(0)
            else:
                grad = g.new_empty((n,) + tuple(g.shape))
                for i in range(n):
                    torch.mul(g, c[i + 1], out=grad[i])
                out[j] = grad
        return (None, None, None, None, None) + tuple(out)


class Curve(nn.Module):
    """A Bezier curve or polygonal chain in the weight space of any network (see the module docstring).

    Parameters
    ----------
    endpoints:
        Two models of the same architecture (same parameter and buffer names and shapes); they are
        copied, never modified.
    kind:
        ``"bezier"`` (Bernstein combination) or ``"polychain"`` (hat functions).
    num_bends:
        Number of trainable bends; 1 is the papers' quadratic Bezier / one-bend chain, 0 the straight line.

    Attributes
    ----------
    template: a deep copy of endpoint 0 (the architecture; its own parameters are frozen and unused).
    names, shapes: the template's parameter names and shapes, in order.
    ends: ``(2, P)`` buffer, the flattened endpoint parameters.
    bend_tensors: one trainable parameter of shape ``(num_bends, *shape)`` per parameter tensor of the
    network, in the order of ``names`` -- the only trainable tensors.
    losses: the per-batch objective values of the last :func:`train_curve` on this curve (``[]`` before).
    The property :attr:`bends` gives all bends flattened, ``(num_bends, P)`` (a read-only copy, for inspection).
    """

    def __init__(self, endpoints: Sequence[nn.Module], kind: str = "bezier", num_bends: int = 1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown curve kind {kind!r}; valid: {', '.join(KINDS)}")
        if not isinstance(num_bends, int) or num_bends < 0:
            raise ValueError(f"num_bends must be an int >= 0, got {num_bends!r}")
        endpoints = list(endpoints)
        if len(endpoints) != 2 or not all(isinstance(m, nn.Module) for m in endpoints):
            raise ValueError(f"a curve needs exactly two nn.Module endpoints, got {len(endpoints)} object(s)")
        _check_same_architecture(endpoints)
        self.kind, self.num_bends = kind, num_bends
        self.losses: list[float] = []
        self.template = copy.deepcopy(endpoints[0])
        for p in self.template.parameters():
            p.requires_grad_(False)
        named = list(self.template.named_parameters())
        if not named:
            raise ValueError("the endpoints have no parameters: nothing to connect")
        bad = [n for n, p in named if not p.is_floating_point()]
        if bad:
            raise ValueError(f"curves need floating-point parameters; {bad[0]!r} is not")
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        dtype = named[0][1].dtype
        flat = [torch.cat([dict(m.named_parameters())[n].detach().reshape(-1).to(dtype).cpu() for n in self.names])
                for m in endpoints]
        device = named[0][1].device
        self.register_buffer("ends", torch.stack(flat).to(device))
        # bends on the straight line: theta_k = w0 + k/(K+1) (w1 - w0), one (K, *shape) tensor per parameter
        frac = torch.arange(1, num_bends + 1, dtype=dtype).view(-1, 1) / (num_bends + 1)
        line_pts = (self.ends[0] + frac.to(device) * (self.ends[1] - self.ends[0])).split(self.numels, dim=1)
        self.bend_tensors = nn.ParameterList(
            [nn.Parameter(piece.reshape(num_bends, *shape).clone()) for piece, shape in zip(line_pts, self.shapes)])
        # buffers: floating ones are interpolated linearly between the endpoints, the others come from endpoint 0
        bufs = [(n, b) for n, b in self.template.named_buffers()]
        self.float_buffers = [n for n, b in bufs if b.is_floating_point()]
        self.other_buffers = [n for n, b in bufs if not b.is_floating_point()]
        self._buf_shapes = {n: b.shape for n, b in bufs}
        if self.float_buffers:
            fb = [torch.cat([dict(m.named_buffers())[n].detach().reshape(-1).float().cpu() for n in self.float_buffers])
                  for m in endpoints]
            self.register_buffer("end_buffers", torch.stack(fb).to(device))
        else:
            self.register_buffer("end_buffers", torch.zeros(2, 0, device=device))
        self.has_bn = any(isinstance(m, _BN_TYPES) for m in self.template.modules())

    # -- the curve --------------------------------------------------------------------------------
    def coefficients(self, t: float | torch.Tensor) -> torch.Tensor:
        """Weights of the ``num_bends + 2`` control points at ``t`` (Bernstein or hat functions; sum to 1)."""
        t_ = torch.as_tensor(t, dtype=torch.float64)
        if t_.dim() != 0:
            raise ValueError(f"t must be a scalar, got shape {tuple(t_.shape)}")
        if not 0.0 <= float(t_) <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {float(t_)}")
        n = self.num_bends + 1
        return bernstein(t_, n) if self.kind == "bezier" else hat(t_, n)

    @property
    def bends(self) -> torch.Tensor:
        """All bends flattened, ``(num_bends, P)`` (a detached copy: train :attr:`bend_tensors`)."""
        return torch.cat([b.detach().reshape(self.num_bends, -1) for b in self.bend_tensors], 1)

    def weights(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """:math:`w(t)` as a dict parameter name -> tensor, combined per tensor (differentiable in the bends)."""
        return dict(zip(self.names, self._point(t, square=False)))

    def _point(self, t: float | torch.Tensor, square: bool) -> list[torch.Tensor]:
        """The tensors of :math:`w(t)` in the order of :attr:`names`, then :math:`\\lVert w(t) \\rVert^2` if
        ``square``; one autograd node (``_CurvePoint``) when there are bends."""
        c = self.coefficients(t).tolist()  # Python floats: scalar arguments, cast to the weights' dtype
        e0, e1 = self.ends[0].split(self.numels), self.ends[1].split(self.numels)
        if self.num_bends:
            return list(_CurvePoint.apply(c, e0, e1, square, self._point_buffers(), *self.bend_tensors))
        out = [torch.mul(a, c[0]).add_(b, alpha=c[-1]).view(shape) for a, b, shape in zip(e0, e1, self.shapes)]
        return out + [_square_norm(out)] if square else out

    def _point_buffers(self) -> list[torch.Tensor | None]:
        """Where ``_CurvePoint`` writes :math:`w(t)`: per parameter tensor of at least ``_BUFFER_MIN``
        elements, last call's tensor if nothing holds it any more, else a new one (kept for the next call);
        ``None`` for smaller tensors (made fresh: cheap). One set per curve, outside the module's state
        (``_POINT_BUFFERS``)."""
        ref = self.bend_tensors[0]
        bufs = _POINT_BUFFERS.get(self)
        big = [b for b in bufs or () if b is not None]
        if (bufs is None or (big and (big[0].device != ref.device or big[0].dtype != ref.dtype))
                or not all(_sole_owner(b) for b in big)):
            bufs = _POINT_BUFFERS[self] = [
                torch.empty(b.shape[1:], dtype=b.dtype, device=b.device) if b[0].numel() >= _BUFFER_MIN else None
                for b in self.bend_tensors]
        return bufs

    def flat_weights(self, t: float | torch.Tensor) -> torch.Tensor:
        """:math:`w(t)` as one flat vector of length P (differentiable with respect to the bends)."""
        return torch.cat([w.reshape(-1) for w in self.weights(t).values()])

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: piece.view(s) for n, piece, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def buffers_at(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Buffers at ``t``: floating ones ``(1-t) b_0 + t b_1`` (exact at the ends), integer ones from endpoint 0.

        Fresh tensors, so a BatchNorm forward in training mode that updates them in place leaves the
        curve untouched.
        """
        tf = float(torch.as_tensor(t))
        out: dict[str, torch.Tensor] = {}
        if self.float_buffers:
            fb = (1 - tf) * self.end_buffers[0] + tf * self.end_buffers[1] if 0 < tf < 1 else \
                self.end_buffers[0 if tf == 0 else 1].clone()
            sizes = [math.prod(self._buf_shapes[n]) for n in self.float_buffers]
            dtypes = dict(self.template.named_buffers())
            for n, piece in zip(self.float_buffers, fb.split(sizes)):
                out[n] = piece.view(self._buf_shapes[n]).to(dtypes[n].dtype).clone()
        own = dict(self.template.named_buffers())
        for n in self.other_buffers:
            out[n] = own[n].clone()
        return out

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The network at :math:`w(t)` applied to ``x`` (train/eval mode follows the curve's own mode)."""
        state = self.weights(t)
        state.update(self.buffers_at(t))
        return functional_call(self.template, state, (x,))

    def forward_frozen(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with :math:`w(t)` held constant: no gradient reaches the bends, only ``x`` (and what
        ``x`` depends on). For input-gradient passes through a fixed curve (the path-aware trigger attack,
        :func:`mclib.attacks.backdoor.optimise_trigger`): :math:`w(t)` is formed without an autograd node and
        its convolution weights are laid out channels-last on the CPU (:func:`mclib.torchutil.channels_last_weight`;
        issue 31: the same arithmetic in another summation order, so equal to :meth:`forward` to float32
        rounding)."""
        with torch.no_grad():
            state = {name: _torchutil.channels_last_weight(w) for name, w in self.weights(t).items()}
            state.update(self.buffers_at(t))
        return functional_call(self.template, state, (x,))

    def bend_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors (for an optimiser): :attr:`bend_tensors`, or ``[]`` for a straight line."""
        return list(self.bend_tensors) if self.num_bends else []

    def control_points(self) -> list[dict[str, torch.Tensor]]:
        """Every control point ``[w_0, theta_1, .., theta_K, w_1]`` as name -> tensor dicts (detached)."""
        ends = [{k: v.clone() for k, v in self._unflatten(r.detach()).items()} for r in self.ends]
        bends = [{n: b[k].detach().clone() for n, b in zip(self.names, self.bend_tensors)} for k in range(self.num_bends)]
        return [ends[0]] + bends + [ends[1]]

    def at(self, t: float | torch.Tensor, bn_data: torch.Tensor | None = None, batch_size: int = 256,
           endpoint_bn: str = "keep") -> nn.Module:
        """A standalone copy of the network with weights :math:`w(t)`, in eval mode, on the curve's device.

        If the network has BatchNorm and ``bn_data`` (a tensor of inputs) is given, the running
        statistics of an interior point (0 < t < 1) are reset and re-estimated on ``bn_data`` as a
        cumulative average over batches of ``batch_size`` (momentum ``None``;
        :func:`torch.optim.swa_utils.update_bn`), as Garipov et al. (sec. 3.2) do for every evaluated point.
        ``bn_data`` should follow the endpoints' training distribution (their preprocessing and augmentation):
        statistics estimated on other data shift every BatchNorm layer. At ``t = 0`` and ``t = 1`` the point is
        an endpoint, and with ``endpoint_bn="keep"`` (default) it keeps that endpoint's own statistics --
        re-estimated ones would measure the curve against a degraded endpoint; ``"recompute"`` re-estimates
        them too (to see what ``bn_data`` does to a known model). Without ``bn_data`` the buffers are the
        endpoints' interpolated linearly (exact at ``t = 0, 1``; a warning says so for interior BN points).
        """
        if endpoint_bn not in ENDPOINT_BN:
            raise ValueError(f"endpoint_bn must be one of {ENDPOINT_BN}, got {endpoint_bn!r}")
        model = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, value in self.weights(t).items():
                _get(model, name).copy_(value)
            for name, value in self.buffers_at(t).items():
                _get(model, name, buffer=True).copy_(value)
        for p in model.parameters():
            p.requires_grad_(True)
        if self.has_bn:
            tf = float(torch.as_tensor(t))
            if bn_data is not None and (0 < tf < 1 or endpoint_bn == "recompute"):
                update_bn(model, bn_data, batch_size=batch_size)
            elif 0 < tf < 1:
                warnings.warn("Curve.at(t) without bn_data on a BatchNorm network: running statistics are the "
                              "endpoints' interpolated, not re-estimated; pass bn_data=X_train", stacklevel=2)
        return model.eval()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_bends={self.num_bends}, parameters per point={self.ends.shape[1]}"


def _get(model: nn.Module, name: str, buffer: bool = False) -> torch.Tensor:
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    return getattr(mod, attr)


def update_bn(model: nn.Module, X: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them on inputs ``X`` (in place).

    Cumulative average over the batches (momentum ``None``), via :func:`torch.optim.swa_utils.update_bn`;
    the model's train/eval mode is restored afterwards. The forward passes run channels-last on the CPU
    (:func:`mclib.torchutil.channels_last`; issue 31: the statistics are the same sums in another order, equal to
    float32 rounding), the model's tensors back in their own layout afterwards.
    """
    if not isinstance(X, torch.Tensor) or len(X) == 0:
        raise ValueError("bn_data must be a non-empty tensor of inputs")
    device = device_of(model)
    batches = [X[i:i + batch_size] for i in range(0, len(X), batch_size)]
    with _torchutil.channels_last(model):
        torch.optim.swa_utils.update_bn(batches, model, device=device)
    return model


def line(m0: nn.Module, m1: nn.Module) -> Curve:
    """The straight line :math:`(1-t) w_0 + t w_1` between two models (a curve without bends)."""
    return Curve([m0, m1], kind="bezier", num_bends=0)


class CurvePoint(nn.Module):
    """The curve at a fixed ``t`` as an ordinary module: ``forward(x) = curve(x, t)``, differentiable in the bends.

    Handed to ``batch_hook`` by :func:`train_curve` so that attacks written for models (e.g.
    :func:`mclib.attacks.evasion.pgd`, which switches to eval mode and back) run against the point of the
    curve being trained.
    """

    def __init__(self, curve: Curve, t: float | torch.Tensor):
        super().__init__()
        self.curve, self.t = curve, t

    def train(self, mode: bool = True):
        super().train(mode)
        self.curve.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.curve(x, self.t)


def objective(curve: Curve, x: torch.Tensor, y: torch.Tensor, t: float | torch.Tensor,
              weight_decay: float = 0.0) -> torch.Tensor:
    """The curve-training objective at one ``t``: :math:`\\mathrm{CE}(f_{w(t)}(x), y) + \\tfrac{\\lambda}{2}\\lVert w(t)\\rVert^2`.

    Runs in the curve's current mode (training mode: BatchNorm on batch statistics); differentiable in
    the bends. ``weight_decay`` is :math:`\\lambda` (Garipov et al. 2018 sec. 3.2).
    """
    point = curve._point(t, square=bool(weight_decay))
    # convolution weights channels-last on the CPU (the whole net then runs NHWC; issue 31, float32 rounding)
    state = {name: _torchutil.channels_last_weight(w) for name, w in zip(curve.names, point)}
    state.update(curve.buffers_at(t))
    loss = F.cross_entropy(functional_call(curve.template, state, (x,)), y)
    if weight_decay:            # ||w(t)||^2 and its gradient come from the curve's own node (_CurvePoint)
        loss = loss + 0.5 * weight_decay * point[-1]
    return loss


def train_curve(
    curve: Curve,
    X: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.015,
    weight_decay: float = 5e-4,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    batch_hook: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    desc: str = "curve",
    callback: Callable[[int, nn.Module, float], Any] | None = None,
) -> list[float]:
    """Train the bends of ``curve`` on ``(X, y)``; returns the per-batch objective values (also kept as
    ``curve.losses``).

    Garipov et al. (2018) sec. 3.2, as used by Zhao et al. (2020) sec. 2: for every minibatch draw
    :math:`t \\sim U(0, 1)` (from ``generator``) and minimise
    :math:`\\mathrm{CE}(f_{w(t)}(x), y) + \\tfrac{\\lambda}{2} \\lVert w(t) \\rVert^2` with
    ``weight_decay`` :math:`= \\lambda` applied to the whole point :math:`w(t)` (the optimiser itself has
    no weight decay). Only the bends receive gradients; the endpoints stay fixed. SGD (with
    ``momentum``) uses a cosine learning-rate decay over all steps, Adam a constant rate. The defaults
    (SGD, ``lr=0.015``, ``weight_decay=5e-4``) are Garipov et al.'s for VGG16 on CIFAR-10.

    ``batch_hook(point, x, y) -> x`` replaces each batch first, where ``point`` is a :class:`CurvePoint`
    -- an ``nn.Module`` computing ``curve(x, t)`` at this batch's ``t`` -- e.g. adversarial curve
    training with ``lambda m, x, y: pgd(m, x, y, eps=0.1)``. Gradients the hook leaves on the bends
    are discarded. ``callback(step, curve, loss)`` is called after every step. A curve without bends has
    nothing to train and returns ``[]``.

    The loop is :func:`mclib.train.fit`'s, with the objective as its ``loss`` and a :class:`CurvePoint`
    per batch as its ``batch_modules``; the generator's draws per epoch are the shuffle, then one
    :math:`t` per batch (float64).
    """
    from mclib import train as _train  # train imports models and data; curves stays importable on its own

    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if optimizer not in _train.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(_train.OPTIMIZERS)}")
    if not curve.bend_parameters():
        return []
    device = torch.device(device) if device is not None else curve.ends.device

    def points(gen: torch.Generator | None, n_batches: int) -> list[CurvePoint]:
        # one t ~ U(0, 1) per batch, drawn per epoch right after the shuffle
        return [CurvePoint(curve, t) for t in torch.rand(n_batches, generator=gen, dtype=torch.float64)]

    def loss(point: CurvePoint, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return objective(curve, x, y, point.t, weight_decay)

    # the optimiser has no weight decay: it is in the objective, on w(t); only the bends require gradients
    curve.losses = _train.fit(curve, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                      weight_decay=0.0, momentum=momentum, generator=generator, batch_hook=batch_hook,
                      callback=callback, device=device, progress=progress, desc=desc, loss=loss,
                      batch_modules=points)
    return curve.losses


def along(curve: Curve, ts: Iterable[float], fn: Callable[[nn.Module], Any], bn_data: torch.Tensor | None = None,
          batch_size: int = 256, progress: bool | None = None, endpoint_bn: str = "keep") -> list:
    """``[fn(curve.at(t, bn_data)) for t in ts]``: any metric of the standalone model at each ``t``.

    BatchNorm statistics are re-estimated on ``bn_data`` at every interior ``t``; the endpoints keep their own
    unless ``endpoint_bn="recompute"`` (see :meth:`Curve.at`). ``progress``: a bar over the t values (``None``:
    on a terminal only, :func:`mclib.torchutil.show_progress`).
    """
    ts = [float(t) for t in ts]
    return [fn(curve.at(t, bn_data=bn_data, batch_size=batch_size, endpoint_bn=endpoint_bn))
            for t in tqdm(ts, desc="along t", disable=not show_progress(progress), leave=False)]


def bn_source(curve: Curve, t: float, bn_data: torch.Tensor | None, endpoint_bn: str = "keep") -> str:
    """Where the BatchNorm statistics of :meth:`Curve.at` at ``t`` come from: ``"endpoint 0"``/``"endpoint 1"``
    (its own), ``"bn_data"`` (re-estimated), ``"interpolated"`` (no ``bn_data``), or ``"none"`` (no BatchNorm)."""
    if not curve.has_bn:
        return "none"
    end = t in (0.0, 1.0)
    if bn_data is not None and (not end or endpoint_bn == "recompute"):
        return "bn_data"
    return f"endpoint {int(t)}" if end else "interpolated"


def evaluate_along(curve: Curve, ts: Iterable[float], X: torch.Tensor, y: torch.Tensor,
                   bn_data: torch.Tensor | None = None, metrics: Mapping[str, Callable[[nn.Module], float]] | None = None,
                   batch_size: int = 512, progress: bool | None = None, endpoint_bn: str = "keep"):
    """A pandas DataFrame with columns ``t``, ``loss`` (mean cross-entropy), ``acc`` on ``(X, y)`` along the
    curve, and for a network with BatchNorm ``bn``: where each row's statistics come from (:func:`bn_source`).

    Extra ``metrics`` (name -> ``fn(model) -> float``) add one column each, computed on the same
    model at ``t`` (e.g. the attack success rate of a backdoor). BatchNorm statistics are re-estimated on
    ``bn_data`` at interior t; at t = 0 and 1 the endpoints keep their own (``endpoint_bn="keep"``, default;
    ``"recompute"`` re-estimates them too, e.g. to check ``bn_data``: if the endpoints' accuracy falls when
    their statistics are recomputed, ``bn_data`` does not follow their training distribution). ``bn_data``
    should be drawn like the endpoints' training data (same preprocessing and augmentation): clean,
    unaugmented images lowered a public CIFAR ResNet-20's accuracy from 0.918 to 0.889, augmented ones kept it.
    ``progress``: a bar over the t values (``None``: on a terminal only).
    """
    import pandas as pd

    from mclib import train as _train

    ts = [float(t) for t in ts]
    metrics = dict(metrics or {})

    def row(model: nn.Module) -> dict:
        r = _train.evaluate(model, X.to(curve.ends.device), y.to(curve.ends.device), batch_size=batch_size)
        r.update({k: float(f(model)) for k, f in metrics.items()})
        return r

    rows = along(curve, ts, row, bn_data=bn_data, progress=progress, endpoint_bn=endpoint_bn)
    bn = (lambda t: {"bn": bn_source(curve, t, bn_data, endpoint_bn)}) if curve.has_bn else (lambda t: {})
    return pd.DataFrame([{"t": t, **r, **bn(t)} for t, r in zip(ts, rows)])


def paired_table(curve: Curve, t_ref: float, t: float, X: torch.Tensor, y: torch.Tensor,
                 bn_data: torch.Tensor | None = None, batch_size: int = 512, endpoint_bn: str = "keep") -> dict[str, int]:
    """The 2x2 table of per-input correctness of the curve's points at ``t_ref`` and ``t`` on the same ``(X, y)``:
    ``{"both", "ref_only", "point_only", "neither"}`` (counts of inputs right at both, only at ``t_ref``, only at
    ``t``, at neither).

    An accuracy drop ``acc(t_ref) - acc(t) = (ref_only - point_only) / n`` measured on one test set is a paired
    difference: only the discordant inputs move it, so its interval
    (:func:`mclib.stats.paired_difference_from_counts`) is much narrower than one that treats the two accuracies
    as independent samples. The points are built as :func:`evaluate_along` builds them (BatchNorm statistics
    re-estimated on ``bn_data`` at interior t, the endpoints' own at t = 0, 1), so the table's margins are
    the accuracies in its frame.
    """
    from mclib import train as _train

    y = torch.as_tensor(y)
    right = [(_train.logits(curve.at(tt, bn_data=bn_data, endpoint_bn=endpoint_bn), X.to(curve.ends.device),
                            batch_size).argmax(1) == y) for tt in (float(t_ref), float(t))]
    ref, point = right
    return {"both": int((ref & point).sum()), "ref_only": int((ref & ~point).sum()),
            "point_only": int((~ref & point).sum()), "neither": int((~ref & ~point).sum())}


def summary(df) -> dict[str, float]:
    """Barrier numbers of one curve from an :func:`evaluate_along` frame whose t values include both ends,
    t = 0 and t = 1 (a frame without them is refused: its first and last rows are not the endpoints).

    * ``end_acc`` and ``t_end``: the worse endpoint's accuracy and which (0 or 1); ``worst_acc`` and ``t_worst``: the lowest accuracy
      along the curve and where; ``acc_drop = end_acc - worst_acc`` (Garipov et al. 2018 fig. 1 and
      Zhao et al. 2020 fig. 2 report the error along t; the line's maximum error is the barrier).
    * ``max_loss`` and ``loss_barrier = max_t L(w(t)) - max(L(w_0), L(w_1))``
      (:func:`barrier_height`, the book's one profile-barrier function).
    """
    df = df.sort_values("t")
    ts = df["t"].to_numpy(dtype=float)
    missing = [e for e in (0.0, 1.0) if not (ts == e).any()]
    if missing:
        raise ValueError(f"the frame's t values {ts.round(4).tolist()} do not include the endpoint(s) t = "
                         f"{', '.join(f'{e:g}' for e in missing)}; the summary compares the curve with its endpoints, so "
                         f"evaluate along a grid that contains t = 0 and t = 1 (e.g. curves.grid(n))")
    ends = df.iloc[[0, -1]]
    i = int(df["acc"].to_numpy().argmin())
    j = int(ends["acc"].to_numpy().argmin())
    end_acc = float(ends["acc"].iloc[j])
    return {"end_acc": end_acc, "t_end": float(ends["t"].iloc[j]), "worst_acc": float(df["acc"].iloc[i]),
            "t_worst": float(df["t"].iloc[i]),
            "acc_drop": end_acc - float(df["acc"].iloc[i]), "max_error": 1.0 - float(df["acc"].iloc[i]),
            "max_loss": float(df["loss"].max()), "loss_barrier": barrier_height(df["loss"])}


# -- the barrier of a profile along t (Zhao et al. 2020, Sec. 5) -----------------------------------
def barrier_height(values: Iterable[float]) -> float:
    """Barrier height of a profile along t: ``max_t v(t) - max(v(0), v(1))`` (>= 0; Zhao et al. Sec. 5).

    The input-space barrier gap of Vrabel et al. (max along the path minus the larger endpoint,
    :func:`mclib.paths.barrier`, computed here in float64), applied to a loss along a weight-space path. The book's
    one profile-barrier function: :func:`summary` (claim C1) and the C6 study
    (:func:`mclib.studies.robustness.barrier_interval`) use it.
    """
    from mclib.paths import barrier  # the one definition of the barrier gap

    v = np.asarray(list(values), dtype=float)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError(f"need a 1-D profile of >= 2 values, got shape {v.shape}")
    return float(barrier(torch.from_numpy(v)).gap[0])


def barrier_threshold(values: Iterable[float], abs_tol: float = 0.05, rel_tol: float = 0.05) -> float:
    """The height a barrier must exceed: ``abs_tol`` + ``rel_tol`` * (larger endpoint value)."""
    v = np.asarray(list(values), dtype=float)
    return float(abs_tol + rel_tol * max(v[0], v[-1]))


def has_barrier(values: Iterable[float], abs_tol: float = 0.05, rel_tol: float = 0.05) -> bool:
    """Whether a profile has a barrier: :func:`barrier_height` > :func:`barrier_threshold`."""
    v = np.asarray(list(values), dtype=float)
    return barrier_height(v) > barrier_threshold(v, abs_tol, rel_tol)


def grid(n: int) -> list[float]:
    """``n`` evenly spaced values of t from 0 to 1 inclusive."""
    if n < 2:
        raise ValueError(f"a grid needs at least 2 points, got {n}")
    return [i / (n - 1) for i in range(n)]


# --- plots
def plot_along(ax, df, column: str = "acc", label: str | None = None, percent: bool | None = None, **kw):
    """Plot ``df[column]`` against ``df["t"]`` on ``ax`` (accuracy-like columns in percent by default)."""
    percent = column in ("acc", "asr", "error") if percent is None else percent
    values = df[column] * (100 if percent else 1)
    kw.setdefault("marker", "o")
    kw.setdefault("markersize", 3)
    ax.plot(df["t"], values, label=label, **kw)
    ax.set_xlabel("t")
    ax.set_ylabel(f"{column} (%)" if percent else column)
    ax.set_xlim(0, 1)
    return ax


def plot_curves(frames: Mapping[str, Any], columns: Sequence[str] = ("loss", "acc"), axes=None, title: str | None = None):
    """One panel per column with one line per curve (``frames``: label -> DataFrame from :func:`evaluate_along`)."""
    from mclib import plots

    if axes is None:
        _, axes = plots.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, col in zip(axes, columns):
        for label, df in frames.items():
            plot_along(ax, df, col, label=label)
        if title:
            ax.set_title(f"{title}: {col}")
    axes[0].legend()
    return axes
