"""Tests for mclib.curves: the curve's points against hand-computed combinations, gradients, BN, errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mclib import curves, models, train


def _pair(arch: str = "cnn", **kw):
    torch.manual_seed(0)
    m0 = models.build(arch, in_shape=(1, 8, 8), num_classes=4, **kw)
    torch.manual_seed(1)
    m1 = models.build(arch, in_shape=(1, 8, 8), num_classes=4, **kw)
    return m0.eval(), m1.eval()


def _perturb_bends(curve: curves.Curve, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in curve.bend_parameters():
            b.add_(0.05 * torch.randn(b.shape, generator=g))


@pytest.mark.parametrize("kind", curves.KINDS)
@pytest.mark.parametrize("num_bends", [0, 1, 3])
def test_endpoints_are_exact(kind, num_bends):
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], kind=kind, num_bends=num_bends)
    if num_bends:
        _perturb_bends(c)
    for t, m in ((0.0, m0), (1.0, m1)):
        w = c.weights(t)
        for name, p in m.named_parameters():
            assert torch.equal(w[name], p), (t, name)
    x = torch.rand(6, 1, 8, 8)
    c.eval()
    assert torch.equal(c(x, 0.0), m0(x))
    assert torch.equal(c(x, torch.tensor(1.0)), m1(x))


def test_quadratic_bezier_matches_hand_computed_bernstein():
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], kind="bezier", num_bends=1)
    _perturb_bends(c)
    theta = c.control_points()[1]
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    for t in (0.1, 0.37, 0.5, 0.9):
        w = c.weights(t)
        for name in c.names:
            ref = (1 - t) ** 2 * p0[name] + 2 * t * (1 - t) * theta[name] + t ** 2 * p1[name]
            torch.testing.assert_close(w[name], ref.detach(), rtol=1e-6, atol=1e-7)
    # cubic Bezier (two bends) coefficients
    c3 = curves.Curve([m0, m1], kind="bezier", num_bends=2)
    t = 0.3
    torch.testing.assert_close(c3.coefficients(t), torch.tensor(
        [(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3], dtype=torch.float64))


def test_bends_start_on_the_straight_line():
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], kind="polychain", num_bends=3)
    lin = curves.line(m0, m1)
    for t in (0.2, 0.5, 0.75):
        for name in c.names:
            torch.testing.assert_close(c.weights(t)[name], lin.weights(t)[name], rtol=1e-5, atol=1e-6)
    cb = curves.Curve([m0, m1], kind="bezier", num_bends=1)
    for name in cb.names:  # the quadratic Bezier with theta at the midpoint *is* the line
        torch.testing.assert_close(cb.weights(0.3)[name], lin.weights(0.3)[name], rtol=1e-5, atol=1e-6)


def test_polychain_hat_functions():
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], kind="polychain", num_bends=1)
    _perturb_bends(c)
    theta = c.control_points()[1]
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    for t in (0.2, 0.5, 0.8):
        ref_c = [max(0.0, 1 - 2 * t), 1 - abs(2 * t - 1), max(0.0, 2 * t - 1)]
        torch.testing.assert_close(c.coefficients(t), torch.tensor(ref_c, dtype=torch.float64))
        name = c.names[0]
        ref = (1 - 2 * t) * p0[name] + 2 * t * theta[name] if t <= 0.5 else \
            (2 - 2 * t) * theta[name] + (2 * t - 1) * p1[name]
        torch.testing.assert_close(c.weights(t)[name], ref.detach(), rtol=1e-6, atol=1e-7)
    # hat functions of a 3-bend chain: partition of unity, at most two non-zero, 1 at the knots
    c3 = curves.Curve([m0, m1], kind="polychain", num_bends=3)
    for t in torch.linspace(0, 1, 17):
        co = c3.coefficients(t)
        assert math.isclose(co.sum().item(), 1.0, abs_tol=1e-12) and int((co > 0).sum()) <= 2
    assert torch.equal(c3.coefficients(0.5), torch.tensor([0, 0, 1, 0, 0], dtype=torch.float64))


def test_line_is_linear_interpolation():
    m0, m1 = _pair("mlp", hidden=(8,))
    c = curves.line(m0, m1)
    assert c.bend_parameters() == [] and c.num_bends == 0
    for name, p in m0.named_parameters():
        ref = 0.75 * p + 0.25 * dict(m1.named_parameters())[name]
        torch.testing.assert_close(c.weights(0.25)[name], ref.detach())
    assert curves.train_curve(c, torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), epochs=1, progress=False) == []


def test_gradients_reach_only_the_bends():
    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    c = curves.Curve([m0, m1], num_bends=1)
    c.train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 4, (8,))
    loss = nn.functional.cross_entropy(c(x, 0.4), y)
    loss.backward()
    trainable = [n for n, p in c.named_parameters() if p.requires_grad]
    assert trainable == [f"bend_tensors.{j}" for j in range(len(c.names))]
    assert all(b.grad is not None for b in c.bend_parameters()) and sum(b.grad.abs().sum() for b in c.bend_parameters()) > 0
    assert all(p.grad is None for n, p in c.named_parameters() if not n.startswith("bend_tensors."))
    assert all(p.grad is None for p in list(m0.parameters()) + list(m1.parameters()))


def test_training_moves_only_bends_and_lowers_loss():
    m0, m1 = _pair()
    ends_before = {n: p.clone() for n, p in m0.named_parameters()}
    c = curves.Curve([m0, m1], num_bends=1)
    ends = c.ends.clone()
    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 1, 8, 8, generator=g)
    y = (X.flatten(1).mean(1) > X.flatten(1).mean()).long()
    bends0 = c.bends.clone()
    losses = curves.train_curve(c, X, y, epochs=8, batch_size=32, lr=0.05, weight_decay=1e-4,
                                generator=g, progress=False)
    assert len(losses) == 16
    assert torch.equal(c.ends, ends)
    assert not torch.equal(c.bends, bends0)
    assert all(torch.equal(p, ends_before[n]) for n, p in m0.named_parameters())
    assert sum(losses[-5:]) < sum(losses[:5])


def test_weight_decay_is_half_lambda_squared_norm_of_w_t():
    # with zero learning rate the returned objective is CE + wd/2 ||w(t)||^2 exactly
    m0, m1 = _pair("mlp", hidden=(6,))
    c = curves.Curve([m0, m1], num_bends=1)
    X, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plain = curves.train_curve(c, X, y, epochs=1, batch_size=4, lr=0.0, weight_decay=0.0, generator=g1, progress=False)
    wd = curves.train_curve(c, X, y, epochs=1, batch_size=4, lr=0.0, weight_decay=0.1, generator=g2, progress=False)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    torch.randperm(4, generator=g)
    t = torch.rand(1, generator=g, dtype=torch.float64)[0]
    norm2 = c.flat_weights(t).pow(2).sum().item()
    assert math.isclose(wd[0] - plain[0], 0.05 * norm2, rel_tol=1e-4)


def test_bn_reestimation_changes_running_statistics():
    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    c = curves.Curve([m0, m1], num_bends=1)
    X = torch.rand(64, 1, 8, 8)
    with pytest.warns(UserWarning, match="bn_data"):
        plain = c.at(0.5)
    fresh = c.at(0.5, bn_data=X, batch_size=16)
    bn_plain = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_fresh = [m for m in fresh.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn_fresh) == 2
    for a, b in zip(bn_plain, bn_fresh):
        assert not torch.allclose(a.running_mean, b.running_mean)
        assert b.momentum == 0.1  # restored after the cumulative average
    # the re-estimated statistics of the first BN are the data's own (exact cumulative average)
    first_conv = fresh[1][0]
    with torch.no_grad():
        h = first_conv(fresh[0](X))
    torch.testing.assert_close(bn_fresh[0].running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not fresh.training and all(p.requires_grad for p in fresh.parameters())


def test_buffers_interpolate_and_training_leaves_them_alone():
    m0, m1 = _pair("vgg_bn", widths=(4,))
    with torch.no_grad():
        for m, v in ((m0, 1.0), (m1, 3.0)):
            m[1][1].running_mean.fill_(v)
    c = curves.Curve([m0, m1], num_bends=1)
    assert torch.equal(c.buffers_at(0.25)["1.1.running_mean"], torch.full((4,), 1.5))
    before = c.end_buffers.clone()
    curves.train_curve(c, torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,)), epochs=1, batch_size=8, progress=False)
    assert torch.equal(c.end_buffers, before)


def test_mismatched_endpoints_raise_naming_the_parameter():
    torch.manual_seed(0)
    a = models.build("cnn", in_shape=(1, 8, 8), num_classes=4, channels=(4, 8))
    b = models.build("cnn", in_shape=(1, 8, 8), num_classes=4, channels=(4, 6))
    with pytest.raises(ValueError, match=r"'1\.3\.weight'.*\(8, 4, 3, 3\).*\(6, 4, 3, 3\)"):
        curves.Curve([a, b])
    c = models.build("mlp", in_shape=(1, 8, 8), num_classes=4)
    with pytest.raises(ValueError, match="missing"):
        curves.Curve([a, c])
    with pytest.raises(ValueError, match="exactly two"):
        curves.Curve([a])
    with pytest.raises(ValueError, match="kind"):
        curves.Curve([a, a], kind="spline")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        curves.Curve([a, a]).weights(1.5)


def test_at_equals_curve_forward_in_eval_mode():
    m0, m1 = _pair()
    for kind in curves.KINDS:
        c = curves.Curve([m0, m1], kind=kind, num_bends=2)
        _perturb_bends(c)
        c.eval()
        x = torch.rand(10, 1, 8, 8)
        for t in (0.0, 0.3, 0.77, 1.0):
            model = c.at(t)
            assert isinstance(model, nn.Sequential) and not model.training
            torch.testing.assert_close(model(x), c(x, t), rtol=0, atol=0)


def test_along_and_evaluate_along():
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], num_bends=1)
    X, y = torch.rand(20, 1, 8, 8), torch.randint(0, 4, (20,))
    df = curves.evaluate_along(c, curves.grid(5), X, y, metrics={"n": lambda m: 20})
    assert list(df.columns) == ["t", "loss", "acc", "n"] and list(df["t"]) == [0, 0.25, 0.5, 0.75, 1.0]  # no BN: no bn column
    from mclib import train
    assert math.isclose(df["acc"].iloc[0], train.evaluate(m0, X, y)["acc"])
    assert math.isclose(df["loss"].iloc[-1], train.evaluate(m1, X, y)["loss"], rel_tol=1e-6)
    assert curves.along(c, [0.0, 1.0], lambda m: type(m).__name__) == ["Sequential", "Sequential"]


def test_batch_hook_gets_a_module_at_t():
    from mclib.attacks import pgd

    m0, m1 = _pair()
    c = curves.Curve([m0, m1], num_bends=1)
    seen = []

    def hook(point, x, y):
        assert isinstance(point, curves.CurvePoint)
        seen.append(float(point.t))
        return pgd(point, x, y, eps=0.1, steps=2)

    X, y = torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,))
    losses = curves.train_curve(c, X, y, epochs=1, batch_size=8, batch_hook=hook, progress=False)
    assert len(seen) == 2 == len(losses) and all(0 <= t <= 1 for t in seen)


def test_summary_barrier_numbers():
    import pandas as pd

    df = pd.DataFrame({"t": [0.0, 0.5, 1.0], "loss": [0.2, 1.5, 0.3], "acc": [0.95, 0.6, 0.97]})
    s = curves.summary(df)
    assert s["end_acc"] == 0.95 and s["t_end"] == 0.0 and s["worst_acc"] == 0.6 and s["t_worst"] == 0.5
    assert curves.summary(df.assign(acc=[0.97, 0.6, 0.95]))["t_end"] == 1.0
    assert math.isclose(s["acc_drop"], 0.35) and math.isclose(s["loss_barrier"], 1.2) and math.isclose(s["max_error"], 0.4)


def test_barrier_height_and_has_barrier():
    assert curves.barrier_height([1.0, 3.0, 2.0]) == pytest.approx(1.0)
    assert curves.barrier_height([2.0, 1.0, 0.5]) == 0.0
    assert curves.has_barrier([1.0, 3.0, 2.0]) and not curves.has_barrier([1.0, 1.04, 0.5])


def test_training_equals_a_flat_vector_reference():
    """Per-tensor combination (the implementation) against the flattened-vector form w(t) = C(t) [w0; theta; w1]
    written out here: the same SGD steps give the same bends up to float32 rounding."""
    from torch.func import functional_call

    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 4, (48,), generator=g)
    c = curves.Curve([m0, m1], num_bends=1)
    curves.train_curve(c, X, y, epochs=2, batch_size=16, lr=0.05, weight_decay=1e-3,
                       generator=torch.Generator().manual_seed(1), progress=False)

    names = [n for n, _ in m0.named_parameters()]
    flat = [torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in names]) for m in (m0, m1)]
    theta = torch.nn.Parameter(0.5 * (flat[0] + flat[1]))
    template = __import__("copy").deepcopy(m0).train()
    opt = torch.optim.SGD([theta], lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2 * 3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        order = torch.randperm(48, generator=gen)
        ts = torch.rand(3, generator=gen, dtype=torch.float64)
        for j in range(3):
            t = float(ts[j])
            w = (1 - t) ** 2 * flat[0] + 2 * t * (1 - t) * theta + t ** 2 * flat[1]
            state = {n: p.view_as(dict(m0.named_parameters())[n])
                     for n, p in zip(names, w.split([p.numel() for p in m0.parameters()]))}
            state.update({n: b.clone() for n, b in m0.named_buffers()} if t == 0 else
                         {n: ((1 - t) * b.float() + t * dict(m1.named_buffers())[n].float()).to(b.dtype)
                          if b.is_floating_point() else b.clone() for n, b in m0.named_buffers()})
            idx = order[16 * j:16 * (j + 1)]
            loss = nn.functional.cross_entropy(functional_call(template, state, (X[idx],)), y[idx])
            loss = loss + 0.5e-3 * w.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    torch.testing.assert_close(c.bends[0], theta.detach(), rtol=0, atol=1e-6)
    assert not torch.allclose(c.bends[0], 0.5 * (flat[0] + flat[1]), atol=1e-4)  # the bends did move


def _reference_train_curve(curve, X, y, epochs, batch_size, lr, weight_decay, optimizer, momentum, generator,
                           batch_hook):
    """The minibatch loop of mclib.curves.train_curve before issue 18 (commit 1524724), kept verbatim as the
    reference for the loop it now shares with mclib.train.fit."""
    params = curve.bend_parameters()
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    steps_per_epoch = (len(X) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch) if optimizer == "sgd" else None
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator)
        ts = torch.rand(steps_per_epoch, generator=generator, dtype=torch.float64)
        for j, i in enumerate(range(0, len(X), batch_size)):
            idx = order[i:i + batch_size]
            xb, yb = X[idx], y[idx]
            t = ts[j]
            if batch_hook is not None:
                xb = batch_hook(curves.CurvePoint(curve, t), xb, yb).detach()
            curve.train()
            loss = curves.objective(curve, xb, yb, t, weight_decay)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
    curve.eval()
    return losses


@pytest.mark.parametrize("optimizer,num_bends,hook", [("sgd", 1, False), ("adam", 2, False), ("sgd", 1, True)])
def test_training_is_bit_identical_to_the_loop_before_issue_18(optimizer, num_bends, hook):
    """train_curve now runs mclib.train.fit's loop; it takes exactly the old steps (same generator draws in the
    same order, same operations): bends equal bit for bit, losses equal, generator left in the same state."""
    from mclib.attacks import pgd

    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 4, (40,), generator=g)
    batch_hook = (lambda m, x, yb: pgd(m, x, yb, eps=0.05, steps=2)) if hook else None  # global RNG: reseeded
    runs = []
    for fn in (curves.train_curve, _reference_train_curve):
        torch.manual_seed(2)
        c = curves.Curve([m0, m1], num_bends=num_bends)
        gen = torch.Generator().manual_seed(1)
        kw = dict(epochs=2, batch_size=16, lr=0.05, weight_decay=1e-3, optimizer=optimizer, momentum=0.9,
                  generator=gen, batch_hook=batch_hook)
        losses = fn(c, X, y, **kw, progress=False) if fn is curves.train_curve else fn(c, X, y, **kw)
        runs.append((c, losses, gen.get_state()))
    (new, l_new, g_new), (old, l_old, g_old) = runs
    assert len(l_new) == 6 and l_new == l_old and torch.equal(g_new, g_old)
    assert not new.training
    for a, b in zip(new.bend_parameters(), old.bend_parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(new.bends, curves.Curve([m0, m1], num_bends=num_bends).bends)  # the bends did move


def test_train_curve_callback_and_errors():
    m0, m1 = _pair()
    X, y = torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,))
    steps = []
    curves.train_curve(curves.Curve([m0, m1]), X, y, epochs=1, batch_size=8, progress=False,
                       callback=lambda s, c, l: steps.append((s, isinstance(c, curves.Curve))))
    assert steps == [(1, True), (2, True)]
    assert curves.train_curve(curves.line(m0, m1), X, y, progress=False) == []
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid: adam, sgd"):
        curves.train_curve(curves.line(m0, m1), X, y, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        curves.train_curve(curves.Curve([m0, m1]), X, y[:3], progress=False)


@pytest.mark.parametrize("kind,num_bends", [("bezier", 1), ("bezier", 2), ("polychain", 3)])
def test_fused_objective_gradient_equals_autograd_of_the_plain_formula(kind, num_bends, point_path):
    """objective's one-node point and weight decay (_CurvePoint: hand-written backward) against autograd of
    CE(f_w(t)(x), y) + wd/2 sum_j ||w_j||^2 with w_j = sum_k c_k p_kj written with plain tensor ops (float64)."""
    from torch.func import functional_call

    m0, m1 = (m.double() for m in _pair("vgg_bn", widths=(4, "M", 8)))
    c = curves.Curve([m0, m1], kind=kind, num_bends=num_bends).double().train()
    _perturb_bends(c)
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (6,), generator=g)
    wd, t = 0.3, 0.37
    loss = curves.objective(c, x, y, t, weight_decay=wd)
    fused = torch.autograd.grad(loss, c.bend_parameters())

    co = c.coefficients(t)
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    bends = [b.detach().clone().requires_grad_(True) for b in c.bend_parameters()]
    w = {n: co[0] * p0[n].detach() + sum(co[k + 1] * B[k] for k in range(num_bends)) + co[-1] * p1[n].detach()
         for n, B in zip(c.names, bends)}
    state = dict(w, **c.buffers_at(t))
    ref = nn.functional.cross_entropy(functional_call(c.template, state, (x,)), y) \
        + 0.5 * wd * sum((v ** 2).sum() for v in w.values())
    plain = torch.autograd.grad(ref, bends, retain_graph=True)
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-12)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # weight decay alone, scaled upstream (the gradient follows the upstream factor, not a fixed wd * w)
    sq = c._point(t, square=True)[-1]
    (3.0 * sq).backward()
    expect = torch.autograd.grad(3.0 * sum((v ** 2).sum() for v in w.values()), bends)
    for B, e in zip(c.bend_parameters(), expect):
        torch.testing.assert_close(B.grad, e, rtol=1e-10, atol=1e-12)


def _point_reference(c: curves.Curve, t: float) -> list[torch.Tensor]:
    """w_j(t) = sum_k c_k p_kj from the control points, with plain tensor ops (no buffers, no custom node)."""
    co = c.coefficients(t)
    e0, e1 = c.ends[0].split(c.numels), c.ends[1].split(c.numels)
    return [(co[0] * a.view(B.shape[1:]) + sum(co[k + 1] * B[k] for k in range(B.shape[0]))
             + co[-1] * b.view(B.shape[1:])).detach()
            for a, b, B in zip(e0, e1, c.bend_tensors)]


@pytest.fixture(params=["buffers", "foreach"])
def point_path(request, monkeypatch):
    """Both ways _CurvePoint forms a tensor of w(t): into a reused buffer (large tensors) or by foreach calls
    into fresh tensors (small ones); the test models are small, so the threshold is moved."""
    monkeypatch.setattr(curves, "_BUFFER_MIN", 0 if request.param == "buffers" else 2 ** 62)
    return request.param


def test_point_buffers_are_never_overwritten_while_held(point_path):
    """_CurvePoint writes w(t) into per-curve buffers reused between steps; a point someone still holds (a
    live graph, a user's dict) must keep its values, and each graph must still give its own gradient."""
    m0, m1 = (m.double() for m in _pair())
    c = curves.Curve([m0, m1], num_bends=1).double()
    _perturb_bends(c)
    held = c.weights(0.3)                           # a user's dict, no graph
    first = c._point(0.3, square=True)              # graph alive
    second = c._point(0.8, square=True)             # another graph alive: may not reuse first's storage
    assert {w.data_ptr() for w in first[:-1]}.isdisjoint(w.data_ptr() for w in second[:-1])
    for got, ref in zip(first[:-1], _point_reference(c, 0.3)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-15)  # float64, three-term sums
    for got, ref in zip(held.values(), _point_reference(c, 0.3)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-15)  # float64, three-term sums
    for t, point in ((0.3, first), (0.8, second)):   # each graph's gradient of its own squared norm
        (grad,) = torch.autograd.grad(point[-1], c.bend_tensors[:1], retain_graph=True)
        co = c.coefficients(t)[1]
        torch.testing.assert_close(grad[0], 2 * co * _point_reference(c, t)[0], rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not hasattr(torch.Tensor, "_use_count"), reason="buffer reuse needs Tensor._use_count")
def test_point_buffers_are_reused_once_released(monkeypatch):
    monkeypatch.setattr(curves, "_BUFFER_MIN", 0)
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], num_bends=1)
    curves.objective(c, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), 0.4).backward()
    ptrs = [b.data_ptr() for b in curves._POINT_BUFFERS[c]]
    curves.objective(c, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), 0.6).backward()
    assert [b.data_ptr() for b in curves._POINT_BUFFERS[c]] == ptrs


