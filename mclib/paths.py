"""Input-space paths: linear and piecewise-linear paths for many pairs at once, barrier metrics, bypass.

Vrabel, Shem-Ur, Oz & Krueger, *Input space mode connectivity in deep neural networks* (ICLR 2025,
arXiv 2409.05800), section 3. A *mode* is an input of low cross-entropy toward a class. Between two
inputs ``A`` and ``C`` the *linear path* is

    x(a) = (1 - a) A + a C,   a in [0, 1],

and ``L(a)`` is the cross-entropy of the model's output at ``x(a)`` toward the pair's class. The
*barrier max* is ``max_a L(a)``; the *barrier gap* is ``max_a L(a) - max(L(0), L(1))``. A pair is
*connected* (barrier-free) along a path when the gap is at most a small tolerance.

*Bypass* (section 3.2): take the max-loss point ``B`` of a segment and move it to ``B'`` by Adam on

    CE(f(x), y) + 0.1 * MSE(x - B) + 1e-8 * TV(x - B),     lr 0.005, 1024 iterations,

with the gradient projected orthogonal to the segment direction ``C - A`` so the point stays on the
hyperplane through ``B`` orthogonal to the segment. The path becomes ``A -> B' -> C``; the procedure
is repeated on every segment that still has a barrier. For untrained networks the paper optimises ``B``
freely (Adam lr 0.05, stop at CE < 5e-4): :func:`bypass_free`.

Everything is batched: all pairs and all path points go through the model in a few large forward
passes (:func:`linear_losses`), and every segment of every pair that needs a bend is optimised in one
batch (:func:`bypass`). Inputs live in pixel space [0, 1]; optimisation clamps to [0, 1] by default
(``clamp=True``) and ``clamp=False`` gives the unconstrained optimisation of the paper.

Conventions of this module: ``MSE(v)`` is the mean of ``v**2`` over the pixels of one input;
``TV(v)`` is the anisotropic total variation, the *sum* of absolute differences of horizontally and
vertically adjacent pixels of one input. Each input's objective is independent of the others in the
batch (losses are summed over the batch, and Adam is elementwise), so a batched run equals one input at
a time up to floating-point rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch
import torch.nn as nn
import torch.nn.functional as F

from mclib import _check
from mclib import infer
from mclib.optim import RowAdam, check_input_grad, total_variation
from mclib.torchutil import device_of, for_input_gradients

__all__ = [
    "alphas", "linear_losses", "Barrier", "barrier", "path_losses",
    "BypassResult", "bypass", "bypass_free", "InterpolatedModes", "interpolated_modes",
    "project_box_hyperplane", "pair_targets", "plot_loss_curves", "plot_barrier_hist", "plot_path_images",
]

# ----------------------------------------------------------------------------------------- checks
def _check_images(name: str, X: torch.Tensor) -> None:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.dim() < 2:
        raise ValueError(f"{name} must have a leading pair dimension, shape (P, C, H, W); got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got dtype {X.dtype}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)}): give at least one pair")
    bad = ~torch.isfinite(X)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite values (NaN or Inf) of {X.numel()}: "
                         f"inputs must be finite pixel values")


def _check_pair(A: torch.Tensor, C: torch.Tensor) -> None:
    _check_images("A", A)
    _check_images("C", C)
    if A.shape != C.shape:
        raise ValueError(f"A and C must have the same shape (P, C, H, W); got A {tuple(A.shape)} and C {tuple(C.shape)}")


def pair_targets(target, P: int) -> torch.Tensor:
    """The class of every pair: ``target`` (an int, or P ints) checked, as an int64 tensor of shape (P,) (a scalar
    int is broadcast)."""
    if isinstance(target, torch.Tensor):
        t = target.detach().cpu()
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.long()
        if t.dim() == 0:
            t = t.expand(P)
    elif isinstance(target, (int,)) and not isinstance(target, bool):
        t = torch.full((P,), int(target), dtype=torch.long)
    else:
        try:
            t = torch.as_tensor(list(target), dtype=torch.long)
        except (TypeError, ValueError):
            raise TypeError(f"target must be an int or a sequence/tensor of ints, got {type(target).__name__}") from None
    if t.shape != (P,):
        raise ValueError(f"target must have shape ({P},) (one class per pair) or be a scalar; got shape {tuple(t.shape)}")
    if (t < 0).any():
        raise ValueError(f"target holds negative class indices: {t[t < 0].unique().tolist()}")
    return t.contiguous()


def _check_range(target: torch.Tensor, num_classes: int) -> None:
    bad = target >= num_classes
    if bad.any():
        raise ValueError(
            f"target class(es) {target[bad].unique().tolist()} out of range: the model outputs {num_classes} classes "
            f"(valid targets 0..{num_classes - 1})")


# ------------------------------------------------------------------------------------ linear paths
def alphas(num_points: int) -> torch.Tensor:
    """The ``num_points`` path positions ``a = linspace(0, 1, num_points)`` (float32)."""
    if int(num_points) < 2:
        raise ValueError(f"num_points must be at least 2 (both endpoints), got {num_points}")
    return torch.linspace(0.0, 1.0, int(num_points))


def _ce_points(model, A, D, a, target, chunk_size, device, progress, desc="path", precision="fp32"):
    """Cross-entropy at A[p] + a[p, t] * D[p] for all p, t; A, D on device, a (P, T) on device.

    Returns (P, T) on the CPU. Chunks are taken over the flattened (pair, point) grid and go through the
    inference engine (:func:`mclib.infer.forward_chunks`: a prepared copy of the model, chunk size chosen
    from the input size). A chunk is written pair by pair (``addcmul`` of ``A[p]`` and ``D[p]`` broadcast
    over that pair's points, the same elementwise arithmetic as gathering ``A[idx]``, ``D[idx]`` first, at
    an eighth of its cost). Non-finite losses (a model whose weights or outputs hold NaN/Inf) raise.
    """
    P, T = a.shape
    shape = A.shape[1:]
    flat_a = a.reshape(-1)
    pair_idx = torch.arange(P, device=device).repeat_interleave(T)
    tgt = target.to(device)
    out = torch.empty(P * T, dtype=torch.float32)
    view = (-1,) + (1,) * len(shape)

    def make(s, e):
        x = torch.empty((e - s,) + tuple(shape), dtype=A.dtype, device=A.device)
        for p in range(s // T, (e - 1) // T + 1):         # the pairs whose points fall in s..e-1
            i, j = max(s, p * T), min(e, (p + 1) * T)
            torch.addcmul(A[p], flat_a[i:j].view(view), D[p], out=x[i - s:j - s])
        return x

    def consume(s, e, logits):
        if s == 0:
            if logits.dim() != 2:
                raise ValueError(f"the model must output (N, num_classes) logits; got shape {tuple(logits.shape)}")
            _check_range(target, logits.shape[1])
        out[s:e] = F.cross_entropy(logits, tgt[pair_idx[s:e]], reduction="none").cpu()

    with torch.no_grad():
        infer.forward_chunks(model, P * T, make, consume, per_input=math.prod(shape), chunk=chunk_size,
                             precision=precision, device=device, progress=progress, desc=desc)
    bad = ~torch.isfinite(out)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(f"the model's cross-entropy is not finite (NaN/Inf) at {int(bad.sum())} of {P * T} path "
                         f"points (first: pair {first // T}, point {first % T}); the inputs are finite, so the "
                         f"model's weights or outputs hold NaN/Inf -- a barrier cannot be measured on it")
    return out.view(P, T)


def linear_losses(model: nn.Module, A: torch.Tensor, C: torch.Tensor, target, num_points: int = 64,
                  chunk_size: int | None = None, device=None, progress: bool = False,
                  precision: str = "fp32") -> torch.Tensor:
    """Cross-entropy along the linear paths ``x(a) = (1-a) A + a C`` of P pairs at once (paper section 3.1).

    ``A``, ``C``: (P, C, H, W) inputs in [0, 1]; ``target``: (P,) int64 class per pair (a scalar int is
    broadcast). Returns ``L`` of shape (P, num_points) on the CPU with ``L[p, t]`` the cross-entropy toward
    ``target[p]`` at ``a = alphas(num_points)[t]``. All P * T inputs go through the model in chunks of
    ``chunk_size`` inputs (default: :func:`mclib.infer.chunk_size`, from the input size and the device) on
    the model's device (or ``device``) through the inference engine (:mod:`mclib.infer`: a prepared eval-mode
    copy of the model; results equal eager fp32 within ``infer.ATOL + infer.RTOL * |L|``). ``precision="bf16"``
    is the engine's opt-in bfloat16 mode (losses off by up to ~1e-3). The user's model is not modified.
    """
    _check_pair(A, C)
    P = A.shape[0]
    tgt = pair_targets(target, P)
    dev = device_of(model, device)
    A_ = A.to(dev, torch.float32)
    D = C.to(dev, torch.float32) - A_
    a = alphas(num_points).to(dev).expand(P, -1)
    return _ce_points(model, A_, D, a, tgt, chunk_size, dev, progress, desc="linear paths", precision=precision)


# ------------------------------------------------------------------------------------ barrier
@dataclass
class Barrier:
    """Barrier metrics of P loss curves, each a tensor of shape (P,).

    ``max``: the largest loss on the path; ``gap``: ``max - max(L(start), L(end))``; ``position``: the
    normalised path position of the max; ``relative``: the largest excess of the loss over the straight
    line joining the two endpoint losses, ``max_s [L(s) - ((1-s) L(0) + s L(1))]``.
    """

    max: torch.Tensor
    gap: torch.Tensor
    position: torch.Tensor
    relative: torch.Tensor

    def gap_exceeds(self, tolerance: float) -> torch.Tensor:
        """Boolean (P,): the gap exceeds ``tolerance`` (the paper's "barrier" test on one path's curve)."""
        return self.gap > tolerance

    def __len__(self) -> int:
        return int(self.max.shape[0])


def barrier(losses: torch.Tensor, positions: torch.Tensor | None = None) -> Barrier:
    """Barrier metrics (:class:`Barrier`) of loss curves ``losses`` (P, T) (a 1-D curve is read as P = 1).

    ``positions`` are the path positions of the T samples, shape (T,) or (P, T), in [0, 1]; default
    ``linspace(0, 1, T)`` (a linear path). The first and last samples are the endpoints.
    """
    L = torch.as_tensor(losses)
    if L.dim() == 1:
        L = L[None]
    if L.dim() != 2 or L.shape[1] < 2:
        raise ValueError(f"losses must have shape (P, T) with T >= 2, got {tuple(L.shape)}")
    L = L if L.dtype in (torch.float32, torch.float64) else L.float()  # float64 profiles stay float64
    pos = (alphas(L.shape[1]) if positions is None else torch.as_tensor(positions, dtype=torch.float32)).to(L)
    pos = pos.expand_as(L) if pos.dim() == 1 else pos
    if pos.shape != L.shape:
        raise ValueError(f"positions must have shape ({L.shape[1]},) or {tuple(L.shape)}, got {tuple(pos.shape)}")
    mx, arg = L.max(dim=1)
    ends = torch.maximum(L[:, 0], L[:, -1])
    line = (1 - pos) * L[:, :1] + pos * L[:, -1:]
    return Barrier(max=mx, gap=mx - ends, position=pos.gather(1, arg[:, None])[:, 0], relative=(L - line).max(dim=1).values)


# ------------------------------------------------------------------------------ piecewise-linear paths
def _pad_vertices(vertices) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of (K_p, ...) tensors -> (P, K_max, ...) padded by repeating each last vertex, and counts (P,)."""
    if isinstance(vertices, torch.Tensor):
        return vertices, torch.full((vertices.shape[0],), vertices.shape[1], dtype=torch.long)
    vs = list(vertices)
    if not vs:
        raise ValueError("vertices is empty")
    shape = vs[0].shape[1:]
    for i, v in enumerate(vs):
        if v.dim() < 2 or v.shape[1:] != shape or v.shape[0] < 2:
            raise ValueError(f"path {i} must be a (K, {', '.join(map(str, shape))}) tensor with K >= 2, got {tuple(v.shape)}")
    K = max(v.shape[0] for v in vs)
    out = torch.stack([torch.cat([v, v[-1:].expand(K - v.shape[0], *shape)]) for v in vs])
    return out, torch.tensor([v.shape[0] for v in vs])


