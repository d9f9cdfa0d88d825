"""The sequential design: pre-declared looks, the error spent over them, and the units an undecided sample needs."""
import numpy as np
import pytest

from mclib import sequential, stats


def _wrong_decisions(design, p, threshold, reps, level=None, seed=0):
    """Share of simulated samples (true fraction ``p``) that a sequential run decides either way."""
    rng = np.random.default_rng(seed)
    decided = 0
    for _ in range(reps):
        flags = rng.random(design.looks[-1]) < p
        sample = sequential.run(design, lambda n, lv: stats.fraction_ci(flags[:n], level or lv, method="exact"),
                                threshold)
        decided += sample.status is not None
    return decided / reps


@pytest.mark.parametrize("threshold", [0.05, 0.5, 0.9])
def test_at_the_threshold_decisions_stay_below_alpha_across_looks(threshold):
    """Under the null (true value on the threshold) every decision is wrong; over all looks they stay <= alpha.

    The same looks at a plain 95% interval each (optional stopping, the old A1 rule) decide far more often: the
    check discriminates."""
    design = sequential.Design.doubling(20, 640)  # 6 looks
    assert design.looks == (20, 40, 80, 160, 320, 640) and design.level == pytest.approx(1 - 0.05 / 6)
    rate = _wrong_decisions(design, threshold, threshold, reps=600)
    assert rate <= 0.05, rate
    naive = _wrong_decisions(design, threshold, threshold, reps=600, level=0.95)
    assert naive > 0.08, naive


def test_a_clear_effect_stops_at_the_first_look_and_a_close_one_goes_to_the_budget():
    design = sequential.Design.doubling(50, 800)
    clear = np.r_[np.ones(40), np.zeros(760)].astype(bool)  # 80% of the first 50 against a 5% threshold
    s = sequential.run(design, lambda n, lv: stats.fraction_ci(clear[:n], lv, method="exact"), 0.05)
    assert s.looks == [50] and s.status == "holds" and s.needed is None
    close = np.zeros(800, bool)
    close[::19] = True  # 5.3%, on top of the 5% threshold
    s = sequential.run(design, lambda n, lv: stats.fraction_ci(close[:n], lv, method="exact"), 0.05)
    assert s.looks == list(design.looks) and s.status is None
    rec = s.record()
    assert rec["n"] == 800 and rec["looks"] == rec["planned"] and rec["needed"] > 800


def test_units_to_decide_follows_the_square_root_law():
    # estimate 0.2, half-width 0.1 below it, threshold 0.15: half-width must shrink to 0.05, so 4x the units
    assert sequential.units_to_decide({"estimate": 0.2, "lo": 0.1, "hi": 0.3, "n": 100}, 0.15) == 400
    # threshold above the estimate: the upper half-width counts
    assert sequential.units_to_decide({"estimate": 0.2, "lo": 0.15, "hi": 0.4, "n": 100}, 0.3) == 400
    assert sequential.units_to_decide({"estimate": 0.3, "lo": 0.1, "hi": 0.4, "n": 10}, 0.3) is None


def test_exact_fraction_interval_against_scipy():
    from scipy.stats import binomtest

    flags = np.r_[np.ones(7), np.zeros(33)].astype(bool)
    iv = stats.fraction_ci(flags, 0.95, method="exact")
    ref = binomtest(7, 40).proportion_ci(0.95, method="exact")
    assert iv.estimate == 7 / 40 and iv.lo == pytest.approx(ref.low, abs=1e-12) and iv.hi == pytest.approx(ref.high, abs=1e-12)
    assert stats.fraction_ci(np.zeros(10, bool), method="exact").lo == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"looks": ()}, "looks must be positive integers"), ({"looks": (10, 10)}, "looks must increase"),
    ({"looks": (10, 2.5)}, "positive integers"), ({"looks": (10,), "alpha": 1.5}, "alpha must lie in"),
])
def test_bad_designs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sequential.Design(**kwargs)
    with pytest.raises(ValueError, match="budget must be an integer >= first"):
        sequential.Design.doubling(50, 20)