def test_upstream_gradient_of_the_caller_is_left_alone(point_path):
    """The bend gradient is formed in place in the upstream gradient only when nothing else holds it."""
    m0, m1 = (m.double() for m in _pair())
    c = curves.Curve([m0, m1], num_bends=1).double()
    ws = c._point(0.25, square=True)
    upstream = [torch.ones_like(w) for w in ws[:-1]]
    kept = [u.clone() for u in upstream]
    torch.autograd.backward(ws, upstream + [torch.tensor(0.5, dtype=torch.float64)])
    for u, k in zip(upstream, kept):
        assert torch.equal(u, k)
    co = c.coefficients(0.25)[1]
    for B, w in zip(c.bend_tensors, _point_reference(c, 0.25)):
        torch.testing.assert_close(B.grad[0], co * (1 + 2 * 0.5 * w), rtol=1e-12, atol=1e-15)


def test_foreach_and_buffer_paths_are_bit_identical(monkeypatch):
    """Small tensors (foreach calls) and large ones (buffers, one call per op) run the same arithmetic in the
    same order: w(t), its squared norm and the bends' gradients agree bit for bit."""
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], num_bends=1)
    _perturb_bends(c)
    x, y = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 0])
    runs = []
    for threshold in (0, 2 ** 62):
        monkeypatch.setattr(curves, "_BUFFER_MIN", threshold)
        point = [w.detach().clone() for w in c._point(0.3, square=True)]
        c.zero_grad()
        curves.objective(c, x, y, 0.3, weight_decay=0.01).backward()
        runs.append((point, [b.grad.clone() for b in c.bend_tensors]))
    for a, b in zip(*(p + g for p, g in runs)):
        assert torch.equal(a, b)


