"""Claims of Zhao et al. (ICLR 2020, "Bridging mode connectivity in loss landscapes and adversarial robustness"), C1..C8.

One judge per claim. Each reads the JSON-plain values its chapter records and returns a
:class:`~mclib.claims.core.Verdict` judged on intervals (:func:`~mclib.claims.core.compare_interval`):

* accuracies and attack success rates are fractions of test images: a single fraction gets its Wilson
  interval (:func:`mclib.stats.fraction_ci`); a *difference* of two accuracies measured on the same
  ``n`` images gets the normal interval ``d +- 1.96 sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``, which ignores
  the (positive) pairing and so is wider than the paired interval -- conservative for "holds" and "fails";
* barrier heights carry a bootstrap interval over test inputs (:func:`mclib.studies.robustness.barrier_interval`);
* correlations carry pairs-bootstrap intervals (:func:`mclib.stats.correlation`).

Values with an ``"archs"`` mapping (C1, C6, C7) are judged per architecture; :func:`per_architecture`
re-applies the same judge to one architecture at a time, which is how C8 reads them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mclib.claims.core import (Claim, Verdict, combine, compare_interval, fmt, inconclusive, judge_interval, map_sentence,
                               required)
from mclib.claims.guards import at_chance

Z95 = 1.959963984540054  # the normal quantile of 0.975

# -- criterion constants (fixed before measuring) -----------------------------------------------------
C1_CURVE_MARGIN = 0.03   # the Bezier curve's worst accuracy lies at most 3 points below the worse endpoint's
C1_LINE_GAP = 0.10       # ... while the straight line's worst lies more than 10 points below it
C2_CLEAN_DROP = 0.05     # the repaired point keeps clean accuracy within 5 points of the endpoints' mean
C2_ASR = 0.10            # ... with ASR at most 10%
C4_CLEAN_DROP = 0.10     # the repaired point keeps clean accuracy within 10 points of the injected endpoints'
C4_INJECTION = 0.10      # ... and at most 10% of the injected errors survive (the paper: 0%; the bar of C2's ASR)
C5_ASR = 0.10            # the path-aware trigger's ASR at most 10% for t in [0.25, 0.75]
C5_MIN_CHANGE = 0.05     # guard: the optimised trigger moved by at least this (mean |p - start|, pixel units)
C5_PLANTED_MIN = 0.50    # guard: the planted trigger itself works on the backdoored endpoint (ASR at least 50%)
C5_RECOVER = 0.90        # guard: from a random start the optimiser recovers at least 90% of the planted trigger's ASR
# Why relative: the first version asked the control for an absolute 80% ASR, but at the quick preset the planted
# white square itself reaches only 76.3% on that endpoint (and the optimiser 76.3% [72.1, 80.0]): no attacker could
# pass a bar set above the backdoor it is asked to rediscover. The guard now asks the optimiser to recover the
# planted trigger's strength on the same endpoint and the same images.
C7_R = 0.5               # the correlation must be at least this


def _fraction_interval(p: float, n: int) -> tuple[float, float]:
    """Wilson interval of a fraction ``p`` of ``n`` units (:func:`mclib.stats.fraction_ci`)."""
    from mclib.stats import fraction_ci

    n = int(n)
    k = int(round(float(p) * n))
    iv = fraction_ci(np.r_[np.ones(k, dtype=bool), np.zeros(n - k, dtype=bool)])
    return iv.lo, iv.hi


def _difference_interval(p1: float, p2: float, n: int) -> tuple[float, float]:
    """Normal interval of ``p1 - p2`` for two fractions of ``n`` units each (unpaired, hence conservative)."""
    d = float(p1) - float(p2)
    se = math.sqrt(max(p1 * (1 - p1), 0) / n + max(p2 * (1 - p2), 0) / n) if n > 0 else math.inf
    return d - Z95 * se, d + Z95 * se


def _tag(prefix: str, v: Verdict) -> Verdict:
    return Verdict(v.status, f"{prefix}: {v.reason}")


def _rate(name: str, p: float, n: int, threshold: float, above: bool) -> Verdict:
    lo, hi = _fraction_interval(p, n)
    # judge_interval: an undecided reason says how many images would decide it
    return judge_interval(name, {"estimate": p, "lo": lo, "hi": hi, "n": n}, threshold, above=above, spec=".1%")


def _drop(name: str, ref: float, value: float, n: int, threshold: float, above: bool,
          table: Mapping[str, int] | None = None) -> Verdict:
    """``ref - value`` against ``threshold``: with the 2x2 ``table`` of the two accuracies' per-input correctness
    (``{"both", "ref_only", "point_only", "neither"}``, both measured on the same ``n`` inputs) on Newcombe's paired
    interval (:func:`mclib.stats.paired_difference_from_counts`), else on the conservative unpaired one."""
    if table is not None:
        from mclib.stats import paired_difference_from_counts

        iv = paired_difference_from_counts(table["both"], table["ref_only"], table["point_only"], table["neither"])
        if iv.n != n or abs(iv.estimate - (float(ref) - float(value))) > 0.5 / max(n, 1):
            # the table and the accuracies describe different measurements: nothing to judge on
            return inconclusive(f"{name}: the paired table {dict(table)} does not match the accuracies {ref:.4f} "
                                f"and {value:.4f} on {n} inputs")
        return judge_interval(name, iv._asdict(), threshold, above=above, spec=".1%")
    lo, hi = _difference_interval(ref, value, n)
    return judge_interval(name, {"estimate": ref - value, "lo": lo, "hi": hi, "n": n}, threshold, above=above,
                          spec=".1%")


# -- C1 -----------------------------------------------------------------------------------------------
def judge_c1(values: Mapping[str, Any]) -> Verdict:
    """Per architecture: the Bezier curve's accuracy drop (worse endpoint - worst along t) at most
    ``C1_CURVE_MARGIN`` and the straight line's more than ``C1_LINE_GAP``, on ``n_test`` images.

    ``values = {"n_test": n, "archs": {arch: {"line": {"end_acc", "worst_acc", "table"}, "bezier": {...}}}}``; an
    architecture's own ``n_test`` (measured on another dataset, :func:`mclib.studies.curves.evidence`) replaces ``n``.
    ``table`` (optional) is the 2x2 correctness table of the worse endpoint and the worst point on the same test
    images (:func:`mclib.curves.paired_table`): the drop is then judged on the paired interval, which counts only
    the images on which the two disagree. Training-seed variation: ``seed_pairs`` (optional) maps a label such as
    ``"2/3"`` to the same values for another pair of endpoint seeds; every pair must meet the criterion (a pair
    that fails fails C1; one undecided leaves it undecided).
    """
    pairs = values.get("seed_pairs") or {}
    if pairs:
        own = {k: v for k, v in values.items() if k not in ("seed_pairs", "seeds_label")}
        label = values.get("seeds_label", "first seed pair")
        return combine([_tag(label, judge_c1(own)), *(_tag(f"seeds {k}", judge_c1(v)) for k, v in pairs.items())])
    parts = []
    for arch, paths in required(values, "archs").items():
        n = int(paths.get("n_test", values["n_test"]))
        b, ln = paths["bezier"], paths["line"]
        degenerate = at_chance(f"{arch}: the worse endpoint", b["end_acc"], n, values.get("num_classes"))
        if degenerate is not None:   # a model at chance has no barrier to find or to avoid
            parts.append(degenerate)
            continue
        parts.append(_tag(arch, combine([
            _drop("the Bezier curve's accuracy drop", b["end_acc"], b["worst_acc"], n, C1_CURVE_MARGIN, above=False,
                  table=b.get("table")),
            _drop("the straight line's accuracy drop", ln["end_acc"], ln["worst_acc"], n, C1_LINE_GAP, above=True,
                  table=ln.get("table")),
        ])))
    return combine(parts)


# -- C2 -----------------------------------------------------------------------------------------------
def judge_c2(values: Mapping[str, Any]) -> Verdict:
    """In every setting (trigger x mode), at the path point ``t``: with the largest N the clean accuracy drop
    from the endpoints' mean at most ``C2_CLEAN_DROP`` and ASR at most ``C2_ASR``; with the smallest N
    ASR at most ``C2_ASR``.

    ``values = {"n_eval", "settings": [{"trigger", "mode", "end_acc", "n_asr", "n_max": {"N", "acc", "asr"},
    "n_min": {...}}]}``.
    """
    n_eval = int(values["n_eval"])
    parts = []
    for s in values["settings"]:
        hi, lo = s["n_max"], s["n_min"]
        degenerate = at_chance(f"{s['trigger']}/{s['mode']}: the backdoored endpoints' mean", s["end_acc"], n_eval,
                               values.get("num_classes"))
        if degenerate is not None:   # endpoints at chance: no clean accuracy to keep
            parts.append(degenerate)
            continue
        parts.append(_tag(f"{s['trigger']}/{s['mode']}", combine([
            _drop(f"the clean accuracy drop at N={hi['N']}", s["end_acc"], hi["acc"], n_eval, C2_CLEAN_DROP,
                  above=False),
            _rate(f"the ASR at N={hi['N']}", hi["asr"], s["n_asr"], C2_ASR, above=False),
            _rate(f"the ASR at N={lo['N']}", lo["asr"], s["n_asr"], C2_ASR, above=False),
        ])))
    if not parts:
        return inconclusive("no repair setting was measured")
    return _with_map(combine(parts), values, [
        ("asr", C2_ASR, False, "the ASR"), ("clean_drop", C2_CLEAN_DROP, False, "the clean accuracy drop")])


def _with_map(v: Verdict, values: Mapping[str, Any], keys) -> Verdict:
    """``v`` with the condition map's sentences (:func:`~mclib.claims.core.map_sentence`) appended to its reason,
    when ``values`` records ``conditions``; the status is the criterion's, unchanged."""
    conds = values.get("conditions")
    if not conds:
        return v
    sentences = [map_sentence(conds, key, threshold, above, name, ".1%") for key, threshold, above, name in keys]
    return Verdict(v.status, f"{v.reason}. Map: " + "; ".join(sentences))


