"""The pair studies of Vrabel et al. (ICLR 2025), sections 4.1-4.2: claims A1-A5.

Built from the input-space paths of :mod:`mclib.paths` (straight lines, barriers, bypass, interpolated modes):

* :func:`same_class_pairs` draws the pairs of real inputs (balanced over classes, optionally the most confident);
* :func:`barrier_sample` measures the straight-line barrier of same-class pairs, adding pairs until the share with a
  barrier is decided against the claim's threshold (claim A1), as a :class:`BarrierSample`;
* :func:`study_pairs` bypasses the pairs that have a barrier (claims A2-A5), as a :class:`PairStudy` whose
  ``summary()`` gives the chapter's table; :func:`interpolated_pairs` makes the interpolated-input pairs (A4);
* :func:`condition_effects` says how far each factor of a condition map moves an estimate, and
  :func:`plot_condition_map` draws such a map (one row per setting, its interval against the threshold).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mclib import config, paths, sequential, stats, synth, train

__all__ = ["Sizes", "MODE_CE", "same_class_pairs", "BarrierSample", "barrier_sample", "GrownPairs", "until_barriers",
           "condition_effects", "PairStudy", "study_pairs", "interpolated_pairs", "KINDS", "kinds_of_pairs",
           "trained_for", "pairable", "RealPairs", "real_pairs", "plot_condition_map", "plot_line_barriers",
           "plot_line_and_bypass", "plot_gap_history", "plot_a2_map", "plot_bends"]

#: An FVO input is a mode at CE below 5e-4 (the paper's stopping rule, :func:`mclib.synth.fvo`'s ``threshold``);
#: :meth:`PairStudy.evidence` counts the share that are, claim A5 judges it (``mclib.claims.paper_a.MODE_CE``).
MODE_CE = 5e-4


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of the pair chapters (``a1_real_paths``, ``a4_interpolated_synthetic``) from
    ``mclib/presets/paths.toml``; the file's comments say what each one is."""

    FILE: ClassVar[str] = "paths"
    n_pairs: int
    num_points: int
    iterations: int
    max_rounds: int
    tolerance: float
    second_arch: str
    n_interp_pairs: int
    interp_budget: int
    min_bent_pairs: int
    interp_threshold: float
    interp_steps: int
    fvo_pairs_per_class: int
    fvo_budget_per_class: int
    fvo_steps: int
    train_seeds: tuple[int, ...]
    n_boot: int
    max_pairs: int
    min_barrier_pairs: int
    map_epochs: tuple[int, ...]
    map_lowest_loss: float
    map_mse_weights: tuple[float, ...]
    early_stop: int


