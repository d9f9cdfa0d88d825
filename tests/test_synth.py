"""Tests of mclib.synth: FVO synthetic inputs (Vrabel et al., Sec. 3; Olah et al., 2017)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mclib import models, synth


pytestmark = pytest.mark.usefixtures("one_thread")  # the fixture in conftest.py


def tiny_mlp(seed: int = 0, classes: int = 3, shape=(1, 4, 4)) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", in_shape=shape, num_classes=classes, hidden=(16,))


def adam_rounding_bound(steps: int, lr: float, eps: float = 1e-8, grad_scale: float = 10.0) -> float:
    """How far two float64 Adam runs that differ only in rounding (batch of N vs 1) can drift apart per pixel.

    Batched and single runs compute the same gradient with different kernels, so ``g`` differs by
    about ``u * G`` (``u = 2**-53``, ``G`` the gradient scale, <= 10 for these nets). Adam's normalised
    step ``lr * m / (sqrt(v) + eps)`` turns that into at most ``lr * u * G / eps`` (worst where ``v``
    is near 0), so ``steps`` steps drift at most ``steps * lr * u * G / eps``. In float32
    (``u = 2**-24``) the same bound exceeds ``lr`` itself: a pixel whose gradient is rounding noise
    may step +lr in one run and -lr in the other, so float32 runs can only be promised to agree
    within ``2 * steps * lr`` -- which tests nothing. Hence these comparisons run in float64, where a
    batching bug (inputs that influence each other, wrong freezing) still moves pixels by ~``lr``.
    """
    return steps * lr * 2.0 ** -53 * grad_scale / eps


def reference_fvo(model, target, x0, steps, lr, weight_decay, threshold):
    """One input at a time with torch.optim.Adam: the independent reference for fvo()."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, weight_decay=weight_decay)
    best, best_x, used = float("inf"), None, 0
    for it in range(steps + 1):
        ce = F.cross_entropy(model(x), torch.tensor([target]))
        if ce.item() < best:
            best, best_x = ce.item(), x.detach().clone()
        if ce.item() < threshold or it == steps:
            break
        opt.zero_grad()
        ce.backward()
        opt.step()
        used += 1
    return best_x, best, used


def test_fvo_reaches_threshold_on_tiny_net():
    model = tiny_mlp().eval()
    res = synth.fvo(model, [0, 1, 2, 0, 1, 2], (1, 4, 4), steps=3000, lr=0.2, progress=False,
                    generator=torch.Generator().manual_seed(0))
    assert res.x.shape == (6, 1, 4, 4) and res.loss.shape == (6,) and res.steps.shape == (6,)
    assert res.converged.all(), res.loss
    assert (res.loss < 5e-4).all()
    assert (res.steps < 3000).all() and (res.steps > 0).all()
    # the reported loss is the CE of the returned inputs, recomputed independently
    with torch.no_grad():
        ce = F.cross_entropy(model(res.x), res.targets, reduction="none")
    torch.testing.assert_close(ce, res.loss, rtol=1e-4, atol=1e-7)
    assert (model(res.x).argmax(1) == res.targets).all()


def test_fvo_matches_torch_adam_one_at_a_time():
    """Batched FVO with per-input early stopping equals torch.optim.Adam run on each input alone."""
    model = tiny_mlp(1).eval().double()  # float64: see adam_rounding_bound
    targets = [0, 1, 2, 2, 1]
    x0 = 0.01 * torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = dict(steps=150, lr=0.05, weight_decay=1e-3, threshold=0.1)
    res = synth.fvo(model, targets, (1, 4, 4), init=x0, progress=False, **kw)
    tol = adam_rounding_bound(kw["steps"], kw["lr"])
    steps = []
    for i, t in enumerate(targets):
        rx, rl, used = reference_fvo(model, t, x0[i:i + 1], **kw)
        torch.testing.assert_close(res.x[i:i + 1], rx, rtol=0, atol=tol)
        assert res.loss[i].item() == pytest.approx(rl, rel=1e-9, abs=1e-12)
        assert res.steps[i].item() == used
        steps.append(used)
        # and the one-at-a-time call of fvo itself agrees too
        single = synth.fvo(model, [t], (1, 4, 4), init=x0[i:i + 1], progress=False, **kw)
        torch.testing.assert_close(single.x, res.x[i:i + 1], rtol=0, atol=tol)
        assert single.steps.item() == res.steps[i].item()
    assert len(set(steps)) > 1, "the test should mix inputs stopping at different iterations"


