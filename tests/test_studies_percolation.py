"""Tests of mclib.studies.percolation (claim A10): the p_c table, the measured fractions and A10's evidence."""
import numpy as np
import pytest

from mclib.studies import percolation


def _study():
    return {2: {"thresholds": {8: np.zeros(4), 16: np.zeros(4)}, "pc": 0.6, "sigma": 0.01, "se_boot": 0.005,
                "spread": 0.002, "literature": 0.5927, "bethe": 1 / 3, "crossings": {(8, 16): 0.6}}}


def test_pc_table_one_column_per_dimension():
    t = percolation.pc_table(_study())
    assert list(t.columns) == ["d = 2"] and t.loc["sizes L", "d = 2"] == "8, 16"
    assert t.loc["samples per L", "d = 2"] == 4
    assert t.loc["|estimate - literature| / σ", "d = 2"] == f"{(0.6 - 0.5927) / 0.01:.2f}"


def test_measured_fractions_and_evidence():
    real = {"trained": {"p_own": np.array([0.9, 0.8])},
            "untrained": {"p_own": np.array([0.5, 0.4]), "class_fractions": [None, np.array([0.0, 0.25, 0.75])]}}
    m = percolation.measured_fractions(real)
    assert m == {"trained CNN, own class": 0.8, "untrained CNN, own class": 0.4,
                 "untrained CNN, rarest predicted class": 0.25}
    surf = {"p": np.array([0.1, 0.3, 0.5]), "d": np.array([2, 3]), "tau": np.arange(6.0).reshape(2, 3),
            "tau_se": np.ones((2, 3))}
    S = percolation.Sizes.read("smoke")   # p_ref = 0.25: the grid's nearest p is 0.3
    ev = percolation.evidence(_study(), surf, {"tau": [1]}, m, S, test_acc_trained=0.9)
    assert ev["p_ref"] == 0.3 and ev["tau_ref"].tolist() == [1.0, 4.0]
    assert ev["crossings"] == {2: {"8-16": 0.6}} and ev["criterion_dims"] == [2, 3, 4]
    assert ev["pc"] == {2: 0.6} and ev["test_acc_trained"] == 0.9
    with pytest.raises(KeyError):
        percolation.measured_fractions({"trained": real["trained"]})
