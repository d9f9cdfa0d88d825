"""Criteria of paper C (mclib.claims.paper_c) at their boundaries, and the statistics they read (mclib.stats)."""
import numpy as np
import pytest

from mclib import claims, stats
from mclib.claims import paper_c as C


def status(cid, values):
    return claims.CATALOGUE[cid].verdict(values).status


# -- C1 -----------------------------------------------------------------------------------------------
def _c1(bezier_worst, line_worst, end=0.98, n=100000):
    return {"n_test": n, "archs": {"cnn": {"line": {"end_acc": end, "worst_acc": line_worst},
                                           "bezier": {"end_acc": end, "worst_acc": bezier_worst}}}}


def test_c1_boundaries():
    assert status("C1", _c1(0.97, 0.80)) == "holds"          # drops 1 and 18 points
    assert status("C1", _c1(0.90, 0.80)) == "fails"          # the curve drops 8 points
    assert status("C1", _c1(0.97, 0.95)) == "fails"          # the line has no barrier
    assert status("C1", _c1(0.95, 0.80, n=100000)) == "inconclusive"  # a drop of exactly 3 points spans the threshold
    assert status("C1", _c1(0.97, 0.80, n=50)) == "inconclusive"     # too few test images to tell
    v = claims.CATALOGUE["C1"].verdict(_c1(0.90, 0.80))
    assert v.reason.startswith("cnn:") and "8.0%" in v.reason


def _table(n, ref_only, point_only, both=None):
    both = n - ref_only - point_only - 30 if both is None else both
    return {"both": both, "ref_only": ref_only, "point_only": point_only, "neither": n - both - ref_only - point_only}


def test_c1_pairs_the_drop_on_the_same_test_images():
    # the quick book's cnn on 1000 images: endpoint 95.1%, Bezier worst 94.1%. Unpaired, [-1.0%, 3.0%] touches the
    # 3% bar, and a tenth of a point more (a thread count's rounding) made it undecided; paired, 25 images lost
    # and 15 gained give [-0.3%, 2.2%] (Newcombe), far from it.
    n = 1000
    unpaired = _c1(0.941, 0.684, end=0.951, n=n)
    assert status("C1", unpaired) == "holds"
    assert status("C1", _c1(0.940, 0.684, end=0.951, n=n)) == "inconclusive"
    paired = _c1(0.940, 0.684, end=0.951, n=n)
    paired["archs"]["cnn"]["bezier"]["table"] = _table(n, 26, 15, both=951 - 26)
    paired["archs"]["cnn"]["line"]["table"] = _table(n, 280, 13, both=951 - 280)
    v = claims.CATALOGUE["C1"].verdict(paired)
    assert v.status == "holds", v.reason
    lo, hi = (float(x.rstrip("%]")) for x in v.reason.split("[")[1].split("]")[0].split(", "))
    iv = stats.paired_difference_from_counts(951 - 26, 26, 15, n - (951 - 26) - 41)
    assert (lo, hi) == pytest.approx((100 * iv.lo, 100 * iv.hi), abs=0.05)
    # a table that does not match the accuracies is not judged
    paired["archs"]["cnn"]["bezier"]["table"] = _table(n, 5, 15, both=951 - 5)
    assert status("C1", paired) == "inconclusive"