def test_batched_equals_single_with_generator_and_conv_net():
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=(3, 8, 8), num_classes=4, channels=(4,), hidden=8).double()
    targets = torch.tensor([0, 1, 2, 3])
    x0 = 0.01 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batched = synth.fvo(model, targets, (3, 8, 8), steps=60, init=x0, threshold=0.05, progress=False)
    for i in range(4):
        one = synth.fvo(model, targets[i:i + 1], (3, 8, 8), steps=60, init=x0[i:i + 1], threshold=0.05, progress=False)
        torch.testing.assert_close(one.x, batched.x[i:i + 1], rtol=0, atol=adam_rounding_bound(60, 0.05))
        assert one.steps.item() == batched.steps[i].item()
    model = model.float()
    # the same generator seed gives the same start, hence the same result
    a = synth.fvo(model, targets, (3, 8, 8), steps=20, generator=torch.Generator().manual_seed(5), progress=False)
    b = synth.fvo(model, targets, (3, 8, 8), steps=20, generator=torch.Generator().manual_seed(5), progress=False)
    assert torch.equal(a.x, b.x)


def test_early_stopped_inputs_stop_changing():
    model = tiny_mlp(2).eval()
    x0 = 0.01 * torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = [0, 1, 2, 0, 1, 2]
    short = synth.fvo(model, targets, (1, 4, 4), steps=40, init=x0, threshold=0.3, progress=False)
    long = synth.fvo(model, targets, (1, 4, 4), steps=400, init=x0, threshold=0.3, progress=False)
    done = short.converged
    assert done.any() and not done.all(), "need some inputs converged at 40 steps and some not"
    assert torch.equal(long.x[done], short.x[done])
    assert torch.equal(long.steps[done], short.steps[done])
    assert (short.steps[done] < 40).all()
    assert (long.steps[~done] > 40).all()


def test_best_iterate_is_kept():
    """With a huge learning rate the iterates oscillate; the returned input is the best one seen."""
    model = tiny_mlp(3).eval()
    x0 = 0.01 * torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    res = synth.fvo(model, [0, 1, 2], (1, 4, 4), steps=30, lr=5.0, init=x0, threshold=0.0, progress=False)
    for i, t in enumerate([0, 1, 2]):
        _, best, _ = reference_fvo(model, t, x0[i:i + 1], steps=30, lr=5.0, weight_decay=1e-7, threshold=0.0)
        assert res.loss[i].item() == pytest.approx(best, rel=1e-3, abs=1e-6)
    with torch.no_grad():
        init_ce = F.cross_entropy(model(x0), torch.tensor([0, 1, 2]), reduction="none")
    assert (res.loss <= init_ce + 1e-7).all()


def test_clamp_tv_and_rgb_resnet_path():
    torch.manual_seed(0)
    model = models.build("resnet8", in_shape=(3, 32, 32), num_classes=10)
    model.train()  # fvo must evaluate in eval mode and restore the mode afterwards
    res = synth.fvo(model, [3, 7], (3, 32, 32), steps=5, clamp=True, tv_weight=1e-3, progress=False,
                    generator=torch.Generator().manual_seed(0))
    assert model.training
    assert res.x.shape == (2, 3, 32, 32)
    assert res.x.min() >= 0 and res.x.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    # eval-mode semantics: batched equals single on a BatchNorm net. In float64: in float32, Adam turns
    # rounding differences between batch sizes (different convolution kernels) into lr-sized steps, which
    # made this fail on AVX-512/oneDNN machines (issue 13); see adam_rounding_bound.
    model.double()
    kw = dict(steps=5, clamp=True, tv_weight=1e-3, progress=False)
    one = synth.fvo(model, [7], (3, 32, 32), init=torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64), **kw)
    both = synth.fvo(model, [3, 7], (3, 32, 32), init=torch.full((2, 3, 32, 32), 0.5, dtype=torch.float64), **kw)
    assert model.training and one.x.dtype == torch.float64
    torch.testing.assert_close(one.x, both.x[1:], rtol=0, atol=adam_rounding_bound(5, 0.05))


