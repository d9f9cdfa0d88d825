"""Sequential samples with their error controlled across looks: draw units until a claim is decided, or a budget.

A claim judged on sampled units (pairs of inputs, test inputs, inputs for a correlation) asks whether an interval
lies wholly on one side of a threshold (:func:`mclib.claims.core.compare_interval`). Drawing more units *because*
the interval still spans the threshold, and looking again at the same level, is optional stopping: each look is
another chance of an interval that misses the truth, so three looks at a 95% interval decide wrongly more often
than 5% of the time.

The design here fixes the looks before any data are seen and spends the error across them:

* the looks are sample sizes ``n_1 < n_2 < ... < n_K`` (:meth:`Design.doubling`: ``first, 2 first, 4 first, ...`` up
  to the ``budget``, a per-preset number);
* every look computes its interval at level ``1 - alpha / K`` (Bonferroni alpha spending). By the union bound the
  probability that *any* look's interval misses the true value is at most ``K * alpha / K = alpha``, whatever the
  dependence between looks, so a decision taken at whichever look first decides is wrong with probability at most
  ``alpha``: the guarantee of a confidence sequence, over the pre-declared looks only. It costs width (at K = 5
  looks each interval is a 99% interval) and pays it back by stopping early when the effect is clear;
* sampling stops at the first look whose interval lies wholly on one side of the threshold, or at the budget.

The maintained libraries for anytime-valid intervals were considered first: ``confseq`` ships only as a source
distribution that compiles C++ against Boost (no wheel), and ``expectation`` requires Python 3.12, so neither
installs on this project's machines; the Bonferroni design needs no more than the intervals :mod:`mclib.stats`
already computes, at another level.

When the budget cannot decide, :func:`units_to_decide` says how many units would: an interval's half-width shrinks as
``1/sqrt(n)``, so at ``n`` units with half-width ``h`` (on the threshold's side) and distance ``d`` from estimate to
threshold, about ``n (h/d)^2`` units would put the whole interval on one side. The reason sentence of an undecided
claim quotes it, so a reader knows what the paper preset or a GPU would settle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from mclib.stats import Interval

__all__ = ["Design", "Sample", "run", "decision", "units_to_decide"]


@dataclass(frozen=True)
class Design:
    """The pre-declared looks (sample sizes, increasing) and the total error ``alpha`` spent over them."""

    looks: tuple[int, ...]
    alpha: float = 0.05

    def __post_init__(self):
        looks = tuple(self.looks)
        if not looks or any(isinstance(n, bool) or int(n) != n or n < 1 for n in looks):
            raise ValueError(f"looks must be positive integers, got {self.looks!r}")
        if any(b <= a for a, b in zip(looks, looks[1:])):
            raise ValueError(f"looks must increase, got {self.looks!r}")
        if not 0 < float(self.alpha) < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        object.__setattr__(self, "looks", tuple(int(n) for n in looks))

    @classmethod
    def doubling(cls, first: int, budget: int, alpha: float = 0.05) -> "Design":
        """Looks at ``first, 2 first, 4 first, ...`` and last at ``budget`` (``first <= budget``)."""
        if isinstance(first, bool) or int(first) != first or first < 1:
            raise ValueError(f"first must be a positive integer, got {first!r}")
        if isinstance(budget, bool) or int(budget) != budget or budget < first:
            raise ValueError(f"budget must be an integer >= first ({first}), got {budget!r}")
        looks = [int(first)]
        while looks[-1] < budget:
            looks.append(min(2 * looks[-1], int(budget)))
        return cls(tuple(looks), alpha)

    @property
    def level(self) -> float:
        """The level of every look's interval: ``1 - alpha / K`` (Bonferroni spending over K looks)."""
        return 1.0 - float(self.alpha) / len(self.looks)


def decision(iv: Interval | dict, threshold: float, above: bool = True) -> str | None:
    """``"holds"`` / ``"fails"`` when the interval lies wholly on one side of ``threshold`` (the rule of
    :func:`mclib.claims.core.compare_interval`), else None. Non-finite bounds decide nothing."""
    lo, hi = (iv["lo"], iv["hi"]) if isinstance(iv, dict) else (iv.lo, iv.hi)
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if above:
        return "holds" if lo >= threshold else "fails" if hi < threshold else None
    return "holds" if hi <= threshold else "fails" if lo > threshold else None


def units_to_decide(iv: Interval | dict, threshold: float) -> int | None:
    """About how many units would decide an interval that spans ``threshold``: ``n (h/d)^2``.

    ``h`` is the half-width on the threshold's side of the estimate, ``d = |estimate - threshold|``; the half-width
    of a mean, a fraction or a median shrinks as ``1/sqrt(n)``. None when the estimate sits on the threshold (no
    sample size decides it) or the interval is not finite.
    """
    est, lo, hi, n = ((iv["estimate"], iv["lo"], iv["hi"], iv.get("n")) if isinstance(iv, dict)
                      else (iv.estimate, iv.lo, iv.hi, iv.n))
    if None in (est, lo, hi, n) or not all(math.isfinite(v) for v in (est, lo, hi)) or not n:
        return None
    d = abs(est - threshold)
    if d == 0:
        return None
    h = (est - lo) if threshold < est else (hi - est)
    return max(int(n) + 1, math.ceil(n * (h / d) ** 2 - 1e-9))  # the tolerance: 0.2/0.05 is not exactly 4 in floats


@dataclass
class Sample:
    """What a sequential sample saw: the looks taken, the interval at each, and how it ended.

    ``interval`` is the last look's interval (at :attr:`Design.level`); ``status`` is ``"holds"``, ``"fails"`` or
    None (undecided at the budget); ``needed`` is :func:`units_to_decide` of an undecided last interval.
    """

    design: Design
    threshold: float
    above: bool
    looks: list[int] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)

    @property
    def interval(self) -> Interval:
        return self.intervals[-1]

    @property
    def status(self) -> str | None:
        return decision(self.interval, self.threshold, self.above)

    @property
    def needed(self) -> int | None:
        return None if self.status else units_to_decide(self.interval, self.threshold)

    def record(self) -> dict:
        """The plain dict a claim record stores: the last interval (``estimate, lo, hi, n``) with ``level``,
        ``looks`` (the sample sizes inspected, of the design's planned ones), ``planned`` and ``needed``."""
        return {**self.interval._asdict(), "level": self.design.level, "looks": list(self.looks),
                "planned": list(self.design.looks), "needed": self.needed}


def run(design: Design, measure: Callable[[int, float], Interval], threshold: float, above: bool = True,
        stop: Callable[[Interval], bool] | None = None) -> Sample:
    """Look at ``design.looks`` in order until one decides: ``measure(n, level)`` returns the interval over the
    first ``n`` units at ``level`` (the caller draws and evaluates only the units it has not seen, so the first
    units of a larger look are those of the smaller ones). Returns the :class:`Sample`.

    ``stop(interval)`` replaces "the interval decides" as the rule to stop early (e.g. "decided, and enough pairs
    with a barrier for the next claim"); any rule keeps the error bound, which holds for every look at once.
    """
    sample = Sample(design, float(threshold), bool(above))
    for n in design.looks:
        iv = measure(n, design.level)
        if not isinstance(iv, Interval):
            iv = Interval(*iv)
        sample.looks.append(n)
        sample.intervals.append(iv)
        if (stop(iv) if stop is not None else decision(iv, threshold, above) is not None):
            break
    return sample
