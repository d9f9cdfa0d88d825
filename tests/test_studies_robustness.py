"""Tests of mclib.studies.robustness: robustness and the top input-Hessian eigenvalue along a weight-space path, the
C6 barrier intervals and map, the C7 correlations (the adversarially trained pair is test_hessian's fixture)."""
import numpy as np
import pytest
import torch

from mclib import curves, hessian, stats
from mclib.studies import robustness
from test_hessian import adv_pair  # noqa: F401 - a fixture, used by name


def test_robustness_along_a_curve(adv_pair):
    from mclib import data
    from mclib.attacks import pgd

    train, _, _, reg, adv, _ = adv_pair
    X, y = data.load("digits", "test", n=64)
    curve = curves.Curve([reg, adv], kind="bezier", num_bends=1)  # untrained bend: the straight line
    df, per = robustness.robustness_along(curve, [0.0, 0.5, 1.0], X, y, eps=0.2, steps=3, step_size=0.1, n_hessian=16,
                                 generator=torch.Generator().manual_seed(0), progress=False)
    assert list(df.columns) == ["t", "loss", "acc", "pgd_loss", "pgd_acc", "eig_mean", "eig_median"]
    assert per["pgd_loss"].shape == (3, 64) and per["eig"].shape == (3, 16)
    for row, m in ((0, reg), (2, adv)):
        assert df["loss"][row] == pytest.approx(train.evaluate(m, X, y)["loss"], rel=1e-5)
        assert df["eig_mean"][row] == pytest.approx(hessian.top_eigenvalue(m, X[:16], y[:16]).mean().item(), rel=1e-3)
    assert (df["pgd_loss"] >= df["loss"] - 1e-6).all()


def test_barrier_map_over_radii_and_paths(adv_pair):
    """The C6 map: one entry per (path, attack radius), profiles equal to independent evaluations, barriers from them."""
    from mclib import data
    from mclib.attacks import pgd

    train, _, _, reg, adv, _ = adv_pair
    X, y = data.load("digits", "test", n=48)
    bent = curves.Curve([reg, adv], num_bends=1)
    with torch.no_grad():  # move the bend off the line's midpoint, so the interior points differ
        for b in bent.bend_parameters():
            b.add_(0.05 * torch.randn(b.shape, generator=torch.Generator().manual_seed(1)))
    paths = [({"arch": "cnn", "path": "line"}, curves.line(reg, adv)), ({"arch": "cnn", "path": "bezier"}, bent)]
    kw = dict(ts=[0.0, 0.5, 1.0], X=X, y=y, steps=3, step_fraction=0.25, n_boot=200, seed=0)
    out = robustness.barrier_map(paths, [0.2, 0.1], generator=torch.Generator().manual_seed(5), **kw)
    assert [e["setting"] for e in out] == [{"arch": "cnn", "path": p, "eval_eps": e}
                                           for p in ("line", "bezier") for e in (0.2, 0.1)]
    first = out[0]["measured"]
    # t=0 of the line is the regular model; the first attack drawn from the generator is eps=0.2 there
    ref = pgd(reg, X, y, eps=0.2, steps=3, step_size=0.05, generator=torch.Generator().manual_seed(5))
    assert first["profile"]["pgd_loss"][0] == pytest.approx(train.evaluate(reg, ref, y)["loss"], rel=1e-5)
    assert first["profile"]["loss"][0] == pytest.approx(train.evaluate(reg, X, y)["loss"], rel=1e-5)
    assert first["profile"]["loss"][2] == pytest.approx(train.evaluate(adv, X, y)["loss"], rel=1e-5)
    for e in out:
        m = e["measured"]
        prof = m["profile"]
        assert m["robust_barrier"]["estimate"] == pytest.approx(curves.barrier_height(prof["pgd_loss"]), abs=1e-9)
        assert m["robust_barrier"]["threshold"] == pytest.approx(curves.barrier_threshold(prof["pgd_loss"]))
        assert m["standard_barrier"]["estimate"] == pytest.approx(curves.barrier_height(prof["loss"]), abs=1e-9)
        assert m["robust_barrier"]["lo"] <= m["robust_barrier"]["estimate"] + 1e-9 <= m["robust_barrier"]["hi"] + 2e-9
        assert all(p >= c - 1e-6 for p, c in zip(prof["pgd_loss"], prof["loss"]))
    # the endpoints the two paths share are attacked once: the same PGD losses at t = 0 and 1 on both paths
    for k in (0, 1):
        line_prof, bez_prof = out[k]["measured"]["profile"], out[k + 2]["measured"]["profile"]
        assert [line_prof["pgd_loss"][i] for i in (0, 2)] == [bez_prof["pgd_loss"][i] for i in (0, 2)]
        assert line_prof["pgd_loss"][1] != bez_prof["pgd_loss"][1]
    # a larger radius hurts the regular model more
    assert out[0]["measured"]["profile"]["pgd_loss"][0] > out[1]["measured"]["profile"]["pgd_loss"][0]
    again = robustness.barrier_map(paths, [0.2, 0.1], generator=torch.Generator().manual_seed(5), **kw)
    assert again == out  # deterministic for a seeded generator
    with pytest.raises(ValueError, match="eval_eps"):
        robustness.barrier_map(paths, [], **kw)
    with pytest.raises(ValueError, match="step_fraction"):
        robustness.barrier_map(paths, [0.1], **{**kw, "step_fraction": 0.0})
    with pytest.raises(ValueError, match="ts"):
        robustness.barrier_map(paths, [0.1], **{**kw, "ts": [0.5]})


