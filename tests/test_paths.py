"""Tests of mclib.paths: barrier metrics, piecewise paths, bypass, batching, errors."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.optimize import minimize

from mclib import models, paths


class Bump(nn.Module):
    """Two-class model with a known loss barrier: logits = (0, h * exp(-|x - m|^2 / w) - b).

    The cross-entropy toward class 0 is softplus(h * exp(-|x - m|^2 / w) - b): low away from ``m``,
    a bump of height softplus(h - b) at ``m``.
    """

    def __init__(self, m, h=10.0, b=5.0, w=0.1):
        super().__init__()
        self.register_buffer("m", m)
        self.h, self.b, self.w = h, b, w
        self.dummy = nn.Parameter(torch.zeros(()))   # gives the model a device

    def forward(self, x):
        r2 = (x - self.m).flatten(1).pow(2).sum(1)
        s = self.h * torch.exp(-r2 / self.w) - self.b + 0 * self.dummy
        return torch.stack([torch.zeros_like(s), s], dim=1)


def softplus(v):
    return math.log1p(math.exp(v))


pytestmark = pytest.mark.usefixtures("one_thread")  # the fixture in conftest.py


@pytest.fixture
def bump_pair():
    A = torch.full((1, 1, 4, 4), 0.3)
    C = torch.full((1, 1, 4, 4), 0.7)
    m = torch.full((1, 4, 4), 0.5)
    m[0, 0, 0] += 0.03           # centre slightly off the line (orthogonal to C - A), so gradients exist
    m[0, 0, 1] -= 0.03
    return Bump(m), A, C


def test_alphas_and_linear_losses_match_closed_form(bump_pair):
    model, A, C = bump_pair
    L = paths.linear_losses(model, A, C, 0, num_points=101)
    a = paths.alphas(101)
    x = (1 - a).view(-1, 1, 1, 1) * A + a.view(-1, 1, 1, 1) * C
    r2 = (x - model.m).flatten(1).pow(2).sum(1)
    want = torch.nn.functional.softplus(10 * torch.exp(-r2 / 0.1) - 5)
    assert L.shape == (1, 101)
    torch.testing.assert_close(L[0], want, atol=1e-5, rtol=1e-5)


def test_barrier_metrics_known_values():
    # hand-made curves: a bump in the middle, a monotone ramp, a flat line
    a = paths.alphas(11)
    bump = 1.0 + 4.0 * (1 - (2 * a - 1) ** 2)          # endpoints 1, max 5 at a = 0.5
    ramp = 1.0 + 2.0 * a                                # max at the end: no barrier
    flat = torch.full((11,), 0.25)
    b = paths.barrier(torch.stack([bump, ramp, flat]))
    torch.testing.assert_close(b.max, torch.tensor([5.0, 3.0, 0.25]))
    torch.testing.assert_close(b.gap, torch.tensor([4.0, 0.0, 0.0]))
    torch.testing.assert_close(b.position, torch.tensor([0.5, 1.0, 0.0]))
    torch.testing.assert_close(b.relative, torch.tensor([4.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert b.gap_exceeds(0.1).tolist() == [True, False, False]
    # unequal endpoints: relative is measured against the straight line between them
    tilted = torch.tensor([0.0, 3.0, 2.0])
    bt = paths.barrier(tilted)
    assert bt.gap.item() == pytest.approx(1.0) and bt.relative.item() == pytest.approx(2.0)
    # explicit positions
    bp = paths.barrier(torch.tensor([[0.0, 3.0, 2.0]]), torch.tensor([0.0, 0.8, 1.0]))
    assert bp.position.item() == pytest.approx(0.8) and bp.relative.item() == pytest.approx(3.0 - 1.6)


def test_barrier_of_bump_model(bump_pair):
    model, A, C = bump_pair
    b = paths.barrier(paths.linear_losses(model, A, C, 0, num_points=201))
    # the line passes at distance 0.03*sqrt(2) from the centre: max = softplus(10 exp(-0.0018/0.1) - 5)
    want_max = softplus(10 * math.exp(-0.0018 / 0.1) - 5)
    end = softplus(10 * math.exp(-(16 * 0.04 + 0.0018) / 0.1) - 5)
    assert b.max.item() == pytest.approx(want_max, rel=1e-4)
    assert b.gap.item() == pytest.approx(want_max - end, rel=1e-4)
    assert b.position.item() == pytest.approx(0.5)


def test_path_losses_arc_positions(bump_pair):
    model, A, C = bump_pair
    # a two-segment path with unequal segments: A -> V (length 0.4) -> C (length 1.2)
    V = A + 0.25 * (C - A)
    verts = torch.stack([A[0], V[0], C[0]])[None]
    L, pos = paths.path_losses(model, verts, 0, points_per_segment=5)
    assert L.shape == pos.shape == (1, 9)
    torch.testing.assert_close(pos[0], torch.tensor([0, .0625, .125, .1875, .25, .4375, .625, .8125, 1.0]))
    # a straight path split in two equals the linear path at the same positions
    lin = paths.linear_losses(model, A, C, 0, num_points=17)
    torch.testing.assert_close(L[0], lin[0, [0, 1, 2, 3, 4, 7, 10, 13, 16]], atol=1e-6, rtol=1e-5)
    # lists of paths with different vertex counts are padded with the last value at position 1
    L2, pos2 = paths.path_losses(model, [verts[0], torch.stack([A[0], C[0]])], torch.tensor([0, 0]), points_per_segment=5)
    assert L2.shape == (2, 9) and pos2[1, -1] == 1 and L2[1, -1] == L2[1, 4]


def test_bypass_removes_planted_barrier_and_stays_on_hyperplane(bump_pair):
    model, A, C = bump_pair
    for clamp in (True, False):
        res = paths.bypass(model, A, C, 0, max_rounds=6, progress=False, clamp=clamp)
        assert res.barriers[0].gap.item() > 3.0                 # the planted barrier
        assert bool(res.connected[0]), res.gap_history()[:, 0]
        assert res.barriers[-1].gap.item() <= res.tolerance
        assert bool(res.bent_first[0]) and res.rounds[0] >= 1
        # B is the max-loss point of the line, B' lies on the hyperplane through B orthogonal to C - A
        d = (C - A).flatten()
        moved = (res.B_prime - res.B).flatten()
        assert moved.norm() > 0.05
        assert abs(float(moved @ d)) / (moved.norm() * d.norm()) < 1e-4
        assert res.B_prime.min() >= (0 if clamp else -1e9) and (res.B_prime.max() <= 1 or not clamp)
        # the final path starts at A and ends at C
        torch.testing.assert_close(res.path(0)[0], A[0])
        torch.testing.assert_close(res.path(0)[-1], C[0])
        assert res.path(0).shape[0] == int(res.counts[0]) == 2 + int(res.bends[0])


def test_bypass_no_barrier_is_a_no_op(bump_pair):
    model, A, _ = bump_pair
    C = A + 0.01           # both far from the bump: no barrier
    res = paths.bypass(model, A, C, 0, progress=False)
    assert res.rounds.tolist() == [0] and res.counts.tolist() == [2] and bool(res.connected[0])
    assert not bool(res.bent_first[0]) and torch.equal(res.B, res.B_prime)


def test_bypass_free_reaches_low_loss(bump_pair):
    _, A, C = bump_pair
    model = Bump(torch.full((1, 4, 4), 0.5) + 0.02 * torch.eye(4)[None], h=20.0, b=10.0)   # min CE 4.5e-5
    res = paths.bypass_free(model, A, C, 0, iterations=2000, progress=False)
    assert bool(res.connected[0])
    assert res.point_loss[0].max() < 5e-4 + 1e-6


@pytest.fixture(scope="module")
def small_cnn():
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=(1, 8, 8), num_classes=10).eval()
    g = torch.Generator().manual_seed(1)
    A, C = torch.rand(6, 1, 8, 8, generator=g), torch.rand(6, 1, 8, 8, generator=g)
    t = torch.randint(0, 10, (6,), generator=g)
    return model, A, C, t


def test_linear_losses_batched_equals_one_at_a_time(small_cnn):
    model, A, C, t = small_cnn
    batched = paths.linear_losses(model, A, C, t, num_points=50, chunk_size=37)
    single = torch.cat([paths.linear_losses(model, A[i:i + 1], C[i:i + 1], int(t[i]), num_points=50) for i in range(6)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    # and equal to a plain loop over the points
    a = paths.alphas(50)
    with torch.no_grad():
        ref = torch.stack([torch.nn.functional.cross_entropy(
            model((1 - a).view(-1, 1, 1, 1) * A[i] + a.view(-1, 1, 1, 1) * C[i]), t[i].expand(50), reduction="none")
            for i in range(6)])
    torch.testing.assert_close(batched, ref, atol=1e-5, rtol=1e-5)


def test_bypass_batched_equals_one_at_a_time(small_cnn):
    # In float64: in float32 the Adam steps inside bypass can turn rounding differences between batch sizes
    # (different kernels) into lr-sized moves of pixels whose gradient is rounding noise (issue 13). In
    # float64 the drift is at most iterations * rounds * lr * 2**-53 * G / eps ~ 1e-9 (G <= 10, eps 1e-8);
    # the results are returned in float32, so allow that plus a few float32 ulps on [0, 1] (2**-24 each).
    model, A, C, t = small_cnn
    model, A, C = copy.deepcopy(model).double(), A.double(), C.double()  # the fixture is shared
    kw = dict(iterations=15, max_rounds=2, num_points=16, tolerance=1e-3, progress=False)
    res = paths.bypass(model, A, C, t, **kw)
    assert res.bent_first.any()
    tol = 15 * 2 * kw.get("lr", 0.005) * 2.0 ** -53 * 10 / 1e-8 + 4 * 2.0 ** -24
    for i in range(6):
        one = paths.bypass(model, A[i:i + 1], C[i:i + 1], int(t[i]), **kw)
        assert int(one.counts[0]) == int(res.counts[i]) and int(one.rounds[0]) == int(res.rounds[i])
        torch.testing.assert_close(one.path(0), res.path(i), atol=tol, rtol=0)
        torch.testing.assert_close(one.B_prime[0], res.B_prime[i], atol=tol, rtol=0)


def test_project_box_hyperplane_matches_scipy():
    g = torch.Generator().manual_seed(3)
    D = 6
    B = torch.rand(3, D, generator=g)
    B[:, 0] = 0.0                      # a coordinate on the box boundary, as in MNIST backgrounds
    d = torch.randn(3, D, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    z = B + 0.8 * torch.randn(3, D, generator=g)
    c = (B * d).sum(1)
    got = paths.project_box_hyperplane(z, d, c)
    assert got.min() >= 0 and got.max() <= 1
    torch.testing.assert_close((got * d).sum(1), c, atol=1e-5, rtol=0)
    for i in range(3):
        zi, di, ci = z[i].double().numpy(), d[i].double().numpy(), float(c[i])
        sol = minimize(lambda y: ((y - zi) ** 2).sum(), B[i].double().numpy(), jac=lambda y: 2 * (y - zi),
                       bounds=[(0, 1)] * D, constraints=[{"type": "eq", "fun": lambda y: y @ di - ci, "jac": lambda y: di}],
                       method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
        np.testing.assert_allclose(got[i].numpy(), sol.x, atol=1e-4)


def test_interpolated_modes(bump_pair, small_cnn):
    model, A, C = bump_pair
    # two mixes: the midpoint sits on the bump (not a mode, gets optimised), the 0.05 mix is already a mode
    X1, X2 = A.expand(2, -1, -1, -1), C.expand(2, -1, -1, -1)
    for mix, optimised in ((0.5, True), (0.05, False)):
        res = paths.interpolated_modes(model, X1, X2, 0, mix=mix, threshold=0.05, lr=0.01, steps=300)
        assert res.x.shape == X1.shape and res.x.min() >= 0 and res.x.max() <= 1
        assert (res.loss <= 0.05).all() and res.optimised.tolist() == [optimised] * 2
        if optimised:
            assert (res.loss_before > 3).all() and (res.steps > 0).all()
        else:
            torch.testing.assert_close(res.x, 0.95 * X1 + 0.05 * X2)
    model, A, C, t = small_cnn
    with pytest.raises(ValueError, match="mix"):
        paths.interpolated_modes(model, A, C, t, mix=1.5)


def test_bad_inputs_raise_clear_errors(small_cnn):
    model, A, C, t = small_cnn
    with pytest.raises(ValueError, match="same shape"):
        paths.linear_losses(model, A, C[:3], t)
    bad = A.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        paths.linear_losses(model, bad, C, t)
    with pytest.raises(ValueError, match="out of range"):
        paths.linear_losses(model, A, C, torch.full((6,), 10))
    with pytest.raises(ValueError, match="shape"):
        paths.linear_losses(model, A, C, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        paths.linear_losses(model, A, C, torch.zeros(6))
    with pytest.raises(ValueError, match="negative"):
        paths.linear_losses(model, A, C, -1)
    with pytest.raises(ValueError, match="num_points"):
        paths.linear_losses(model, A, C, t, num_points=1)
    with pytest.raises(ValueError, match="out of range"):
        paths.bypass(model, A, C, 12, iterations=1, progress=False)
    with pytest.raises(ValueError, match="same shape"):
        paths.bypass(model, A, C[:, :, :4], t, iterations=1, progress=False)
    with pytest.raises(ValueError, match="shape"):
        paths.barrier(torch.zeros(3, 1))


class _MidBarrier(nn.Module):
    """``net`` with a loss barrier half-way between dark and bright images: class 1's logit gains
    ``10 exp(-((mean pixel - 0.5) / 0.1)^2)``, so the loss toward any other class rises there."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        bump = 10 * torch.exp(-((x.mean((1, 2, 3)) - 0.5) / 0.1) ** 2)
        return z + bump[:, None] * torch.nn.functional.one_hot(torch.tensor(1), z.shape[1]).to(z)


