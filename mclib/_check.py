"""The shared argument checkers: one clear error per kind of bad value, raised where the value enters.

Every public function of mclib checks its arguments at its entry with these, so the messages are the same
everywhere: they name the argument, show the value, and say what is allowed. A function that needs a check
of a kind listed here calls the checker rather than writing its own.

Scalars
    :func:`positive_int`, :func:`non_negative_int` (bools and non-integral floats such as ``2.5`` refused;
    ``3.0`` is taken as ``3``), :func:`positive_float`, :func:`non_negative_float` (finite),
    :func:`probability` (finite, in [0, 1]), :func:`finite` (an array of finite numbers).
Tensors
    :func:`pixels` (a float batch of finite pixels in [0, 1]; 0-255 images are named as such),
    :func:`labels` (1-D integer class labels in ``[0, num_classes)``; whole-number floats are accepted,
    fractional ones, NaN and booleans are not).
Models
    :func:`model_output` (a model must return one logits tensor ``(N, classes)``, not a tuple or a dict),
    :func:`model_call` (the first forward pass of a procedure: input dtype against the model's, an input
    shape the model cannot take, and the output).
Resources
    :func:`fits_in_memory` (an allocation checked against the memory available before it is made).
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch
from torch import nn

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float", "probability", "finite",
           "pixels", "labels", "model_output", "model_call", "fits_in_memory", "available_memory"]


# ------------------------------------------------------------------------------------------- scalars
def _int(value, name: str, minimum: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, float, np.floating)):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise TypeError(f"{name} must be {what}, got {value!r} (not a whole number)")
    if int(value) < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_int(value, name: str) -> int:
    """``value`` as an ``int >= 1``, or one clear error (bools and non-integral floats refused)."""
    return _int(value, name, 1, "a positive int (>= 1)")


def non_negative_int(value, name: str) -> int:
    """``value`` as an ``int >= 0``, or one clear error (bools and non-integral floats refused)."""
    return _int(value, name, 0, "an int >= 0")


def _float(value, name: str, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if not (torch.is_tensor(value) and value.numel() == 1 and not value.dtype == torch.bool):
            raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {what}, got {v}")
    return v


def positive_float(value, name: str) -> float:
    """``value`` as a finite ``float > 0``, or one clear error."""
    v = _float(value, name, "a finite number > 0")
    if not v > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def non_negative_float(value, name: str) -> float:
    """``value`` as a finite ``float >= 0``, or one clear error."""
    v = _float(value, name, "a finite number >= 0")
    if v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def probability(value, name: str) -> float:
    """``value`` as a finite float in [0, 1], or one clear error."""
    v = _float(value, name, "a probability in [0, 1]")
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return v


def finite(values, name: str, what: str = "finite numbers") -> np.ndarray:
    """``values`` as a float array of finite numbers, or one clear error naming how many are NaN/Inf."""
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold {what}, got {values!r}") from None
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} NaN/Inf value(s) of {a.size} (got {values!r}); "
                         f"allowed: {what}")
    return a


# ------------------------------------------------------------------------------------------- tensors
def pixels(x, name: str = "x") -> torch.Tensor:
    """``x`` unchanged if it is a floating-point batch of finite pixels in [0, 1], else one clear error.

    mclib works in pixel space [0, 1] and clips to it: a 0-255 image would be silently clamped into an
    all-white image, and an integer image would make every random start and step round away.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor of images in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} has integer dtype {x.dtype}; mclib needs float images in [0, 1] "
                        f"(convert explicitly, e.g. {name}.float() / 255 for 8-bit images)")
    if x.numel() == 0:
        return x
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~torch.isfinite(x)).sum())} NaN/Inf values; pixels must be finite, in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        hint = ("; this looks like 0-255 pixels: divide by 255" if hi > 1 and lo >= 0 and hi <= 255
                else "; put normalisation inside the model (models.with_normalization)")
        raise ValueError(f"{name} has values in [{lo:g}, {hi:g}]; allowed: pixels in [0, 1]{hint}")
    return x


