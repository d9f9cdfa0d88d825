"""Claims of Vrabel et al. (ICLR 2025), A1..A10: the thresholds and the verdict logic, nothing else.

The evidence each judge reads comes from one method or function of the claim's study: A1-A5
:meth:`mclib.studies.pairs.PairStudy.evidence`, A6 :func:`mclib.studies.untrained.evidence`, A7
:func:`mclib.studies.evolution.evidence`, A8 :meth:`mclib.studies.detection.Chapter.a8_evidence`, A9
:meth:`mclib.studies.detection.Chapter.a9_evidence` (its condition map :func:`mclib.studies.detection.confidence_map`),
A10 :func:`mclib.studies.percolation.evidence`. A1-A3 per run: :meth:`mclib.studies.pairs.RealPairs.evidence`.

Every criterion is judged on intervals: fractions carry Wilson intervals, medians and ratios percentile
bootstrap intervals over pairs or inputs (:mod:`mclib.stats`). A run is one model (and training seed);
criteria ask that every run meets them, so one failing run makes the claim fail and one undecided run
(with none failing) makes it inconclusive.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from mclib.claims.core import (Claim, Verdict, combine, compare_interval, fails, fmt, holds, inconclusive,
                               judge_interval, map_sentence, required)
from mclib.claims.guards import recorded_at_chance

CITE = "vrabel2025input"
#: Thresholds fixed before any run (never tuned to the outcome).
A1_MIN_BARRIER_FRACTION = 0.05   # a barrier is "shown" when at least 5% of same-class pairs have one
CONNECTED_MIN = 0.9              # "connected": at least 90% of pairs end on a barrier-free path
FREE_AFTER_ONE_MIN = 0.9         # A2: at least 90% of barrier pairs are barrier-free after one bend
SHIFT_MAX_PERCENT = 5.0          # A2: median max|B'-B| at most 5% of the max pixel (paper: 1-5%)
BENDS_MAX = 2                    # A3: median number of bends at most 2 ("simple, near-linear")
MODE_CE = 5e-4                   # A5: an FVO input is a mode at CE < 5e-4 (the paper's stopping rule; the
                                 # evidence counts them at mclib.studies.pairs.MODE_CE, a test keeps the two equal)
A7_MIN_CHANGE = 2.0              # A7: the median barrier gap changes by at least a factor of 2
A8_MIN_RATIO = 2.0               # A8: real-adversarial median barrier max at least twice the real-real one
A9_MIN_AUROC = 0.9               # A9: single-threshold AUROC at least 0.9 (paper about 0.94)
A9_MIN_PATH_GAIN = 0.01          # A9 map: the path features add information when they raise the AUROC by >= 0.01
A10_MAX_REL_WIDTH = 0.25         # A10: a p_c estimate whose 2-sigma half-width exceeds 25% of p_c cannot discriminate
Z95 = 1.959963984540054


# --------------------------------------------------------------------------- judges
def judge_a1(values: Mapping[str, Any]) -> Verdict:
    """Every run's fraction of same-class pairs with a straight-line gap above the tolerance is at least 5%.

    The verdict judges the chapter's runs (``runs``). When a condition map was recorded (``conditions``: one
    entry per architecture, training length and pair sampling, each with its ``barrier_fraction`` interval),
    the reason adds where the share reaches 5%, where it stays below and where it is undecided
    (:func:`mclib.claims.core.map_sentence`, the same threshold).
    """
    verdict = combine(_at_chance(run, ev) or
                      judge_interval(f"the {run} share of same-class pairs with a gap above {ev['tolerance']:g}",
                                     ev["barrier_fraction"], A1_MIN_BARRIER_FRACTION, spec=".1%")
                      for run, ev in required(values, "runs").items())
    if not values.get("conditions"):
        return verdict
    where = map_sentence(values["conditions"], "barrier_fraction", A1_MIN_BARRIER_FRACTION,
                         name="the share of same-class pairs with a barrier", spec=".1%")
    return Verdict(verdict.status, f"{verdict.reason}; condition map: {where}")


def _at_chance(run: str, ev: Mapping[str, Any]) -> Verdict | None:
    """Inconclusive when the run records its model's test accuracy (``test_acc`` on ``n_test`` images) and that is
    not above chance (:func:`mclib.claims.guards.at_chance`); None otherwise (also for records without it)."""
    return recorded_at_chance(f"the {run} model", ev)


def _untested(run: str) -> Verdict:
    return inconclusive(f"no {run} pair had a barrier, so the bypass was never tested")


def judge_a2(values: Mapping[str, Any]) -> Verdict:
    """Every run: >= 90% of barrier pairs barrier-free after one bend, and median ``max|B'-B|`` <= 5% of the max pixel.

    The verdict judges the chapter's runs (the paper's full 1024 iterations). When a condition map was recorded
    (``conditions``: one entry per model, MSE weight and early stop, with ``shift_median`` in % of the max pixel
    and ``free_after_1``), the reason adds where the median move is within 5% and where one bend frees 90%.
    """
    parts = []
    for run, ev in required(values, "runs").items():
        degenerate = _at_chance(run, ev)
        if degenerate is not None:
            parts.append(degenerate)
            continue
        if not ev["barrier_pairs"]:
            parts.append(_untested(run))
            continue
        parts.append(judge_interval(f"the {run} share of barrier pairs free after one bend", ev["free_after_1"],
                                    FREE_AFTER_ONE_MIN, spec=".0%"))
        parts.append(judge_interval(f"the {run} median max|B'-B| in % of the max pixel", ev["shift_median"],
                                    SHIFT_MAX_PERCENT, above=False, spec=".2g"))
    verdict = combine(parts)
    if not values.get("conditions"):
        return verdict
    shift = map_sentence(values["conditions"], "shift_median", SHIFT_MAX_PERCENT, above=False,
                         name="the median max|B'-B| in % of the max pixel", spec=".2g")
    free = map_sentence(values["conditions"], "free_after_1", FREE_AFTER_ONE_MIN,
                        name="the share of barrier pairs free after one bend", spec=".0%")
    return Verdict(verdict.status, f"{verdict.reason}; condition map: {shift}; {free}")


def judge_a3(values: Mapping[str, Any]) -> Verdict:
    """Every run: >= 90% of barrier pairs connected within max_rounds, and a median of at most 2 bends."""
    parts = []
    for run, ev in required(values, "runs").items():
        degenerate = _at_chance(run, ev)
        if degenerate is not None:
            parts.append(degenerate)
            continue
        if not ev["barrier_pairs"]:
            parts.append(_untested(run))
            continue
        parts.append(judge_interval(f"the {run} share of barrier pairs connected", ev["connected"], CONNECTED_MIN,
                                    spec=".0%"))
        parts.append(judge_interval(f"the {run} median number of bends", ev["bends_median"], BENDS_MAX, above=False,
                                    spec=".2g"))
    return combine(parts)


def _connected_like_real(run: str, ev: Mapping[str, Any]) -> list[Verdict]:
    out = [judge_interval(f"the {run} share of pairs joined by a barrier-free path", ev["connected_all"],
                          CONNECTED_MIN, spec=".0%")]
    if ev["barrier_pairs"]:
        out.append(judge_interval(f"the {run} median number of bends", ev["bends_median"], BENDS_MAX, above=False,
                                  spec=".2g"))
    return out


def judge_a4(values: Mapping[str, Any]) -> Verdict:
    """Every model and kind of interpolated pair: >= 90% of all pairs end on a barrier-free path (straight or
    bypassed) and the barrier pairs need a median of at most 2 bends."""
    return combine(v for run, ev in required(values, "runs").items()
                   for v in ([_at_chance(run, ev)] if _at_chance(run, ev) else _connected_like_real(run, ev)))


def judge_a5(values: Mapping[str, Any]) -> Verdict:
    """Every model: >= 90% of the FVO inputs are modes (CE < 5e-4) and the FVO pairs are connected as in A4."""
    parts = []
    for run, ev in required(values, "runs").items():
        degenerate = _at_chance(run, ev)
        if degenerate is not None:
            parts.append(degenerate)
            continue
        parts.append(judge_interval(f"the {run} share of FVO inputs with CE below {MODE_CE:g}", ev["mode_fraction"],
                                    CONNECTED_MIN, spec=".0%"))
        parts += _connected_like_real(run, ev)
    return combine(parts)


def judge_a6(values: Mapping[str, Any]) -> Verdict:
    """Every untrained architecture: >= 90% of the FVO pairs are barrier-free after at most the paper's rounds of bypass."""
    return combine(judge_interval(f"the untrained {run} share of FVO pairs barrier-free after the bypass rounds",
                                  ev["connected"], CONNECTED_MIN, spec=".0%")
                   for run, ev in required(values, "runs").items())