def test_paper_preset_shapes_resnet_3x32x32():
    """The paper preset's code path (CIFAR-10 shaped inputs, a ResNet with batch norm) runs end to end."""
    torch.manual_seed(0)
    model = _MidBarrier(models.build("resnet8", in_shape=(3, 32, 32), num_classes=10)).train()   # mode restored afterwards
    g = torch.Generator().manual_seed(0)
    A, C = 0.1 * torch.rand(3, 3, 32, 32, generator=g), 0.9 + 0.1 * torch.rand(3, 3, 32, 32, generator=g)
    t = torch.tensor([0, 3, 9])
    L = paths.linear_losses(model, A, C, t, num_points=8)
    assert L.shape == (3, 8) and torch.isfinite(L).all() and model.training
    res = paths.bypass(model, A, C, t, iterations=3, max_rounds=1, num_points=8, progress=False)
    assert res.vertices.shape == (3, 3, 3, 32, 32) and res.bent_first.all()
    d = (C - A).flatten(1)
    cos = ((res.B_prime - res.B).flatten(1) * d).sum(1) / ((res.B_prime - res.B).flatten(1).norm(dim=1) * d.norm(dim=1))
    assert cos.abs().max() < 1e-3
    Lp, pos = paths.path_losses(model, res.vertices, t, points_per_segment=4)
    assert Lp.shape == pos.shape == (3, 7)
    im = paths.interpolated_modes(model, A, C, t, steps=2)
    assert im.x.shape == A.shape


