"""The barrier-evolution study (Vrabel et al., ICLR 2025, appendix): claim A7.

Built from :func:`mclib.synth.barrier_evolution` (FVO modes of the current model at probes during early training):

* :class:`Sizes` -- the chapter's sizes from ``mclib/presets/evolution.toml``;
* :func:`run` -- trains the chapter's network for its first batches, probing the barriers between FVO modes;
* :func:`gap_change_statistic` and :func:`evidence` -- A7's statistic (the largest over the smallest per-probe median
  barrier gap) with its bootstrap interval over pairs, and the values the claim records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from mclib import config, models, stats, synth

__all__ = ["Sizes", "run", "gap_change_statistic", "gap_evolution_evidence", "evidence"]


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of ``a7_barrier_evolution`` from ``mclib/presets/evolution.toml``; the file's comments say what each
    one is."""

    FILE: ClassVar[str] = "evolution"
    arch: str
    batches: int
    probe_every: int
    n_classes: int
    pairs_per_class: int
    batch_size: int
    lr: float
    num_points: int
    fvo_steps: int
    tolerance: float
    n_boot: int


def run(ctx: config.Context, sizes: Sizes, X: torch.Tensor, y: torch.Tensor) -> synth.BarrierEvolution:
    """A fresh ``sizes.arch`` (torch seeded with ``ctx.seed``) trained on ``(X, y)`` for ``sizes.batches`` batches,
    probed every ``probe_every`` batches (:func:`mclib.synth.barrier_evolution`)."""
    torch.manual_seed(ctx.seed)
    model = models.build(sizes.arch, dataset=ctx.preset.dataset).to(ctx.device)
    return synth.barrier_evolution(
        model, X, y, batches=sizes.batches, classes=range(sizes.n_classes), pairs_per_class=sizes.pairs_per_class,
        probe_every=sizes.probe_every, num_points=sizes.num_points, batch_size=sizes.batch_size, lr=sizes.lr,
        fvo_kwargs=dict(steps=sizes.fvo_steps), seed=ctx.seed, device=ctx.device, progress=False)


def gap_change_statistic(gap: np.ndarray, tolerance: float) -> float:
    """A7's statistic on a (probes, pairs) array of barrier gaps: the largest over the smallest per-probe median gap,
    each floored at ``tolerance`` (a gap at or below it is "no barrier", so no-barrier probes count as equal)."""
    med = np.maximum(np.median(np.asarray(gap, dtype=float), axis=1), tolerance)
    return float(med.max() / med.min())


def gap_evolution_evidence(gap, tolerance: float, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A7: :func:`gap_change_statistic` with a bootstrap interval over pairs (columns resampled together)."""
    g = np.asarray(gap, dtype=float)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"gap must be (probes >= 2, pairs), got shape {g.shape}")
    iv = stats.bootstrap_ci(g.T, lambda cols: gap_change_statistic(cols.T, tolerance), n_boot, seed)
    return {"gap_change": dict(iv._asdict()), "tolerance": float(tolerance), "pairs": int(g.shape[1]),
            "probes": int(g.shape[0]), "gap_median_per_probe": np.median(g, axis=1).tolist()}


def evidence(evo: synth.BarrierEvolution, sizes: Sizes, seed: int = 0) -> dict[str, Any]:
    """A7's values: :func:`gap_evolution_evidence` of the barrier gaps (``sizes.tolerance``, ``sizes.n_boot``), and the
    curves the chapter draws -- probe steps, median line max, mean gap per class, median endpoint CE, FVO iterations
    and the training loss."""
    ev = gap_evolution_evidence(evo.gap.numpy(), sizes.tolerance, n_boot=sizes.n_boot, seed=seed)
    return {**ev, "step": evo.step, "line_max_median": evo.line_max.median(1).values,
            "gap_per_class": [evo.gap[:, evo.target == c].mean(1) for c in evo.target.unique().tolist()],
            "endpoint_loss_median": evo.endpoint_loss.median(1).values, "fvo_steps": evo.fvo_steps,
            "train_loss": evo.train_loss}
