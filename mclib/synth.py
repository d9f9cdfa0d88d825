"""Synthetic inputs by feature-visualisation optimisation (FVO), batched over many targets.

Vrabel et al. (ICLR 2025, arXiv 2409.05800; methods, "synthetic inputs") build *synthetic* modes of a class by the
input optimisation of feature visualisation (Olah et al., 2017): start from faint noise and minimise the
cross-entropy of the model's output toward the target class with respect to the input,

.. math::

    x_0 = s\\,\\varepsilon,\\ \\varepsilon \\sim \\mathcal N(0, I), \\qquad
    x^\\star = \\arg\\min_x\\ \\mathrm{CE}(f(x), y) + \\lambda_{TV}\\,\\mathrm{TV}(x) + \\tfrac{w}{2}\\lVert x\\rVert^2,

with Adam (lr 0.05), weight decay ``w = 1e-7`` (classic L2 added to the gradient, as ``torch.optim.Adam``
does), at most 8192 iterations, stopping once ``CE < 5e-4``. The paper optimises **unconstrained** (no
clamp to [0, 1]); :func:`fvo` does the same by default and offers ``clamp=True`` for pixel-valid inputs.

:func:`fvo` runs many targets in one batch. Each input is optimised exactly as it would be alone: the
model is put in eval mode (no batch coupling through BatchNorm), every input has its own Adam moments,
and an input whose CE fell below the threshold is *frozen* -- it leaves the batch, its iterate and
moments no longer change. So batched and one-at-a-time runs agree when they start from the same noise
(pass ``init``, or the same ``generator`` state) -- up to the float rounding of batched kernels, which
Adam's normalised steps and the network's ReLU/max-pool switches can amplify over many iterations (in
float32 the inputs then drift apart while their losses still agree closely; in float64 -- ``model.double()``
and a float64 ``init`` -- they agree to rounding, see ``tests/test_synth.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from mclib.optim import RowAdam, check_input_grad, total_variation
from mclib.torchutil import device_of, for_input_gradients

__all__ = ["FVOResult", "fvo", "fvo_pairs", "SyntheticPaths", "synthetic_paths",
           "BarrierEvolution", "barrier_evolution"]


@dataclass
class FVOResult:
    """Output of :func:`fvo`.

    ``x`` (N, C, H, W): the best (lowest-CE) iterate seen per input; ``loss`` (N,): its cross-entropy
    toward the target; ``steps`` (N,): Adam updates applied before the input stopped (converged or ran
    out); ``converged`` (N,) bool: ``loss < threshold``; ``targets`` (N,) the classes asked for.
    """

    x: torch.Tensor
    loss: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


def _check_targets(targets, num_classes: int) -> torch.Tensor:
    t = torch.as_tensor(targets)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1:
        raise ValueError(f"targets must be a 1-D sequence of class indices, got shape {tuple(t.shape)}")
    if len(t) == 0:
        raise ValueError("targets is empty: give at least one class index")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.is_floating_point() and torch.equal(t, t.round()):
            t = t.long()
        else:
            raise ValueError(f"targets must be integer class indices, got dtype {t.dtype}")
    t = t.long()
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(f"targets {t[bad].unique().tolist()} are out of range: the model has {num_classes} "
                         f"outputs, so classes must lie in [0, {num_classes - 1}]")
    return t


def _check_shape(in_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in in_shape)
    except TypeError as err:
        raise ValueError(f"in_shape must be (C, H, W), got {in_shape!r}") from err
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"in_shape must be three positive sizes (C, H, W), got {in_shape!r}")
    return shape


def fvo(
    model: nn.Module,
    targets: Sequence[int] | torch.Tensor,
    in_shape: Sequence[int],
    steps: int = 8192,
    lr: float = 0.05,
    weight_decay: float = 1e-7,
    threshold: float = 5e-4,
    tv_weight: float = 0.0,
    clamp: bool = False,
    generator: torch.Generator | None = None,
    init_scale: float = 0.01,
    progress: bool = True,
    init: torch.Tensor | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> FVOResult:
    """Feature-visualisation optimisation: one synthetic mode per entry of ``targets``, all in one batch.

    Minimises ``CE(model(x_i), targets[i]) + tv_weight * TV(x_i)`` over each input ``x_i`` with Adam
    (``lr``, ``betas``, ``eps``; L2 ``weight_decay`` added to the gradient as in ``torch.optim.Adam``),
    starting from ``init`` or ``init_scale * N(0, 1)`` drawn with ``generator`` (Vrabel et al., 2025,
    synthetic inputs; Olah et al., 2017). Defaults are the paper's: lr 0.05, weight decay 1e-7, at most 8192
    iterations, stop once ``CE < 5e-4``, no TV, unconstrained inputs.

    Per input: the CE is evaluated before each update; an input whose CE is below ``threshold`` stops
    (it is frozen: no further forward passes, updates or moment changes), and the lowest-CE iterate seen
    is returned, so batched results equal one-at-a-time results from the same start.

    ``clamp=False`` (default, as in the paper) leaves pixels unconstrained -- the result may leave [0, 1];
    ``clamp=True`` projects the start and every iterate onto [0, 1].

    The model is evaluated in eval mode (its mode is restored afterwards), channels-last and with its BatchNorm
    folded into the convolutions (:func:`mclib.torchutil.for_input_gradients`: the same function, another float
    rounding), and its parameters receive no gradient. Returns an :class:`FVOResult` on the model's device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_shape(in_shape)
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    steps = int(steps)
    device = device_of(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    with for_input_gradients(model) as net:     # eval mode, BatchNorm folded, channels-last
        with torch.no_grad():
            try:
                probe = net(torch.zeros((1, *shape), device=device, dtype=dtype))
            except RuntimeError as err:
                raise ValueError(f"the model does not accept inputs of shape (N, {', '.join(map(str, shape))}): {err}") from err
        if probe.dim() != 2:
            raise ValueError(f"the model must return logits (N, classes); it returned shape {tuple(probe.shape)}")
        t = _check_targets(targets, probe.shape[1]).to(device)
        n = len(t)
        if init is not None:
            init = torch.as_tensor(init, dtype=dtype)
            if tuple(init.shape) != (n, *shape):
                raise ValueError(f"init must have shape {(n, *shape)} (one start per target), got {tuple(init.shape)}")
            if not torch.isfinite(init).all():
                raise ValueError("init holds NaN or inf values")
            x = init.detach().clone().to(device)
        else:
            x = (init_scale * torch.randn((n, *shape), generator=generator)).to(device, dtype)
        if clamp:
            x.clamp_(0.0, 1.0)
        # FVO's recorded results use torch.optim.Adam's step-size arithmetic (scalar bias corrections)
        opt = RowAdam(x, lr, betas=betas, eps=eps, weight_decay=weight_decay, scalar_bias=True)
        best_x = x.clone()
        best_loss = torch.full((n,), float("inf"), device=device, dtype=dtype)
        active = torch.arange(n, device=device)
        bar = tqdm(total=steps, desc="FVO", disable=not progress, leave=False)
        for it in range(steps + 1):
            xa = x[active].requires_grad_(True)
            ce = F.cross_entropy(net(xa), t[active], reduction="none")
            objective = ce + tv_weight * total_variation(xa) if tv_weight else ce
            with torch.no_grad():
                ce_d = ce.detach()
                better = ce_d < best_loss[active]
                if better.any():
                    idx = active[better]
                    best_loss[idx] = ce_d[better]
                    best_x[idx] = xa.detach()[better]
                keep = ~(ce_d < threshold)
            if it == steps or not keep.any():
                break
            if it == 0:
                check_input_grad(ce, xa, "fvo")
            (grad,) = torch.autograd.grad(objective.sum(), xa)
            with torch.no_grad():
                active, grad = active[keep], grad[keep]
                xa = opt.step(x, grad, active)
                if clamp:
                    xa.clamp_(0.0, 1.0)
                x[active] = xa
            bar.update(1)
            if it % 50 == 0:
                bar.set_postfix(active=len(active), ce=f"{ce_d.max().item():.2e}")
        bar.close()
    return FVOResult(x=best_x, loss=best_loss, steps=opt.t, converged=best_loss < threshold, targets=t)


def fvo_pairs(model: nn.Module, classes: Sequence[int] | torch.Tensor, pairs_per_class: int,
              in_shape: Sequence[int], **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, FVOResult]:
    """Two FVO modes per pair, ``pairs_per_class`` pairs for each class in ``classes``, in ONE :func:`fvo` batch.

    Returns ``(A, C, target, result)``: endpoints ``A``, ``C`` (P, C, H, W) of P = len(classes) *
    pairs_per_class same-class pairs (both endpoints synthetic, from independent noise), their class
    ``target`` (P,), and the underlying :class:`FVOResult` of the 2P inputs (the first P are the ``A`` endpoints).
    Keyword arguments go to :func:`fvo`. Used for the synthetic-pair experiments of Vrabel et al.
    (synthetic inputs, untrained networks, barrier evolution during training).
    """
    if int(pairs_per_class) < 1:
        raise ValueError(f"pairs_per_class must be >= 1, got {pairs_per_class}")
    cls = torch.as_tensor(classes).long().reshape(-1)
    target = cls.repeat_interleave(int(pairs_per_class))
    res = fvo(model, torch.cat([target, target]), in_shape, **kwargs)
    p = len(target)
    return res.x[:p], res.x[p:], res.targets[:p], res


# ------------------------------------------------------------------------ experiments on synthetic pairs
@dataclass
class SyntheticPaths:
    """Same-class pairs of FVO modes and the loss along paths between them (see :func:`synthetic_paths`).

    ``A``, ``C`` (P, C, H, W) endpoints, ``target`` (P,), ``modes`` the :class:`FVOResult` of the 2P
    inputs (first P = ``A``), ``line`` (P, T) the CE along the straight line, ``line_barrier`` its
    :class:`mclib.paths.Barrier`, ``bypass`` the :class:`mclib.paths.BypassResult` (None if not run).
    """

    A: torch.Tensor
    C: torch.Tensor
    target: torch.Tensor
    modes: FVOResult
    line: torch.Tensor
    line_barrier: object
    bypass: object | None

    @property
    def endpoint_loss(self) -> torch.Tensor:
        """The larger CE of the two FVO endpoints of each pair, one value per pair."""
        p = len(self.target)
        return torch.maximum(self.modes.loss[:p], self.modes.loss[p:]).cpu()


def synthetic_paths(model: nn.Module, classes: Sequence[int] | torch.Tensor, pairs_per_class: int,
                    in_shape: Sequence[int], num_points: int = 64, bypass: str | None = "free",
                    fvo_kwargs: dict | None = None, bypass_kwargs: dict | None = None,
                    progress: bool = True) -> SyntheticPaths:
    """FVO pairs per class, the barrier on the straight line, then bypass.

    Vrabel et al. (2025), synthetic inputs and untrained networks.

    Makes ``pairs_per_class`` pairs of synthetic modes for every class (:func:`fvo_pairs`, both endpoints
    from independent noise), evaluates the CE along the straight line between them at ``num_points``
    points (:func:`mclib.paths.linear_losses`) and its barrier (:func:`mclib.paths.barrier`), then runs
    ``bypass="free"`` (:func:`mclib.paths.bypass_free`, the paper's variant for untrained networks: the
    max-loss point optimised freely with Adam lr 0.05 until CE < 5e-4), ``"projected"``
    (:func:`mclib.paths.bypass`, the paper's projected bypass) or ``None``. ``fvo_kwargs`` go to
    :func:`fvo`, ``bypass_kwargs`` to the bypass function.
    """
    from mclib import paths

    if bypass not in (None, "free", "projected"):
        raise ValueError(f"bypass must be 'free', 'projected' or None, got {bypass!r}")
    fk = {"progress": progress, **(fvo_kwargs or {})}
    A, C, target, modes = fvo_pairs(model, classes, pairs_per_class, in_shape, **fk)
    line = paths.linear_losses(model, A, C, target, num_points=num_points)
    result = None
    if bypass is not None:
        bk = {"num_points": num_points, "progress": progress, **(bypass_kwargs or {})}
        fn = paths.bypass_free if bypass == "free" else paths.bypass
        result = fn(model, A, C, target, **bk)
    return SyntheticPaths(A=A.cpu(), C=C.cpu(), target=target.cpu(), modes=modes, line=line,
                          line_barrier=paths.barrier(line), bypass=result)


@dataclass
class BarrierEvolution:
    """Barriers between FVO modes during training (see :func:`barrier_evolution`).

    ``step`` (K,) optimiser steps (batches) after which the model was probed (0 = initialisation);
    ``line_max``, ``gap``, ``endpoint_loss`` (K, P) per probe and pair: max CE along the straight line,
    barrier gap, larger endpoint CE; ``converged`` (K, P) both FVO endpoints reached the threshold;
    ``fvo_steps`` (K,) mean FVO iterations; ``target`` (P,); ``train_loss`` the per-batch training loss.
    """

    step: torch.Tensor
    line_max: torch.Tensor
    gap: torch.Tensor
    endpoint_loss: torch.Tensor
    converged: torch.Tensor
    fvo_steps: torch.Tensor
    target: torch.Tensor
    train_loss: list


class _StopTraining(Exception):
    pass


def barrier_evolution(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batches: int = 30,
                      classes: Sequence[int] | torch.Tensor = tuple(range(10)), pairs_per_class: int = 5,
                      probe_every: int = 1, num_points: int = 200, batch_size: int = 512, lr: float = 1e-3,
                      fvo_kwargs: dict | None = None, seed: int = 0, device=None,
                      progress: bool = True) -> BarrierEvolution:
    """Barriers between synthetic modes during the first ``batches`` batches of training (Vrabel et al., 2025).

    Trains ``model`` in place on ``(X, y)`` with Adam (``lr`` 1e-3, ``batch_size`` 512, the paper's setup;
    :func:`mclib.train.fit`). Before training and after every ``probe_every``-th batch (and the last one)
    it makes FVO modes of the *current* model -- ``pairs_per_class`` same-class pairs per class, each
    endpoint from the same fixed noise at every probe (:func:`fvo`, ``fvo_kwargs``) -- and records the
    max CE along the ``num_points``-point straight line between each pair
    (:func:`mclib.paths.linear_losses`). Regenerating the modes at each probe keeps the endpoints modes of
    the model being probed, so the max loss measures the barrier between modes, not the endpoints' loss.
    """
    from mclib import paths
    from mclib import train as _train

    if int(batches) < 1 or int(probe_every) < 1:
        raise ValueError(f"batches and probe_every must be >= 1, got {batches}, {probe_every}")
    if X.dim() != 4:
        raise ValueError(f"X must be images (N, C, H, W), got shape {tuple(X.shape)}")
    in_shape = tuple(X.shape[1:])
    dev = device_of(model, device)
    cls = torch.as_tensor(classes).long().reshape(-1)
    target = cls.repeat_interleave(int(pairs_per_class))
    P = len(target)
    fk = {"progress": False, **(fvo_kwargs or {})}
    init_scale = fk.pop("init_scale", 0.01)
    init = init_scale * torch.randn((2 * P, *in_shape), generator=torch.Generator().manual_seed(int(seed)))
    probes = sorted({0, int(batches), *range(int(probe_every), int(batches) + 1, int(probe_every))})
    rows = {k: [] for k in ("step", "line_max", "gap", "endpoint_loss", "converged", "fvo_steps")}
    bar = tqdm(total=len(probes), desc="probes", disable=not progress, leave=False)

    def probe(step: int, m: nn.Module) -> None:
        res = fvo(m, torch.cat([target, target]), in_shape, init=init, **fk)
        L = paths.linear_losses(m, res.x[:P], res.x[P:], target, num_points=num_points)
        b = paths.barrier(L)
        ends = torch.maximum(res.loss[:P], res.loss[P:]).cpu()
        rows["step"].append(step)
        rows["line_max"].append(b.max)
        rows["gap"].append(b.gap)
        rows["endpoint_loss"].append(ends)
        rows["converged"].append((res.converged[:P] & res.converged[P:]).cpu())
        rows["fvo_steps"].append(res.steps.float().mean().cpu())
        bar.update(1)

    def callback(step: int, m: nn.Module, loss: float) -> None:
        if step in probes:
            probe(step, m)
        if step >= batches:
            raise _StopTraining

    model.to(dev)
    probe(0, model)
    epochs = -(-int(batches) * int(batch_size) // len(X))
    losses: list[float] = []

    def record_loss(step, m, loss):
        losses.append(loss)
        callback(step, m, loss)

    try:
        _train.fit(model, X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                   generator=torch.Generator().manual_seed(int(seed)), callback=record_loss, device=dev,
                   progress=False)
    except _StopTraining:
        pass
    finally:
        model.eval()
        bar.close()
    return BarrierEvolution(step=torch.tensor(rows["step"]), line_max=torch.stack(rows["line_max"]),
                            gap=torch.stack(rows["gap"]), endpoint_loss=torch.stack(rows["endpoint_loss"]),
                            converged=torch.stack(rows["converged"]), fvo_steps=torch.stack(rows["fvo_steps"]),
                            target=target, train_loss=losses)