def _assemble(seg_L: torch.Tensor, lengths: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment curves -> per-path curves against normalised arc position.

    ``seg_L`` (S, n): segment curves of P paths in order (path p owns ``counts[p] - 1`` consecutive rows);
    ``lengths`` (S,): segment lengths. Duplicate vertex samples are dropped; paths with fewer segments are
    padded with their last value at position 1. Returns ``(losses, positions)``, both (P, T_max).
    """
    n = seg_L.shape[1]
    a = alphas(n)
    segs = (counts - 1).tolist()
    T = (max(segs) * (n - 1)) + 1
    L_out = torch.empty(len(segs), T)
    P_out = torch.empty(len(segs), T)
    row = 0
    for p, k in enumerate(segs):
        Ls, ls = seg_L[row:row + k], lengths[row:row + k].double()
        row += k
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), ls.cumsum(0)])
        total = float(cum[-1])
        curve = torch.cat([Ls[:1, 0], Ls[:, 1:].reshape(-1)])
        if total > 0:
            pos = torch.cat([torch.zeros(1, dtype=torch.float64), (cum[:-1, None] + a[1:].double()[None] * ls[:, None]).reshape(-1)]) / total
        else:
            pos = alphas(curve.numel()).double()
        m = curve.numel()
        L_out[p, :m], P_out[p, :m] = curve, pos.float()
        L_out[p, m:], P_out[p, m:] = curve[-1], 1.0
    return L_out, P_out


def path_losses(model: nn.Module, vertices, target, points_per_segment: int = 64, chunk_size: int | None = None,
                device=None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss along P piecewise-linear paths ``v_0 -> v_1 -> ... -> v_{K-1}`` (paper section 3.2, bypass paths).

    ``vertices``: (P, K, C, H, W) with K >= 2 (endpoints included), or a list of (K_p, C, H, W) tensors.
    Each segment is sampled at ``points_per_segment`` evenly spaced points including both of its
    vertices, so every vertex is evaluated exactly; all segments of all paths go through the model
    together (:func:`linear_losses`). Returns ``(losses, positions)``, both (P, T) with
    T = (K_max - 1)(n - 1) + 1, where ``positions`` is the normalised Euclidean arc length (in pixel space)
    of each sample along its path: segments of different lengths take their share of [0, 1] by length.
    Paths with fewer vertices are padded at the end with their last loss at position 1.
    """
    if isinstance(vertices, torch.Tensor):
        _check_images("vertices", vertices)
        if vertices.dim() < 3 or vertices.shape[1] < 2:
            raise ValueError(f"vertices must have shape (P, K, C, H, W) with K >= 2, got {tuple(vertices.shape)}")
        vs = list(vertices)
    else:
        vs = list(vertices)
        _pad_vertices(vs)                       # shape checks
        for i, v in enumerate(vs):
            _check_images(f"vertices[{i}]", v)
    P = len(vs)
    tgt = pair_targets(target, P)
    if int(points_per_segment) < 2:
        raise ValueError(f"points_per_segment must be at least 2, got {points_per_segment}")
    counts = torch.tensor([v.shape[0] for v in vs])
    starts = torch.cat([v[:-1] for v in vs])
    ends = torch.cat([v[1:] for v in vs])
    seg_L = linear_losses(model, starts, ends, tgt.repeat_interleave(counts - 1), points_per_segment,
                          chunk_size, device, progress)
    lengths = (ends.float() - starts.float()).flatten(1).norm(dim=1).cpu()
    return _assemble(seg_L, lengths, counts)


# ------------------------------------------------------------------------------------ optimiser


def project_box_hyperplane(z: torch.Tensor, d: torch.Tensor, c: torch.Tensor, lo: float | torch.Tensor = 0.0,
                           hi: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Euclidean projection of each row of ``z`` onto ``{y : <y, d> = c, lo <= y <= hi}`` (batched, exact).

    ``z``, ``d``: (N, D); ``c``: (N,); ``lo``, ``hi``: floats or (N, 1) per-row bounds. By the KKT conditions the projection is
    ``y(lam) = clamp(z - lam * d, lo, hi)`` for the ``lam`` with ``f(lam) = <y(lam), d> = c``. ``f`` is
    piecewise linear and non-increasing in ``lam``, with breakpoints where a coordinate enters or leaves
    the box; sorting the 2D breakpoints and accumulating slopes gives ``f`` at every breakpoint, and the
    root is interpolated on the bracketing piece. The set must be non-empty (a feasible point such as
    ``B`` exists in bypass); otherwise the nearest end of the range of ``f`` is used.
    """
    zz, dd, cc = z.double(), d.double(), c.double()
    if isinstance(lo, torch.Tensor):
        lo = lo.double()
    if isinstance(hi, torch.Tensor):
        hi = hi.double()
    nz = dd != 0
    safe = torch.where(nz, dd, torch.ones_like(dd))
    b1, b2 = (zz - hi) / safe, (zz - lo) / safe          # lo, hi broadcast (float or (N, 1))
    enter = torch.where(nz, torch.minimum(b1, b2), torch.zeros_like(b1))
    leave = torch.where(nz, torch.maximum(b1, b2), torch.zeros_like(b1))
    d2 = dd * dd
    bps = torch.cat([enter, leave], 1)
    delta = torch.cat([-d2, d2], 1)
    order = bps.argsort(1)
    bps, delta = bps.gather(1, order), delta.gather(1, order)
    slope = delta.cumsum(1)                                                   # slope on [b_k, b_k+1]
    f0 = torch.where(dd > 0, dd * hi, dd * lo).sum(1)                         # f(-inf)
    steps = slope[:, :-1] * (bps[:, 1:] - bps[:, :-1])
    F = torch.cat([f0[:, None], f0[:, None] + steps.cumsum(1)], 1)            # f at each breakpoint
    k = ((F >= cc[:, None]).sum(1) - 1).clamp(0, F.shape[1] - 1)
    Fk, bk, sk = F.gather(1, k[:, None])[:, 0], bps.gather(1, k[:, None])[:, 0], slope.gather(1, k[:, None])[:, 0]
    lam = torch.where(sk < 0, bk + (cc - Fk) / torch.where(sk < 0, sk, -torch.ones_like(sk)), bk)
    y = zz - lam[:, None] * dd
    y = torch.maximum(torch.minimum(y, torch.as_tensor(hi, dtype=y.dtype)), torch.as_tensor(lo, dtype=y.dtype))
    return y.to(z.dtype)


def _optimise(model, B, target, *, lr, iterations, mse_weight, tv_weight, directions=None, clamp=True,
              stop_loss=None, weight_decay=0.0, progress=False, desc="bypass", check=None, check_every=0):
    """Adam on the points ``B`` (N, ...) toward ``target`` (N,).

    Objective per point: ``CE + mse_weight * MSE(x - B) + tv_weight * TV(x - B)``. With ``directions``
    (N, ...) the gradient is projected orthogonal to each direction and, after every step, the point is
    projected back onto the hyperplane through ``B`` orthogonal to it (intersected with [0, 1] when
    ``clamp``). Points whose CE falls below ``stop_loss`` are frozen. With ``check`` (a function of the
    active row indices, their current points and their CE, returning a boolean per row) every point is
    checked after each ``check_every`` steps, and a point for which it returns True is frozen where it
    stands (early stop). Returns ``(x, ce, steps)``; ``x`` is the final point (the checked point for rows
    that ``check`` stopped), or with ``stop_loss`` the point of lowest CE seen; ``steps`` (N,) the Adam
    steps each point took.
    """
    N = B.shape[0]
    x = B.detach().clone()
    ref = B.detach()
    tgt = target.to(B.device)
    dhat = c = None
    if directions is not None:
        dflat = directions.flatten(1)
        norm = dflat.norm(dim=1, keepdim=True)
        if (norm == 0).any():
            raise ValueError("a bypass segment has zero length (its endpoints are equal); nothing to optimise")
        dhat = dflat / norm
        c = (ref.flatten(1) * dhat).sum(1)
        # the pixel box [0, 1], widened per point to contain B when the endpoints lie outside it
        # (e.g. unconstrained FVO inputs), so that B is always feasible
        box_lo = ref.flatten(1).amin(1, keepdim=True).clamp(max=0.0)
        box_hi = ref.flatten(1).amax(1, keepdim=True).clamp(min=1.0)
    opt = RowAdam(x, lr, weight_decay=weight_decay)
    steps = torch.zeros(N, dtype=torch.long)
    best_x, best_ce = x.clone(), torch.full((N,), math.inf, device=B.device)
    active = torch.arange(N, device=B.device)
    stopped = torch.zeros(N, dtype=torch.bool, device=B.device)
    it = range(int(iterations))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, leave=False)
    with for_input_gradients(model) as net:      # eval mode, BatchNorm folded, channels-last
        for k in it:
            xa = x[active].requires_grad_(True)
            ce = F.cross_entropy(net(xa).float(), tgt[active], reduction="none")
            obj = ce.sum()
            diff = xa - ref[active]
            if mse_weight:
                obj = obj + mse_weight * diff.pow(2).flatten(1).mean(1).sum()
            if tv_weight:
                obj = obj + tv_weight * total_variation(diff).sum()
            if steps.sum() == 0:
                check_input_grad(ce, xa, "bypass")
            (g,) = torch.autograd.grad(obj, xa)
            ce = ce.detach()
            with torch.no_grad():
                if check is not None and k > 0 and k % check_every == 0:
                    free = check(active, xa.detach(), ce).to(B.device)
                    if free.any():          # early stop: these points keep the value that passed the check
                        stopped[active[free]] = True
                        keep = ~free
                        active, xa, g, ce = active[keep], xa[keep], g[keep], ce[keep]
                        if active.numel() == 0:
                            break
                if stop_loss is not None:
                    better = ce < best_ce[active]
                    best_ce[active] = torch.where(better, ce, best_ce[active])
                    best_x[active[better]] = xa.detach()[better]
                    done = ce < stop_loss
                    if done.any():
                        keep = ~done
                        active, xa, g = active[keep], xa[keep], g[keep]
                        if active.numel() == 0:
                            break
                if dhat is not None:
                    gf = g.flatten(1)
                    dh = dhat[active]
                    g = (gf - (gf * dh).sum(1, keepdim=True) * dh).view_as(g)
                new = opt.step(x, g, active)
                steps[active.cpu()] += 1
                if dhat is not None:
                    nf = new.flatten(1)
                    dh = dhat[active]
                    if clamp:
                        nf = project_box_hyperplane(nf, dh, c[active], box_lo[active], box_hi[active])
                    else:
                        nf = nf - ((nf * dh).sum(1, keepdim=True) - c[active, None]) * dh
                    new = nf.view_as(new)
                elif clamp:
                    new = new.clamp(0.0, 1.0)
                x[active] = new
    final_ce = (F.cross_entropy(infer.logits(model, x, device=B.device).to(B.device), tgt, reduction="none")
                if N else torch.zeros(0, device=B.device))
    if stop_loss is not None:
        better = (final_ce < best_ce) | stopped
        best_x[better], best_ce[better] = x[better], final_ce[better]
        return best_x, best_ce.cpu(), steps
    return x, final_ce.cpu(), steps


# ------------------------------------------------------------------------------------ bypass
@dataclass
class BypassResult:
    """The outcome of :func:`bypass` for P pairs.

    ``vertices``: (P, K_max, C, H, W), each path padded by repeating its last vertex; ``counts`` (P,):
    the number of real vertices per path (``path(p)`` returns them); ``rounds`` (P,): the rounds in which
    the pair was bent (0 = the straight line had no barrier); ``barriers``: one :class:`Barrier` per round,
    ``barriers[0]`` for the straight line and ``barriers[r]`` for the path after round r (pairs not bent in
    round r keep their value); ``connected`` (P,): final gap <= tolerance; ``B``, ``B_prime`` (P, C, H, W):
    the max-loss point of the straight line and its optimised replacement in round 1 (equal where the line
    had no barrier, see ``bent_first``); ``losses``/``positions`` (P, T): the loss along the final path
    against normalised arc position; ``tolerance``; ``point_loss``/``point_steps``: per round, the CE of
    each optimised point and the Adam steps it took; ``first_steps`` (P,): the steps of each pair's round-1
    point (0 where the line had no barrier) -- with ``early_stop`` the iterations the bypass needed.
    """

    vertices: torch.Tensor
    counts: torch.Tensor
    rounds: torch.Tensor
    barriers: list[Barrier]
    connected: torch.Tensor
    B: torch.Tensor
    B_prime: torch.Tensor
    bent_first: torch.Tensor
    losses: torch.Tensor
    positions: torch.Tensor
    tolerance: float
    point_loss: list[torch.Tensor] = field(default_factory=list)
    point_steps: list[torch.Tensor] = field(default_factory=list)
    first_steps: torch.Tensor | None = None

    def path(self, p: int) -> torch.Tensor:
        """The (K_p, C, H, W) vertices of pair ``p``'s path, endpoints included."""
        return self.vertices[p, : int(self.counts[p])]

    @property
    def bends(self) -> torch.Tensor:
        """Number of bend points per pair (vertices minus the two endpoints), (P,)."""
        return self.counts - 2

    def gap_history(self) -> torch.Tensor:
        """(R+1, P): the path's barrier gap after each round (row 0: the straight line)."""
        return torch.stack([b.gap for b in self.barriers])

    def max_history(self) -> torch.Tensor:
        """(R+1, P): the path's barrier max after each round."""
        return torch.stack([b.max for b in self.barriers])

    def shift(self) -> torch.Tensor:
        """``max|B' - B|`` per pair as a fraction of the max pixel of ``B`` (paper: 1-5%), (P,)."""
        d = (self.B_prime - self.B).flatten(1).abs().amax(1)
        return d / self.B.flatten(1).amax(1).clamp_min(1e-12)

    def shift_l2(self) -> torch.Tensor:
        """``||B' - B||_2 / ||B||_2`` per pair (the whole-image size of the bypass move), (P,)."""
        return (self.B_prime - self.B).flatten(1).norm(dim=1) / self.B.flatten(1).norm(dim=1).clamp_min(1e-12)

    def free_after_first(self) -> torch.Tensor:
        """Boolean (P,): the path's gap is at most the tolerance after round 1 (the straight line's if never bent)."""
        return (self.barriers[1] if len(self.barriers) > 1 else self.barriers[0]).gap <= self.tolerance

    def intervals(self, n_boot: int = 2000, seed: int = 0) -> dict:
        """A2's numbers over the pairs bent in round 1, each an interval dict (``estimate, lo, hi, n``, as claim
        records store a :class:`mclib.stats.Interval`).

        ``free_after_1``: share barrier-free after one bend (Wilson); ``shift_median`` and ``shift_l2_median``:
        median ``max|B'-B|`` in % of the max pixel of ``B`` and median ``||B'-B|| / ||B||`` in %, and
        ``steps_median``: median Adam iterations of the round-1 point (percentile bootstrap over pairs, ``n_boot``
        resamples, ``seed``). None for every key when no pair was bent.
        """
        import numpy as np

        from mclib import stats

        bent = self.bent_first
        if not bool(bent.any()):
            return dict.fromkeys(("free_after_1", "shift_median", "shift_l2_median", "steps_median"))
        boot = lambda v: stats.bootstrap_ci(v[bent].double().numpy(), np.median, n_boot, seed)  # noqa: E731
        steps = self.first_steps if self.first_steps is not None else torch.zeros(len(bent))
        out = {"free_after_1": stats.fraction_ci(self.free_after_first()[bent].numpy()),
               "shift_median": boot(100 * self.shift()), "shift_l2_median": boot(100 * self.shift_l2()),
               "steps_median": boot(steps.double())}
        return {k: v._asdict() for k, v in out.items()}


def _check_early_stop(early_stop) -> int:
    if early_stop is None:
        return 0
    if isinstance(early_stop, bool) or not isinstance(early_stop, int) or early_stop < 1:
        raise ValueError(f"early_stop must be None (run every iteration) or a positive int (check the path every "
                         f"that many iterations), got {early_stop!r}")
    return early_stop


#: A point whose own CE (from the optimisation's forward pass) exceeds the allowed loss by more than this is not
#: checked: the point lies on its new path, so that path has a barrier. The slack covers the rounding difference
#: between the optimisation's forward pass and the inference engine's (see :mod:`mclib.infer`).
_PRECHECK_SLACK = 1e-3


def _segment_check(model, starts, ends, target, cap, n, chunk_size, device):
    """The early-stop test of :func:`bypass`: is the bent segment ``S -> x -> E`` free of a barrier?

    For optimised rows ``rows`` at points ``x``: every one of the ``n`` points on ``S -> x`` and on
    ``x -> E`` has CE at most ``cap`` (the pair's larger endpoint loss plus the tolerance) -- the test the
    next round applies to the whole path, on the same points. Rows whose own CE is above ``cap`` (plus
    :data:`_PRECHECK_SLACK`) fail without a forward pass.
    """
    def check(rows: torch.Tensor, x: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        r = rows.cpu()
        free = torch.zeros(len(r), dtype=torch.bool)
        cand = (ce.cpu() <= cap[r] + _PRECHECK_SLACK).nonzero()[:, 0]
        if cand.numel():
            rc, rd, xc = r[cand], rows[cand.to(rows.device)], x[cand.to(x.device)]
            L1 = linear_losses(model, starts[rd], xc, target[rc], n, chunk_size=chunk_size, device=device)
            L2 = linear_losses(model, xc, ends[rd], target[rc], n, chunk_size=chunk_size, device=device)
            free[cand] = torch.maximum(L1.amax(1), L2.amax(1)) <= cap[rc]
        return free
    return check


def _bypass_impl(model, A, C, target, **kw):
    # the model is fixed for the whole bypass: the engine checks its weights once, not on each of the
    # thousands of segment evaluations (infer.pinned; the same results)
    with infer.pinned(model):
        return _bypass_rounds(model, A, C, target, **kw)


def _bypass_rounds(model, A, C, target, *, free, lr, iterations, mse_weight, tv_weight, tolerance, max_rounds,
                   num_points, clamp, stop_loss, chunk_size, device, progress, early_stop=None):
    every = _check_early_stop(early_stop)
    _check_pair(A, C)
    P = A.shape[0]
    tgt = pair_targets(target, P)
    dev = device_of(model, device)
    max_rounds, n = _check.non_negative_int(max_rounds, "max_rounds"), _check.positive_int(num_points, "num_points")
    if n < 3:
        raise ValueError(f"num_points must be >= 3 (a segment's two ends and a point between), got {num_points}")
    tolerance = _check.non_negative_float(tolerance, "tolerance")
    lr, iterations = _check.positive_float(lr, "lr"), _check.non_negative_int(iterations, "iterations")
    mse_weight, tv_weight = _check.non_negative_float(mse_weight, "mse_weight"), _check.non_negative_float(tv_weight, "tv_weight")
    bshape = (-1,) + (1,) * (A.dim() - 1)
    paths = [torch.stack([A[p], C[p]]).to(dev, torch.float32) for p in range(P)]
    rounds = torch.zeros(P, dtype=torch.long)
    bent_first = torch.zeros(P, dtype=torch.bool)
    first_steps = torch.zeros(P, dtype=torch.long)
    history, point_loss, point_steps = [], [], []
    B0 = Bp0 = None
    for r in range(int(max_rounds) + 1):
        # evaluate every segment of every path in one batched pass
        counts = torch.tensor([v.shape[0] for v in paths])
        owner = torch.arange(P).repeat_interleave(counts - 1)
        seg_local = torch.cat([torch.arange(k - 1) for k in counts.tolist()])
        starts = torch.cat([v[:-1] for v in paths])
        ends = torch.cat([v[1:] for v in paths])
        L = linear_losses(model, starts, ends, tgt[owner], n, chunk_size=chunk_size, device=dev)   # (S, n)
        lengths = (ends - starts).flatten(1).norm(dim=1).cpu()
        curves, poss = _assemble(L, lengths, counts)
        bar = barrier(curves, poss)
        history.append(bar)
        seg_max, seg_arg = L.max(1)
        if r == 0:
            B0 = starts + alphas(n)[seg_arg].to(dev).view(bshape) * (ends - starts)   # one segment per pair
            Bp0 = B0.clone()
        end_loss = torch.maximum(curves[:, 0], L[torch.cumsum(counts - 1, 0) - 1, -1])  # L(A), L(C) per pair
        needs = bar.gap > tolerance
        if r == int(max_rounds) or not needs.any():
            break
        sel = (needs[owner] & (seg_max > end_loss[owner] + tolerance)).nonzero()[:, 0]
        a = alphas(n)[seg_arg[sel]].to(dev).view(bshape)
        sel_d = sel.to(dev)
        Bs = starts[sel_d] + a * (ends[sel_d] - starts[sel_d])
        dirs = None if free else ends[sel_d] - starts[sel_d]
        check = (_segment_check(model, starts[sel_d], ends[sel_d], tgt[owner[sel]], end_loss[owner[sel]] + tolerance,
                                n, chunk_size, dev) if every else None)
        Bp, ce, nsteps = _optimise(model, Bs, tgt[owner[sel]], lr=lr, iterations=iterations, mse_weight=mse_weight,
                                   tv_weight=tv_weight, directions=dirs, clamp=clamp, stop_loss=stop_loss,
                                   progress=progress, desc=f"bypass round {r + 1} ({len(sel)} points)",
                                   check=check, check_every=every)
        point_loss.append(ce)
        point_steps.append(nsteps)
        if r == 0:
            Bp0[owner[sel].to(dev)] = Bp
            bent_first[owner[sel]] = True
            first_steps[owner[sel]] = nsteps
        # splice each B' into its path right after the start vertex of its segment
        inserts: dict[int, dict[int, torch.Tensor]] = {}
        for j, s in enumerate(sel.tolist()):
            inserts.setdefault(int(owner[s]), {})[int(seg_local[s])] = Bp[j]
        for p, ins in inserts.items():
            rounds[p] += 1
            pieces = []
            for k in range(paths[p].shape[0]):
                pieces.append(paths[p][k:k + 1])
                if k in ins:
                    pieces.append(ins[k][None])
            paths[p] = torch.cat(pieces)
    V, counts = _pad_vertices([v.cpu() for v in paths])
    return BypassResult(vertices=V, counts=counts, rounds=rounds, barriers=history, connected=history[-1].gap <= tolerance,
                        B=B0.cpu(), B_prime=Bp0.cpu(), bent_first=bent_first, losses=curves, positions=poss,
                        tolerance=float(tolerance), point_loss=point_loss, point_steps=point_steps,
                        first_steps=first_steps)


def bypass(model: nn.Module, A: torch.Tensor, C: torch.Tensor, target, lr: float = 0.005, iterations: int = 1024,
           mse_weight: float = 0.1, tv_weight: float = 1e-8, tolerance: float = 0.01, max_rounds: int = 3,
           num_points: int = 64, clamp: bool = True, chunk_size: int | None = None, device=None,
           progress: bool = True, early_stop: int | None = None) -> BypassResult:
    """The paper's bypass (section 3.2), batched over pairs and over every segment that has a barrier.

    Round r: evaluate every pair's current path at ``num_points`` points per segment. A pair whose path
    gap (max loss minus the larger loss of its two endpoints ``A``, ``C``) exceeds ``tolerance`` gets a
    bend in every segment whose max exceeds that endpoint loss by more than ``tolerance``: the segment's
    max-loss point ``B`` is optimised by Adam (``lr``, ``iterations``) on
    ``CE + mse_weight * MSE(x - B) + tv_weight * TV(x - B)`` with the gradient projected orthogonal to the
    segment direction, and the point kept on the hyperplane through ``B`` orthogonal to the segment
    (intersected with the pixel box [0, 1] when ``clamp``, the box widened to contain ``B`` if the endpoints
    lie outside it; ``clamp=False`` is the paper's unconstrained optimisation). The segment ``S -> E`` becomes ``S -> B' -> E``. Rounds repeat until no pair has a
    barrier or ``max_rounds`` rounds were made. Defaults are the paper's (tolerance and max_rounds
    are this book's choices). Returns a :class:`BypassResult`.

    ``early_stop=k`` measures the *smallest* move that removes a barrier: after every k Adam steps each
    optimised point is checked, all at once, and a point whose bent segment ``S -> B' -> E`` no longer rises
    above the pair's endpoint loss by more than ``tolerance`` (on the same ``num_points`` per segment as the
    path evaluation) stops there; the others run on unchanged, so a point that never passes the check
    ends exactly where the full run ends. ``BypassResult.first_steps`` holds each pair's round-1 steps. The
    check costs ``2 num_points`` forward passes per point whose own CE is already below the allowed loss
    (the others cannot pass and are skipped). None (the default) runs all ``iterations``, as the paper.
    """
    return _bypass_impl(model, A, C, target, free=False, lr=lr, iterations=iterations, mse_weight=mse_weight,
                        tv_weight=tv_weight, tolerance=tolerance, max_rounds=max_rounds, num_points=num_points,
                        clamp=clamp, stop_loss=None, chunk_size=chunk_size, device=device, progress=progress,
                        early_stop=early_stop)


def bypass_free(model: nn.Module, A: torch.Tensor, C: torch.Tensor, target, lr: float = 0.05, iterations: int = 8192,
                stop_loss: float = 5e-4, mse_weight: float = 0.0, tv_weight: float = 0.0, tolerance: float = 0.01,
                max_rounds: int = 2, num_points: int = 64, clamp: bool = False, chunk_size: int | None = None,
                device=None, progress: bool = True) -> BypassResult:
    """Bypass for untrained networks (paper section 4.3): the max-loss point is optimised *freely*.

    As :func:`bypass`, but without the projection: Adam (``lr`` 0.05) on ``CE`` (plus optional MSE/TV
    toward ``B``) until each point's CE is below ``stop_loss`` (5e-4) or ``iterations`` is reached (the
    point of lowest CE seen is kept). ``clamp=False`` by default, as the paper's optimisation of
    synthetic inputs is unconstrained; ``clamp=True`` keeps the points in [0, 1].
    """
    return _bypass_impl(model, A, C, target, free=True, lr=lr, iterations=iterations, mse_weight=mse_weight,
                        tv_weight=tv_weight, tolerance=tolerance, max_rounds=max_rounds, num_points=num_points,
                        clamp=clamp, stop_loss=stop_loss, chunk_size=chunk_size, device=device, progress=progress)


# ------------------------------------------------------------------------------ interpolated inputs
@dataclass
class InterpolatedModes:
    """Interpolated inputs: ``x`` (N, C, H, W), ``loss_before`` (CE of the raw mix), ``loss`` (CE of ``x``),
    ``optimised`` (N,) bool (the mix was above the threshold and was optimised), ``steps`` (N,)."""

    x: torch.Tensor
    loss_before: torch.Tensor
    loss: torch.Tensor
    optimised: torch.Tensor
    steps: torch.Tensor


def interpolated_modes(model: nn.Module, X1: torch.Tensor, X2: torch.Tensor, target, mix: float = 0.5,
                       threshold: float = 0.01, lr: float = 0.01, steps: int = 256, mse_weight: float = 0.1,
                       clamp: bool = True, device=None, progress: bool = False) -> InterpolatedModes:
    """Interpolated inputs that are modes of ``target`` (paper section 4.1, "interpolated inputs").

    This book reads the paper's term as: a convex mixture ``m = (1 - mix) X1 + mix X2`` of two real
    inputs (of one class, or of two classes with ``target`` the class it should be a mode of) which, when
    it is not already a mode (its CE toward ``target`` is above ``threshold``), is moved to a nearby mode
    by a short Adam run (``lr``, at most ``steps`` iterations, stopping per input below ``threshold``) on
    ``CE + mse_weight * MSE(x - m)``, clamped to [0, 1] by default. Returns :class:`InterpolatedModes`.
    """
    _check_pair(X1, X2)
    if not 0.0 <= float(mix) <= 1.0:
        raise ValueError(f"mix must lie in [0, 1], got {mix}")
    N = X1.shape[0]
    tgt = pair_targets(target, N)
    dev = device_of(model, device)
    m = ((1 - mix) * X1.to(dev, torch.float32) + mix * X2.to(dev, torch.float32))
    out = infer.logits(model, m, device=dev, name="the mixes of X1 and X2")
    _check_range(tgt, out.shape[1])
    before = F.cross_entropy(out, tgt, reduction="none")
    x = m.clone()
    nsteps = torch.zeros(N, dtype=torch.long)
    need = (before > threshold).nonzero()[:, 0]
    loss = before.clone()
    if need.numel() and steps > 0:
        xo, lo_, st = _optimise(model, m[need.to(dev)], tgt[need], lr=lr, iterations=steps, mse_weight=mse_weight,
                                tv_weight=0.0, clamp=clamp, stop_loss=threshold, progress=progress,
                                desc="interpolated modes")
        x[need.to(dev)] = xo
        loss[need] = lo_
        nsteps[need] = st
    return InterpolatedModes(x=x.cpu(), loss_before=before, loss=loss, optimised=before > threshold, steps=nsteps)


# --- plots
def plot_loss_curves(ax, losses: torch.Tensor, positions: torch.Tensor | None = None, color=None, alpha: float = 0.3,
                     label: str | None = None, median: bool = True, max_curves: int = 100, log: bool = False):
    """Loss curves (P, T) against path position on ``ax``: thin lines for up to ``max_curves`` pairs, a thick median."""
    L = torch.as_tensor(losses).float().cpu()
    L = L[None] if L.dim() == 1 else L
    pos = alphas(L.shape[1]) if positions is None else torch.as_tensor(positions).float().cpu()
    pos = pos.expand_as(L) if pos.dim() == 1 else pos
    for p in range(min(L.shape[0], max_curves)):
        ax.plot(pos[p].numpy(), L[p].numpy(), color=color, alpha=alpha, lw=0.7,
                label=label if (p == 0 and not median) else None)
    if median:
        grid = alphas(101)
        if positions is None or pos.dim() == 1:
            med = L.median(0).values
            ax.plot(pos[0].numpy(), med.numpy(), color=color, lw=2.2, label=label)
        else:   # resample each curve on a common grid first
            import numpy as np
            res = torch.tensor(np.stack([np.interp(grid.numpy(), pos[p].numpy(), L[p].numpy()) for p in range(L.shape[0])]))
            ax.plot(grid.numpy(), res.median(0).values.numpy(), color=color, lw=2.2, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("path position")
    ax.set_ylabel("cross-entropy")
    return ax


def plot_barrier_hist(ax, values: dict, bins: int = 30, log: bool = True, xlabel: str = "barrier"):
    """Overlaid histograms of barrier values, one per ``{label: tensor}`` entry (log-spaced bins when ``log``)."""
    import numpy as np
    arrays = {k: torch.as_tensor(v).float().cpu().numpy() for k, v in values.items()}
    allv = np.concatenate([a for a in arrays.values() if a.size])
    if log:
        pos = allv[allv > 0]
        lo, hi = (pos.min(), pos.max()) if pos.size else (1e-6, 1.0)
        edges = np.logspace(np.log10(max(lo, 1e-8)), np.log10(max(hi, lo * 10)), bins + 1)
        ax.set_xscale("log")
    else:
        edges = np.linspace(allv.min(), allv.max() if allv.max() > allv.min() else allv.min() + 1, bins + 1)
    for k, a in arrays.items():
        ax.hist(np.clip(a, edges[0], edges[-1]), bins=edges, alpha=0.55, label=k)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.legend()
    return ax


def plot_path_images(axes, A, B, B_prime, C, scale_diff: bool = True):
    """A row of five images: A, B, B', C and ``abs(B' - B)`` (rescaled to its own max when ``scale_diff``)."""
    from mclib import plots
    diff = (B_prime - B).abs()
    mx = float(diff.max())
    shown = diff / mx if (scale_diff and mx > 0) else diff
    plots.images(axes, [A, B, B_prime, C, shown.clamp(0, 1)],
                 ["A", "B (max loss)", "B' (bypass)", "C", f"|B'-B| (max {mx:.3f})"])
    return axes