def test_endpoints_with_other_modules_are_refused():
    """Issue 32: Curve([relu_mlp, tanh_mlp]) with equal shapes evaluated endpoint 0's ReLU at every t (0.55 off at t=1)."""
    from torch import nn
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"module '2' is .*ReLU.* in endpoint 0 but .*Tanh.* in endpoint 1"):
        curves.Curve([relu, tanh])
    strided = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Flatten())
    plain = nn.Sequential(nn.Conv2d(1, 2, 3, stride=1), nn.Flatten())
    with pytest.raises(ValueError, match=r"module '0'.*stride=\(2, 2\)"):
        curves.line(strided, plain)
    curves.Curve([relu, copy.deepcopy(relu)])                       # same structure: fine


def test_summary_needs_both_endpoints():
    """Issue 32: summary(evaluate_along(c, [0.3, 0.6], ...)) took t = 0.3 and 0.6 as the endpoints."""
    m0, m1 = _pair()
    c = curves.Curve([m0, m1], num_bends=1)
    X, y = torch.rand(12, 1, 8, 8), torch.randint(0, 4, (12,))
    with pytest.raises(ValueError, match=r"do not include the endpoint\(s\) t = 0, 1"):
        curves.summary(curves.evaluate_along(c, [0.3, 0.6], X, y))
    with pytest.raises(ValueError, match=r"endpoint\(s\) t = 1"):
        curves.summary(curves.evaluate_along(c, [0.0, 0.6], X, y))
    s = curves.summary(curves.evaluate_along(c, [1.0, 0.5, 0.0], X, y))
    assert s["end_acc"] == min(train.evaluate(m0, X, y)["acc"], train.evaluate(m1, X, y)["acc"])