def test_total_variation_against_loops():
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    ref = torch.zeros(2)
    for n in range(2):
        for c in range(3):
            for i in range(5):
                for j in range(4):
                    if i + 1 < 5:
                        ref[n] += abs(x[n, c, i + 1, j] - x[n, c, i, j])
                    if j + 1 < 4:
                        ref[n] += abs(x[n, c, i, j + 1] - x[n, c, i, j])
    torch.testing.assert_close(synth.total_variation(x), ref, rtol=1e-5, atol=1e-5)
    assert synth.total_variation(torch.ones(1, 1, 3, 3)).item() == 0
    # one TV for the library (mclib.optim): every input is a batch, (C, H, W) reads as (N, H, W) and a
    # batch without spatial dimensions, (N, D), has TV 0
    torch.testing.assert_close(synth.total_variation(x[0]).sum(), ref[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(synth.total_variation(torch.ones(3, 3)), torch.zeros(3))


def test_fvo_pairs_layout():
    model = tiny_mlp(0).eval()
    A, C, target, res = synth.fvo_pairs(model, [0, 2], 3, (1, 4, 4), steps=5, progress=False,
                                        generator=torch.Generator().manual_seed(0))
    assert A.shape == C.shape == (6, 1, 4, 4)
    assert target.tolist() == [0, 0, 0, 2, 2, 2]
    assert not torch.equal(A, C)
    assert len(res) == 12


@pytest.mark.parametrize("targets, match", [
    ([0, 3], "out of range"),
    ([-1], "out of range"),
    ([[0, 1]], "1-D"),
    ([], "empty"),
    ([0.5], "integer"),
])
def test_bad_targets(targets, match):
    with pytest.raises(ValueError, match=match):
        synth.fvo(tiny_mlp(), targets, (1, 4, 4), steps=1, progress=False)


def test_bad_shapes_and_init():
    model = tiny_mlp()
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        synth.fvo(model, [0], (4, 4), steps=1, progress=False)
    with pytest.raises(ValueError, match="does not accept"):
        synth.fvo(model, [0], (3, 8, 8), steps=1, progress=False)
    with pytest.raises(ValueError, match="init must have shape"):
        synth.fvo(model, [0, 1], (1, 4, 4), steps=1, init=torch.zeros(1, 1, 4, 4), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        synth.fvo(model, [0], (1, 4, 4), steps=1, init=torch.full((1, 1, 4, 4), float("nan")), progress=False)
    with pytest.raises(ValueError, match="steps"):
        synth.fvo(model, [0], (1, 4, 4), steps=-1, progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        synth.fvo(lambda x: x, [0], (1, 4, 4), steps=1, progress=False)


def test_synthetic_paths_line_endpoints_are_the_modes():
    from mclib import paths

    model = tiny_mlp(4).eval()
    r = synth.synthetic_paths(model, [0, 1], 2, (1, 4, 4), num_points=9, bypass="free",
                              fvo_kwargs=dict(steps=50, generator=torch.Generator().manual_seed(0)),
                              bypass_kwargs=dict(iterations=20, max_rounds=2), progress=False)
    assert r.A.shape == r.C.shape == (4, 1, 4, 4) and r.line.shape == (4, 9)
    torch.testing.assert_close(r.line[:, 0], r.modes.loss[:4].cpu(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.line[:, -1], r.modes.loss[4:].cpu(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.line_barrier.max, r.line.max(1).values)
    assert isinstance(r.bypass, paths.BypassResult)
    assert torch.equal(r.endpoint_loss, torch.maximum(r.line[:, 0], r.line[:, -1])) or \
        torch.allclose(r.endpoint_loss, torch.maximum(r.line[:, 0], r.line[:, -1]), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="bypass"):
        synth.synthetic_paths(model, [0], 1, (1, 4, 4), bypass="curved", progress=False)


def test_barrier_evolution_probes_and_reference():
    """The probe at batch 0 equals FVO + straight line on the untrained model; training runs `batches` steps."""
    import copy

    from mclib import paths

    torch.manual_seed(0)
    model = models.build("cnn", in_shape=(1, 8, 8), num_classes=3, channels=(4,), hidden=8)
    init_model = copy.deepcopy(model).eval()
    X = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 3
    evo = synth.barrier_evolution(model, X, y, batches=5, classes=[0, 2], pairs_per_class=1, probe_every=2,
                                  num_points=7, batch_size=16, fvo_kwargs=dict(steps=10), seed=3, progress=False)
    assert evo.step.tolist() == [0, 2, 4, 5]
    assert len(evo.train_loss) == 5
    assert evo.line_max.shape == evo.gap.shape == evo.endpoint_loss.shape == (4, 2)
    init = 0.01 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = synth.fvo(init_model, [0, 2, 0, 2], (1, 8, 8), steps=10, init=init, progress=False)
    L = paths.linear_losses(init_model, ref.x[:2], ref.x[2:], torch.tensor([0, 2]), num_points=7)
    torch.testing.assert_close(evo.line_max[0], L.max(1).values, rtol=1e-4, atol=1e-6)
    assert not torch.equal(evo.line_max[0], evo.line_max[-1])   # the model was trained in between
    assert not model.training


def test_batched_equals_single_in_float64():
    """In float64 the batched run matches one-at-a-time runs to rounding (float32 drifts: Adam amplifies it)."""
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=(1, 16, 16), num_classes=10).eval().double()
    targets = torch.arange(8)
    x0 = 0.01 * torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = synth.fvo(model, targets, (1, 16, 16), steps=80, init=x0, threshold=0.0, progress=False)
    assert b.x.dtype == torch.float64
    for i in range(8):
        one = synth.fvo(model, targets[i:i + 1], (1, 16, 16), steps=80, init=x0[i:i + 1], threshold=0.0, progress=False)
        torch.testing.assert_close(one.x, b.x[i:i + 1], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(one.loss, b.loss[i:i + 1], rtol=1e-9, atol=1e-12)