def test_bypass_with_endpoints_outside_the_box(bump_pair):
    """Unconstrained (e.g. FVO) endpoints: the clamped bypass keeps B' on the hyperplane, in a box holding B."""
    model, A, C = bump_pair
    A2, C2 = A - 0.5, C + 0.5                     # pixels from -0.2 to 1.2; the line still crosses the bump
    res = paths.bypass(model, A2, C2, 0, iterations=200, max_rounds=1, progress=False)
    d = (C2 - A2).flatten()
    moved = (res.B_prime - res.B).flatten()
    assert moved.norm() > 0 and abs(float(moved @ d)) / (moved.norm() * d.norm()) < 1e-4
    assert res.B_prime.min() >= min(0.0, float(res.B.min())) - 1e-6
    assert res.B_prime.max() <= max(1.0, float(res.B.max())) + 1e-6


# ------------------------------------------------------------------------- early stop and condition maps (issue 16)
def _easy_and_hard(bump_pair):
    """Two pairs across one bump: pair 0 grazes it (gap ~0.2, freed in ~13 steps), pair 1 crosses its centre
    (gap ~4.8, not freed by one bend)."""
    model, A, C = bump_pair
    u = torch.ones_like(A)
    u[..., :2, :] = -1                       # orthogonal to C - A (a constant image): a parallel line 0.32 away
    return model, torch.cat([A + 0.08 * u, A]), torch.cat([C + 0.08 * u, C])