def test_c1_must_hold_for_every_seed_pair():
    ok, bad, undecided = _c1(0.97, 0.80), _c1(0.90, 0.80), _c1(0.95, 0.80)
    assert status("C1", {**ok, "seed_pairs": {"2/3": ok}}) == "holds"
    assert status("C1", {**ok, "seed_pairs": {"2/3": bad}}) == "fails"
    assert status("C1", {**ok, "seed_pairs": {"2/3": undecided}}) == "inconclusive"
    assert "seeds 2/3: cnn:" in claims.CATALOGUE["C1"].verdict({**ok, "seed_pairs": {"2/3": bad}}).reason
    # C8 reads C1 per architecture: each architecture with its own seed pairs only
    two = {"n_test": 100000, "archs": {"cnn": ok["archs"]["cnn"], "vgg": ok["archs"]["cnn"]}}
    second = {"n_test": 100000, "archs": {"cnn": ok["archs"]["cnn"], "vgg": bad["archs"]["cnn"]}}
    per = C.per_architecture("C1", {**two, "seed_pairs": {"2/3": second}})
    assert (per["cnn"].status, per["vgg"].status) == ("holds", "fails")
    assert "vgg" not in per["cnn"].reason and "seeds 2/3: vgg:" in per["vgg"].reason


# -- C2 / C3 / C4 -----------------------------------------------------------------------------------
def _c2(asr_hi=0.01, asr_lo=0.02, acc=0.97, end=0.98, n=100000):
    s = {"trigger": "in-support", "mode": "single", "end_acc": end, "n_asr": n,
         "n_max": {"N": 500, "acc": acc, "asr": asr_hi}, "n_min": {"N": 50, "acc": 0.8, "asr": asr_lo}}
    return {"arch": "cnn", "n_eval": n, "settings": [s]}


def test_c2_boundaries():
    assert status("C2", _c2()) == "holds"
    assert status("C2", _c2(asr_lo=0.5)) == "fails"
    assert status("C2", _c2(acc=0.80)) == "fails"
    assert status("C2", _c2(asr_hi=0.10)) == "inconclusive"
    assert status("C2", _c2(asr_hi=0.05, n=40)) == "inconclusive"  # Wilson interval of 2/40 reaches above 10%
    assert status("C2", {"arch": "cnn", "n_eval": 100, "settings": []}) == "inconclusive"


def _c3(path_score, rival_score, n=100000):
    return {"arch": "cnn", "n_eval": n, "n_asr": n, "path": "path (t=0.5)", "columns": [{
        "trigger": "corner", "N": 50, "methods": {"path (t=0.5)": {"clean_acc": path_score, "asr": 0.0},
                                                  "path (t=0.1)": {"clean_acc": 1.0, "asr": 0.0},
                                                  "fine-tune": {"clean_acc": rival_score, "asr": 0.0}}}]}


def test_c3_boundaries_ignore_other_path_points():
    assert status("C3", _c3(0.95, 0.90)) == "holds"
    assert status("C3", _c3(0.85, 0.90)) == "fails"
    assert status("C3", _c3(0.90, 0.90)) == "inconclusive"
    assert status("C3", _c3(0.95, 0.90, n=30)) == "inconclusive"


def test_c2_conditions_and_map_leave_the_verdict_unchanged():
    rows = [{"trigger": "corner", "mode": "single", "N": 50, "t": 0.5, "end_acc": 0.98, "acc": 0.97, "asr": 0.9},
            {"trigger": "in-support", "mode": "single", "N": 50, "t": 0.5, "end_acc": 0.98, "acc": 0.97, "asr": 0.0}]
    conds = C.c2_conditions(rows, n_eval=100000, n_asr={"single": 100000})
    assert [(c["setting"], c["t"]) for c in conds] == [({k: r[k] for k in ("trigger", "mode", "N")}, 0.5) for r in rows]
    asr = conds[0]["measured"]["asr"]
    assert asr["lo"] < 0.9 < asr["hi"] and asr["n"] == 100000
    drop = conds[0]["measured"]["clean_drop"]
    assert drop["estimate"] == pytest.approx(0.01) and drop["lo"] < 0.01 < drop["hi"]
    assert [c["measured"]["repaired"] for c in conds] == ["fails", "holds"]
    base = claims.CATALOGUE["C2"].verdict(_c2())
    mapped = claims.CATALOGUE["C2"].verdict({**_c2(), "conditions": conds})
    assert mapped.status == base.status and mapped.reason.startswith(base.reason)
    assert "Map:" in mapped.reason and "vanishes at trigger=corner" in mapped.reason
    assert "appears at trigger=in-support" in mapped.reason


