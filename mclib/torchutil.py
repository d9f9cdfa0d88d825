"""Small torch helpers every module needs: where a model lives, and evaluating it in eval mode.

* :func:`device_of` -- where a model's inputs go: a caller's explicit ``device``, else the device of the model's
  first parameter (or buffer), else ``default`` (the CPU) for a model with neither;
* :func:`eval_mode` -- a context manager that puts a model in eval mode and restores every submodule's own
  mode afterwards, also when the body raises;
* :func:`show_progress` -- whether a long call shows its progress bar (``progress=None``: on a terminal only,
  and never with ``MCLIB_PROGRESS=0``).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
from typing import Iterator

import torch
from torch import nn

__all__ = ["device_of", "eval_mode", "show_progress", "PROGRESS_ENV"]

#: set to ``0`` to silence every progress bar of the library (also an explicit ``progress=True``)
PROGRESS_ENV = "MCLIB_PROGRESS"


def device_of(model: nn.Module, device: torch.device | str | None = None,
              default: torch.device | str | None = None) -> torch.device:
    """The device ``model``'s inputs go to: ``device`` when the caller names one (an explicit choice wins), else
    the device of the model's first parameter, else of its first buffer, else ``default`` (the CPU when None)
    for a model with neither.

    mclib's models live on one device, so the first tensor names it (a model split over devices has no
    single answer, and the first tensor is where its inputs go). ``default`` lets a function keep a
    parameterless model on its inputs' device (``default=x.device``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if device is not None:
        return torch.device(device)
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device(default) if default is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model): ...`` runs the body with ``model`` in eval mode (BatchNorm on running
    statistics, no dropout), then restores the mode every submodule had before -- also on an exception.

    Restored per submodule, not with one ``model.train(was)``: a training model that keeps some layers in
    eval mode on purpose (frozen BatchNorm) gets exactly its old modes back. Modules are visited parents
    first and restored through their own ``train`` (which may do more than set the flag), so a child
    whose parent's ``train`` changed it is corrected afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in modes:
            if m.training != was:
                m.train(was)


def show_progress(progress: bool | None) -> bool:
    """Whether a long-running call shows its tqdm bar: ``progress=None`` (the default of the calls that can
    run for more than a few seconds: :func:`mclib.detect.extract`, :func:`mclib.curves.evaluate_along`,
    :func:`mclib.hessian.top_eigenvalue`, ...) shows it when standard error is a terminal, so executed
    notebooks, logs and tests stay clean; ``True``/``False`` is the caller's choice. The environment variable
    ``MCLIB_PROGRESS=0`` turns every bar off, whatever the argument."""
    if os.environ.get(PROGRESS_ENV, "").strip() == "0":
        return False
    if progress is not None:
        return bool(progress)
    err = sys.stderr
    return bool(err is not None and hasattr(err, "isatty") and err.isatty())
