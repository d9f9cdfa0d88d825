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


# ---- fold_batchnorm / for_input_gradients: BatchNorm folded into the layer before it (eval-mode input gradients)
def _bn_net(seed: int = 0):
    from mclib import models

    torch.manual_seed(seed)
    net = models.build("resnet8", in_shape=(1, 12, 12), num_classes=5)
    with torch.no_grad():                      # running statistics and affine terms away from their defaults
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_fold_batchnorm_is_the_same_function_and_gradient():
    from mclib.torchutil import fold_batchnorm

    net = _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert folded is not net
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())   # every BatchNorm followed a conv
    assert all(not p.requires_grad for p in folded.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())   # the user's model untouched
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref = net(x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    out = folded(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    # the same affine maps in another float32 rounding: a few ulps of values of order 1
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-6)


def test_fold_batchnorm_hand_computed_conv_bn():
    from mclib.torchutil import fold_batchnorm

    conv, bn = nn.Conv2d(1, 1, 1, bias=True), nn.BatchNorm2d(1, eps=0.0)
    with torch.no_grad():
        conv.weight.fill_(2.0), conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0), bn.running_var.fill_(4.0), bn.weight.fill_(5.0), bn.bias.fill_(0.5)
    folded = fold_batchnorm(nn.Sequential(conv, bn).eval())
    # y = 5 (2x + 1 - 3) / 2 + 0.5 = 5x - 4.5: one convolution with weight 5 and bias -4.5
    (layer,) = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert float(layer.weight) == 5.0 and float(layer.bias) == -4.5
    assert float(folded(torch.full((1, 1, 1, 1), 2.0))) == 5.5


def test_fold_batchnorm_leaves_what_it_cannot_or_must_not_fold():
    from mclib import models
    from mclib.torchutil import fold_batchnorm

    cnn = models.build("cnn", in_shape=(1, 12, 12), num_classes=5).eval()
    assert fold_batchnorm(cnn) is cnn                       # no BatchNorm: the same object, the same numbers
    net = _bn_net()
    assert fold_batchnorm(net.train()) is net               # training mode: batch statistics, nothing to fold
    net.eval()
    h = net[1].layer1[0].register_forward_hook(lambda m, i, o: None)
    try:
        assert fold_batchnorm(net) is net                   # a hook must see its own module run
    finally:
        h.remove()

    class Branchy(nn.Module):                                # data-dependent control flow: fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if float(x.mean()) > 0 else x

    b = Branchy().eval()
    assert fold_batchnorm(b) is b


def test_for_input_gradients_restores_mode_and_layout():
    from mclib.torchutil import for_input_gradients

    net = _bn_net().train()
    w = net[1].stem[0].weight
    with for_input_gradients(net) as f:
        assert not net.training and f is not net
        assert f(torch.rand(2, 1, 12, 12)).shape == (2, 5)
    assert net.training and w.is_contiguous()
