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

__all__ = ["device_of", "eval_mode", "channels_last", "channels_last_weight", "has_forward_hooks", "fold_batchnorm",
           "for_input_gradients", "show_progress", "PROGRESS_ENV"]

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


@contextlib.contextmanager
def channels_last(model: nn.Module) -> Iterator[nn.Module]:
    """``with channels_last(model): ...`` runs the body with ``model``'s 4-d parameters and buffers in the
    channels-last memory format when the model has 2-d convolutions and they are on the CPU, then gives
    each tensor it moved its standard (contiguous) layout back -- also on an exception.

    oneDNN's convolutions and max-pooling are fastest on channels-last (NHWC) tensors, and a convolution
    whose weight is channels-last returns a channels-last output whatever its input's layout, so the whole
    network runs in it (issue 31: the input-gradient passes of the attacks, FVO and bypass 1.2-1.4x). The
    same arithmetic in another summation order: results agree with the standard layout to float32 rounding.
    Tensors already channels-last (e.g. inside :func:`mclib.train.fit`, which converts the whole model) are
    left alone, and so are their layouts afterwards. Only the layout changes: values and ``requires_grad``
    stay, a tensor is the same object, and afterwards it holds its original storage again.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    moved = []
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.dim() == 4 and t.device.type == "cpu" and not _is_channels_last(t):
                moved.append((t, t.data))
                t.data = t.data.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        for t, old in moved:       # the original storage back (values written in the block copied into it)
            if not torch.equal(old, t.data):
                old.copy_(t.data)
            t.data = old


def has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook would fire when ``model`` runs: on any of its modules, or a global one. A copy
    or a graph of such a model would skip the hook's side effect (feature capture), so it must run as it is."""
    from torch.nn.modules import module as M

    if M._global_forward_hooks or M._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    r"""For gradient passes on the inputs of an eval-mode model: a copy with every BatchNorm that directly follows a
    convolution (or linear layer) folded into it, or ``model`` itself where there is nothing to fold.

    In eval mode BatchNorm is affine, :math:`y = \gamma (z - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`, so with
    :math:`z = W * x + b` the pair is one layer with :math:`W' = W \gamma / \sqrt{\sigma^2 + \epsilon}` and
    :math:`b' = (b - \mu) \gamma / \sqrt{\sigma^2 + \epsilon} + \beta` (``torch.fx``'s ``fuse``): the same function
    in another rounding, without BatchNorm's forward and backward passes (ResNet-8's FVO step 1.3x, issue 31).

    ``model`` itself comes back -- the same object, the same numbers -- when it is in training mode, has no
    BatchNorm, has a forward hook (a hook must see its own module run) or cannot be traced by ``torch.fx``.
    The copy's parameters need no gradient: it is for gradients with respect to the inputs only. The
    user's model is not modified.
    """
    if model.training or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if has_forward_hooks(model):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(model)                 # a deep copy: the user's model is untouched
    except Exception:                        # not symbolically traceable (data-dependent control flow): as it is
        return model
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()


@contextlib.contextmanager
def for_input_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """``with for_input_gradients(model) as net: ...``: the form of ``model`` for many gradient passes with
    respect to its inputs (FVO, bypass): in eval mode (restored afterwards, :func:`eval_mode`), its BatchNorm
    folded into the layers before it (:func:`fold_batchnorm`) and in channels-last (:func:`channels_last`)."""
    with eval_mode(model):
        net = fold_batchnorm(model)
        with channels_last(net):
            yield net


def _is_channels_last(t: torch.Tensor) -> bool:
    """Laid out channels-last with unit channel stride: what oneDNN reads as NHWC. A tensor with one channel
    (a first convolution's weight on grey images) is contiguous in both layouts; only its strides tell."""
    return t.is_contiguous(memory_format=torch.channels_last) and t.stride(1) == 1


def channels_last_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` in the channels-last layout if it is a 4-d (convolution) tensor on the CPU, else ``w`` itself;
    differentiable (a copy in autograd). For weights formed per step (a curve's point :math:`w(t)`), where
    :func:`channels_last` has no parameters to move."""
    if w.dim() == 4 and w.device.type == "cpu":
        return w.to(memory_format=torch.channels_last)
    return w


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
