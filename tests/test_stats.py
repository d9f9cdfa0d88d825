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


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99, 1 - 0.05 / 7])
def test_fraction_ci_uses_scipy_stats_quantiles_bit_for_bit(level):
    """fraction_ci takes its quantiles from scipy.special (a lighter import): exactly scipy.stats' beta and normal
    quantiles, so no recorded interval moves with the change."""
    a = 1 - level
    for n in (1, 2, 7, 20, 61, 200, 1024):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            f = np.arange(n) < k
            ex, wi = stats.fraction_ci(f, level, method="exact"), stats.fraction_ci(f, level)
            assert ex.lo == (float(sps.beta.ppf(a / 2, k, n - k + 1)) if k > 0 else 0.0)
            assert ex.hi == (float(sps.beta.ppf(1 - a / 2, k + 1, n - k)) if k < n else 1.0)
            z, p = float(sps.norm.ppf((1 + level) / 2)), k / n
            denom = 1 + z * z / n
            half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
            assert wi.lo == max(0.0, (p + z * z / (2 * n)) / denom - half)


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
    theta = float(np.max(x))
    assert p.estimate == theta
    assert b.lo == pytest.approx(2 * theta - p.hi) and b.hi == pytest.approx(2 * theta - p.lo)
    # the estimate is bias-corrected, 2 theta - median(replicates), and lies inside its own interval
    rng = np.random.default_rng(1)
    reps = np.array([np.max(x[i]) for i in rng.integers(0, len(x), size=(300, len(x)))])
    assert b.estimate == pytest.approx(2 * theta - np.median(reps))
    assert b.lo <= b.estimate <= b.hi
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci(x, method="bca")


# --------------------------------------------------------------------------- Spearman (from the B3 study)
def test_spearman_ci():
    a = np.arange(50.0)
    r, lo, hi = stats.spearman_ci(a, 2 * a + 1, n_boot=200)
    assert r == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    y[:5] = np.inf  # censored radii tie at the top
    r, lo, hi = stats.spearman_ci(x, y, n_boot=500)
    assert r == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
    assert lo < r < hi


def _spearman_ci_before_stats(a, b, n_boot, level, seed):
    """som.spearman_ci as it was before it called mclib.stats.correlation (now stats.spearman_ci): the reference."""

    def rho(ra, rb):
        ra = ra - ra.mean(-1, keepdims=True)
        rb = rb - rb.mean(-1, keepdims=True)
        den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1), np.nan)

    r = float(rho(sps.rankdata(a), sps.rankdata(b)))
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    boots = rho(sps.rankdata(a[idx], axis=1), sps.rankdata(b[idx], axis=1))
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return r, float(lo), float(hi)