def rate_interval(p: float, n: int) -> dict:
    """``{"estimate", "lo", "hi", "n"}``: a fraction ``p`` of ``n`` units with its Wilson interval."""
    lo, hi = _fraction_interval(p, n)
    return {"estimate": float(p), "lo": lo, "hi": hi, "n": int(n)}


def drop_interval(ref: float, value: float, n: int) -> dict:
    """``{"estimate", "lo", "hi", "n"}``: ``ref - value`` for two fractions of ``n`` units, normal interval."""
    lo, hi = _difference_interval(ref, value, n)
    return {"estimate": float(ref) - float(value), "lo": lo, "hi": hi, "n": int(n)}


def c2_conditions(rows, n_eval: int, n_asr: Mapping[str, int]) -> list[dict]:
    """The C2 map: one entry per row ``{"trigger", "mode", "N", "t", "end_acc", "acc", "asr"}`` of ``rows`` (setting
    ``trigger, mode, N``; the path point ``t`` kept beside it), with the
    clean accuracy, the clean accuracy drop from the endpoints' mean (``n_eval`` images) and the ASR (``n_asr[mode]``
    triggered images) as interval dicts -- the numbers C2's criterion reads, in every setting instead of two."""
    out = []
    for r in rows:
        n_a = int(n_asr[r["mode"]])
        out.append({"setting": {"trigger": r["trigger"], "mode": r["mode"], "N": int(r["N"])}, "t": float(r["t"]),
                    "measured": {"clean_acc": rate_interval(r["acc"], n_eval), "asr": rate_interval(r["asr"], n_a),
                                 "clean_drop": drop_interval(r["end_acc"], r["acc"], n_eval),
                                 "repaired": combine([_drop("drop", r["end_acc"], r["acc"], n_eval, C2_CLEAN_DROP, False),
                                                      _rate("ASR", r["asr"], n_a, C2_ASR, False)]).status}})
    return out