def test_c3_margin_is_the_judges_number_and_conditions_cover_modes():
    vals = _c3(0.95, 0.90)
    col = vals["columns"][0]
    m = C.c3_margin(col["methods"], vals["path"], vals["n_eval"], vals["n_asr"])
    assert m["best"] == "fine-tune" and m["estimate"] == pytest.approx(0.05) and m["lo"] < 0.05 < m["hi"]
    # the independent formula: normal interval of a difference of two scores, each with two binomial variances
    se = np.sqrt(0.95 * 0.05 / 1e5 + 0.9 * 0.1 / 1e5)
    assert m["hi"] - m["lo"] == pytest.approx(2 * 1.959964 * se, rel=1e-5)
    assert C.c3_margin({"fine-tune": {"clean_acc": 1, "asr": 0}}, vals["path"], 10, 10) is None
    cols = [{**col, "mode": "single"}, {**col, "mode": "all2all", "methods": {**col["methods"],
            "from scratch": {"clean_acc": 0.99, "asr": 0.0}}}]
    conds = C.c3_conditions(cols, vals["n_eval"], {"single": 100000, "all2all": 100000}, vals["path"])
    assert [(c["setting"]["mode"], c["measured"]["beats_all"], c["measured"]["best_rival"]) for c in conds] == [
        ("single", "holds", "fine-tune"), ("all2all", "fails", "from scratch")]
    mapped = claims.CATALOGUE["C3"].verdict({**vals, "conditions": conds})
    assert mapped.status == "holds" and "vanishes at trigger=corner, mode=all2all, N=50" in mapped.reason


def _c4(injection=0.0, acc=0.95, ref=0.97, n=100000, k=40):
    return {"arch": "cnn", "n_eval": n, "n_chosen": k, "ref_acc": ref, "points": [{"N": 50, "acc": acc, "injection": injection}]}


def test_c4_boundaries():
    assert status("C4", _c4()) == "holds"                   # 0 of 40 survive: Wilson [0, 8.8%], below 10%
    assert status("C4", _c4(injection=0.3)) == "fails"       # 12 of 40 survive: [18%, 46%]
    assert status("C4", _c4(acc=0.80)) == "fails"
    assert status("C4", _c4(acc=0.87)) == "inconclusive"     # exactly 10 points below
    assert "12 of 40" in claims.CATALOGUE["C4"].verdict(_c4(injection=0.3)).reason


def test_c4_injection_is_a_rate_that_one_image_does_not_flip():
    # the old count criterion: 0 of 5 held and 1 of 5 failed, so one image's rounding flipped the verdict
    assert status("C4", _c4(injection=0.0, k=5)) == "inconclusive"   # 0 of 5: Wilson [0, 43%], too few to tell
    assert status("C4", _c4(injection=0.2, k=5)) == "inconclusive"
    assert status("C4", _c4(injection=1 / 40)) == "inconclusive"      # 1 of 40: [0.4%, 12.9%] spans 10%
    assert status("C4", _c4(injection=0.0, k=60)) == "holds"
    v = claims.CATALOGUE["C4"].verdict(_c4(injection=1 / 40))
    assert "1 of 40" in v.reason and "would decide it" in v.reason


# -- C5 -----------------------------------------------------------------------------------------------
def _c5(change=0.3, control=1.0, mid_asr=0.0, n=1000, planted=1.0):
    aware = [{"t": t, "asr": (1.0 if t in (0.0, 1.0) else mid_asr)} for t in np.linspace(0, 1, 11).round(2).tolist()]
    return {"arch": "cnn", "n_asr": n, "change": change, "planted_asr": planted, "control_asr": control, "aware": aware}


