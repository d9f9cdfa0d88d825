"""mclib.hessian: iterative top input-Hessian eigenvalues against exact references; robustness helpers.

References are independent of the code under test: a closed-form Hessian for a quadratic model, and
``torch.func.hessian`` + ``torch.linalg.eigvalsh`` written out here for small networks.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mclib import hessian as H
from mclib import models


def rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


def exact_reference(model, x, y):
    """Per-example input Hessians with torch.func.hessian, then eigvalsh: (B,) largest eigenvalues."""
    from torch.func import functional_call, hessian

    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    out = []
    for xi, yi in zip(x, y):
        def f(z):
            return F.cross_entropy(functional_call(model, (params, buffers), (z.view(1, *xi.shape),)), yi.view(1))
        Hm = hessian(f)(xi.reshape(-1).detach())
        out.append(torch.linalg.eigvalsh(Hm.double())[-1])
    return torch.stack(out).to(x.dtype)


class Quadratic(nn.Module):
    """logits = (q(x), 0) with q(x) = 1/2 x^T A x + b^T x. With label 1 the loss is softplus(q(x)), whose
    input Hessian is sigma(q) A + sigma(q)(1 - sigma(q)) g g^T with g = A x + b (closed form)."""

    def __init__(self, A, b):
        super().__init__()
        self.A = nn.Parameter(A)
        self.b = nn.Parameter(b)

    def forward(self, x):
        z = x.flatten(1)
        q = 0.5 * torch.einsum("bi,ij,bj->b", z, self.A, z) + z @ self.b
        return torch.stack([q, torch.zeros_like(q)], 1)

    def hessian(self, x):
        z = x.flatten(1)
        A = self.A.detach()
        q = 0.5 * torch.einsum("bi,ij,bj->b", z, A, z) + z @ self.b.detach()
        g = z @ A + self.b.detach()
        s = torch.sigmoid(q)
        return s[:, None, None] * A + (s * (1 - s))[:, None, None] * g[:, :, None] * g[:, None, :]


def sym_with_spectrum(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ Q.T


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_quadratic_model_matches_closed_form(method):
    D = 20
    A = sym_with_spectrum(np.linspace(-3, 6, D), seed=1)
    model = Quadratic(A, 0.1 * torch.randn(D, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    x = 0.3 * torch.randn(6, 1, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.ones(6, dtype=torch.long)
    truth = torch.linalg.eigvalsh(model.hessian(x))[:, -1]
    lam, info = H.top_eigenvalue(model, x, y, method=method, tol=1e-7, return_info=True,
                                 generator=torch.Generator().manual_seed(0))
    assert rel_err(lam, truth) < 1e-3
    assert bool(info["converged"].all())
    # the closed form agrees with torch.func.hessian too (sanity of the reference itself)
    assert torch.allclose(exact_reference(model, x, y), truth, rtol=1e-8)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_negative_dominant_eigenvalue_sign_handling(method):
    # at x = 0 (b = 0) the Hessian is A / 2: dominant (largest-magnitude) eigenvalue -5, largest algebraic 1
    D = 12
    spectrum = [-10.0, -7.0, -3.0, -1.0, -0.5, 0.2, 0.5, 0.8, 1.2, 1.5, 1.8, 2.0]
    model = Quadratic(sym_with_spectrum(spectrum, seed=4), torch.zeros(D, dtype=torch.float64))
    x = torch.zeros(3, D, dtype=torch.float64)
    y = torch.ones(3, dtype=torch.long)
    lam, info = H.top_eigenvalue(model, x, y, method=method, tol=1e-8, return_info=True,
                                 generator=torch.Generator().manual_seed(0))
    assert rel_err(lam, torch.full((3,), 1.0, dtype=torch.float64)) < 1e-3
    if method == "power":
        assert bool(info["shifted"].all())  # plain power iteration found -5 first and had to shift
    # entirely negative spectrum: the answer is the negative eigenvalue closest to zero
    model2 = Quadratic(sym_with_spectrum([-8.0, -6.0, -4.0, -2.0, -1.0], seed=5), torch.zeros(5, dtype=torch.float64))
    lam2 = H.top_eigenvalue(model2, torch.zeros(2, 5, dtype=torch.float64), torch.ones(2, dtype=torch.long),
                            method=method, tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert rel_err(lam2, torch.full((2,), -0.5, dtype=torch.float64)) < 1e-3


def _mlp(act, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 24), act(), nn.Linear(24, 24), act(), nn.Linear(24, 10)).to(dtype)


@pytest.mark.parametrize("act", [nn.Tanh, nn.Softplus, nn.ReLU])
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_small_networks_match_exact_hessian(act, method):
    model = _mlp(act)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(6, 1, 6, 6, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    truth = exact_reference(model, x, y)
    lam = H.top_eigenvalue(model, x, y, method=method, tol=1e-6, generator=torch.Generator().manual_seed(0))
    assert lam.shape == (6,)
    assert rel_err(lam, truth) < 1e-3


def test_cnn_with_pooling_and_batchnorm_models():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    for arch in ("cnn", "vgg_bn"):
        torch.manual_seed(1)
        model = models.build(arch, in_shape=(1, 8, 8), num_classes=10)
        if arch == "vgg_bn":  # non-trivial running statistics
            model.train()
            with torch.no_grad():
                model(torch.rand(64, 1, 8, 8, generator=g))
        model.train()  # top_eigenvalue must use eval mode and restore the mode afterwards
        lam = H.top_eigenvalue(model, x, y, generator=torch.Generator().manual_seed(0))
        assert model.training
        assert rel_err(lam, exact_reference(model, x, y)) < 1e-3


def test_backends_agree_and_batched_equals_loop():
    model = _mlp(nn.Tanh, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(7, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (7,), generator=g)
    a = H.top_eigenvalue(model, x, y, backend="autograd", tol=1e-10, generator=torch.Generator().manual_seed(0))
    b = H.top_eigenvalue(model, x, y, backend="func", tol=1e-10, generator=torch.Generator().manual_seed(0))
    loop = torch.cat([H.top_eigenvalue(model, x[i:i + 1], y[i:i + 1], tol=1e-10) for i in range(7)])
    chunks = H.top_eigenvalue(model, x, y, batch_size=3, tol=1e-10)
    for other in (b, loop, chunks):
        assert rel_err(other, a) < 1e-8


def test_batch_mean_variant():
    model = _mlp(nn.Softplus, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (4,), generator=g)
    from torch.func import hessian

    def mean_loss(flat):
        return F.cross_entropy(model(flat.view(4, 1, 6, 6)), y)

    truth = torch.linalg.eigvalsh(hessian(mean_loss)(x.reshape(-1)))[-1]
    for method in ("power", "lanczos"):
        lam = H.batch_top_eigenvalue(model, x, y, method=method, tol=1e-9, generator=torch.Generator().manual_seed(0))
        assert lam.dim() == 0
        assert rel_err(lam, truth) < 1e-3
    # block-diagonal identity: lambda_max(batch-mean Hessian) = max_i lambda_max(H_i) / B
    per = H.top_eigenvalue(model, x, y, tol=1e-10)
    assert rel_err(per.max() / 4, truth) < 1e-6


def test_exact_helpers_and_bad_input():
    model = _mlp(nn.Tanh, dtype=torch.float64)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    assert H.exact_hessian(model, x, y).shape == (3, 36, 36)
    assert rel_err(H.exact_top_eigenvalue(model, x, y), exact_reference(model, x, y)) < 1e-10
    with pytest.raises(ValueError, match="method"):
        H.top_eigenvalue(model, x, y, method="arnoldi")
    with pytest.raises(ValueError, match="backend"):
        H.top_eigenvalue(model, x, y, backend="jax")
    with pytest.raises(ValueError, match="labels"):
        H.top_eigenvalue(model, x, y[:2])


@pytest.fixture(scope="module")
def adv_pair(tmp_path_factory):
    """A regular and a PGD-adversarially trained CNN on the 8x8 digits (the recipe's batch_hook)."""
    from mclib import train

    cache = tmp_path_factory.mktemp("cache")
    base = train.Recipe(arch="cnn", dataset="digits", seed=0, epochs=5, batch_size=64, lr=3e-3, n_train=500)
    adv_recipe = base.replace(batch_hook="mclib.attacks.evasion:pgd",
                              batch_hook_kwargs={"eps": 0.2, "steps": 2, "step_size": 0.15})
    reg = train.train(base, device="cpu", cache_dir=cache, progress=False).model
    adv = train.train(adv_recipe, device="cpu", cache_dir=cache, progress=False).model
    return train, base, adv_recipe, reg, adv, cache


def test_adversarial_training_is_more_robust(adv_pair):
    from mclib import data
    from mclib.attacks import pgd

    train, _, _, reg, adv, _ = adv_pair
    X, y = data.load("digits", "test", n=200)
    accs = {}
    for name, m in (("reg", reg), ("adv", adv)):
        xa = pgd(m, X, y, eps=0.2, steps=10, step_size=0.05, generator=torch.Generator().manual_seed(0))
        accs[name] = train.evaluate(m, xa, y)["acc"]
    print(accs)
    assert accs["adv"] > accs["reg"] + 0.1, accs


def test_adversarial_training_is_deterministic(tmp_path):
    """PGD's random start draws from torch's global generator, which train() seeds (via Recipe.build)."""
    from mclib import train

    recipe = train.Recipe(arch="mlp", dataset="digits", seed=3, epochs=1, batch_size=64, n_train=192,
                          batch_hook="mclib.attacks.evasion:pgd", batch_hook_kwargs={"eps": 0.2, "steps": 2})
    a = train.train(recipe, device="cpu", cache_dir=tmp_path, progress=False).model
    torch.manual_seed(12345)  # a different global RNG state before the second run must not matter
    b = train.train(recipe, device="cpu", cache_dir=tmp_path, retrain=True, progress=False).model
    for (k, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(u, v), k


# ----------------------------------------------------------------------------------------------------
# The exact Gauss-Newton path for piecewise-linear networks, saturation, bad input
# ----------------------------------------------------------------------------------------------------
def _as64(model):
    import copy

    return copy.deepcopy(model).double().eval()


@pytest.fixture(scope="module")
def saturated():
    """The third-party CIFAR ResNet (option-A shortcuts, functional ReLU, BN) made over-confident, on 3x8x8 inputs
    (the architecture pools globally, so small inputs keep the float64 reference Hessian 192 x 192)."""
    import thirdparty as tp

    model, x, y = tp.trained(confident=6.0)
    xs = F.interpolate(x[:6], size=8, mode="bilinear", align_corners=False)
    return model, xs, y[:6]


@pytest.mark.parametrize("act,expected", [(nn.ReLU, True), (nn.Tanh, False), (nn.Softplus, False), (nn.GELU, False)])
def test_piecewise_linear_detection_on_mlps(act, expected):
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    assert H.is_piecewise_linear(_mlp(act).eval(), x) is expected


def test_piecewise_linear_detection_on_cnns_and_third_party(saturated):
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for arch in ("cnn", "vgg_bn"):  # max-pool, BatchNorm (eval), Normalize
        assert H.is_piecewise_linear(models.build(arch, in_shape=(1, 8, 8), num_classes=10).eval(), x)
    model, xs, _ = saturated  # functional ReLU, F.pad shortcuts, avg-pool: found from the graph, not module types
    assert H.is_piecewise_linear(model, xs)


def test_exact_path_matches_float64_hessian_on_saturated_third_party_model(saturated):
    model, x, y = saturated
    with torch.no_grad():
        pmax = torch.softmax(model(x).double(), 1).amax(1)
    assert int((pmax > H.SATURATION).sum()) >= 3  # the regime where float32 iterative solvers go wrong
    ref = torch.linalg.eigvalsh(H.exact_hessian(_as64(model), x.double(), y))  # (B, D), ascending
    lam, info = H.top_eigenvalue(model, x, y, return_info=True)
    assert bool(info["exact"].all()) and bool(info["converged"].all())
    assert lam.dtype == torch.float32
    # float32 Jacobian (relative error ~1e-6) into a float64 C x C problem: relative 1e-4 even at 1e-9 eigenvalues
    assert rel_err(lam.double(), ref[:, -1]) < 1e-4
    # the full nonzero spectrum, in float64, wherever the reference resolves it (above its rounding noise,
    # which shows as negative eigenvalues of the PSD matrix)
    gn = H.gauss_newton_spectrum(_as64(model), x.double(), y)
    C = gn.shape[1]
    top_ref, top_gn = ref[:, -(C - 1):], gn[:, 1:]
    noise = ref[:, :1].abs()  # the reference's absolute rounding level (eigvalsh of a D x D float64 matrix)
    assert bool((top_ref[:, -1:] > 1e3 * noise).all()) and int((top_ref > 1e3 * noise).sum()) > len(x)
    assert ((top_gn - top_ref).abs() <= 10 * noise + 1e-8 * top_ref).all()
    assert (gn[:, 0].abs() <= 1e-12 * gn[:, -1]).all()  # diag p - p p^T has rank C - 1: one zero


def test_iterative_solvers_switch_to_float64_on_saturated_inputs(saturated):
    model, x, y = saturated
    ref = torch.linalg.eigvalsh(H.exact_hessian(_as64(model), x.double(), y))[:, -1]
    for method in ("lanczos", "power"):
        lam, info = H.top_eigenvalue(model, x, y, method=method, tol=1e-8, return_info=True,
                                     generator=torch.Generator().manual_seed(0))
        assert bool(info["float64"].all()) and not bool(info["exact"].any())
        assert rel_err(lam.double(), ref) < 1e-4, method
    lam_b = H.batch_top_eigenvalue(model, x, y, method="lanczos", tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert rel_err(lam_b.double(), ref.max() / len(x)) < 1e-4
    assert rel_err(H.batch_top_eigenvalue(model, x, y, method="exact").double(), ref.max() / len(x)) < 1e-4


def test_auto_method_keeps_lanczos_for_smooth_networks_and_exact_refuses_them():
    model = _mlp(nn.Tanh)
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 4, 9])
    lam, info = H.top_eigenvalue(model, x, y, return_info=True, tol=1e-6)
    assert not bool(info["exact"].any())
    assert rel_err(lam, exact_reference(model, x, y)) < 1e-3
    with pytest.raises(ValueError, match="not piecewise linear"):
        H.top_eigenvalue(model, x, y, method="exact")


def test_exact_equals_lanczos_in_float64_on_relu_networks():
    model = _mlp(nn.ReLU, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(9, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (9,), generator=g)
    exact = H.top_eigenvalue(model, x, y, batch_size=4)
    lan = H.top_eigenvalue(model, x, y, method="lanczos", tol=1e-12)
    assert exact.dtype == torch.float64
    assert rel_err(exact, lan) < 1e-9
    assert torch.equal(exact, H.top_eigenvalue(model, x, y))  # deterministic, chunking-independent up to rounding


class _Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.detach())


@pytest.mark.parametrize("method", ["auto", "exact", "lanczos", "power"])
def test_bad_input_gives_one_clear_error(method):
    model = _mlp(nn.ReLU)
    x = torch.rand(3, 1, 6, 6)
    for bad in (torch.tensor([0, 10, 2]), torch.tensor([-1, 0, 0])):
        with pytest.raises(ValueError, match=r"label -?\d+ outside the model's 10 classes; allowed: 0..9"):
            H.top_eigenvalue(model, x, bad, method=method)
    with pytest.raises(ValueError, match="empty batch"):
        H.top_eigenvalue(model, x[:0], torch.zeros(0, dtype=torch.long), method=method)
    with pytest.raises(ValueError, match="no gradient with respect to its input"):
        H.top_eigenvalue(_Detached(), torch.rand(2, 4), torch.tensor([0, 1]), method=method, piecewise_linear=None)
    with pytest.raises(ValueError, match="batch_size"):
        H.top_eigenvalue(model, x, torch.tensor([0, 1, 2]), method=method, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        H.top_eigenvalue(model, x, torch.tensor([0, 1, 2]), method=method, precision="half")
    with pytest.raises(ValueError, match="integer class labels"):
        H.top_eigenvalue(model, x, torch.tensor([0.0, 1.0, 2.0]), method=method)


def test_lanczos_goes_on_with_the_slow_examples_alone():
    """lanczos(restrict=...): once at most a quarter of the examples run, the rest are dropped from the batched
    operator; every example's result equals the uncompacted solve (row-wise arithmetic), and the eigenvalues
    are those of the operators (diagonal here: the largest entry)."""
    g = torch.Generator().manual_seed(0)
    B, D = 16, 40
    d = torch.rand(B, D, generator=g, dtype=torch.float64)
    d[:12] = d[:12] ** 12          # twelve quickly converging spectra (one dominant entry), four slow ones
    d[:12, 0] = 3.0
    v0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    calls = []

    def restrict(rows):
        calls.append(rows.clone())
        return lambda v: v * d[rows]

    full, info_full = H.lanczos(lambda v: v * d, v0, iters=40, tol=1e-10)
    comp, info_comp = H.lanczos(lambda v: v * d, v0, iters=40, tol=1e-10, restrict=restrict)
    assert calls and set(calls[0].tolist()) <= set(range(12, 16))
    torch.testing.assert_close(comp, full, rtol=1e-12, atol=0)
    for k in ("iters", "converged"):
        assert torch.equal(info_comp[k], info_full[k])
    torch.testing.assert_close(full, d.amax(1), rtol=1e-8, atol=0)
    assert int(info_full["iters"][:12].max()) < int(info_full["iters"][12:].min())