# -- C3 -----------------------------------------------------------------------------------------------
def _score_variance(m: Mapping[str, float], n_eval: int, n_asr: int) -> float:
    a, r = float(m["clean_acc"]), float(m["asr"])
    return a * (1 - a) / n_eval + r * (1 - r) / n_asr


def judge_c3(values: Mapping[str, Any]) -> Verdict:
    """In every (trigger, N) column the path point's score (clean accuracy - ASR) exceeds the best rival's,
    judged on the normal interval of the score difference (each score's variance from its two fractions).

    ``values = {"n_eval", "n_asr", "path": method name, "columns": [{"trigger", "N", "methods": {name:
    {"clean_acc", "asr"}}}]}``; every method except those starting with ``"path"`` is a rival.
    """
    n_eval, n_asr, path = int(values["n_eval"]), int(values["n_asr"]), values["path"]
    parts = []
    for col in values["columns"]:
        margin = c3_margin(col["methods"], path, n_eval, n_asr)
        if margin is None:
            parts.append(inconclusive(f"{col['trigger']}, N={col['N']}: the path or its rivals were not measured"))
            continue
        parts.append(_tag(f"{col['trigger']}, N={col['N']}", compare_interval(
            f"the path's score minus that of the best rival ({margin['best']})", margin["lo"], margin["hi"], 0.0,
            above=True, estimate=margin["estimate"], spec=".1%")))
    if not parts:
        return inconclusive("no comparison column was measured")
    return _with_map(combine(parts), values, [("margin", 0.0, True, "the path's margin over the best rival")])


def c3_margin(methods: Mapping[str, Mapping[str, float]], path: str, n_eval: int, n_asr: int) -> dict | None:
    """The path's score (clean accuracy - ASR) minus the best rival's, ``{"estimate", "lo", "hi", "best"}`` with the
    normal interval of the difference; rivals are the methods not starting with ``"path"``. None when the path or
    every rival is missing."""
    rivals = {k: m for k, m in methods.items() if not k.startswith("path")}
    if path not in methods or not rivals:
        return None
    score = {k: float(m["clean_acc"]) - float(m["asr"]) for k, m in methods.items()}
    best = max(rivals, key=score.get)
    d = score[path] - score[best]
    se = math.sqrt(_score_variance(methods[path], n_eval, n_asr) + _score_variance(rivals[best], n_eval, n_asr))
    return {"estimate": d, "lo": d - Z95 * se, "hi": d + Z95 * se, "best": best}