def test_c5_unchanged_trigger_is_inconclusive():
    v = claims.CATALOGUE["C5"].verdict(_c5(change=0.0))
    assert v.status == "inconclusive" and "moved by only 0" in v.reason


def test_c5_attacker_that_cannot_beat_its_control_is_inconclusive():
    assert status("C5", _c5(control=0.3)) == "inconclusive"
    assert status("C5", _c5(control=0.9)) == "inconclusive"   # the interval of 90% spans the 90%-of-planted bar
    assert status("C5", _c5(control=0.2, planted=0.2)) == "inconclusive"   # no working backdoor to rediscover
    # the quick run that showed the absolute 80% bar was mis-specified: planted 76.3%, control 76.3% on 400 inputs
    assert status("C5", _c5(control=0.763, planted=0.763, n=400)) == "holds"
    assert "planted trigger reaches 76.3%" in claims.CATALOGUE["C5"].verdict(_c5(control=0.5, planted=0.763, n=400)).reason


def test_c5_boundaries_with_a_working_attacker():
    assert status("C5", _c5(mid_asr=0.0)) == "holds"
    assert status("C5", _c5(mid_asr=0.5)) == "fails"
    assert status("C5", _c5(mid_asr=0.10)) == "inconclusive"
    assert status("C5", {**_c5(), "aware": [{"t": 0.0, "asr": 1.0}, {"t": 1.0, "asr": 1.0}]}) == "inconclusive"


# -- C6 -----------------------------------------------------------------------------------------------
def _iv(est, lo, hi, thr=0.1):
    return {"estimate": est, "lo": lo, "hi": hi, "threshold": thr}


def test_c6_boundaries():
    ok = {"archs": {"cnn": {"robust": _iv(0.5, 0.3, 0.7), "standard": _iv(0.0, 0.0, 0.02)}}}
    assert status("C6", ok) == "holds"
    assert status("C6", {"archs": {"cnn": {"robust": _iv(0.0, 0.0, 0.05), "standard": _iv(0, 0, 0.02)}}}) == "fails"
    assert status("C6", {"archs": {"cnn": {"robust": _iv(0.5, 0.3, 0.7), "standard": _iv(0.3, 0.2, 0.4)}}}) == "fails"
    assert status("C6", {"archs": {"cnn": {"robust": _iv(0.12, 0.05, 0.2), "standard": _iv(0, 0, 0.02)}}}) == "inconclusive"
    with pytest.raises(ValueError, match="C6.*archs"):
        claims.CATALOGUE["C6"].verdict({})


def _cond(train_eps, path, robust, standard=None):
    return {"setting": {"arch": "cnn", "train_eps": train_eps, "eval_eps": 0.2, "path": path},
            "measured": {"robust_barrier": robust, "standard_barrier": standard or _iv(0.0, 0.0, 0.01, 0.05)}}