def same_class_pairs(model: nn.Module | None, X: torch.Tensor, y: torch.Tensor, n_pairs: int,
                     generator: torch.Generator | None = None, correct_only: bool = True,
                     lowest_loss: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(i, j)`` (each (n_pairs,)) of distinct same-class pairs of ``X``, balanced over classes.

    Pair k uses class ``classes[k % num_classes]`` (the classes present); ``i`` and ``j`` are drawn without
    replacement among that class's inputs that ``model`` classifies correctly (all of them when
    ``correct_only`` is False or ``model`` is None). Used for the real-pair experiments (paper section 4.1).
    ``lowest_loss=q`` (0 < q <= 1) draws within the fraction q of each class's eligible inputs with the
    lowest cross-entropy toward their class (at least two per class): pairs of confident inputs, closer to
    the paper's *modes*. Pairs are drawn one after another from ``generator``, so the first n of a call for
    more pairs with an equally seeded generator are the n pairs of a smaller call.
    """
    y = torch.as_tensor(y).long().cpu()
    if lowest_loss is not None:
        if isinstance(lowest_loss, bool) or not 0.0 < float(lowest_loss) <= 1.0:
            raise ValueError(f"lowest_loss must be a fraction in (0, 1] of each class's inputs, got {lowest_loss!r}")
        if model is None:
            raise ValueError("lowest_loss ranks inputs by the model's loss: pass a model, not None")
    ok = torch.ones_like(y, dtype=torch.bool)
    out = None
    if model is not None and (correct_only or lowest_loss is not None):
        out = train.logits(model, X)
        if correct_only:
            ok = out.argmax(1) == y
    if lowest_loss is not None:
        ce = F.cross_entropy(out, y, reduction="none")
        low = torch.zeros_like(ok)
        for c in y.unique().tolist():
            members = ((y == c) & ok).nonzero()[:, 0]
            keep = max(2, math.ceil(float(lowest_loss) * len(members)))
            low[members[ce[members].argsort(stable=True)[:keep]]] = True
        ok = ok & low
    classes = [c for c in y.unique().tolist() if int(((y == c) & ok).sum()) >= 2]
    if not classes:
        raise ValueError("no class has two correctly classified inputs to pair")
    I, J = [], []
    for k in range(int(n_pairs)):
        cand = ((y == classes[k % len(classes)]) & ok).nonzero()[:, 0]
        i, j = cand[torch.randperm(len(cand), generator=generator)[:2]]
        I.append(int(i)), J.append(int(j))
    return torch.tensor(I), torch.tensor(J)


@dataclass
class BarrierSample:
    """Straight-line barriers of same-class pairs, drawn on a sequential design until their barrier fraction is
    decided (claim A1).

    ``i``, ``j`` (n,): indices of the pairs into the inputs; ``target`` (n,): their class; ``gap`` (n,): the
    barrier gap of each straight line; ``tolerance``: a gap above it is a barrier; ``threshold``: the fraction
    the sample had to decide; ``sample``: the :class:`mclib.sequential.Sample` (looks taken, the interval at each,
    at the design's level, so that the error over all looks stays at most ``alpha``).
    """

    i: torch.Tensor
    j: torch.Tensor
    target: torch.Tensor
    gap: torch.Tensor
    tolerance: float
    threshold: float
    sample: sequential.Sample

    @property
    def looks(self) -> list[int]:
        """The sample sizes at which the interval was inspected."""
        return list(self.sample.looks)

    @property
    def line_has_barrier(self) -> torch.Tensor:
        return self.gap > self.tolerance

    def fraction(self):
        """The share of pairs with a barrier and its exact interval at the design's level (the last look's)."""
        return self.sample.interval

    def measured(self) -> dict:
        """What a condition map records for this sample: ``barrier_fraction`` (the last look's interval as a dict
        ``estimate, lo, hi, n`` with ``level``, ``looks``, ``planned`` and ``needed``, see
        :meth:`mclib.sequential.Sample.record`), ``pairs``, ``looks``, and the median and largest straight-line gap."""
        return {"barrier_fraction": self.sample.record(), "pairs": len(self), "looks": self.looks,
                "gap_median": float(self.gap.median()), "gap_max": float(self.gap.max())}

    def __len__(self) -> int:
        return int(self.gap.shape[0])


def barrier_sample(model: nn.Module, X: torch.Tensor, y: torch.Tensor, n_pairs: int, *, tolerance: float = 0.01,
                   threshold: float = 0.05, max_pairs: int | None = None, num_points: int = 64, seed: int = 0,
                   lowest_loss: float | None = None, alpha: float = 0.05,
                   min_barrier_pairs: int = 0) -> BarrierSample:
    """Straight-line barrier gaps of same-class pairs (:func:`same_class_pairs`), on a sequential design.

    The looks are declared before any pair is drawn: ``n_pairs, 2 n_pairs, ...`` up to ``max_pairs`` (default
    ``4 * n_pairs``; :meth:`mclib.sequential.Design.doubling`), each look's exact (Clopper-Pearson) interval of the
    share of gaps above ``tolerance`` at level ``1 - alpha / K`` (:mod:`mclib.sequential`), so a decision against
    ``threshold`` is wrong with probability at most ``alpha`` whichever look takes it. Sampling goes on to the next
    look while the interval spans ``threshold``, or while fewer than ``min_barrier_pairs`` pairs have a barrier
    (claims A2-A3 judge the barrier pairs: a bound on the looks covers any rule for stopping among them). Each look
    evaluates only its new pairs: the first pairs of a larger draw are the earlier ones (generator seeded with
    ``seed``). Returns a :class:`BarrierSample`.
    """
    n, cap = int(n_pairs), int(max_pairs if max_pairs is not None else 4 * n_pairs)
    if n < 1 or cap < n:
        raise ValueError(f"need n_pairs >= 1 and max_pairs >= n_pairs, got n_pairs={n_pairs}, max_pairs={max_pairs}")
    y = torch.as_tensor(y).long().cpu()
    design = sequential.Design.doubling(n, cap, alpha)
    drawn = {"gaps": torch.zeros(0)}

    def measure(size: int, level: float):
        i, j = same_class_pairs(model, X, y, size, generator=torch.Generator().manual_seed(int(seed)),
                                lowest_loss=lowest_loss)
        new = slice(len(drawn["gaps"]), size)
        L = paths.linear_losses(model, X[i[new]], X[j[new]], y[i[new]], num_points)
        drawn.update(gaps=torch.cat([drawn["gaps"], paths.barrier(L).gap]), i=i, j=j)
        return stats.fraction_ci((drawn["gaps"] > tolerance).numpy(), level, method="exact")

    def enough(iv) -> bool:
        return (sequential.decision(iv, threshold) is not None
                and int((drawn["gaps"] > tolerance).sum()) >= int(min_barrier_pairs))

    sample = sequential.run(design, measure, threshold, stop=enough)
    return BarrierSample(i=drawn["i"], j=drawn["j"], target=y[drawn["i"]], gap=drawn["gaps"],
                         tolerance=float(tolerance), threshold=float(threshold), sample=sample)


@dataclass
class GrownPairs:
    """Pairs drawn in growing batches until enough of them have a straight-line barrier (see :func:`until_barriers`).

    ``A``, ``C`` (P, ...) endpoints, ``target`` (P,), ``mode_loss`` (2P,) the endpoints' own losses as the drawing
    function reported them (first P are the ``A``), ``looks`` the pair counts after each draw, ``barrier_pairs`` how many
    straight lines have a gap above the tolerance.
    """

    A: torch.Tensor
    C: torch.Tensor
    target: torch.Tensor
    mode_loss: torch.Tensor
    looks: list[int]
    barrier_pairs: int


def until_barriers(model: nn.Module, draw, first: int, budget: int, min_barrier_pairs: int, *, num_points: int,
                   tolerance: float) -> GrownPairs:
    """Draw pairs until at least ``min_barrier_pairs`` of them have a straight-line barrier, or ``budget`` pairs.

    Claims A3-A5 judge the pairs *with* a barrier (bends, connection after bypass); when barriers are rare a fixed
    sample leaves two or three such pairs, too few for an interval. ``draw(k, part)`` returns ``(A, C, target,
    mode_loss)`` for about ``k`` NEW pairs (``part`` = 0, 1, ... numbers the draw, to seed an independent stream; the
    first draw is the fixed sample of old); the pair counts double from ``first`` (the looks of
    :meth:`mclib.sequential.Design.doubling`) until enough barrier pairs or the budget. The rule reads only the
    barrier count, never the outcome the claims judge, so the claims' intervals keep their meaning. Only the new
    pairs' straight lines are evaluated at each step.
    """
    planned = sequential.Design.doubling(int(first), max(int(first), int(budget))).looks
    parts, looks, bars = [], [], 0
    for part, size in enumerate(planned):
        have = looks[-1] if looks else 0
        A, C, t, m = draw(size - have, part)
        parts.append((A.cpu(), C.cpu(), torch.as_tensor(t).long().cpu(), torch.as_tensor(m).reshape(2, -1).cpu()))
        gaps = paths.barrier(paths.linear_losses(model, A, C, t, num_points)).gap
        bars += int((gaps > tolerance).sum())
        looks.append(have + len(t))
        if bars >= int(min_barrier_pairs) or looks[-1] >= planned[-1]:
            break
    A, C, t = (torch.cat([q[k] for q in parts]) for k in range(3))
    m = torch.cat([q[3] for q in parts], 1).reshape(-1)
    return GrownPairs(A=A, C=C, target=t, mode_loss=m, looks=looks, barrier_pairs=bars)


def condition_effects(conditions, key: str) -> dict[str, tuple[float, int]]:
    """How much each factor of a condition map moves the estimate of ``measured[key]``, the others held fixed.

    For every parameter name of the settings: over all pairs of settings that differ in that parameter only,
    the largest absolute difference of the two estimates, and the number of such pairs. Returns
    ``{name: (largest change, pairs compared)}`` in the order the names appear; a factor with no such pair
    (or whose intervals are missing) gets ``(nan, 0)``. Says whether an effect is a property of, e.g., the
    architecture, the training length or the pair sampling, in the map's own units.
    """
    entries = []
    for e in conditions:
        iv = (e.get("measured") or {}).get(key)
        iv = iv._asdict() if hasattr(iv, "_asdict") else iv
        est = None if iv is None else iv.get("estimate")
        entries.append((dict(e.get("setting") or {}), est))
    names = list(dict.fromkeys(k for st, _ in entries for k in st))
    out = {}
    for name in names:
        best, n = math.nan, 0
        for a in range(len(entries)):
            for b in range(a + 1, len(entries)):
                (sa, ea), (sb, eb) = entries[a], entries[b]
                if ea is None or eb is None or set(sa) != set(sb) or sa.get(name) == sb.get(name):
                    continue
                if all(sa[k] == sb[k] for k in sa if k != name):
                    d = abs(float(ea) - float(eb))
                    best, n = (d if math.isnan(best) else max(best, d)), n + 1
        out[name] = (best, n)
    return out


@dataclass
class PairStudy:
    """Straight-line barriers of P pairs and the bypass of those with a barrier (paper sections 4.1-4.2).

    ``line``: (P, T) loss along the straight lines; ``line_barrier``: its :class:`mclib.paths.Barrier`; ``line_has_barrier``
    (P,): gap > ``tolerance``; ``bypass``: the :class:`mclib.paths.BypassResult` of the pairs with a barrier (in the
    order of ``line_has_barrier.nonzero()``), None when no pair has one.
    """

    line: torch.Tensor
    line_barrier: paths.Barrier
    line_has_barrier: torch.Tensor
    bypass: paths.BypassResult | None
    tolerance: float
    endpoint_loss: torch.Tensor

    def _per_pair(self) -> dict[str, np.ndarray] | None:
        """The bypass's per-pair numbers over the pairs with a barrier, None when none has one: ``g1`` the gap after
        one bend, ``connected``, ``bends``, ``rounds``, ``final_gap``, and ``shift`` the max|B'-B| in % of the max
        pixel over the pairs bent in the first round."""
        r = self.bypass
        if r is None or not bool(self.line_has_barrier.any()):
            return None
        return {"g1": np.asarray((r.barriers[1] if len(r.barriers) > 1 else r.barriers[0]).gap, dtype=float),
                "connected": np.asarray(r.connected, dtype=bool), "bends": np.asarray(r.bends, dtype=float),
                "rounds": np.asarray(r.rounds), "final_gap": np.asarray(r.barriers[-1].gap, dtype=float),
                "shift": 100 * np.asarray(r.shift(), dtype=float)[np.asarray(r.bent_first, dtype=bool)]}

    def summary(self) -> dict:
        """Plain numbers for the chapter's table: fraction with a barrier, bypass rounds and bends, free after one
        bend, B' shift (the point estimates of :meth:`evidence`)."""
        b = self.line_barrier
        out = {"pairs": int(b.gap.shape[0]), "endpoint loss (median)": float(self.endpoint_loss.median()),
               "barrier max (median)": float(b.max.median()), "barrier gap (median)": float(b.gap.median()),
               "barrier gap (max)": float(b.gap.max()), "pairs with a barrier": int(self.line_has_barrier.sum()),
               "fraction with a barrier": float(self.line_has_barrier.float().mean())}
        q, nan = self._per_pair(), float("nan")
        shift = q["shift"] if q is not None else np.zeros(0)
        out.update({"free after 1 bend": float(np.mean(q["g1"] <= self.tolerance)) if q else nan,
                    "connected at the end": float(np.mean(q["connected"])) if q else nan,
                    "rounds (median)": float(np.median(q["rounds"])) if q else nan,
                    "rounds (max)": int(q["rounds"].max()) if q else nan,
                    "bends (median)": float(np.median(q["bends"])) if q else nan,
                    "max|B'-B| % (median)": float(np.median(shift)) if shift.size else nan,
                    "max|B'-B| % (max)": float(shift.max()) if shift.size else nan,
                    "final gap (median)": float(np.median(q["final_gap"])) if q else nan})
        return out

    def evidence(self, mode_loss=None, n_boot: int = 2000, seed: int = 0,
                 barrier_fraction: dict | None = None) -> dict:
        """What the judges of claims A1-A5 read (:mod:`mclib.claims.paper_a`), with intervals.

        Over all P pairs: ``barrier_fraction`` (gap above the tolerance; Wilson interval) and ``connected_all``
        (pairs whose straight line has no barrier, or whose bypass path ends barrier-free). Over the pairs with a
        barrier: ``free_after_1`` (gap at most the tolerance after one bend), ``connected`` (barrier-free after at
        most max_rounds rounds), ``bends_median`` (bootstrap interval of the median number of bends),
        ``shift_median`` (bootstrap interval of the median ``max|B'-B|`` in % of the max pixel of ``B``); None where
        there is nothing to measure (no barrier pair). ``mode_loss`` (optional, the endpoints' CE) adds
        ``mode_fraction``: endpoints with CE below :data:`MODE_CE`. ``barrier_fraction`` (an interval dict) replaces
        the Wilson interval of the pairs' barrier share: A1 passes its sequential sample's
        (:meth:`BarrierSample.measured`), whose error is controlled over its looks.
        """
        has = np.asarray(self.line_barrier.gap > self.tolerance)
        gap = np.asarray(self.line_barrier.gap, dtype=float)
        out = {
            "pairs": int(len(has)), "barrier_pairs": int(has.sum()), "tolerance": float(self.tolerance),
            "barrier_fraction": dict(barrier_fraction) if barrier_fraction is not None else _iv(stats.fraction_ci(has)),
            "gap_median": float(np.median(gap)), "gap_max": float(gap.max()),
            "max_median": float(np.median(np.asarray(self.line_barrier.max, dtype=float))),
            "endpoint_loss_median": float(np.median(np.asarray(self.endpoint_loss, dtype=float))),
            "free_after_1": None, "connected": None, "bends_median": None, "shift_median": None, "shift_max": None,
            "rounds_max": 0, "final_gap_median": None,
        }
        connected_all = ~has
        q = self._per_pair()
        if q is not None:
            shift = q["shift"]
            connected_all = connected_all.copy()
            connected_all[np.flatnonzero(has)] = q["connected"]
            out.update({
                "free_after_1": _iv(stats.fraction_ci(q["g1"] <= self.tolerance)),
                "connected": _iv(stats.fraction_ci(q["connected"])),
                "bends_median": _iv(stats.bootstrap_ci(q["bends"], np.median, n_boot, seed)),
                "shift_median": _iv(stats.bootstrap_ci(shift, np.median, n_boot, seed)) if shift.size else None,
                "shift_max": float(shift.max()) if shift.size else None,
                "rounds_max": int(q["rounds"].max()),
                "final_gap_median": float(np.median(q["final_gap"])),
            })
        out["connected_all"] = _iv(stats.fraction_ci(connected_all))
        if mode_loss is not None:
            out["mode_fraction"] = _iv(stats.fraction_ci(np.asarray(mode_loss, dtype=float).reshape(-1) < MODE_CE))
        return out