def c3_conditions(columns, n_eval: int, n_asr: Mapping[str, int], path: str) -> list[dict]:
    """The C3 map: for each column ``{"trigger", "mode", "N", "methods"}``, the path's margin over the best rival
    (:func:`c3_margin`), whether it beats every rival over the whole interval (``"beats_all"``: the verdict C3's
    criterion gives that column), and the path's and the best rival's clean accuracy and ASR intervals."""
    out = []
    for col in columns:
        n_a = int(n_asr[col["mode"]])
        m = c3_margin(col["methods"], path, n_eval, n_a)
        if m is None:
            continue
        ivs = {name: {"clean_acc": rate_interval(col["methods"][name]["clean_acc"], n_eval),
                      "asr": rate_interval(col["methods"][name]["asr"], n_a)} for name in (path, m["best"])}
        beats = compare_interval("margin", m["lo"], m["hi"], 0.0, above=True).status
        out.append({"setting": {"trigger": col["trigger"], "mode": col["mode"], "N": int(col["N"])},
                    "measured": {"margin": {k: m[k] for k in ("estimate", "lo", "hi")}, "best_rival": m["best"],
                                 "beats_all": beats, "path": ivs[path], "best": ivs[m["best"]]}})
    return out


# -- C4 -----------------------------------------------------------------------------------------------
def judge_c4(values: Mapping[str, Any]) -> Verdict:
    """For every N, at the path point: the injection success -- the fraction of the ``n_chosen`` injected errors
    that survive -- at most ``C4_INJECTION`` over its whole Wilson interval, and the clean accuracy drop from the
    injected endpoints' mean at most ``C4_CLEAN_DROP`` on ``n_eval`` images.

    The chosen images are a sample of the errors an attacker could inject, and the rate a property of the
    repair: a count such as "0 of 5 survive" flipped to "1 of 5" when float rounding moved the trained weights,
    while the rate's interval over enough chosen images (0 of 40 gives at most 8.8%) does not move with one image.

    ``values = {"n_eval", "n_chosen", "ref_acc", "points": [{"N", "acc", "injection"}]}``; a chapter that could not
    inject any error records ``{"missing": reason}`` instead, which is inconclusive with that reason. Training-seed
    variation: ``seed_pairs`` (optional) maps a label to the same values for another pair of endpoint seeds, and
    every pair must meet the criterion (a pair that fails fails, one undecided leaves C4 undecided), so that a
    verdict does not rest on one pair of trained models.
    """
    pairs = values.get("seed_pairs") or {}
    if pairs:
        own = {k: v for k, v in values.items() if k != "seed_pairs"}
        label = values.get("seeds_label", "first seed pair")
        return combine([_tag(label, judge_c4(own)), *(_tag(f"seeds {k}", judge_c4(v)) for k, v in pairs.items())])
    if values.get("missing"):
        return inconclusive(str(values["missing"]))
    n_eval, k = int(values["n_eval"]), int(values["n_chosen"])
    if k == 0:
        return inconclusive("no error was injected (no chosen image), so there is nothing for the path to repair")
    degenerate = at_chance("the injected endpoints' mean", values["ref_acc"], n_eval, values.get("num_classes"))
    if degenerate is not None:
        return degenerate
    if values.get("ref_injection") is not None and round(float(values["ref_injection"]) * k) < 1:
        return inconclusive(f"none of the {k} injected errors holds on the injected endpoints themselves, so a path "
                            "free of them repairs nothing")
    parts = []
    for pt in values["points"]:
        hits = int(round(float(pt["injection"]) * k))
        parts.append(_tag(f"N={pt['N']}", combine([
            _rate(f"the injection success ({hits} of {k} injected errors survive)", hits / k, k, C4_INJECTION,
                  above=False),
            _drop("the clean accuracy drop", values["ref_acc"], pt["acc"], n_eval, C4_CLEAN_DROP, above=False)])))
    if not parts:
        return inconclusive("no bonafide size was measured")
    return combine(parts)