def test_bypass_early_stop_stops_at_the_first_barrier_free_check(bump_pair):
    model, A, C = _easy_and_hard(bump_pair)
    kw = dict(max_rounds=1, num_points=32, progress=False)
    res = paths.bypass(model, A, C, 0, iterations=64, early_stop=4, **kw)
    s = int(res.first_steps[0])
    assert s % 4 == 0 and 0 < s < 64 and int(res.first_steps[1]) == 64
    assert res.free_after_first().tolist() == [True, False]
    # independent reference: the full optimisation of pair 0 alone, run for exactly s and for s - 4 iterations
    at = paths.bypass(model, A[:1], C[:1], 0, iterations=s, **kw)
    before = paths.bypass(model, A[:1], C[:1], 0, iterations=s - 4, **kw)
    torch.testing.assert_close(res.B_prime[0], at.B_prime[0], atol=1e-6, rtol=0)
    gap = lambda Bp: float(paths.barrier(*paths.path_losses(model, torch.stack([A[0], Bp, C[0]])[None], 0, 32)).gap[0])  # noqa: E731
    assert gap(at.B_prime[0]) <= res.tolerance < gap(before.B_prime[0])      # free at s, not at the check before
    # the early stop moved B' less than the full run does
    full = paths.bypass(model, A, C, 0, iterations=64, **kw)
    assert res.shift()[0] < full.shift()[0] and res.shift_l2()[0] < full.shift_l2()[0]