def _iv(interval) -> dict | None:
    """An :class:`mclib.stats.Interval` as the dict the records store (None stays None)."""
    return None if interval is None else dict(interval._asdict())


def study_pairs(model: nn.Module, A: torch.Tensor, C: torch.Tensor, target, num_points: int = 64,
                tolerance: float = 0.01, progress: bool = True, **bypass_kwargs) -> PairStudy:
    """Barrier of the straight line for every pair, then :func:`mclib.paths.bypass` on the pairs whose gap exceeds
    ``tolerance``.

    ``bypass_kwargs`` go to :func:`mclib.paths.bypass` (``iterations``, ``max_rounds``, ``clamp``, ...). Returns a
    :class:`PairStudy`; ``PairStudy.summary()`` gives the numbers of claims A1-A5.
    """
    tgt = paths.pair_targets(target, A.shape[0])
    line = paths.linear_losses(model, A, C, tgt, num_points, progress=progress)
    bar = paths.barrier(line)
    has = bar.gap > tolerance
    res = None
    if has.any():
        idx = has.nonzero()[:, 0]
        res = paths.bypass(model, A[idx], C[idx], tgt[idx], tolerance=tolerance, num_points=num_points,
                     progress=progress, **bypass_kwargs)
    return PairStudy(line=line, line_barrier=bar, line_has_barrier=has, bypass=res, tolerance=float(tolerance),
                     endpoint_loss=torch.maximum(line[:, 0], line[:, -1]))