# -- C5 -----------------------------------------------------------------------------------------------
def judge_c5(values: Mapping[str, Any]) -> Verdict:
    """Guards first, so that a low ASR on the path means something:

    * the path-aware trigger moved at least ``C5_MIN_CHANGE`` (mean absolute difference between pattern and start) from its random start;
    * the planted trigger works on the backdoored endpoint (``planted_asr`` at least ``C5_PLANTED_MIN``);
    * the same optimiser, from a fresh random start against that endpoint (the control), recovers at least
      ``C5_RECOVER`` of the planted trigger's ASR (Wilson interval of ``control_asr`` above that bar).

    Any guard not met gives inconclusive (the attacker was not shown to attack). Then the path-aware trigger's
    ASR at every grid t in [0.25, 0.75] must be at most ``C5_ASR``.

    ``values = {"n_asr", "change", "planted_asr", "control_asr", "aware": [{"t", "asr"}]}``, and optionally the
    backdoored endpoint's clean accuracy ``end_acc`` on ``n_eval`` images: at chance, C5 is inconclusive (a model
    that predicts the target class for every image "has" a backdoor that no path can repair).
    """
    if values.get("end_acc") is not None or values.get("n_eval") is not None:
        degenerate = at_chance("the backdoored endpoint", values.get("end_acc"), values.get("n_eval"),
                               values.get("num_classes"))
        if degenerate is not None:
            return degenerate
    n = int(values["n_asr"])
    change = float(values["change"])
    if not change >= C5_MIN_CHANGE:
        return inconclusive(f"the optimised trigger moved by only {fmt(change)} (mean absolute pixel change) from its "
                            f"start, below {fmt(C5_MIN_CHANGE)}, so the attacker did not demonstrably optimise")
    planted = float(values["planted_asr"])
    if not planted >= C5_PLANTED_MIN:
        return inconclusive(f"the planted trigger reaches only {planted:.1%} ASR on the backdoored endpoint, below "
                            f"{C5_PLANTED_MIN:.0%}, so there is no working backdoor for the attacker to rediscover")
    bar = C5_RECOVER * planted
    control = _rate(f"the optimiser's ASR against the backdoored endpoint from a random start (the planted trigger "
                    f"reaches {planted:.1%})", values["control_asr"], n, bar, above=True)
    if control.status != "holds":
        return inconclusive(f"the attacker is not shown to work ({control.reason}), so a low ASR on the path says nothing")
    mid = [r for r in values["aware"] if 0.25 - 1e-9 <= float(r["t"]) <= 0.75 + 1e-9]
    if not mid:
        return inconclusive("no grid point of t lies in [0.25, 0.75]")
    return combine(_rate(f"the path-aware ASR at t={float(r['t']):.2g}", r["asr"], n, C5_ASR, above=False) for r in mid)


# -- C6 -----------------------------------------------------------------------------------------------
def judge_c6(values: Mapping[str, Any]) -> Verdict:
    """Per architecture: the robustness (PGD) loss has a barrier -- the bootstrap interval of its barrier height
    lies above the threshold (0.05 nats + 5% of the larger endpoint) -- and the standard loss has none (its
    interval lies at or below its threshold).

    ``values = {"archs": {arch: {"robust": {"estimate", "lo", "hi", "threshold"}, "standard": {...}}}}``, and
    optionally ``"conditions"`` (the map over architecture, adversarial-training radius, attack radius and path
    type, :func:`mclib.studies.robustness.barrier_map`): the reason then ends with :func:`c6_map_sentence`; the verdict
    still judges ``archs`` alone.
    """
    verdict = combine(_endpoints_at_chance(arch, v) or _tag(arch, _c6_pair(v["robust"], v["standard"]))
                      for arch, v in required(values, "archs").items())
    if values.get("conditions"):
        return Verdict(verdict.status, f"{verdict.reason}; {c6_map_sentence(values['conditions'])}")
    return verdict


def _endpoints_at_chance(arch: str, v: Mapping[str, Any]) -> Verdict | None:
    """Inconclusive when an architecture's entry records its worse endpoint's accuracy (``end_acc`` on ``n_eval``
    images) and that is not above chance (:func:`mclib.claims.guards.at_chance`); None otherwise."""
    if v.get("end_acc") is None and v.get("n_eval") is None:
        return None
    return at_chance(f"{arch}: the worse endpoint", v.get("end_acc"), v.get("n_eval"), v.get("num_classes"))


def _c6_pair(r: Mapping[str, Any], s: Mapping[str, Any]) -> Verdict:
    """C6's rule on one path: the robustness-loss barrier above its own threshold, the standard-loss one at or below its."""
    return combine([
        compare_interval("the robustness-loss barrier", r["lo"], r["hi"], r["threshold"], above=True,
                         estimate=r["estimate"]),
        compare_interval("the standard-loss barrier", s["lo"], s["hi"], s["threshold"], above=False,
                         estimate=s["estimate"]),
    ])