@pytest.mark.parametrize("seed", range(8))
def test_spearman_ci_is_unchanged_by_the_move_to_stats(seed):
    """Same seed, same resamples, same numbers -- with censored (inf) radii, ties and constant resamples."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 60))
    a = rng.normal(size=n)
    b = np.round(a * rng.uniform(-1, 1) + rng.normal(size=n))       # ties
    a[rng.random(n) < 0.3] = np.inf                                  # inputs no radius flips
    level = (0.95, 0.9, 0.8, 0.99)[seed % 4]
    assert stats.spearman_ci(a, b, n_boot=300, level=level, seed=seed) == \
        _spearman_ci_before_stats(a, b, 300, level, seed)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra, rb = sps.rankdata(a, axis=1), sps.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    return (ra * rb).sum(1) / np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))


def test_spearman_power_against_simulation():
    n = stats.spearman_n_for_power(0.15)
    # by hand: 3 + 1.06 * ((1.95996 + 0.84162) / atanh 0.15)^2 = 3 + 1.06 * 18.536^2 = 367.2 -> 368
    z = (1.959964 + 0.841621) / math.atanh(0.15)
    assert n == math.ceil(3 + 1.06 * z * z) == 368
    rng = np.random.default_rng(0)
    sims = 3000
    # the null's 2.5% / 97.5% quantiles of r_s, simulated: the half-width formula at 100 inputs
    null = _spearman_rows(rng.random((sims, 100)), rng.random((sims, 100)))
    lo, hi = np.quantile(null, [0.025, 0.975])
    assert (hi - lo) / 2 == pytest.approx(stats.spearman_halfwidth(100), abs=0.015)
    # power at n: bivariate normal with Pearson r = 2 sin(pi rho_s / 6) has Spearman rho_s = 0.15
    r = 2 * math.sin(math.pi * 0.15 / 6)
    crit = np.quantile(np.abs(_spearman_rows(rng.random((sims, n)), rng.random((sims, n)))), 0.95)
    a = rng.standard_normal((sims, n))
    b = r * a + math.sqrt(1 - r * r) * rng.standard_normal((sims, n))
    power = float((np.abs(_spearman_rows(a, b)) > crit).mean())
    assert power == pytest.approx(0.8, abs=0.04)


def test_power_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rho"):
        stats.spearman_n_for_power(0.0)
    with pytest.raises(ValueError, match="power"):
        stats.spearman_n_for_power(0.2, power=1.0)
    with pytest.raises(ValueError, match="n must"):
        stats.spearman_halfwidth(3)


def test_auroc_difference_ci_is_paired():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    lab = np.r_[np.zeros(150), np.ones(60)].astype(int)
    a = rng.normal(0, 1, 210) + 0.8 * lab                  # a moderate detector: wide AUROC interval
    b = a + rng.normal(0, 0.05, 210)                        # nearly the same detector
    d = stats.auroc_difference_ci(lab, a, b, n_boot=500, seed=0)
    assert d.estimate == pytest.approx(roc_auc_score(lab, a) - roc_auc_score(lab, b), abs=1e-12)
    own = stats.auroc_ci(lab, a, n_boot=500, seed=0)
    # paired: the shared difficulty cancels, so the difference is far better known than either AUROC
    assert d.hi - d.lo < 0.25 * (own.hi - own.lo) and d.lo <= 0 <= d.hi
    assert tuple(stats.auroc_difference_ci(lab, a, a, n_boot=50))[:3] == (0.0, 0.0, 0.0)
    better = stats.auroc_difference_ci(lab, a + 5.0 * lab, a, n_boot=500)
    assert better.lo > 0.1 and better.n == 210
    assert np.isnan(stats.auroc_difference_ci(np.ones(5), a[:5], b[:5]).estimate)
    with pytest.raises(ValueError, match="equal length"):
        stats.auroc_difference_ci(lab, a, b[:-1])


# -- paired differences (Newcombe 1998, method 10) ----------------------------------------------------------
def _paired_flags(rng, n, p_both, p_first_only, p_second_only):
    u = rng.random(n)
    first = (u < p_both) | ((u >= p_both) & (u < p_both + p_first_only))
    second = (u < p_both) | ((u >= p_both + p_first_only) & (u < p_both + p_first_only + p_second_only))
    return first, second


def test_paired_difference_covers_the_true_difference():
    # two nearby models on one test set: 93% both right, 2% only the first, 1% only the second (true D = 0.01)
    rng = np.random.default_rng(0)
    for n, (pa, pb, pc) in ((1000, (0.93, 0.02, 0.01)), (300, (0.80, 0.05, 0.05)), (2000, (0.90, 0.005, 0.001))):
        hits = 0
        reps = 1500
        for _ in range(reps):
            iv = stats.paired_difference_ci(*_paired_flags(rng, n, pa, pb, pc))
            hits += iv.lo <= pb - pc <= iv.hi
        # 95% nominal; Newcombe's method 10 keeps coverage close to it (his table III); 3 binomial SEs of slack
        assert hits / reps >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / reps), (n, hits / reps)


def test_paired_difference_matches_the_paired_wald_interval_at_large_counts():
    # many discordant units: the score interval tends to the normal one, se = sqrt((b + c) - (b - c)^2 / n) / n
    a, b, c, d = 80_000, 6_000, 4_000, 10_000
    n = a + b + c + d
    iv = stats.paired_difference_from_counts(a, b, c, d)
    se = np.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert iv.estimate == pytest.approx((b - c) / n)
    assert iv.lo == pytest.approx((b - c) / n - 1.959964 * se, abs=2e-4)
    assert iv.hi == pytest.approx((b - c) / n + 1.959964 * se, abs=2e-4)


def test_paired_difference_is_narrower_than_unpaired_for_nearby_models_and_antisymmetric():
    rng = np.random.default_rng(1)
    first, second = _paired_flags(rng, 1000, 0.93, 0.02, 0.01)
    iv = stats.paired_difference_ci(first, second)
    swapped = stats.paired_difference_ci(second, first)
    assert (swapped.estimate, swapped.lo, swapped.hi) == pytest.approx((-iv.estimate, -iv.hi, -iv.lo))
    p1, p2 = first.mean(), second.mean()
    unpaired_width = 2 * 1.96 * np.sqrt(p1 * (1 - p1) / 1000 + p2 * (1 - p2) / 1000)
    # 3% discordant units against 6-7% errors each: about sqrt(0.03) / sqrt(0.13) ~ 0.5 of the unpaired width
    assert iv.hi - iv.lo < 0.7 * unpaired_width
    # no discordant unit: the estimate is 0 and the interval still has a width (not certainty)
    none = stats.paired_difference_from_counts(990, 0, 0, 10)
    assert none.estimate == 0 and none.lo < 0 < none.hi


def test_paired_difference_refuses_bad_input():
    with pytest.raises(ValueError, match="same units"):
        stats.paired_difference_ci([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="second must be booleans"):
        stats.paired_difference_ci([1, 0], [2, 0])
    with pytest.raises(ValueError, match="non-negative integers"):
        stats.paired_difference_from_counts(3, -1, 0, 0)
    empty = stats.paired_difference_from_counts(0, 0, 0, 0)
    assert np.isnan(empty.estimate) and (empty.lo, empty.hi, empty.n) == (-1.0, 1.0, 0)
