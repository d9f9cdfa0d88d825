"""mclib.torchutil: the device of a model and eval mode as a context manager."""
import pytest
import torch
from torch import nn

from mclib.torchutil import device_of, eval_mode


def test_device_of_parameter_buffer_and_empty():
    assert device_of(nn.Linear(2, 2)) == torch.device("cpu")
    assert device_of(nn.BatchNorm1d(3, affine=False)) == torch.device("cpu")  # buffers only
    assert device_of(nn.ReLU()) == torch.device("cpu")
    meta = nn.Linear(2, 2, device="meta")
    assert device_of(meta) == torch.device("meta")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        device_of("not a model")


def test_device_of_explicit_device_and_default():
    assert device_of(nn.Linear(2, 2), "meta") == torch.device("meta")          # the caller's choice wins
    assert device_of(nn.Linear(2, 2), torch.device("cpu")) == torch.device("cpu")
    assert device_of(nn.ReLU(), default="meta") == torch.device("meta")        # parameterless: the default
    assert device_of(nn.Linear(2, 2, device="meta"), default="cpu") == torch.device("meta")  # default only then


def test_eval_mode_sets_eval_and_restores():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(0.5))
    net.train()
    with eval_mode(net) as m:
        assert m is net
        assert not any(mod.training for mod in net.modules())
    assert all(mod.training for mod in net.modules())
    net.eval()
    with eval_mode(net):
        pass
    assert not any(mod.training for mod in net.modules())


def test_eval_mode_restores_mixed_modes_and_on_exception():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training model keeps its mode
    before = [mod.training for mod in net.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(net):
            raise RuntimeError("boom")
    assert [mod.training for mod in net.modules()] == before == [True, True, False]


def test_eval_mode_rejects_non_modules():
    with pytest.raises(TypeError, match="got int"):
        with eval_mode(3):
            pass