def judge_a7(values: Mapping[str, Any]) -> Verdict:
    """The median barrier gap (above the endpoints, floored at the tolerance) changes by at least a factor of 2
    between the probes of early training."""
    ev = values["gap_change"]
    if ev is None:
        return inconclusive("no barrier gap was measured")
    return judge_interval("the largest over the smallest per-probe median barrier gap (floored at "
                          f"{values['tolerance']:g})", ev, A7_MIN_CHANGE, spec=".3g")


def judge_a8(values: Mapping[str, Any]) -> Verdict:
    """For every non-adaptive attack the median real-adversarial barrier max is at least twice the real-real median.
    A model at chance (``test_acc`` on ``n_test`` images, when recorded) is inconclusive."""
    degenerate = _at_chance("attacked", values)
    if degenerate is not None:
        return degenerate
    parts = []
    for attack, ev in values["attacks"].items():
        if ev["ratio"] is None and ev.get("below_resolution") is not None:
            parts.append(inconclusive(f"the real-real median barrier ({fmt(ev['real_real'])}) is below the inference "
                                      f"engine's resolution ({fmt(ev['below_resolution'])}), so a ratio to it is noise"))
        elif ev["ratio"] is None:
            parts.append(inconclusive(f"{attack} produced no adversarial example to compare"))
        else:
            parts.append(judge_interval(f"the {attack} median barrier over the real-real one", ev["ratio"],
                                        A8_MIN_RATIO, spec=".3g"))
    return combine(parts)


