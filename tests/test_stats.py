"""mclib.stats against scipy and closed forms."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from mclib import stats


def test_bootstrap_ci_of_a_mean_matches_the_normal_interval():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    ci = stats.bootstrap_ci(x, np.mean, n_boot=4000, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert ci.estimate == pytest.approx(x.mean())
    # percentile bootstrap of a mean ~ normal interval; its Monte-Carlo error at 4000 replicates is a few %
    assert ci.lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert ci.hi == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert ci.n == 400
    assert stats.bootstrap_ci(x, np.median, n_boot=300, seed=5) == stats.bootstrap_ci(x, np.median, n_boot=300, seed=5)


def test_bootstrap_ci_resamples_rows_and_rejects_bad_input():
    x = np.arange(1.0, 11.0)
    rows = np.stack([x, 2 * x], axis=1)  # rows are resampled whole: y/x stays exactly 2 in every resample
    ci = stats.bootstrap_ci(rows, lambda r: float(np.mean(r[:, 1] / r[:, 0])), n_boot=200)
    assert (ci.estimate, ci.lo, ci.hi) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="n_boot"):
        stats.bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="samples"):
        stats.bootstrap_ci([])


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (10, 20), (20, 20), (3, 7), (180, 200)])
def test_fraction_ci_is_scipys_wilson_interval(k, n):
    ci = stats.fraction_ci(np.arange(n) < k)
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert ci.estimate == k / n and ci.n == n
    assert ci.lo == pytest.approx(ref.low, abs=1e-12) and ci.hi == pytest.approx(ref.high, abs=1e-12)


def test_fraction_ci_degenerate_and_bad_input():
    empty = stats.fraction_ci(np.array([], dtype=bool))
    assert math.isnan(empty.estimate) and (empty.lo, empty.hi) == (0.0, 1.0)
    with pytest.raises(ValueError, match="flags"):
        stats.fraction_ci([0.5, 1.0])


def test_correlation_matches_scipy_and_the_interval_covers_the_truth():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.6 * x + 0.8 * rng.normal(size=300)  # population rho = 0.6
    out = stats.correlation(x, y, n_boot=2000, seed=0)
    pr, sr = sps.pearsonr(x, y), sps.spearmanr(x, y)
    assert out["pearson"] == pytest.approx(pr[0], abs=1e-12)
    assert out["pearson_p"] == pytest.approx(pr[1], rel=1e-6)
    assert out["spearman"] == pytest.approx(sr[0], abs=1e-12)
    assert out["spearman_p"] == pytest.approx(sr[1], rel=1e-6)
    # Fisher-z interval as the independent reference for the width
    z, se = math.atanh(pr[0]), 1 / math.sqrt(300 - 3)
    assert out["pearson_lo"] == pytest.approx(math.tanh(z - 1.96 * se), abs=0.03)
    assert out["pearson_hi"] == pytest.approx(math.tanh(z + 1.96 * se), abs=0.03)
    assert out["pearson_lo"] < 0.6 < out["pearson_hi"] and out["spearman_lo"] < out["spearman"] < out["spearman_hi"]


def test_correlation_of_two_profiles_matches_scipy_and_is_deterministic():
    rng = np.random.default_rng(0)
    a = np.linspace(0, 1, 15)
    b = 2 * a + 0.2 * rng.standard_normal(15)
    c = stats.correlation(a, b, n_boot=500, seed=1)
    assert c["pearson"] == pytest.approx(sps.pearsonr(a, b)[0])
    assert c["spearman"] == pytest.approx(sps.spearmanr(a, b)[0])
    assert c["pearson_lo"] <= c["pearson"] <= c["pearson_hi"] <= 1.0
    assert c["spearman_lo"] <= c["spearman_hi"]
    assert stats.correlation(a, b, n_boot=500, seed=1) == c  # deterministic
    with pytest.raises(ValueError):
        stats.correlation([1, 2], [1, 2])


def test_correlation_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        stats.correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        stats.correlation([1, 2, np.inf], [1, 2, 3])


def test_partial_correlation_equals_the_closed_form_for_one_covariate():
    rng = np.random.default_rng(3)
    t = rng.normal(size=200)
    x = t + 0.5 * rng.normal(size=200)
    y = t + 0.5 * rng.normal(size=200)  # x and y share only t: partial correlation ~ 0
    out = stats.partial_correlation(x, y, t, n_boot=1000, seed=0)
    r = lambda a, b: sps.pearsonr(a, b)[0]
    ref = (r(x, y) - r(x, t) * r(y, t)) / math.sqrt((1 - r(x, t) ** 2) * (1 - r(y, t) ** 2))
    assert out["pearson"] == pytest.approx(ref, abs=1e-10)
    rx, ry, rt = sps.rankdata(x), sps.rankdata(y), sps.rankdata(t)
    ref_s = (r(rx, ry) - r(rx, rt) * r(ry, rt)) / math.sqrt((1 - r(rx, rt) ** 2) * (1 - r(ry, rt) ** 2))
    assert out["spearman"] == pytest.approx(ref_s, abs=1e-10)
    assert r(x, y) > 0.7 and out["pearson_lo"] < 0 < out["pearson_hi"]
    assert out["k"] == 1 and 0 <= out["pearson_p"] <= 1


def test_partial_correlation_detrends_two_monotone_profiles():
    t = np.linspace(0, 1, 11)
    wiggle = np.array([0, 1, -1, 1, -1, 1, -1, 1, -1, 1, 0], dtype=float) * 0.01
    a, b = -t + wiggle, -2 * t - wiggle  # both fall; their deviations from the trend are opposite
    assert stats.correlation(a, b, n_boot=200)["pearson"] > 0.99
    assert stats.partial_correlation(a, b, t, n_boot=200)["pearson"] < -0.9
    with pytest.raises(ValueError, match="given"):
        stats.partial_correlation(a, b, t[:5])
    with pytest.raises(ValueError, match="at least"):
        stats.partial_correlation(a[:3], b[:3], t[:3])


def test_is_monotone():
    assert stats.is_monotone([3, 2, 2, 1]) and stats.is_monotone([1, 2, 3])
    assert not stats.is_monotone([1, 3, 2]) and stats.is_monotone([1, 3, 2.9], tol=0.2)


def test_auroc_matches_sklearn_and_its_interval_is_stratified():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    lab = np.r_[np.ones(80), np.zeros(120)].astype(bool)
    s = np.r_[rng.normal(1, 1, 80), rng.normal(0, 1, 120)].round(1)  # rounding makes ties
    assert stats.auroc(lab, s) == pytest.approx(roc_auc_score(lab, s), abs=1e-12)
    ci = stats.auroc_ci(lab, s, n_boot=500, seed=0)
    assert ci.lo < ci.estimate < ci.hi and ci.n == 200
    assert math.isnan(stats.auroc(np.ones(3), [1, 2, 3]))
    assert math.isnan(stats.auroc_ci(np.ones(3), [1, 2, 3]).lo)


def test_two_sample_ci_of_a_ratio_of_medians():
    a, b = np.full(30, 6.0), np.full(40, 2.0)
    assert tuple(stats.two_sample_ci(a, b, lambda p, q: np.median(p) / np.median(q), n_boot=50)) == (3.0, 3.0, 3.0, 70)
    with pytest.raises(ValueError, match="a and b"):
        stats.two_sample_ci([], b, lambda p, q: 0.0)


def test_basic_bootstrap_reflects_the_percentiles_about_the_estimate():
    x = np.random.default_rng(2).exponential(size=50)
    p = stats.bootstrap_ci(x, np.max, n_boot=300, seed=1)
    b = stats.bootstrap_ci(x, np.max, n_boot=300, seed=1, method="basic")
    assert b.estimate == p.estimate
    assert b.lo == pytest.approx(2 * p.estimate - p.hi) and b.hi == pytest.approx(2 * p.estimate - p.lo)
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci(x, method="bca")