def labels(y, name: str = "y", n: int | None = None, num_classes: int | None = None,
           device: torch.device | str | None = None, range_later: bool = False) -> torch.Tensor:
    """``y`` as a 1-D int64 tensor of class labels, or one clear error.

    Accepted: a tensor, array or list of integers, or of floats that are whole numbers (``2.0``); refused:
    fractional floats (``2.9`` would silently become class 2), NaN, booleans, a shape other than ``(n,)``,
    and labels outside ``0..num_classes - 1`` (without ``num_classes``: negative labels). ``range_later``
    skips the range check, for a caller that checks it once the model's number of outputs is known.
    """
    try:
        t = y.detach() if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be integer class labels (a tensor, array or list of ints), "
                        f"got {type(y).__name__}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer class labels, got dtype {t.dtype}")
    want = f"batch size {n}, shape ({n},)" if n is not None else "shape (N,)"
    if t.dim() != 1 or (n is not None and t.shape[0] != n):
        raise ValueError(f"{name} must be 1-D with one class label per input ({want}); got shape {tuple(t.shape)}")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != t.round())
        if bad.any():
            raise TypeError(f"{name} must hold integer class labels; got dtype {t.dtype} with "
                            f"{int(bad.sum())} non-integral or NaN value(s), e.g. {float(t[bad][0])!r} "
                            f"(it would be truncated to a class)")
    t = t.long()
    if t.numel() and not range_later:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            allowed = f"0..{num_classes - 1}" if num_classes is not None else "labels >= 0"
            raise ValueError(f"{name} has labels in [{lo}, {hi}]; allowed: {allowed}"
                             + (f" ({num_classes} classes)" if num_classes is not None else ""))
    return t if device is None else t.to(device)


# ------------------------------------------------------------------------------------------- models
def model_output(out, name: str = "model", n: int | None = None) -> torch.Tensor:
    """``out`` if it is one logits tensor ``(N, classes)`` (``N = n`` when given), else one clear error."""
    if not torch.is_tensor(out):
        kind = type(out).__name__
        keys = f" with keys {list(out)[:5]}" if isinstance(out, dict) else (
            f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
        raise TypeError(f"{name} returned a {kind}{keys}; mclib needs a model that returns one logits tensor "
                        f"(N, classes): wrap it, e.g. nn.Sequential-style forward returning out[0] or out['logits']")
    if out.dim() != 2 or (n is not None and out.shape[0] != n):
        raise ValueError(f"{name} returned shape {tuple(out.shape)}; mclib needs logits of shape "
                         f"({n if n is not None else 'N'}, classes), one row per input")
    return out


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def model_call(model: nn.Module, x: torch.Tensor, name: str = "x", what: str = "model") -> torch.Tensor:
    """``model(x)`` checked: ``x``'s dtype against the model's, an input shape the model cannot take
    (``RuntimeError`` from inside the forward pass, re-raised naming ``x``'s shape), and the output
    (:func:`model_output`). For the first forward pass of a procedure; later passes call the model directly.
    """
    dt = _model_dtype(model)
    if dt is not None and x.is_floating_point() and x.dtype != dt:
        raise TypeError(f"{name} has dtype {x.dtype} but the {what}'s weights are {dt}; convert one of them "
                        f"(e.g. {name}.to({dt}) or model.to({x.dtype}))")
    try:
        out = model(x)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, getattr(torch, "OutOfMemoryError", ())) and any(s in first for s in ("shape", "size", "dimension", "Expected", "expected", "mat1", "channels")):
            raise ValueError(f"the {what} cannot take {name} of shape {tuple(x.shape)} ({first}); give inputs "
                             f"shaped as the {what} was trained on, e.g. (N, C, H, W) images") from err
        raise
    return model_output(out, what, len(x))


# ------------------------------------------------------------------------------------------- resources
def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(nbytes: float, what: str) -> None:
    """One clear error, before allocating, if ``nbytes`` exceed the memory available now."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs about {nbytes / 2**30:.3g} GiB but only {avail / 2**30:.3g} GiB of memory "
                          f"is available; choose a smaller size")