def c6_map_sentence(conditions: Sequence[Mapping[str, Any]]) -> str:
    """Where C6's pattern appears across a condition map, each barrier interval judged against its own threshold.

    ``conditions``: entries ``{"setting": {...}, "measured": {"robust_barrier": interval with threshold,
    "standard_barrier": ...}}`` (:func:`mclib.studies.robustness.barrier_map`). Settings are grouped as: the pattern
    appears (:func:`judge_c6`'s rule holds: a robustness-loss barrier and no standard-loss barrier), a
    robustness-loss barrier comes with a standard-loss barrier too, undecided (an interval spans its threshold),
    or no robustness-loss barrier (the whole interval below its threshold) -- the last group counted only, with
    the smallest distance from an upper bound to its threshold. Paths whose *standard* loss has a barrier (its
    interval above its threshold) where the robustness loss has none are named at the end, once per path (the
    standard loss does not depend on the attack radius). The verdict itself is not changed: it judges the
    chapter's main setting.
    """
    from mclib.claims.core import condition_label, fmt_interval

    groups: dict[str, list[str]] = {"holds": [], "both": [], "undecided": []}
    absent, standard_only = [], {}
    for entry in conditions:
        m = entry["measured"]
        r, s = m["robust_barrier"], m["standard_barrier"]
        robust = compare_interval("r", r["lo"], r["hi"], r["threshold"], above=True).status
        if robust != "holds" and compare_interval("s", s["lo"], s["hi"], s["threshold"], above=True).status == "holds":
            # the standard loss does not depend on the attack radius: name each path once
            path = {k: v for k, v in (entry.get("setting") or {}).items() if k != "eval_eps"}
            standard_only[condition_label(path)] = f"{fmt_interval(s)} vs {fmt(s['threshold'])}"
        shown = f"{condition_label(entry.get('setting') or {})} ({fmt_interval(r)} vs {fmt(r['threshold'])})"
        status = _c6_pair(r, s).status
        if robust == "fails":
            absent.append(float(r["threshold"]) - float(r["hi"]))
        elif status == "holds" or (robust == "holds" and status == "fails"):  # fails here: a standard barrier too
            groups["holds" if status == "holds" else "both"].append(shown)
        else:  # one of the two intervals spans its threshold
            groups["undecided"].append(shown)
    parts = [f"{word} at {'; '.join(groups[key])}" for key, word in (
        ("holds", "a robustness-loss barrier without a standard-loss barrier appears"),
        ("both", "a robustness-loss barrier comes with a standard-loss barrier"),
        ("undecided", "the barrier is undecided")) if groups[key]]
    if absent:  # each such interval ends below its threshold; say by how much at the closest
        parts.append(f"no robustness-loss barrier at the {'other ' if parts else ''}{len(absent)} setting(s) "
                     f"(each interval ends at least {fmt(min(absent))} nats below its own threshold)")
    tail = ("; the standard loss has a barrier of its own at " + "; ".join(f"{k} ({v})" for k, v in standard_only.items())
            if standard_only else "")
    return f"across {len(conditions)} settings of the condition map, " + ", ".join(parts) + tail


# -- C7 -----------------------------------------------------------------------------------------------
def _corr(name: str, c: Mapping[str, Any]) -> Verdict:
    return compare_interval(name, c.get("pearson_lo"), c.get("pearson_hi"), C7_R, above=True,
                            estimate=c.get("pearson"), spec=".2f")


def judge_c7(values: Mapping[str, Any]) -> Verdict:
    """Per architecture, where the measurement can discriminate: the Pearson correlation ACROSS INPUTS at the fixed
    point ``t_fixed`` (per-input PGD loss vs per-input top eigenvalue) has its bootstrap interval at or above
    ``C7_R``; the along-path correlation of the two profiles counts too, but only when they are not both
    monotone (two monotone profiles correlate near 1 whatever links them). Monotone-only evidence is inconclusive.

    ``values = {"t_fixed", "archs": {arch: {"monotone": bool, "profile": correlation dict, "across": correlation
    dict or absent}}}`` (correlation dicts as :func:`mclib.stats.correlation` returns).
    """
    parts = []
    for arch, v in required(values, "archs").items():
        degenerate = _endpoints_at_chance(arch, v)
        if degenerate is not None:
            parts.append(degenerate)
            continue
        evidence = []
        if v.get("across") is not None:
            evidence.append(_corr(f"the across-input Pearson r at t={fmt(values.get('t_fixed'), '.2g')}", v["across"]))
        if not v["monotone"]:
            evidence.append(_corr("the along-path Pearson r", v["profile"]))
        if not evidence:
            parts.append(inconclusive(f"{arch}: both profiles are monotone along t (Pearson "
                                      f"{fmt(v['profile'].get('pearson'), '.2f')}), which any two trends give, and "
                                      "no across-input measurement was made"))
            continue
        parts.append(_tag(arch, combine(evidence)))
    return combine(parts)


# -- C8 -----------------------------------------------------------------------------------------------
def per_architecture(cid: str, values: Mapping[str, Any], arch: str | None = None) -> dict[str, Verdict]:
    """Architecture -> verdict of claim ``cid`` on ``values``, with the claim's own judge.

    Values with an ``"archs"`` mapping are judged one architecture at a time; others belong to the single
    architecture ``values["arch"]`` (or ``arch``), plus one architecture per entry of ``values["other_archs"]``
    (architecture -> that architecture's complete values, as the repair chapters record a second architecture).
    """
    judge = JUDGES[cid]
    if isinstance(values.get("archs"), Mapping):
        def only(vals: Mapping[str, Any], a: str) -> dict[str, Any]:
            # one architecture, in the first pair of endpoint seeds and in every other pair that measured it
            out = {**vals, "archs": {a: vals["archs"][a]}}
            if vals.get("seed_pairs"):
                out["seed_pairs"] = {k: only(sp, a) for k, sp in vals["seed_pairs"].items() if a in sp.get("archs", {})}
            return out

        return {a: judge(only(values, a)) for a in values["archs"]}
    others = values.get("other_archs") or {}
    main = {k: v for k, v in values.items() if k != "other_archs"}
    return {str(values.get("arch", arch)): judge(main), **{str(a): judge(v) for a, v in others.items()}}


