"""mclib.claims: the verdict vocabulary, records with provenance, the report, and every A/B criterion."""
import json
import math

import numpy as np
import pytest

from mclib import claims, config
from mclib.claims import Verdict, combine, compare_interval


# --------------------------------------------------------------------------- core
def test_verdict_vocabulary_and_validation():
    assert [Verdict.holds("x").status, Verdict.fails("x").status, Verdict.inconclusive("x").status] == list(claims.VERDICTS)
    assert str(Verdict.fails("too low")) == "fails: too low"
    with pytest.raises(ValueError, match="status"):
        Verdict("yes", "r")
    with pytest.raises(ValueError, match="reason"):
        Verdict("holds", " ")


@pytest.mark.parametrize("lo,hi,above,status", [
    (0.05, 0.2, True, "holds"),      # just holding: lower bound on the threshold
    (0.01, 0.0499, True, "fails"),   # just failing: upper bound below it
    (0.04, 0.06, True, "inconclusive"),
    (0.0, 0.05, False, "holds"),
    (0.0501, 0.1, False, "fails"),
    (0.04, 0.06, False, "inconclusive"),
    (math.nan, 0.2, True, "inconclusive"),
    (None, None, False, "inconclusive"),
])
def test_compare_interval_at_the_threshold(lo, hi, above, status):
    v = compare_interval("the fraction", lo, hi, 0.05, above=above)
    assert v.status == status and "the fraction" in v.reason


def test_compare_interval_rejects_a_reversed_interval():
    with pytest.raises(ValueError, match="lo"):
        compare_interval("x", 2.0, 1.0, 0.0)


def test_combine_precedence_and_reasons():
    h, f, i = Verdict.holds("a"), Verdict.fails("b"), Verdict.inconclusive("c")
    assert combine([h, f, i]) == Verdict.fails("b")
    assert combine([h, i, i]) == Verdict.inconclusive("c; c")
    assert combine([h, h]) == Verdict.holds("a; a")
    assert combine([]).status == "inconclusive"


def test_catalogue_order_and_fields():
    ids = list(claims.CATALOGUE)
    assert ids == [f"A{i}" for i in range(1, 11)] + ["B1", "B2", "B3"] + [f"C{i}" for i in range(1, 9)]
    for cid, c in claims.CATALOGUE.items():
        assert c.id == cid and c.statement and c.paper_value and c.criterion and c.chapter.startswith("notebooks/")
        assert c.cite in {"vrabel2025input", "lee2024generalization", "zhao2020bridging"}


def _fake_claim(monkeypatch, judge):
    """Replace A1's judge for a core test (the catalogue's real criteria are tested below)."""
    import dataclasses

    fake = dataclasses.replace(claims.CATALOGUE["A1"], judge=judge)
    monkeypatch.setitem(claims.CATALOGUE, "A1", fake)
    return fake


def test_record_computes_the_verdict_and_carries_provenance(monkeypatch):
    seen = []

    def judge(v):
        seen.append(v)
        return claims.judge_interval("x", v["x"], 1.0)

    _fake_claim(monkeypatch, judge)
    ctx = config.setup("smoke", "cpu", 3, style=False)
    assert config.current() is ctx
    values = {"x": {"estimate": np.float32(1.5), "lo": np.float64(1.2), "hi": 1.8}, "v": np.arange(3)}
    rec = claims.record("A1", values=values, measured="x is 1.5")
    # the judge sees exactly the JSON-plain values that are stored
    assert seen[0] == rec["values"] == {"x": {"estimate": 1.5, "lo": 1.2, "hi": 1.8}, "v": [0, 1, 2]}
    assert rec["status"] == "holds" and "x is 1.5 [1.2, 1.8]" in rec["reason"]
    assert (rec["preset"], rec["seed"], rec["device"]) == ("smoke", 3, "cpu")
    assert rec["threads"] >= 1 and rec["torch"] and len(rec["source_hash"]) == 64
    assert rec["chapter"] == "notebooks/a1_real_paths.ipynb" and rec["cite"] == "vrabel2025input"
    path = claims.claims_dir() / "A1.json"
    first = path.read_text()
    claims.record("A1", values=values, measured="x is 1.5")
    assert path.read_text() == first and json.loads(first) == rec  # deterministic, no timestamps


def test_record_rejects_bad_input(monkeypatch):
    with pytest.raises(ValueError, match="unknown claim id 'Z9'"):
        claims.record("Z9", values={}, measured="m")
    with pytest.raises(ValueError, match="measured"):
        claims.record("A1", values={}, measured="")
    _fake_claim(monkeypatch, lambda v: Verdict.holds("n is " + str(v["n"])))
    with pytest.raises(ValueError, match="A1.*lack 'n'"):
        claims.record("A1", values={"m": 1}, measured="m")
    _fake_claim(monkeypatch, lambda v: True)
    with pytest.raises(TypeError, match="not a Verdict"):
        claims.record("A1", values={}, measured="m")


def _rec(cid, status, **prov):
    base = {"preset": "smoke", "seed": 0, "device": "cpu", "threads": 1, "torch": "2", "source_hash": "ab" * 32}
    return {"id": cid, "status": status, "reason": f"reason of {cid}", "measured": f"measured {cid}",
            "chapter": "notebooks/a1_real_paths.ipynb", **{**base, **prov}}


def test_report_summary_and_markdown():
    records = {"A2": _rec("A2", "fails"), "C7": _rec("C7", "inconclusive"), "B1": _rec("B1", "holds")}
    table = claims.report(records)
    assert len(table) == 21 and list(table["id"][:3]) == ["A1", "A2", "A3"] and table["id"].iloc[9] == "A10"
    status = dict(zip(table["id"], table["status"]))
    assert (status["A2"], status["C7"], status["B1"], status["A1"]) == ("fails", "inconclusive", "holds", "not run")
    assert claims.summary(records) == {"holds": 1, "fails": 1, "inconclusive": 1, "not run": 18}
    md = claims.report_markdown(records)
    assert "[A2](a1_real_paths.html)" in md and md.count("### ") == 3
    assert "reason of C7" in md and "**1** hold, **1** fail, **1** inconclusive, **18** not run" in md
    assert "one run" in md and "Mixed" not in md


def test_mixed_runs_are_flagged():
    records = {"A1": _rec("A1", "holds"), "A10": _rec("A10", "fails", seed=1)}
    assert claims.mixed_runs(records) == ["seed"]
    assert "Mixed runs" in claims.provenance_markdown(records) and "seed" in claims.provenance_markdown(records)
    table = claims.provenance_table(records)
    assert len(table) == 2 and set(table["claims"]) == {"A1", "A10"}


def test_result_markdown_is_generated_from_the_records():
    records = {"A1": _rec("A1", "fails"), "A2": _rec("A2", "inconclusive")}
    md = claims.result_markdown(["A1", "A2", "A3"], records)
    assert md.startswith("Of 3 claim(s) on this page: 1 fails, 1 inconclusive.")
    assert "**A1 fails.**" in md and "reason of A1" in md and "**A2 is inconclusive.**" in md
    assert "**A3**" in md and "not recorded" in md
