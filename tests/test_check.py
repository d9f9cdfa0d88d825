"""The shared argument checkers of mclib._check: one test per kind of argument (issue 32)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from mclib import _check as check


@pytest.mark.parametrize("value, expect", [(3, 3), (np.int64(4), 4), (3.0, 3), (1, 1)])
def test_positive_int_accepts_whole_numbers(value, expect):
    got = check.positive_int(value, "n")
    assert got == expect and type(got) is int


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, r"n must be a positive int \(>= 1\), got True \(bool\)"),
    (2.5, TypeError, r"n must be a positive int \(>= 1\), got 2.5 \(not a whole number\)"),
    (float("nan"), TypeError, "not a whole number"),
    ("3", TypeError, r"got '3' \(str\)"),
    (0, ValueError, r"n must be a positive int \(>= 1\), got 0"),
    (-2, ValueError, "got -2"),
])
def test_positive_int_refuses(value, error, message):
    with pytest.raises(error, match=message):
        check.positive_int(value, "n")


def test_non_negative_int():
    assert check.non_negative_int(0, "k") == 0
    with pytest.raises(ValueError, match="k must be an int >= 0, got -1"):
        check.non_negative_int(-1, "k")


@pytest.mark.parametrize("checker, value, message", [
    (check.positive_float, 0.0, "a must be a finite number > 0, got 0.0"),
    (check.positive_float, -0.05, "got -0.05"),
    (check.positive_float, float("nan"), "a must be a finite number > 0, got nan"),
    (check.non_negative_float, -1, "a must be a finite number >= 0, got -1"),
    (check.non_negative_float, float("inf"), "got inf"),
    (check.probability, 1.5, r"a must be a probability in \[0, 1\], got 1.5"),
    (check.probability, float("nan"), "got nan"),
])
def test_float_checkers_refuse(checker, value, message):
    with pytest.raises(ValueError, match=message):
        checker(value, "a")


def test_float_checkers_accept_and_refuse_types():
    assert check.positive_float(np.float32(0.5), "a") == 0.5 and check.non_negative_float(0, "a") == 0.0
    assert check.probability(torch.tensor(0.25), "a") == 0.25
    with pytest.raises(TypeError, match=r"a must be a finite number > 0, got True \(bool\)"):
        check.positive_float(True, "a")
    with pytest.raises(TypeError, match="got 'x'"):
        check.non_negative_float("x", "a")


def test_finite():
    assert check.finite([1, 2.5], "v").tolist() == [1.0, 2.5]
    with pytest.raises(ValueError, match=r"v holds 2 NaN/Inf value\(s\) of 3"):
        check.finite([float("nan"), 1, float("inf")], "v")


def test_pixels():
    x = torch.rand(2, 1, 3, 3)
    assert check.pixels(x) is x
    with pytest.raises(ValueError, match=r"x has values in .*; allowed: pixels in \[0, 1\]; this looks like 0-255 pixels: "
                                         "divide by 255"):
        check.pixels(x * 255)
    with pytest.raises(ValueError, match="put normalisation inside the model"):
        check.pixels(x - 0.5)
    with pytest.raises(TypeError, match=r"integer dtype torch.uint8.*x.float\(\) / 255"):
        check.pixels((x * 255).byte())
    with pytest.raises(ValueError, match="x holds 1 NaN/Inf"):
        check.pixels(torch.tensor([[0.5, float("nan")]]))


@pytest.mark.parametrize("y", [[0, 2, 1], np.array([0, 2, 1]), torch.tensor([0, 2, 1]), torch.tensor([0.0, 2.0, 1.0])])
def test_labels_accepts(y):
    t = check.labels(y, "y", n=3, num_classes=3)
    assert t.dtype == torch.int64 and t.tolist() == [0, 2, 1]


@pytest.mark.parametrize("y, error, message", [
    (torch.tensor([0.0, 2.9, 1.0]), TypeError, r"y must hold integer class labels; got dtype torch.float32 with 1 "
                                               r"non-integral or NaN value\(s\), e.g. 2.9"),
    (torch.tensor([0.0, float("nan"), 1.0]), TypeError, "non-integral or NaN"),
    (torch.tensor([True, False, True]), TypeError, "dtype torch.bool"),
    (torch.zeros(3, 1, dtype=torch.long), ValueError, r"y must be 1-D with one class label per input \(batch size 3, "
                                                      r"shape \(3,\)\); got shape \(3, 1\)"),
    ([0, 1], ValueError, r"got shape \(2,\)"),
    ([0, 3, 1], ValueError, r"y has labels in \[0, 3\]; allowed: 0..2 \(3 classes\)"),
    ([0, -1, 1], ValueError, r"y has labels in \[-1, 1\]; allowed: 0..2"),
    (["a", "b", "c"], TypeError, "y must be integer class labels"),
])
def test_labels_refuses(y, error, message):
    with pytest.raises(error, match=message):
        check.labels(y, "y", n=3, num_classes=3)


def test_labels_range_later_and_without_classes():
    assert check.labels([0, 7], "y", range_later=True).tolist() == [0, 7]
    with pytest.raises(ValueError, match=r"allowed: labels >= 0"):
        check.labels([0, -7], "y")


def test_model_output_and_call():
    lin = nn.Linear(4, 3)
    x = torch.rand(5, 4)
    assert check.model_call(lin, x).shape == (5, 3)
    with pytest.raises(TypeError, match=r"model returned a tuple of 2 items; mclib needs a model that returns one"):
        check.model_output((x, x))
    with pytest.raises(TypeError, match=r"model returned a dict with keys \['out'\]"):
        check.model_output({"out": x})
    with pytest.raises(ValueError, match=r"model returned shape \(5,\); mclib needs logits of shape \(5, classes\)"):
        check.model_output(x[:, 0], n=5)
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the model's weights are torch.float32"):
        check.model_call(lin, x.double())
    with pytest.raises(ValueError, match=r"the model cannot take x of shape \(5, 7\) \(mat1 and mat2 shapes"):
        check.model_call(lin, torch.rand(5, 7))


def test_fits_in_memory():
    check.fits_in_memory(1024, "a small array")
    avail = check.available_memory()
    assert avail is None or avail > 0
    if avail is not None:
        with pytest.raises(MemoryError, match=r"a huge array needs about .* GiB but only .* GiB of memory is available"):
            check.fits_in_memory(avail * 4.0 + 2 ** 40, "a huge array")
    assert math.isfinite(float(avail or 0))
