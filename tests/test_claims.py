import json

import numpy as np
import pytest

from mclib import claims


def test_record_writes_deterministic_json():
    rec = claims.record("A1", "s", "p", "measured 1.5", "gap > 0", np.bool_(True), values={"x": np.float32(1.5), "v": np.arange(3)},
                        preset="smoke", chapter="notebooks/a1_real_paths.ipynb")
    path = claims.claims_dir() / "A1.json"
    first = path.read_text()
    claims.record("A1", "s", "p", "measured 1.5", "gap > 0", True, values={"x": 1.5, "v": [0, 1, 2]},
                  preset="smoke", chapter="notebooks/a1_real_paths.ipynb")
    assert path.read_text() == first
    assert json.loads(first)["values"] == {"x": 1.5, "v": [0, 1, 2]} and rec["holds"] is True


def test_unknown_id_and_non_bool():
    with pytest.raises(ValueError, match="unknown claim id"):
        claims.record("Z9", "s", "p", "m", "c", True)
    with pytest.raises(TypeError):
        claims.record("A1", "s", "p", "m", "c", "yes")


def test_report_lists_every_claim_grouped_with_status():
    claims.record("A2", "s", "p", "m", "c", False, chapter="notebooks/a1_real_paths.ipynb")
    claims.record("C7", "s", "p", "m", "c", True)
    table = claims.report()
    assert len(table) == len(claims.CATALOGUE) == 21
    assert list(table["id"][:3]) == ["A1", "A2", "A3"] and table["id"].iloc[9] == "A10"
    status = dict(zip(table["id"], table["holds"]))
    assert status["A2"] == "no" and status["C7"] == "yes" and status["B1"] == "not run"
    assert claims.summary() == {"holding": 1, "failing": 1, "not run": 19}
    md = claims.report_markdown()
    assert "[A2](a1_real_paths.html)" in md and md.count("### ") == 3