def interpolated_pairs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, n_pairs: int, kind: str = "same",
                       mix: float = 0.5, generator: torch.Generator | None = None, **kwargs):
    """Same-class pairs of interpolated modes (paper section 4.1), ``(A, C, target, modes)``.

    Pair k has class ``c`` (balanced over classes). ``kind="same"``: each endpoint mixes two real inputs of
    class ``c``; ``kind="two"``: each endpoint mixes a real input of class ``c`` with one of another class
    (drawn at random), and is made a mode of ``c``. Each mix goes through :func:`mclib.paths.interpolated_modes`
    (``kwargs``: ``threshold``, ``steps``, ``lr``, ...); ``modes`` is its :class:`mclib.paths.InterpolatedModes` for the
    2P endpoints (first P are the ``A``). Only correctly classified inputs are used.
    """
    if kind not in ("same", "two"):
        raise ValueError(f"kind must be 'same' or 'two', got {kind!r}")
    i1, j1 = same_class_pairs(model, X, y, n_pairs, generator)
    i2, j2 = same_class_pairs(model, X, y, n_pairs, generator)
    yy = torch.as_tensor(y).long()
    if kind == "two":       # replace the second input of each mix by one of another class
        def other(idx):
            out = []
            for i in idx.tolist():
                cand = (yy != yy[i]).nonzero()[:, 0]
                out.append(int(cand[torch.randint(len(cand), (1,), generator=generator)]))
            return torch.tensor(out)
        j1, j2 = other(i1), other(i2)
    target = yy[i1]
    X1 = torch.cat([X[i1], X[i2]])
    X2 = torch.cat([X[j1], X[j2]])
    modes = paths.interpolated_modes(model, X1, X2, torch.cat([target, target]), mix=mix, **kwargs)
    P = len(target)
    return modes.x[:P], modes.x[P:], target, modes


