"""Guards against degenerate evidence, shared by the judges of the three papers.

A claim about a *trained* model says nothing when the model is at chance: a constant-prediction network has no
barrier on any straight line (its loss is flat), no backdoor to repair and no error to inject, so a criterion
read on it would hold or fail for the wrong reason. The judges call :func:`at_chance` first and report such
evidence as ``inconclusive``, with a reason naming the model and its accuracy.

Chance is :math:`1/K` for :math:`K` classes. A model is *above chance* when the whole Wilson 95% interval of its
accuracy on :math:`n` images (:func:`mclib.stats.fraction_ci`) lies above :math:`1/K`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from mclib.claims.core import Verdict, inconclusive

#: Classes of every dataset the book uses (digits, MNIST, CIFAR-10, SVHN); a record may say otherwise.
DEFAULT_CLASSES = 10


def accuracy_interval(acc: float, n: int) -> tuple[float, float]:
    """Wilson 95% interval of an accuracy ``acc`` measured on ``n`` images."""
    from mclib.stats import fraction_ci

    n = int(n)
    k = int(round(float(acc) * n))
    iv = fraction_ci(np.r_[np.ones(k, dtype=bool), np.zeros(n - k, dtype=bool)])
    return float(iv.lo), float(iv.hi)


def at_chance(name: str, acc: Any, n: Any, num_classes: Any = None) -> Verdict | None:
    """``inconclusive`` when the model ``name`` is not shown to be above chance, else None.

    Not above chance: its accuracy ``acc`` (a fraction of ``n`` images) is missing or not finite, ``n`` is not a
    positive count, or the lower end of the accuracy's Wilson interval is at or below ``1 / num_classes``
    (``num_classes`` None: :data:`DEFAULT_CLASSES`).
    """
    k = DEFAULT_CLASSES if num_classes is None else int(num_classes)
    chance = 1.0 / k
    if acc is None or not isinstance(acc, (int, float)) or not math.isfinite(acc):
        return inconclusive(f"{name}: its accuracy was not measured ({acc!r}), so it is not shown to be above chance")
    if n is None or int(n) < 1:
        return inconclusive(f"{name}: its accuracy rests on no image (n={n!r})")
    lo, hi = accuracy_interval(acc, int(n))
    if lo <= chance:
        return inconclusive(f"{name} is at chance: accuracy {acc:.1%} [{lo:.1%}, {hi:.1%}] on {int(n)} images does not "
                            f"exceed the {chance:.0%} of guessing among {k} classes, so the measurement says nothing "
                            "about the claim (an untrained or collapsed model: too few steps, unsettled BatchNorm "
                            "statistics, or the wrong data)")
    return None


def recorded_at_chance(name: str, entry: Any, acc_key: str = "test_acc", n_key: str = "n_test") -> Verdict | None:
    """:func:`at_chance` on the accuracy an evidence entry records (``entry[acc_key]`` on ``entry[n_key]`` images,
    ``entry["num_classes"]`` classes if given); None when the entry records neither (older records are judged as
    before)."""
    if not hasattr(entry, "get") or (entry.get(acc_key) is None and entry.get(n_key) is None):
        return None
    return at_chance(name, entry.get(acc_key), entry.get(n_key), entry.get("num_classes"))