def test_objective_in_channels_last_agrees_with_nchw_to_float32_rounding(monkeypatch):
    """Issue 31: the objective runs the net on channels-last weights (the same arithmetic, another summation
    order). Against the NCHW objective: the loss and the bends' gradients agree within the worst-case rounding
    of a float32 dot product of the net's longest length n (n * u, u = 2**-24) relative to their scale."""
    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    c = curves.Curve([m0, m1], num_bends=1).train()
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    n = max(8 * 4 * 4, 4 * 9)                       # the linear layer's fan-in, the second conv's
    results = []
    for layout in ("channels_last", "nchw"):
        if layout == "nchw":
            monkeypatch.setattr(curves._torchutil, "channels_last_weight", lambda w: w)
        c.zero_grad(set_to_none=True)
        loss = curves.objective(c, X, y, 0.3, weight_decay=1e-3)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in c.bend_parameters()]))
    (l_cl, g_cl), (l_ref, g_ref) = results
    assert (l_cl - l_ref).abs() <= n * 2.0 ** -24 * l_ref.abs()
    # gradients: relative to the largest gradient entry (a conv bias before BatchNorm has an exactly zero
    # gradient, so its computed value is rounding noise of the scale of the terms summed, not of its own)
    scale = max(float(b.abs().max()) for b in g_ref)
    for a, b in zip(g_cl, g_ref):
        assert (a - b).abs().max() <= n * 2.0 ** -24 * scale


