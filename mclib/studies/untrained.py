"""The untrained-networks study (Vrabel et al., ICLR 2025, untrained networks): claim A6.

Built from :func:`mclib.synth.synthetic_paths` (FVO pairs per class, their straight line, the free bypass):

* :class:`Sizes` -- the chapter's sizes from ``mclib/presets/untrained.toml``;
* :func:`run` -- one random-init network per architecture and its FVO pairs, straight lines and bypass;
* :func:`max_by_round` -- the path's max loss after each bypass round;
* :func:`evidence` -- what A6's judge reads for one architecture (:func:`mclib.claims.paper_a.judge_a6`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mclib import config, models, stats, synth

__all__ = ["Sizes", "PAPER_MAX_LOSS", "run", "max_by_round", "evidence"]

#: The paper's range of path max loss for untrained networks: 5e-4 to 5e-3 (CE); a final max at or below the upper
#: end counts as "in the paper's range".
PAPER_MAX_LOSS = 5e-3


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of ``a6_untrained`` from ``mclib/presets/untrained.toml``: ``archs``, ``n_classes``, ``fvo_steps``
    and ``bypass_iterations`` are aligned by position, one entry per architecture."""

    FILE: ClassVar[str] = "untrained"
    in_shape: tuple[int, ...]
    num_classes: int
    archs: tuple[str, ...]
    n_classes: tuple[int, ...]
    pairs_per_class: int
    fvo_steps: tuple[int, ...]
    bypass_iterations: tuple[int, ...]
    rounds: int
    num_points: int
    tolerance: float


def run(ctx: config.Context, sizes: Sizes) -> dict[str, synth.SyntheticPaths]:
    """Per architecture ``sizes.archs[i]``: a random-init network (torch seeded with ``ctx.seed + i``), FVO pairs of
    its first ``n_classes[i]`` classes, the straight line between them and the free bypass
    (:func:`mclib.synth.synthetic_paths`; FVO noise from ``ctx.generator(100 + i)``)."""
    out = {}
    for i, arch in enumerate(sizes.archs):
        torch.manual_seed(ctx.seed + i)
        model = models.build(arch, in_shape=sizes.in_shape, num_classes=sizes.num_classes).to(ctx.device).eval()
        out[arch] = synth.synthetic_paths(
            model, range(sizes.n_classes[i]), sizes.pairs_per_class, sizes.in_shape, num_points=sizes.num_points,
            bypass="free", fvo_kwargs=dict(steps=sizes.fvo_steps[i], generator=ctx.generator(100 + i)),
            bypass_kwargs=dict(iterations=sizes.bypass_iterations[i], max_rounds=sizes.rounds,
                               tolerance=sizes.tolerance),
            progress=False)
    return out


def max_by_round(bypass, rounds: int) -> torch.Tensor:
    """(rounds + 1, P): the path's max loss after each bypass round (row 0 the straight line); a pair that needed
    fewer rounds keeps its last value."""
    h = bypass.max_history()
    return torch.cat([h, h[-1:].expand(rounds + 1 - len(h), -1)])


def evidence(result: synth.SyntheticPaths, sizes: Sizes) -> dict[str, Any]:
    """A6's evidence for one architecture: FVO endpoint CE (median, max, share converged), the straight line's max
    and gap (medians) and its share of pairs with a barrier (gap above ``sizes.tolerance``, Wilson interval), the
    median path max after each round, the final path max (range, share at most :data:`PAPER_MAX_LOSS`), the share
    of pairs barrier-free at the end (Wilson interval) and the mean rounds used."""
    b = result.bypass
    hist = max_by_round(b, sizes.rounds)
    final_max = b.barriers[-1].max
    return {
        "pairs": len(result.target),
        "fvo_ce_median": result.modes.loss.median().item(), "fvo_ce_max": result.modes.loss.max().item(),
        "fvo_converged_fraction": result.modes.converged.float().mean().item(),
        "line_max_median": result.line_barrier.max.median().item(),
        "line_gap_median": result.line_barrier.gap.median().item(),
        "line_barrier_fraction": stats.fraction_ci((result.line_barrier.gap > sizes.tolerance).numpy()),
        "max_after_rounds_median": hist.median(1).values.tolist(),
        "final_max_min": final_max.min().item(), "final_max_max": final_max.max().item(),
        "connected": stats.fraction_ci(b.connected.numpy()),
        "rounds_mean": b.rounds.float().mean().item(),
        "final_max_in_paper_range_fraction": (final_max <= PAPER_MAX_LOSS).float().mean().item(),
    }