def test_bypass_early_stop_leaves_pairs_that_never_become_free_as_the_full_run(bump_pair):
    model, A, C = _easy_and_hard(bump_pair)
    kw = dict(max_rounds=1, num_points=32, iterations=40, progress=False)
    early = paths.bypass(model, A, C, 0, early_stop=2, **kw)
    full = paths.bypass(model, A, C, 0, **kw)
    alone = paths.bypass(model, A[1:], C[1:], 0, **kw)
    assert not bool(early.free_after_first()[1])
    for ref in (full.B_prime[1], alone.B_prime[0]):
        torch.testing.assert_close(early.B_prime[1], ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(early.barriers[1].gap[1], full.barriers[1].gap[1])
    assert early.first_steps.tolist()[1] == full.first_steps.tolist()[1] == 40
    assert full.first_steps.tolist() == [40, 40] and full.point_steps[0].tolist() == [40, 40]


def test_bypass_early_stop_rejects_bad_values_and_shift_l2(bump_pair):
    model, A, C = bump_pair
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match="early_stop"):
            paths.bypass(model, A, C, 0, iterations=2, early_stop=bad, progress=False)
    res = paths.bypass(model, A, C, 0, iterations=20, max_rounds=1, progress=False)
    d, b = (res.B_prime - res.B).flatten(), res.B.flatten()
    assert float(res.shift_l2()[0]) == pytest.approx(float(d.norm() / b.norm()), rel=1e-6)
    assert float(res.shift()[0]) == pytest.approx(float(d.abs().max() / b.max()), rel=1e-6)
    iv = res.intervals(n_boot=50)
    assert iv["free_after_1"]["n"] == 1
    assert iv["shift_median"]["estimate"] == pytest.approx(100 * float(res.shift()[0]), rel=1e-6)
    assert iv["shift_l2_median"]["estimate"] == pytest.approx(100 * float(res.shift_l2()[0]), rel=1e-6)
    assert iv["steps_median"]["estimate"] == 20
    none = paths.bypass(model, A, A + 0.01, 0, iterations=2, progress=False)
    assert none.intervals(n_boot=50) == dict.fromkeys(("free_after_1", "shift_median", "shift_l2_median", "steps_median"))