def judge_a9(values: Mapping[str, Any]) -> Verdict:
    """For every non-adaptive attack the single threshold on barrier max reaches an AUROC of at least 0.9.

    The verdict judges the chapter's attacks only. Its reason adds the condition map
    (``values["conditions"]``, :func:`mclib.studies.detection.confidence_map`): at which attack confidences the
    barrier-max AUROC reaches 0.9 and where it falls short, and where the path features raise the combined
    detector's AUROC over the logits alone by at least ``A9_MIN_PATH_GAIN`` (paired interval).
    """
    degenerate = _at_chance("attacked", values)
    if degenerate is not None:   # a model at chance: its "adversarial examples" and their barriers mean nothing
        return degenerate
    verdict = combine(judge_interval(f"the single-threshold AUROC against {attack}", iv, A9_MIN_AUROC, spec=".3f")
                      for attack, iv in values["auroc"].items())
    conditions = values.get("conditions")
    where = map_sentence(conditions, "auroc_barrier_max", A9_MIN_AUROC, name="the barrier-max AUROC", spec=".3f")
    parts = [verdict.reason, f"condition map: {where}"]
    if conditions:
        parts.append("does the barrier add to the model's confidence? "
                     + map_sentence(conditions, "auroc_gain_from_path", A9_MIN_PATH_GAIN,
                                    name="the combined detector's AUROC gain from the path features over logits only",
                                    spec=".3f"))
    return Verdict(verdict.status, "; ".join(parts))


def _tau_rises(d: Mapping[str, Any]) -> list[Verdict]:
    """Each step in d of the two-point connection probability at p_ref, with a normal 95% interval from the SEs."""
    tau, se, ds = d["tau_ref"], d["tau_ref_se"], d["tau_d"]
    out = []
    for i in range(len(tau) - 1):
        diff, s = tau[i + 1] - tau[i], math.hypot(se[i], se[i + 1])
        out.append(compare_interval(f"the rise of tau from {ds[i]}D to {ds[i + 1]}D", diff - Z95 * s, diff + Z95 * s,
                                    0.0, above=True, estimate=diff, spec=".3g"))
    return out


def judge_a10(values: Mapping[str, Any]) -> Verdict:
    """For the criterion dimensions the literature p_c lies within 2 sigma of the estimate (an estimate too wide to
    discriminate is inconclusive), and the two-point connection probability at p_ref rises with d beyond its noise."""
    parts = []
    for d in values["criterion_dims"]:
        pc, sigma, lit = (values[k][str(d)] for k in ("pc", "sigma", "literature"))
        if pc is None or sigma is None or not math.isfinite(sigma):
            parts.append(inconclusive(f"p_c({d}D) has no finite estimate"))
        elif 2 * sigma > A10_MAX_REL_WIDTH * lit:
            parts.append(inconclusive(f"p_c({d}D) = {fmt(pc, '.4f')} ± 2σ {fmt(2 * sigma, '.4f')} is too wide to test "
                                      f"the literature {fmt(lit, '.4f')} (more than {A10_MAX_REL_WIDTH:.0%} of it)"))
        elif abs(pc - lit) <= 2 * sigma:
            parts.append(holds(f"p_c({d}D) = {fmt(pc, '.4f')} ± 2σ {fmt(2 * sigma, '.4f')} contains the literature "
                               f"{fmt(lit, '.4f')}"))
        else:
            parts.append(fails(f"p_c({d}D) = {fmt(pc, '.4f')} lies {fmt(abs(pc - lit) / sigma, '.1f')}σ from the "
                               f"literature {fmt(lit, '.4f')} (allowed 2σ)"))
    return combine(parts + _tau_rises(values))