def test_c6_condition_map_names_where_a_barrier_appears_without_changing_the_verdict():
    main = {"archs": {"cnn": {"robust": _iv(0.0, 0.0, 0.0), "standard": _iv(0.0, 0.0, 0.02)}}}
    conditions = [
        _cond(0.1, "line", _iv(0.5, 0.3, 0.7, thr=0.2)),                                   # appears
        _cond(0.3, "line", _iv(0.5, 0.3, 0.7, thr=0.2), standard=_iv(0.4, 0.3, 0.5, 0.1)),   # with a standard barrier
        _cond(0.2, "bezier", _iv(0.3, 0.25, 0.35, thr=0.4)),                               # the same height, higher own threshold
        _cond(0.3, "bezier", _iv(0.2, 0.1, 0.3, thr=0.2)),                                 # spans its threshold
        _cond(0.1, "bezier", _iv(0.0, 0.0, 0.05, thr=0.2)),                                # absent
    ]
    plain = claims.CATALOGUE["C6"].verdict(main)
    v = claims.CATALOGUE["C6"].verdict({**main, "conditions": conditions})
    assert v.status == plain.status == "fails"        # the map never changes the verdict on the main setting
    assert v.reason.startswith(plain.reason)
    assert "across 5 settings" in v.reason
    appears = v.reason.split("without a standard-loss barrier appears at ")[1].split(", a robustness")[0]
    assert appears == "arch=cnn, train_eps=0.1, eval_eps=0.2, path=line (0.5 [0.3, 0.7] vs 0.2)"
    assert "comes with a standard-loss barrier at arch=cnn, train_eps=0.3, eval_eps=0.2, path=line" in v.reason
    assert "undecided at arch=cnn, train_eps=0.3, eval_eps=0.2, path=bezier (0.2 [0.1, 0.3] vs 0.2)" in v.reason
    # each interval against its own threshold: [0.25, 0.35] is below 0.4, [0, 0.05] below 0.2; the closer by 0.05
    assert v.reason.endswith("no robustness-loss barrier at the other 2 setting(s) (each interval ends at least "
                             "0.05 nats below its own threshold)")
    none = C.c6_map_sentence([conditions[4]])
    assert none == ("across 1 settings of the condition map, no robustness-loss barrier at the 1 setting(s) "
                    "(each interval ends at least 0.15 nats below its own threshold)")
    # a standard-loss barrier without a robustness-loss barrier is named once per path, whatever the attack radius
    std = _iv(0.14, 0.12, 0.19, 0.06)
    two_radii = [_cond(0.3, "line", _iv(0.0, 0.0, 0.0, 0.1), std),
                 {**_cond(0.3, "line", _iv(0.0, 0.0, 0.0, 0.3), std), "setting": {"arch": "cnn", "train_eps": 0.3,
                                                                            "eval_eps": 0.3, "path": "line"}}]
    assert C.c6_map_sentence(two_radii).endswith(
        "; the standard loss has a barrier of its own at arch=cnn, train_eps=0.3, path=line (0.14 [0.12, 0.19] vs 0.06)")
    # a robustness barrier whose standard interval spans its threshold is undecided, not "with a standard barrier"
    assert "undecided" in C.c6_map_sentence([_cond(0.1, "line", _iv(0.5, 0.3, 0.7), _iv(0.05, 0.0, 0.1, 0.05))])


# -- C7 -----------------------------------------------------------------------------------------------
def _corr(r, lo, hi):
    return {"pearson": r, "pearson_lo": lo, "pearson_hi": hi}


def test_c7_two_monotone_profiles_are_inconclusive():
    t = np.linspace(0, 1, 11)
    a, b = np.exp(-3 * t), 1 - t ** 0.5                        # unrelated, both falling
    prof = stats.correlation(a, b, n_boot=200)
    assert prof["pearson"] > 0.9                                # the degenerate "evidence"
    values = {"t_fixed": 0.5, "archs": {"cnn": {"monotone": True, "profile": prof}}}
    v = claims.CATALOGUE["C7"].verdict(values)
    assert v.status == "inconclusive" and "monotone" in v.reason


def test_c7_boundaries_across_inputs_and_non_monotone_profiles():
    base = {"t_fixed": 0.5}
    good, bad, spans = _corr(0.8, 0.7, 0.9), _corr(0.1, -0.1, 0.3), _corr(0.5, 0.4, 0.6)
    assert status("C7", {**base, "archs": {"cnn": {"monotone": True, "profile": good, "across": good}}}) == "holds"
    assert status("C7", {**base, "archs": {"cnn": {"monotone": True, "profile": good, "across": bad}}}) == "fails"
    assert status("C7", {**base, "archs": {"cnn": {"monotone": True, "profile": good, "across": spans}}}) == "inconclusive"
    # a non-monotone profile pair counts as evidence too
    assert status("C7", {**base, "archs": {"cnn": {"monotone": False, "profile": bad, "across": good}}}) == "fails"
    assert status("C7", {**base, "archs": {"cnn": {"monotone": False, "profile": good}}}) == "holds"


