"""models.PoolFirst: ReLU-MaxPool pairs run as pool-then-ReLU with the same numbers, bit for bit (issue 31)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mclib import models


def _plain(model: nn.Module) -> nn.Module:
    """The same network with every PoolFirst body as a plain nn.Sequential (the written order)."""
    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, models.PoolFirst):
                setattr(mod, cname, nn.Sequential(*child))
    assert not any(isinstance(x, models.PoolFirst) for x in m.modules())
    return m


@pytest.mark.parametrize("arch", ["cnn", "vgg", "vgg_bn"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pool_first_equals_the_written_order_bit_for_bit(arch, layout):
    torch.manual_seed(0)
    shape = (3, 16, 16) if arch.startswith("vgg") else (1, 28, 28)
    new = models.build(arch, in_shape=shape, num_classes=10)
    assert any(isinstance(m, models.PoolFirst) for m in new.modules())
    old = _plain(new)
    new, old = new.to(memory_format=layout), old.to(memory_format=layout)
    g = torch.Generator().manual_seed(1)
    X = torch.rand(32, *shape, generator=g).contiguous(memory_format=layout)
    X[:4] = 0.0        # windows with no positive value: the gradient must be 0 in both orders
    y = torch.randint(0, 10, (32,), generator=g)
    for train_mode in (True, False):
        new.train(train_mode), old.train(train_mode)
        xs = [X.clone().requires_grad_(True) for _ in range(2)]
        losses = [F.cross_entropy(m(x), y) for m, x in zip((new, old), xs)]
        for loss in losses:
            loss.backward()
        assert torch.equal(losses[0], losses[1])
        assert torch.equal(xs[0].grad, xs[1].grad)
        for (n, p), q in zip(new.named_parameters(), old.parameters()):
            assert torch.equal(p.grad, q.grad), n
            p.grad = q.grad = None
    assert new.state_dict().keys() == old.state_dict().keys()


def test_adam_training_is_identical_after_many_steps():
    torch.manual_seed(0)
    new = models.build("cnn", in_shape=(1, 28, 28), num_classes=10)
    old = _plain(new)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(20)]
    for m in (new, old):
        opt = torch.optim.Adam(m.parameters(), 1e-2)
        m.losses = []
        for x, y in batches:
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            m.losses.append(loss.item())
    assert new.losses == old.losses
    assert all(torch.equal(p, q) for p, q in zip(new.parameters(), old.parameters()))


def test_a_hook_on_the_relu_sees_the_written_order():
    # claims B1-B3 read the ReLU outputs through hooks: they must get the full-size activation, as written
    torch.manual_seed(0)
    net = models.cnn((1, 28, 28), 10)
    seen = []
    handle = net[1].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    net(torch.rand(2, 1, 28, 28))
    handle.remove()
    assert seen == [torch.Size([2, 16, 28, 28])]
    # without the hook the pair is swapped: the ReLU sees the pooled map
    spy = []
    orig = nn.ReLU.forward
    try:
        nn.ReLU.forward = lambda self, x: (spy.append(x.shape), orig(self, x))[1]
        net(torch.rand(2, 1, 28, 28))
    finally:
        nn.ReLU.forward = orig
    assert spy[0] == torch.Size([2, 16, 14, 14])


def test_slicing_and_copies_keep_the_class():
    net = models.cnn((1, 28, 28), 10)
    assert isinstance(net[:3], models.PoolFirst) and isinstance(copy.deepcopy(net), models.PoolFirst)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(net[:3](x), torch.relu(F.max_pool2d(net[0](x), 2)))