def c8_conditions(records: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """The C8 map: one entry per (claim, architecture) with the claim's own verdict there (:func:`per_architecture`)
    and, where the record names it, the dataset that architecture was measured on (:func:`dataset_per_arch`)."""
    out = []
    for cid, vals in records.items():
        where = dataset_per_arch(vals)
        for a, v in per_architecture(cid, vals).items():
            setting = {"claim": cid, "arch": a, **({"dataset": where[a]} if where.get(a) else {})}
            out.append({"setting": setting, "measured": {"status": v.status, "reason": v.reason}})
    return out


def dataset_per_arch(values: Mapping[str, Any]) -> dict[str, str | None]:
    """Architecture -> the dataset a claim's record measured it on: an ``archs`` / ``other_archs`` entry's own
    ``dataset``, else the record's ``dataset`` (None where neither names one). The main architecture of a record
    without ``archs`` is ``values["arch"]``."""
    own = values.get("dataset")
    out: dict[str, str | None] = {}
    if isinstance(values.get("archs"), Mapping):
        out |= {str(a): (v.get("dataset", own) if isinstance(v, Mapping) else own) for a, v in values["archs"].items()}
    elif values.get("arch") is not None:
        out[str(values["arch"])] = own
    if isinstance(values.get("other_archs"), Mapping):
        out |= {str(a): (v.get("dataset", own) if isinstance(v, Mapping) else own)
                for a, v in values["other_archs"].items()}
    return out


def datasets_of(values: Mapping[str, Any]) -> set[str]:
    """The datasets a claim's record was measured on: its own ``dataset`` and that of every entry of ``archs`` or
    ``other_archs`` (an entry without one was measured on the record's dataset)."""
    own = values.get("dataset")
    out = {own} if own else set()
    for key in ("archs", "other_archs"):
        entries = values.get(key)
        if isinstance(entries, Mapping):
            out |= {str(v.get("dataset", own)) for v in entries.values() if isinstance(v, Mapping) and v.get("dataset", own)}
    return out


def judge_c8(values: Mapping[str, Any]) -> Verdict:
    """Every C claim C1..C7 measured on at least two architectures and holding on each (the same judges,
    per architecture), and on every dataset of ``datasets_required`` (Zhao et al.: CIFAR-10 and SVHN). A claim
    failing on any architecture fails C8; one measured on one architecture only, on too few datasets, or
    inconclusive on one, leaves C8 inconclusive.

    ``values = {"records": {cid: values of its record}, "datasets_required": [...] (optional)}``; a record names
    its datasets with ``dataset`` keys (:func:`datasets_of`).
    """
    recs = values["records"]
    required_ds = sorted(set(values.get("datasets_required") or []))
    parts = []
    for cid in ("C1", "C2", "C3", "C4", "C5", "C6", "C7"):
        if cid not in recs:
            parts.append(inconclusive(f"{cid} was not recorded"))
            continue
        lacking = [d for d in required_ds if d not in datasets_of(recs[cid])]
        if lacking:
            parts.append(inconclusive(f"{cid} was not measured on {', '.join(lacking)} (measured on "
                                      f"{', '.join(sorted(datasets_of(recs[cid]))) or 'no named dataset'})"))
            continue
        verdicts = per_architecture(cid, recs[cid])
        shown = ", ".join(f"{a} {v.status}" for a, v in verdicts.items())
        statuses = {v.status for v in verdicts.values()}
        if "fails" in statuses:
            parts.append(Verdict.fails(f"{cid}: {shown}"))
        elif len(verdicts) < 2:
            parts.append(inconclusive(f"{cid} was measured on one architecture only ({shown})"))
        elif statuses == {"holds"}:
            parts.append(Verdict.holds(f"{cid}: {shown}"))
        else:
            parts.append(inconclusive(f"{cid}: {shown}"))
    return combine(parts)


JUDGES: dict[str, Callable[[Mapping[str, Any]], Verdict]] = {
    "C1": judge_c1, "C2": judge_c2, "C3": judge_c3, "C4": judge_c4, "C5": judge_c5, "C6": judge_c6,
    "C7": judge_c7, "C8": judge_c8,
}

_CH = {"c1": "notebooks/c1_curves.ipynb", "c2": "notebooks/c2_backdoor_repair.ipynb",
       "c4": "notebooks/c4_error_injection.ipynb", "c6": "notebooks/c6_robustness_hessian.ipynb",
       "c8": "notebooks/c8_across_architectures.ipynb"}

CLAIMS = [
    Claim("C1", "Untampered models are joined by high-accuracy curves where the straight line has a barrier",
          "Garipov et al. via Zhao et al.: VGG16 CIFAR-10, straight-line max test error 90% vs Bezier 7.01%",
          "zhao2020bridging",
          f"For every architecture and every pair of endpoint seeds, the Bezier curve's accuracy drop (worse endpoint "
          f"minus worst along t, paired on the same test images) is at most {C1_CURVE_MARGIN:.0%} and the straight "
          f"line's more than {C1_LINE_GAP:.0%}, over the whole 95% interval.",
          judge_c1, _CH["c1"]),
    Claim("C2", "A path between two backdoored models trained on limited bonafide data removes the backdoor",
          "CIFAR-10 VGG, t=0.1: 2500 samples 88% clean / 1.1% ASR; 50 samples 63% / 2.5%", "zhao2020bridging",
          f"In every setting (trigger x mode) at the path point t=0.5: with the largest N the clean accuracy is at most "
          f"{C2_CLEAN_DROP:.0%} below the endpoints' mean and the ASR at most {C2_ASR:.0%}, and with the smallest N "
          f"the ASR is at most {C2_ASR:.0%}, over the whole 95% interval.",
          judge_c2, _CH["c2"]),
    Claim("C3", "Path repair beats fine-tuning, training from scratch, pruning and weight noise",
          "CIFAR-10 VGG t=0.1: path 88/1.1 and 63/2.5; fine-tune 84/1.5 and 46/2.8; pruning 88/43 and 81/82",
          "zhao2020bridging",
          "In every (trigger, N) column the path point at t=0.5 has a higher clean accuracy minus ASR than the best "
          "rival (endpoint, fine-tune, from scratch, prune + fine-tune, weight noise), over the whole 95% interval of "
          "the difference.",
          judge_c3, _CH["c2"]),
    Claim("C4", "Paths also repair error-injected models",
          "88-92% clean accuracy, 0% injection success at every data size (CIFAR-10)", "zhao2020bridging",
          f"For every N at t=0.5 and every pair of endpoint seeds: at most {C4_INJECTION:.0%} of the injected "
          f"errors survive, and the clean accuracy is at most {C4_CLEAN_DROP:.0%} below the injected endpoints' mean, "
          f"over the whole 95% interval.",
          judge_c4, _CH["c4"]),
    Claim("C5", "The repair holds against an attacker who knows the path",
          "repaired region narrows to t in [0.25, 0.75]", "zhao2020bridging",
          f"Provided the attacker demonstrably optimises (its trigger moves at least {C5_MIN_CHANGE} from a random "
          f"start, and the same optimiser recovers at least {C5_RECOVER:.0%} of the planted trigger's ASR against the backdoored endpoint), "
          f"the path-aware trigger's ASR is at most {C5_ASR:.0%} at every grid t in [0.25, 0.75] (in-support trigger, "
          "single-target, largest N), over the whole 95% interval; otherwise inconclusive.",
          judge_c5, _CH["c2"]),
    Claim("C6", "A barrier in robustness loss lies between a regular and an adversarially trained model; "
                "standard loss has none",
          "PGD linf eps 8/255, 10 steps, step 2/255 (CIFAR-10)", "zhao2020bridging",
          "For every model pair, the 95% bootstrap interval (over test inputs) of the robustness-loss barrier "
          "height max_t L(t) - max(L(0), L(1)) lies above 0.05 nats + 5% of the larger endpoint, and that of the "
          "standard loss lies at or below its threshold.",
          judge_c6, _CH["c6"]),
    Claim("C7", "Robustness loss correlates with the largest input-Hessian eigenvalue along the path",
          "Pearson 0.71, 0.88, 0.86 for three model pairs", "zhao2020bridging",
          f"For every model pair, the Pearson correlation between per-input PGD loss and per-input top eigenvalue "
          f"across test inputs at t=0.5 has its 95% bootstrap interval at or above {C7_R}, and so does the along-path "
          "correlation when the two profiles are not both monotone; monotone-only evidence is inconclusive.",
          judge_c7, _CH["c6"]),
    Claim("C8", "These hold across architectures and datasets", "VGG/ResNet, CIFAR-10/SVHN", "zhao2020bridging",
          "Every claim C1-C7 is measured on at least two architectures and holds on each (the same criteria, per "
          "architecture); a failure on any architecture fails, a single architecture is inconclusive.",
          judge_c8, _CH["c8"], needs=("C1", "C2", "C3", "C4", "C5", "C6", "C7")),
]