@pytest.mark.parametrize("arch", ["cnn", "vgg_bn"])
def test_paired_table_counts_per_input_agreement_of_two_points(arch):
    # reference: each point built by hand with Curve.at and its correctness compared input by input
    m0, m1 = _pair(arch)
    c = curves.Curve([m0, m1], num_bends=1)
    _perturb_bends(c)
    X, y = torch.rand(40, 1, 8, 8), torch.randint(0, 4, (40,))
    bn = torch.rand(32, 1, 8, 8) if c.has_bn else None
    table = curves.paired_table(c, 0.0, 0.5, X, y, bn_data=bn)
    right = [(c.at(t, bn_data=bn)(X).argmax(1) == y) for t in (0.0, 0.5)]
    assert table == {"both": int((right[0] & right[1]).sum()), "ref_only": int((right[0] & ~right[1]).sum()),
                     "point_only": int((~right[0] & right[1]).sum()), "neither": int((~right[0] & ~right[1]).sum())}
    # its margins are the accuracies evaluate_along reports for the same points
    df = curves.evaluate_along(c, [0.0, 0.5], X, y, bn_data=bn)
    n = sum(table.values())
    assert n == 40
    assert (table["both"] + table["ref_only"]) / n == pytest.approx(df["acc"].iloc[0], abs=1e-6)
    assert (table["both"] + table["point_only"]) / n == pytest.approx(df["acc"].iloc[1], abs=1e-6)