def test_barrier_interval_from_per_input_losses():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 11)
    bump = 1.0 + 2.0 * np.sin(np.pi * t)                       # a barrier of height 2 above both ends
    per = bump[:, None] + 0.1 * rng.standard_normal((11, 400))
    iv = robustness.barrier_interval(per, n_boot=300, seed=0)
    assert iv["lo"] <= iv["estimate"] <= iv["hi"] and iv["n"] == 400
    assert iv["estimate"] == pytest.approx(curves.barrier_height(per.mean(1)))
    assert 1.9 < iv["lo"] and iv["hi"] < 2.1 and iv["threshold"] == pytest.approx(0.05 + 0.05 * per.mean(1)[[0, -1]].max())
    falling = (2.0 - t)[:, None] + 0.1 * rng.standard_normal((11, 400))
    assert robustness.barrier_interval(falling, n_boot=300)["hi"] < 0.1
    assert robustness.barrier_interval(per, n_boot=300, seed=0) == iv  # deterministic
    with pytest.raises(ValueError, match="per_input must be"):
        robustness.barrier_interval(np.ones(5))


def test_across_inputs_and_detrended_correlations():
    import pandas as pd

    rng = np.random.default_rng(1)
    eig = rng.gamma(2.0, 1.0, size=(3, 300))
    per = {"pgd_loss": np.concatenate([2 * eig + 0.1 * rng.standard_normal(eig.shape), np.zeros((3, 50))], 1), "eig": eig}
    c = robustness.across_inputs_correlation(per, 1, n_boot=300)
    assert c["n"] == 300 and c["pearson_lo"] > 0.95
    with pytest.raises(ValueError, match="t_index"):
        robustness.across_inputs_correlation(per, 3)
    t = np.linspace(0, 1, 11)
    df = pd.DataFrame({"t": t, "pgd_loss": 2 - t + 0.05 * np.sin(7 * t), "eig_mean": 1 - t + 0.05 * np.cos(5 * t)})
    d = robustness.detrended_correlation(df, n_boot=300)
    assert stats.correlation(df["pgd_loss"], df["eig_mean"], n_boot=300)["pearson"] > 0.95 > abs(d["pearson"])