_A = [
    ("A1", "Real inputs of one class can show a loss barrier on the straight line between them",
     "GoogLeNet/ImageNet examples (jackfruit, banana, golf ball)", "notebooks/a1_real_paths.ipynb",
     "for every model (and training seed), the 95% interval of the share of same-class real pairs whose straight "
     "line has a barrier gap above the tolerance lies at or above 5%.", judge_a1),
    ("A2", "One bypass point removes the barrier, and B' is nearly indistinguishable from B",
     "max pixel of B'-B is 1-5% of the image's max pixel", "notebooks/a1_real_paths.ipynb",
     "for every model, the 95% interval of the share of barrier pairs that are barrier-free after one bend lies at or "
     "above 90%, and the interval of the median max|B'-B| at or below 5% of the max pixel; no barrier pair means "
     "inconclusive.", judge_a2),
    ("A3", "Paths between connected inputs in trained models are simple, near-linear", "qualitative",
     "notebooks/a1_real_paths.ipynb",
     "for every model, the 95% interval of the share of barrier pairs connected within max_rounds lies at or above "
     "90% and the interval of the median number of bends at or below 2; no barrier pair means inconclusive.",
     judge_a3),
    ("A4", "Interpolated inputs (mixtures of real inputs that are modes of a class) are connected like real ones",
     "qualitative", "notebooks/a4_interpolated_synthetic.ipynb",
     "for every model and both kinds of interpolated pair, the 95% interval of the share of pairs joined by a "
     "barrier-free path (straight or bypassed) lies at or above 90%, and the median number of bends of the barrier "
     "pairs at or below 2.", judge_a4),
    ("A5", "Synthetic inputs (FVO from noise) are modes and are connected", "qualitative",
     "notebooks/a4_interpolated_synthetic.ipynb",
     "for every model, the 95% interval of the share of FVO inputs with CE < 5e-4 lies at or above 90%, and the FVO "
     "pairs meet A4's connection criterion.", judge_a5),
    ("A6", "Untrained networks show input-space connectivity too", "2 bypass rounds, losses about 5e-4..5e-3 after",
     "notebooks/a6_untrained.ipynb",
     "for every untrained architecture, the 95% interval of the share of FVO pairs whose path has a barrier gap at "
     "most the tolerance after the bypass rounds lies at or above 90%.", judge_a6),
    ("A7", "Barriers evolve during early training", "first 30 batches, 10 classes x 5 FVO pairs",
     "notebooks/a7_barrier_evolution.ipynb",
     "the median barrier gap above the endpoints (floored at the tolerance) changes by at least a factor of 2 "
     "between the probes, on a 95% bootstrap interval over pairs.", judge_a7),
    ("A8", "Real-real pairs have low barriers, real-adversarial pairs high ones",
     "median barrier 0.93 (real-real) vs 5.96 (real-adversarial)", "notebooks/a8_detection.ipynb",
     "for FGSM, PGD and both optimisation-attack strengths, the 95% bootstrap interval (over inputs) of the median "
     "real-adversarial barrier max over the real-real median lies at or above 2.", judge_a8),
    ("A9", "Barrier heights detect adversarial examples", "single threshold accuracy ~0.89, AUROC ~0.94",
     "notebooks/a8_detection.ipynb",
     "for FGSM, PGD and both optimisation-attack strengths, the 95% bootstrap interval of the cross-validated "
     "single-threshold barrier-max AUROC lies at or above 0.9.", judge_a9),
    ("A10", "Connectivity is a geometric effect of high dimension, explained by percolation",
     "site p_c: 2D 0.5927, 3D 0.3116, 4D 0.1969, 5D 0.1408, 6D 0.1090, 7D 0.0889", "notebooks/a10_percolation.ipynb",
     "for d = 2, 3, 4 the literature p_c lies within 2 sigma of the estimate (sigma combining bootstrap SE and the "
     "spread of crossings; a 2-sigma half-width above 25% of p_c is inconclusive), and the two-point connection "
     "probability at p_ref rises from each dimension to the next beyond its 95% interval.", judge_a10),
]

CLAIMS = [Claim(id=i, statement=s, paper_value=p, cite=CITE, criterion=c[0].upper() + c[1:], judge=j, chapter=ch)
          for i, s, p, ch, c, j in _A]
