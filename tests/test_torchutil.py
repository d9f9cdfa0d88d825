"""mclib.torchutil: the device of a model and eval mode as a context manager."""
import pytest
import torch
from torch import nn

from mclib.torchutil import channels_last, channels_last_weight, device_of, eval_mode


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


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 3))


def test_channels_last_moves_4d_tensors_and_restores_them_also_on_exception():
    """Issue 31: inside the block the convolution weights are channels-last (the same objects, same values,
    same requires_grad); afterwards they are contiguous again, also when the body raises."""
    net = _conv_net()
    w = net[2].weight
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.rand(5, 1, 8, 8)
    ref = net(x)
    with channels_last(net) as m:
        assert m is net and net[2].weight is w and w.requires_grad
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        out = net(x)
    # the same arithmetic in another order: a float32 dot product of length n = 4*3*3 (then 8*4*4) rounds within
    # n * u relative to the sum of |terms|; the logits here are O(1)
    assert torch.allclose(out, ref, rtol=0, atol=128 * 2.0 ** -24 * 4)
    assert all(p.is_contiguous() for p in net.parameters())
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with channels_last(net):
            raise RuntimeError("boom")
    assert all(p.is_contiguous() for p in net.parameters())


def test_channels_last_leaves_tensors_already_channels_last_and_models_without_convolutions():
    net = _conv_net()
    net[2].weight.data = net[2].weight.data.contiguous(memory_format=torch.channels_last)
    with channels_last(net):
        pass
    assert not net[2].weight.is_contiguous()                 # it was channels-last before: left so
    mlp = nn.Sequential(nn.Linear(4, 4))
    p = torch.nn.Parameter(torch.ones(2, 3, 4, 5))
    mlp.register_parameter("extra", p)
    with channels_last(mlp):
        assert p.is_contiguous()                             # no convolution: nothing moved
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        with channels_last("net"):
            pass


def test_channels_last_weight_is_a_differentiable_layout_copy():
    w = torch.rand(8, 4, 3, 3, requires_grad=True)
    c = channels_last_weight(w)
    assert c.is_contiguous(memory_format=torch.channels_last) and torch.equal(c, w)
    (c * torch.arange(c.numel()).view_as(c)).sum().backward()
    assert torch.equal(w.grad, torch.arange(w.numel()).view_as(w).float())
    v = torch.rand(3, 4)
    assert channels_last_weight(v) is v


def test_channels_last_sets_unit_channel_strides_on_one_channel_weights_and_gives_the_storage_back():
    """A (16, 1, 3, 3) weight is 'contiguous' in both layouts; oneDNN reads its strides. Inside the block its
    channel stride is 1 (NHWC), so the convolution's output is channels-last; afterwards the same storage."""
    net = _conv_net()
    w = net[0].weight
    ptr = w.data_ptr()
    with channels_last(net):
        assert w.stride(1) == 1
        assert net[0](torch.rand(2, 1, 8, 8)).stride(1) == 1
    assert w.data_ptr() == ptr and w.stride() == (9, 9, 3, 1)
    c = channels_last_weight(torch.rand(16, 1, 3, 3))
    assert c.stride(1) == 1