#: The kinds of pairs of claims A4 and A5, in the chapter's order.
KINDS = ("real", "interpolated, same class", "interpolated, two classes", "FVO")


def kinds_of_pairs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, sizes: Sizes, seed: int = 0):
    """The endpoints of every kind of pair of claims A4 and A5 for one model (paper section 4.1), as three dicts keyed
    by :data:`KINDS`: ``endpoints[kind] = (A, C, target)``, ``mode_loss[kind]`` the endpoints' own CE (2P,) and
    ``drawn[kind]`` the pair counts after each draw.

    ``real``: ``sizes.n_interp_pairs`` same-class pairs of correctly classified inputs; the two interpolated kinds
    (:func:`interpolated_pairs`, optimised to modes with ``interp_threshold``, ``interp_steps``) and ``FVO`` (whole
    pairs per class, :func:`mclib.synth.fvo_pairs` kept in [0, 1]) are drawn by :func:`until_barriers` until
    ``sizes.min_bent_pairs`` of them have a straight-line barrier, within ``interp_budget`` pairs and
    ``fvo_budget_per_class`` pairs per class. Draw ``part`` of a kind uses its own generator, seeded from ``seed``.
    """
    gen = lambda offset: torch.Generator().manual_seed(int(seed) + offset)   # noqa: E731 - independent streams
    n_cls, in_shape = int(y.max()) + 1, tuple(X.shape[1:])
    i, j = same_class_pairs(model, X, y, sizes.n_interp_pairs, generator=gen(1))
    endpoints = {"real": (X[i], X[j], y[i])}
    mode_loss = {"real": paths.linear_losses(model, X[i], X[j], y[i], 2).flatten()}
    drawn = {}
    grow = dict(min_barrier_pairs=sizes.min_bent_pairs, num_points=sizes.num_points, tolerance=sizes.tolerance)

    def interpolated(kind: str, k: int):
        def draw(n: int, part: int):   # n new pairs from an independent stream per draw
            A, C, t, modes = interpolated_pairs(model, X, y, n, kind=kind, generator=gen(2 + k + 10 * part),
                                                threshold=sizes.interp_threshold, steps=sizes.interp_steps)
            return A, C, t, modes.loss
        return until_barriers(model, draw, sizes.n_interp_pairs, sizes.interp_budget, **grow)

    def fvo(n: int, part: int):   # whole pairs per class, so the classes stay balanced
        A, C, t, res = synth.fvo_pairs(model, list(range(n_cls)), -(-n // n_cls), in_shape, steps=sizes.fvo_steps,
                                       clamp=True, generator=gen(5 + 10 * part), progress=False)
        return A, C, t, res.loss

    grown = {KINDS[1]: interpolated("same", 0), KINDS[2]: interpolated("two", 1),
             KINDS[3]: until_barriers(model, fvo, sizes.fvo_pairs_per_class * n_cls,
                                      sizes.fvo_budget_per_class * n_cls, **grow)}
    for kind, g in grown.items():
        endpoints[kind], mode_loss[kind], drawn[kind] = (g.A, g.C, g.target), g.mode_loss, g.looks
    return endpoints, mode_loss, drawn


def trained_for(ctx: config.Context, arch: str, seed: int, epochs: int | None = None) -> train.Trained:
    """The standard recipe's trained ``arch`` at training ``seed`` (cached and shared with other chapters),
    optionally trained for ``epochs`` instead."""
    recipe = train.recipe_for(ctx, arch=arch, seed=seed, **({} if epochs is None else {"epochs": epochs}))
    return ctx.model(recipe, progress=False)


def pairable(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether some class has two correctly classified inputs, which same-class pairs need (a model at chance may
    have none: its runs then have no pairs, and A1-A3 say so instead of crashing)."""
    ok = train.logits(model, X).argmax(1) == y
    return any(int(((y == c) & ok).sum()) >= 2 for c in y.unique().tolist())


@dataclass
class RealPairs:
    """The real-pair chapter's measurement (claims A1-A3, paper sections 4.1-4.2), made by :func:`real_pairs`.

    ``runs``: per run name (``"<arch> seed <s>"``, every architecture at every training seed) its
    :class:`mclib.train.Trained`; ``samples``: its :class:`BarrierSample` (None when the model cannot pair,
    :func:`pairable`); ``studies``: its :class:`PairStudy` (bypass of the barrier pairs), for runs with a sample."""

    ctx: config.Context
    sizes: Sizes
    X: torch.Tensor
    y: torch.Tensor
    threshold: float
    archs: tuple[str, ...]
    runs: dict
    samples: dict
    studies: dict

    def table(self):
        """One row per run: the model's test accuracy, its pairs and the sample sizes looked at (a pandas
        DataFrame)."""
        import pandas as pd

        return pd.DataFrame(
            {"test accuracy": [run.metrics["test_acc"] for run in self.runs.values()],
             "pairs": [len(s) if s is not None else 0 for s in self.samples.values()],
             "looks at": [", ".join(map(str, s.looks)) if s is not None else "no class has two correctly classified "
                          "inputs" for s in self.samples.values()]},
            index=pd.Index(list(self.runs), name="model"))

    @property
    def seed0(self) -> int:
        """The first training seed: the condition maps vary the other factors at it."""
        return self.sizes.train_seeds[0]

    def _sample_kw(self) -> dict:
        S = self.sizes
        return dict(tolerance=S.tolerance, threshold=self.threshold, max_pairs=S.max_pairs, num_points=S.num_points,
                    seed=self.ctx.seed + 1)

    def a1_map(self) -> list[dict]:
        """Claim A1's condition map: the barrier share (:meth:`BarrierSample.measured`, plus the model's test
        accuracy) per architecture, training length (``sizes.map_epochs``) and pair sampling (random, or within each
        class's ``map_lowest_loss`` lowest-loss inputs), at the first training seed; a model that cannot pair gets
        ``barrier_fraction`` None and 0 pairs."""
        S, out = self.sizes, []
        low = f"lowest-loss {S.map_lowest_loss:.0%}"
        for arch in self.archs:
            for epochs in S.map_epochs:
                standard = epochs == self.ctx.preset.epochs
                run = self.runs[f"{arch} seed {self.seed0}"] if standard else trained_for(self.ctx, arch, self.seed0,
                                                                                           epochs)
                net = run.model
                for drawn, q in (("random", None), (low, S.map_lowest_loss)):
                    s = (self.samples[f"{arch} seed {self.seed0}"] if standard and q is None
                         else barrier_sample(net, self.X, self.y, S.n_pairs, lowest_loss=q, **self._sample_kw())
                         if pairable(net, self.X, self.y) else None)
                    measured = s.measured() if s is not None else {"barrier_fraction": None, "pairs": 0}
                    out.append({"setting": {"arch": arch, "epochs": epochs, "pairs": drawn},
                                "measured": {**measured, "test_acc": run.metrics["test_acc"]}})
        return out

    def a2_map(self) -> tuple[list[dict], dict]:
        """Claim A2's condition map at the first training seed: per architecture with barrier pairs, the paper's full
        bypass (MSE weight 0.1, no early stop) and one bypass round per ``sizes.map_mse_weights`` stopped as soon as
        the path is barrier-free (``sizes.early_stop``), each with its intervals
        (:meth:`mclib.paths.BypassResult.intervals`) and the barrier-pair count. Returns ``(map, stopped)``,
        ``stopped[arch, weight]`` the early-stopped :class:`mclib.paths.BypassResult`."""
        S, out, stopped = self.sizes, [], {}
        for arch in self.archs:
            name = f"{arch} seed {self.seed0}"
            st, s = self.studies.get(name), self.samples[name]
            if st is None or st.bypass is None:      # no pair, or no barrier pair: nothing to bypass for this model
                continue
            h = st.line_has_barrier
            out.append({"setting": {"arch": arch, "mse_weight": 0.1, "early_stop": False},
                        "measured": {**st.bypass.intervals(S.n_boot, self.ctx.seed), "barrier_pairs": int(h.sum())}})
            for w in S.map_mse_weights:
                stopped[arch, w] = paths.bypass(self.runs[name].model, self.X[s.i[h]], self.X[s.j[h]], s.target[h],
                                                mse_weight=w, iterations=S.iterations, max_rounds=1,
                                                num_points=S.num_points, tolerance=S.tolerance, clamp=True,
                                                early_stop=S.early_stop, progress=False)
                out.append({"setting": {"arch": arch, "mse_weight": w, "early_stop": True},
                            "measured": {**stopped[arch, w].intervals(S.n_boot, self.ctx.seed),
                                         "barrier_pairs": int(h.sum())}})
        return out, stopped

    def evidence(self) -> dict[str, dict]:
        """What the judges of claims A1-A3 read, per run in the runs' order: :meth:`PairStudy.evidence` with A1's
        sequential interval (:meth:`BarrierSample.measured`), or -- for a run that could not pair -- zero pairs and
        ``missing`` saying why; each with the model's test accuracy on these inputs (a model at chance makes A1-A3
        inconclusive)."""
        S = self.sizes
        ev = {name: {**st.evidence(n_boot=S.n_boot, seed=self.ctx.seed,
                                   barrier_fraction=self.samples[name].measured()["barrier_fraction"]),
                     "test_acc": train.evaluate(self.runs[name].model, self.X, self.y)["acc"], "n_test": len(self.X)}
              for name, st in self.studies.items()}
        unpaired = "no class had two correctly classified test inputs, so no pair was drawn"
        ev.update({name: {"pairs": 0, "barrier_pairs": 0, "tolerance": S.tolerance, "barrier_fraction": None,
                          "missing": unpaired, "test_acc": train.evaluate(run.model, self.X, self.y)["acc"],
                          "n_test": len(self.X)}
                   for name, run in self.runs.items() if name not in self.studies})
        return {name: ev[name] for name in self.runs}


def real_pairs(ctx: config.Context, sizes: Sizes, X: torch.Tensor, y: torch.Tensor, threshold: float) -> RealPairs:
    """The real-pair chapter's models, samples and studies: the standard recipe's ``preset.arch`` and
    ``sizes.second_arch`` at every ``sizes.train_seeds``; per model a :func:`barrier_sample` of same-class pairs of
    ``X`` (``n_pairs`` doubling to ``max_pairs``, until A1's share is decided and ``min_barrier_pairs`` have a
    barrier; ``threshold`` the share A1 judges against), then :func:`study_pairs` (the paper's bypass: ``iterations``,
    ``max_rounds``, clamped to [0, 1])."""
    S = sizes
    archs = (ctx.preset.arch, S.second_arch)
    # every architecture at every training seed of the preset: a claim on trained models must hold for each
    runs = {f"{arch} seed {s}": trained_for(ctx, arch, s) for s in S.train_seeds for arch in archs}
    out = RealPairs(ctx=ctx, sizes=S, X=X, y=y, threshold=float(threshold), archs=archs, runs=runs, samples={},
                    studies={})
    out.samples = {name: barrier_sample(run.model, X, y, S.n_pairs, min_barrier_pairs=S.min_barrier_pairs,
                                        **out._sample_kw()) if pairable(run.model, X, y) else None
                   for name, run in runs.items()}
    out.studies = {
        name: study_pairs(runs[name].model, X[s.i], X[s.j], s.target, num_points=S.num_points, tolerance=S.tolerance,
                          iterations=S.iterations, max_rounds=S.max_rounds, clamp=True, progress=False)
        for name, s in out.samples.items() if s is not None}
    return out


# --- plots
def plot_condition_map(ax, conditions, key: str, threshold: float, above: bool = True, scale: float = 1.0,
                       xlabel: str | None = None, colors=None):
    """Dot-and-whisker plot of a claim's condition map: one row per setting, its interval ``measured[key]``.

    ``conditions`` is the list a claim records under ``values["conditions"]`` (``{"setting": {...},
    "measured": {key: {"estimate", "lo", "hi"}}}``); values are multiplied by ``scale`` (100 for percent).
    The threshold is a dashed line; a row is blue when its whole interval lies on the claim's side of it
    (``above``: at or above; the effect appears), vermillion when it lies wholly on the other side (the effect
    vanishes), and a grey hollow dot when the interval spans it (undecided). Settings with no interval are
    labelled "n/a". Returns ``ax``.
    """
    from mclib import plots

    colors = colors or {"holds": plots.PALETTE[0], "inconclusive": "#888888", "fails": plots.PALETTE[1]}
    labels = []
    for row, entry in enumerate(conditions):
        labels.append(", ".join(f"{k}={v}" for k, v in (entry.get("setting") or {}).items()))
        iv = (entry.get("measured") or {}).get(key)
        iv = iv._asdict() if hasattr(iv, "_asdict") else iv       # an mclib.stats.Interval
        if iv is None or not all(isinstance(iv.get(k), (int, float)) and math.isfinite(iv[k]) for k in ("lo", "hi")):
            ax.text(threshold * scale, row, " n/a", va="center", fontsize=9)
            continue
        est, lo, hi = (float(iv[k]) * scale for k in ("estimate", "lo", "hi"))
        # the sentence's rule (mclib.stats.interval_side), so a plot never colours what its sentence calls undecided
        status = stats.interval_side(lo, hi, threshold * scale, above, n=iv.get("n"))
        ax.plot([lo, hi], [row, row], color=colors[status], lw=2.2, solid_capstyle="butt")
        ax.plot([est], [row], "o", color=colors[status], ms=6,
                mfc=colors[status] if status != "inconclusive" else "white")
    ax.axvline(threshold * scale, color="k", ls="--", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_ylim(len(labels) - 0.5, -0.5)
    if xlabel:
        ax.set_xlabel(xlabel)
    return ax


def plot_line_barriers(studies: dict, tolerance: float):
    """Histograms of the straight lines' barrier max (left) and gap (right) per run (log scale; a gap of 0 in the
    first bin), with the ``tolerance`` dashed in the gap panel. Returns the figure."""
    from mclib import plots

    fig, axes = plots.subplots(1, 2, figsize=(9, 3.4))
    paths.plot_barrier_hist(axes[0], {k: st.line_barrier.max for k, st in studies.items()}, xlabel="barrier max (CE)")
    paths.plot_barrier_hist(axes[1], {k: st.line_barrier.gap.clamp_min(1e-7) for k, st in studies.items()},
                            xlabel="barrier gap (CE)")
    axes[1].axvline(tolerance, color="k", ls="--", lw=1)
    return fig


def plot_line_and_bypass(studies: dict):
    """Per run (rows), the loss along the straight lines (left) and along the final bypass paths (right) of the pairs
    with a barrier. Returns the figure."""
    from mclib import plots

    fig, axes = plots.subplots(len(studies), 2, figsize=(9, 2.6 * len(studies)), squeeze=False)
    for row, (name, st) in enumerate(studies.items()):
        if st.bypass is None:
            axes[row, 0].set_title(f"{name}: no pair has a barrier")
            axes[row, 1].set_axis_off()
            continue
        for i, (L, pos, title) in enumerate([(st.line[st.line_has_barrier], None, "straight line"),
                                             (st.bypass.losses, st.bypass.positions, "after bypass")]):
            paths.plot_loss_curves(axes[row, i], L, pos, color=plots.PALETTE[i], log=True)
            axes[row, i].set_title(f"{name}: {title} ({int(st.line_has_barrier.sum())} pairs)")
    return fig


def plot_gap_history(studies: dict, tolerance: float):
    """Per run, the path's barrier gap after each bypass round (round 0 the straight line), one line per barrier
    pair, the ``tolerance`` dashed. Returns the figure."""
    from mclib import plots

    rows = (len(studies) + 1) // 2
    fig, axes = plots.subplots(rows, 2, figsize=(9, 2.8 * rows), squeeze=False)
    for ax, (name, st) in zip(axes.flat, studies.items()):
        ax.set_title(name)
        if st.bypass is None:
            ax.text(0.5, 0.5, "no pair has a barrier", ha="center", va="center", transform=ax.transAxes)
            continue
        H = st.bypass.gap_history().clamp_min(1e-6)
        for p in range(H.shape[1]):
            ax.plot(range(H.shape[0]), H[:, p].numpy(), color=plots.PALETTE[0], alpha=0.3, marker="o", ms=3)
        ax.axhline(tolerance, color="k", ls="--", lw=1)
        ax.set(yscale="log", xlabel="bypass round", ylabel="path barrier gap")
        ax.set_xticks(range(H.shape[0]))
    for ax in list(axes.flat)[len(studies):]:
        ax.set_axis_off()
    return fig


def plot_a2_map(a2_map: list, shift_max: float, free_min: float):
    """Claim A2's map in two panels sharing one row per setting: the median max|B'-B| (log scale, the paper's 1-5%
    shaded, ``shift_max`` dashed) and the share of barrier pairs free after one bend (``free_min`` dashed).
    Returns the figure."""
    from mclib import plots

    fig, axes = plots.subplots(1, 2, figsize=(10, 0.42 * len(a2_map) + 1.4), sharey=True,
                               gridspec_kw={"width_ratios": [3, 2]})
    plot_condition_map(axes[0], a2_map, "shift_median", shift_max, above=False,
                       xlabel="median max|B'-B| (% of the max pixel)")
    axes[0].axvspan(1, 5, color=plots.PALETTE[2], alpha=0.15, lw=0, label="paper: 1-5%")
    axes[0].set_xscale("log")
    axes[0].set_xticks([0.5, 1, 2, 5, 10, 20, 50], ["0.5", "1", "2", "5", "10", "20", "50"])
    axes[0].minorticks_off()
    axes[0].legend(loc="lower right", fontsize=9)
    plot_condition_map(axes[1], a2_map, "free_after_1", free_min, scale=100,
                       xlabel="barrier pairs free after one bend (%)")
    axes[1].tick_params(labelleft=False)
    return fig


def plot_bends(X: torch.Tensor, sample: BarrierSample, study: PairStudy, early, k: int = 3):
    """For the ``k`` barrier pairs with the largest straight-line gap: the endpoints A and C, the max-loss point B,
    B' after the full bypass (``study.bypass``) and after the early-stopped one (``early``), each B' titled with
    max|B'-B|. Returns the figure."""
    from mclib import plots

    order = study.line_barrier.gap[study.line_has_barrier].argsort(descending=True)[:k].tolist()
    full = study.bypass
    fig, axes = plots.subplots(len(order), 5, figsize=(9, 2.0 * len(order)), squeeze=False)
    for row, q in enumerate(order):
        p = int(study.line_has_barrier.nonzero()[q, 0])
        d_full, d_early = ((r.B_prime[q] - r.B[q]).abs().max() for r in (full, early))
        plots.images(axes[row], [X[sample.i[p]], full.B[q], full.B_prime[q], early.B_prime[q], X[sample.j[p]]],
                     ["A", "B (max loss)", f"B' full ({d_full:.3f})", f"B' stopped ({d_early:.3f})", "C"])
        axes[row, 0].set_ylabel(f"gap {float(study.line_barrier.gap[p]):.2f}", fontsize=9)
    return fig