def test_forward_frozen_agrees_with_forward_and_sends_no_gradient_to_the_bends():
    """Issue 31: ``forward_frozen`` (w(t) constant, convolutions channels-last) against ``forward``: outputs and
    input gradients agree within the worst-case rounding of a float32 dot product of the net's longest length n
    (n * u, u = 2**-24) relative to their scale; the bends get no gradient, the input does."""
    m0, m1 = _pair("vgg_bn", widths=(4, "M", 8))
    c = curves.Curve([m0, m1], num_bends=1).eval()
    _perturb_bends(c)
    X = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    n = max(8 * 4 * 4, 4 * 9)
    outs, grads = [], []
    for fn in (c.forward, c.forward_frozen):
        x = X.clone().requires_grad_(True)
        out = fn(x, 0.3)
        outs.append(out.detach())
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    scale = float(outs[0].abs().max())
    assert (outs[1] - outs[0]).abs().max() <= n * 2.0 ** -24 * scale
    assert (grads[1] - grads[0]).abs().max() <= 2 * n * 2.0 ** -24 * float(grads[0].abs().max())
    assert not c.forward_frozen(X, 0.3).requires_grad   # no path to the bends (nor to X, which needs none)


def test_update_bn_in_channels_last_matches_a_float64_reference_and_restores_the_layout():
    """Issue 31: update_bn runs channels-last. Its running statistics against the float64 NCHW estimate
    (torch.optim.swa_utils.update_bn on a float64 copy): within the worst-case rounding of a float32 sum of the n
    values one batch holds per channel (n * u, u = 2**-24) relative to the statistics' scale; the parameters
    end in their own (contiguous) layout."""
    m0, _ = _pair("vgg_bn", widths=(4, "M", 8))
    X = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ref = copy.deepcopy(m0).double()
    torch.optim.swa_utils.update_bn([X[i:i + 32].double() for i in range(0, 64, 32)], ref)
    curves.update_bn(m0, X, batch_size=32)
    n = 32 * 8 * 8
    for (name, a), b in zip(m0.named_buffers(), ref.buffers()):
        if a.is_floating_point():
            assert (a.double() - b).abs().max() <= n * 2.0 ** -24 * float(b.abs().max()), name
        else:
            assert torch.equal(a, b), name
    assert all(p.is_contiguous() for p in m0.parameters())
