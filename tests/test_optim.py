"""Tests of mclib.optim: the row-wise Adam with freezing and the total variation.

References: the Adam updates that were written inline in ``synth.fvo`` and
``attacks.evasion.optimisation_attack`` before this module (copied below, a few lines each; bit-identical),
and ``torch.optim.Adam`` (the same math to float64 rounding).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mclib import optim, synth
from mclib.attacks import evasion



def _grads(steps: int, shape, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 10 ** torch.randint(-3, 2, (1,), generator=g).item()
            for _ in range(steps)]


def _schedule(n: int, steps: int) -> list[torch.Tensor]:
    """Active rows per step: row k freezes after step 3k + 2 (rows leave and never come back)."""
    return [torch.tensor([r for r in range(n) if s < 3 * r + 2], dtype=torch.long) for s in range(steps)]


# ----------------------------------------------------------------------------------- RowAdam
def _fvo_adam_reference(x, grads, schedule, lr, betas, eps, wd):
    """The Adam update written inline in synth.fvo before mclib.optim (scalar bias corrections)."""
    x, m, v = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    b1, b2 = betas
    for it, (grad, active) in enumerate(zip(grads, schedule)):
        grad, xa = grad[active], x[active]
        if wd:
            grad = grad + wd * xa
        ma = m[active].mul_(b1).add_(grad, alpha=1 - b1)
        va = v[active].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m[active], v[active] = ma, va
        k = it + 1
        step = lr / (1 - b1 ** k)
        denom = (va / (1 - b2 ** k)).sqrt_().add_(eps)
        x[active] = xa.addcdiv(ma, denom, value=-step)
    return x


def _attack_adam_reference(x, grads, schedule, lr, betas):
    """The Adam update written inline in evasion.optimisation_attack before mclib.optim (per-row bias)."""
    x, m, v = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    taken = torch.zeros(len(x), dtype=torch.long)
    b1, b2 = betas
    for g, active in zip(grads, schedule):
        g = g[active]
        taken[active] += 1
        t = taken[active].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        ma = m[active].mul_(b1).add_(g, alpha=1 - b1)
        va = v[active].mul_(b2).addcmul_(g, g, value=1 - b2)
        m[active], v[active] = ma, va
        x[active] = x[active] - lr * (ma / (1 - b1 ** t)) / ((va / (1 - b2 ** t)).sqrt() + 1e-8)
    return x


def _run(opt, x, grads, schedule):
    x = x.clone()
    for g, rows in zip(grads, schedule):
        x[rows] = opt.step(x, g[rows], rows)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_adam_equals_the_inline_fvo_update(dtype):
    x0 = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads, sched = [g.to(dtype) for g in _grads(12, x0.shape)], _schedule(4, 12)
    ref = _fvo_adam_reference(x0, grads, sched, 0.05, (0.9, 0.999), 1e-8, 1e-7)
    ours = _run(optim.RowAdam(x0, 0.05, weight_decay=1e-7, scalar_bias=True), x0, grads, sched)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_adam_equals_the_inline_attack_update(dtype):
    x0 = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(2), dtype=dtype)
    grads, sched = [g.to(dtype) for g in _grads(12, x0.shape, seed=3)], _schedule(4, 12)
    ref = _attack_adam_reference(x0, grads, sched, 0.005, (0.8, 0.99))
    ours = _run(optim.RowAdam(x0, 0.005, betas=(0.8, 0.99)), x0, grads, sched)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("scalar_bias", [False, True])
def test_row_adam_matches_torch_adam(scalar_bias):
    """Same math as torch.optim.Adam (up to float rounding: the formulas group the bias corrections differently)."""
    g = torch.Generator().manual_seed(0)
    x0, target = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    ours = x0.clone()
    opt = optim.RowAdam(ours, lr=0.05, weight_decay=1e-3, scalar_bias=scalar_bias)
    ref = x0.clone().requires_grad_(True)
    topt = torch.optim.Adam([ref], lr=0.05, weight_decay=1e-3)
    for _ in range(25):
        ours = opt.step(ours, 2 * (ours - target) ** 3)
        topt.zero_grad()
        ((ref - target) ** 4 / 2).sum().backward()
        topt.step()
    # float64: each step agrees to a few ulps (2**-53 relative), and the gradient's feedback amplifies the
    # gap by far less than 1e6 over 25 steps (float32 runs show ~1e2), so 1e-9 holds, while a wrong formula
    # (bias correction, weight decay, eps placement) moves x by a sizeable part of lr = 0.05
    torch.testing.assert_close(ours, ref.detach(), atol=1e-9, rtol=0)


def test_row_adam_frozen_rows_keep_their_state_and_rows_are_independent():
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(4))
    opt = optim.RowAdam(x0, 0.1)
    rows = torch.tensor([0, 2])
    g = torch.ones(2, 4)
    new = opt.step(x0, g, rows)
    assert opt.t.tolist() == [1, 0, 1]
    assert torch.equal(opt.m[1], torch.zeros(4)) and torch.equal(opt.v[1], torch.zeros(4))
    # one row stepped alone takes exactly the step it takes inside the batch (Adam is elementwise)
    alone = optim.RowAdam(x0[2:], 0.1).step(x0[2:], g[1:])
    assert torch.equal(alone, new[1:])
    # first Adam step moves every coordinate by lr against the gradient's sign (m / sqrt(v) = sign(g))
    torch.testing.assert_close(new, x0[rows] - 0.1, atol=1e-6, rtol=0)


def test_row_adam_scalar_bias_needs_one_step_count():
    x0 = torch.zeros(3, 2)
    opt = optim.RowAdam(x0, 0.1, scalar_bias=True)
    opt.step(x0, torch.ones(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="between 0 and 1 steps"):
        opt.step(x0, torch.ones(2, 2), torch.tensor([0, 1]))
    assert opt.t.tolist() == [1, 0, 0]            # the refused step changed nothing


@pytest.mark.parametrize("kwargs, match", [({"lr": 0.0}, "lr must be positive"),
                                           ({"lr": 0.1, "betas": (1.0, 0.9)}, "betas must lie in")])
def test_row_adam_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.RowAdam(torch.zeros(2, 2), **kwargs)
    with pytest.raises(TypeError, match="floating-point"):
        optim.RowAdam(torch.zeros(2, 2, dtype=torch.long), 0.1)


# ------------------------------------------------------------------------------ total variation
def test_total_variation_channels_and_flat_images():
    """Against loops in tests/test_synth.py (synth.total_variation is this function); here the layouts."""
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per_channel = torch.stack([optim.total_variation(x[:, c]) for c in range(3)], 1)     # (N, H, W) inputs
    torch.testing.assert_close(optim.total_variation(x), per_channel.sum(1), rtol=1e-12, atol=0)
    assert torch.equal(optim.total_variation(x[:, 0]), optim.total_variation(x[:, :1]))
    assert optim.total_variation(torch.ones(2, 1, 3, 3)).tolist() == [0.0, 0.0]
    # a step edge of height h across an H x W image: TV = h * W (vertical neighbours) per channel
    edge = torch.zeros(1, 2, 4, 5)
    edge[..., 2:, :] = 0.5
    assert optim.total_variation(edge).tolist() == [2 * 0.5 * 5]


def test_total_variation_without_spatial_dims_is_zero_and_bad_shapes_raise():
    for shape in [(3,), (3, 5)]:
        tv = optim.total_variation(torch.randn(shape))
        assert tv.shape == (3,) and torch.equal(tv, torch.zeros(3))
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        optim.total_variation(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 1, 2, 2\)"):
        optim.total_variation(torch.ones(1, 1, 1, 2, 2))
    with pytest.raises(TypeError, match="list"):
        optim.total_variation([[1.0, 2.0]])


def test_the_library_has_one_total_variation():
    assert synth.total_variation is optim.total_variation
    assert not hasattr(evasion, "total_variation") or evasion.total_variation is optim.total_variation


def test_check_input_grad_names_the_procedure():
    x = torch.ones(2, 3, requires_grad=True)
    optim.check_input_grad((x * 2).sum(1), x, "fvo")                 # depends on x: no error
    with pytest.raises(ValueError, match="fvo optimises the input"):
        optim.check_input_grad(torch.ones(2), x, "fvo")
    with pytest.raises(ValueError, match="bypass optimises the input"):
        optim.check_input_grad(torch.ones(2, 3, requires_grad=True).sum(1), x, "bypass")


def _cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, classes))


def test_channels_last_input_gradients_agree_with_nchw():
    """Issue 31: what FVO, bypass and the attacks differentiate -- d CE / d x -- inside torchutil.channels_last
    agrees with the standard layout within the worst-case rounding of a float32 dot product of the net's
    longest length n (n * u, u = 2**-24), relative to the largest entry; the logits likewise."""
    from mclib.torchutil import channels_last
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 4)).eval()
    x, t = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 4
    n = max(8 * 9, 16 * 2 * 2)

    def grad():
        xa = x.clone().requires_grad_(True)
        out = model(xa)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(out, t, reduction="sum"), xa)
        return out.detach(), g

    out_ref, g_ref = grad()
    with channels_last(model):
        assert model[3].weight.stride(1) == 1
        out_cl, g_cl = grad()
    bound = n * 2.0 ** -24
    assert (out_cl - out_ref).abs().max() <= bound * out_ref.abs().max()
    assert (g_cl - g_ref).abs().max() <= bound * g_ref.abs().max()


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_adaptive_pgd_without_its_barrier_term_is_the_targeted_pgd(norm, eps):
    model = _cnn(2).eval()
    g = torch.Generator().manual_seed(7)
    x, t = torch.rand(5, 1, 8, 8, generator=g), torch.randint(0, 4, (5,), generator=g)
    refs = torch.rand(5, 3, 1, 8, 8, generator=g)
    after = evasion.adaptive_pgd(model, x, t, refs, eps, generator=torch.Generator().manual_seed(8), steps=8,
                                 barrier_weight=0.0, num_points=4, norm=norm)
    plain = evasion.pgd(model, x, t, eps, steps=8, norm=norm, targeted=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(plain, after)


def test_pgd_extra_loss_follows_rows_when_inputs_stop():
    """With stop_on_success the extra term sees only the inputs still attacked, by their batch indices."""
    model = _cnn(3).eval()
    g = torch.Generator().manual_seed(9)
    x, y = torch.rand(6, 1, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)
    seen = []

    def extra(xa, rows):
        seen.append(rows.tolist())
        assert xa.shape == (len(rows), 1, 8, 8)
        return 0.0 * xa.sum()

    a = evasion.pgd(model, x, y, 0.3, steps=10, stop_on_success=True, extra_loss=extra,
                    generator=torch.Generator().manual_seed(1))
    b = evasion.pgd(model, x, y, 0.3, steps=10, stop_on_success=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)                      # a zero extra term changes nothing
    assert seen[0] == list(range(6)) and all(set(s) <= set(p) for p, s in zip(seen, seen[1:]))


def test_row_adam_steps_no_rows():
    for scalar_bias in (False, True):
        x0 = torch.ones(3, 2)
        opt = optim.RowAdam(x0, 0.1, scalar_bias=scalar_bias)
        out = opt.step(x0, torch.ones(0, 2), torch.zeros(0, dtype=torch.long))
        assert out.shape == (0, 2) and opt.t.tolist() == [0, 0, 0]