# -- C8 -----------------------------------------------------------------------------------------------
def test_c8_uses_the_same_judges_per_architecture():
    c6 = {"archs": {"cnn": {"robust": _iv(0.5, 0.3, 0.7), "standard": _iv(0, 0, 0.02)},
                    "mlp": {"robust": _iv(0.0, 0.0, 0.05), "standard": _iv(0, 0, 0.02)}}}
    per = C.per_architecture("C6", c6)
    assert {a: v.status for a, v in per.items()} == {"cnn": "holds", "mlp": "fails"}
    two = {"archs": {"cnn": c6["archs"]["cnn"], "mlp": c6["archs"]["cnn"]}}
    c7 = {"t_fixed": 0.5, "archs": {a: {"monotone": True, "profile": _corr(0.8, 0.7, 0.9), "across": _corr(0.8, 0.7, 0.9)}
                                    for a in ("cnn", "mlp")}}
    c1 = {"n_test": 100000, "archs": {a: _c1(0.97, 0.8)["archs"]["cnn"] for a in ("cnn", "vgg")}}
    recs = {"C1": c1, "C2": _c2(), "C3": _c3(0.95, 0.9), "C4": _c4(), "C5": _c5(), "C6": two, "C7": c7}
    v = claims.CATALOGUE["C8"].verdict({"records": recs})
    assert v.status == "inconclusive" and "C2 was measured on one architecture only (cnn holds)" in v.reason
    assert status("C8", {"records": {**recs, "C6": c6}}) == "fails"
    assert status("C8", {"records": {k: r for k, r in recs.items() if k != "C4"}}) == "inconclusive"


def test_c8_reads_a_second_architecture_recorded_by_a_repair_chapter():
    c2 = {**_c2(), "other_archs": {"mlp": {**_c2(asr_lo=0.5), "arch": "mlp"}}}
    per = C.per_architecture("C2", c2)
    assert {a: v.status for a, v in per.items()} == {"cnn": "holds", "mlp": "fails"}
    conds = C.c8_conditions({"C2": c2})
    assert [(c["setting"], c["measured"]["status"]) for c in conds] == [
        ({"claim": "C2", "arch": "cnn"}, "holds"), ({"claim": "C2", "arch": "mlp"}, "fails")]


def test_every_c_claim_is_catalogued_with_its_judge():
    ids = [c.id for c in C.CLAIMS]
    assert ids == [f"C{i}" for i in range(1, 9)]
    for c in C.CLAIMS:
        assert claims.CATALOGUE[c.id] is c and c.judge is C.JUDGES[c.id] and c.criterion.endswith(".")


def test_c4_must_hold_for_every_endpoint_seed_pair():
    """Training-seed variation: a second pair of endpoints that fails (or is undecided) decides C4, whatever the first."""
    assert status("C4", {**_c4(), "seed_pairs": {"2/3": _c4()}}) == "holds"
    assert status("C4", {**_c4(), "seed_pairs": {"2/3": _c4(injection=0.2)}}) == "fails"
    assert status("C4", {**_c4(), "seed_pairs": {"2/3": _c4(acc=0.87)}}) == "inconclusive"
    reason = claims.CATALOGUE["C4"].verdict({**_c4(), "seeds_label": "seeds 0/1",
                                             "seed_pairs": {"2/3": _c4(injection=0.2)}}).reason
    assert reason.startswith("seeds 2/3") and "8 of 40" in reason


def test_c1_reads_each_architectures_own_test_size():
    """An architecture measured on another dataset carries its own n_test: 50 images cannot decide what 100000 can."""
    vals = _c1(0.97, 0.80)
    assert status("C1", vals) == "holds"
    vals["archs"]["cnn"]["n_test"] = 50
    assert status("C1", vals) == "inconclusive"


def _c8_records(c2_other_dataset, c1_datasets=("cifar10", "svhn")):
    """C1..C7 records that hold on two architectures; C1's archs entries and C2's other_archs name their datasets."""
    c1 = {"n_test": 100000, "archs": {a: {**_c1(0.97, 0.8)["archs"]["cnn"], "dataset": d}
                                       for a, d in zip(("vgg16_bn", "resnet20"), c1_datasets)}}
    two = lambda v: {"archs": {"vgg16_bn": v, "resnet20": v}}   # noqa: E731
    c6 = {"archs": {"cnn": {"robust": {"estimate": 0.5, "lo": 0.3, "hi": 0.7, "threshold": 0.1},
                            "standard": {"estimate": 0.0, "lo": -0.01, "hi": 0.02, "threshold": 0.1}}}}
    c7 = {"t_fixed": 0.5, "archs": {a: {"monotone": True, "profile": _corr(0.8, 0.7, 0.9), "across": _corr(0.8, 0.7, 0.9),
                                        "dataset": d} for a, d in (("vgg16_bn", "cifar10"), ("resnet20", "svhn"))}}
    other = lambda v: {**v, "arch": "resnet20", "other_archs": {"vgg16": {**v, "arch": "vgg16", "dataset": c2_other_dataset}}}  # noqa: E731
    c6_two = two(c6["archs"]["cnn"])
    c6_two["archs"]["resnet20"] = {**c6_two["archs"]["resnet20"], "dataset": "svhn"}
    c6_two["archs"]["vgg16_bn"] = {**c6_two["archs"]["vgg16_bn"], "dataset": "cifar10"}
    return {"C1": c1, "C2": {**other(_c2()), "dataset": "svhn"}, "C3": {**other(_c3(0.95, 0.9)), "dataset": "svhn"},
            "C4": {**other(_c4()), "dataset": "svhn"}, "C5": {**other(_c5()), "dataset": "svhn"}, "C6": c6_two, "C7": c7}


def test_c8_judges_architectures_and_datasets():
    """Zhao et al.'s pairing -- VGG on CIFAR-10, ResNet on SVHN -- recorded per architecture entry: C8 holds only
    when every claim names both datasets; one measured on CIFAR-10 only stays inconclusive, naming what is missing."""
    required = ["cifar10", "svhn"]
    recs = _c8_records("cifar10")
    assert {cid: C.datasets_of(v) for cid, v in recs.items()} == {cid: {"cifar10", "svhn"} for cid in recs}
    v = claims.CATALOGUE["C8"].verdict({"records": recs, "datasets_required": required})
    assert v.status == "holds", v.reason
    lacking = _c8_records("svhn", c1_datasets=("svhn", "svhn"))
    v = claims.CATALOGUE["C8"].verdict({"records": lacking, "datasets_required": required})
    assert v.status == "inconclusive"
    assert "C1 was not measured on cifar10 (measured on svhn)" in v.reason and "C2 was not measured on cifar10" in v.reason
    # without a required list the datasets are not judged
    assert status("C8", {"records": lacking}) == "holds"


def test_c8_conditions_name_each_architectures_dataset():
    recs = _c8_records("cifar10")
    assert C.dataset_per_arch(recs["C2"]) == {"resnet20": "svhn", "vgg16": "cifar10"}
    assert C.dataset_per_arch(recs["C1"]) == {"vgg16_bn": "cifar10", "resnet20": "svhn"}
    assert C.dataset_per_arch({"arch": "cnn"}) == {"cnn": None}
    got = {(c["setting"]["claim"], c["setting"]["arch"]): c["setting"].get("dataset") for c in C.c8_conditions(recs)}
    assert got[("C2", "vgg16")] == "cifar10" and got[("C2", "resnet20")] == "svhn"
    assert got[("C7", "resnet20")] == "svhn" and got[("C1", "vgg16_bn")] == "cifar10"
