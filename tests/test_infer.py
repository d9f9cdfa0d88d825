"""The inference engine (mclib.infer): equal to eager fp32 within its stated tolerance, cached, safe to fall back.

The reference is always the user's model run eagerly in eval mode under no_grad (an independent path: no
copy, no channels-last, no graph). The tolerance ``infer.ATOL + infer.RTOL * |eager|`` (1e-4 each) is the
module's promise: a reordered float32 summation of a few thousand terms differs by ~1e-6 relative.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import thirdparty
from mclib import infer, models, paths, synth
from mclib.studies import pairs


def eager(model, X):
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(X).float()
    model.train(was)
    return out


def close(a, b):
    return torch.allclose(a, b, rtol=infer.RTOL, atol=infer.ATOL)


@pytest.fixture(autouse=True)
def _fresh_cache():
    infer.clear_cache()
    yield
    infer.clear_cache()


def _cnn(seed=0):
    torch.manual_seed(seed)
    return models.build("cnn", in_shape=(1, 12, 12), num_classes=5)


def test_fp32_matches_eager_cnn_and_graph_on_second_call():
    model = _cnn()
    X = torch.rand(70, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    ref = eager(model, X)
    first = infer.logits(model, X, chunk=16)
    second = infer.logits(model, X, chunk=16)
    kinds = {p.kind for k, p in infer._CACHE[model].items() if k != "signature"}
    assert kinds == {"graph"}                      # frozen from the second call on
    assert close(first, ref) and close(second, ref)


def test_fp32_matches_eager_thirdparty_resnet():
    model, x, _ = thirdparty.trained(steps=3)
    ref = eager(model, x)
    for _ in range(2):
        assert close(infer.logits(model, x, chunk=7), ref)


def test_user_model_untouched_and_cache_follows_weight_changes():
    model = _cnn().train()
    fmt = model[1][0].weight.is_contiguous()
    X = torch.rand(9, 1, 12, 12)
    infer.logits(model, X)
    infer.logits(model, X)
    assert model.training and model[1][0].weight.is_contiguous() == fmt
    assert all(p.requires_grad for p in model.parameters())
    prep = infer.prepare(model, X)
    assert infer.prepare(model, X) is prep          # cached: same object while the weights are unchanged
    with torch.no_grad():
        model[1][0].weight.mul_(-2.0)               # in place, as an optimiser step does
    out = infer.logits(model, X)
    assert close(out, eager(model, X))
    assert infer.prepare(model, X) is not prep


def test_bf16_is_close_but_opt_in():
    model = _cnn()
    X = torch.rand(20, 1, 12, 12)
    ref = eager(model, X)
    out = infer.logits(model, X, precision="bf16")
    # bfloat16 keeps 8 significant bits: relative error per op ~4e-3; a few layers stay within 5e-2
    assert torch.allclose(out, ref, rtol=5e-2, atol=5e-2)
    with pytest.raises(ValueError, match="precision must be one of"):
        infer.logits(model, X, precision="fp16")


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 3)

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("this model refuses to be traced")
        return self.lin(x.flatten(1)[:, :12])


class _DataDependent(nn.Module):
    """Two branches chosen by the data: a trace records only one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        h = self.conv(x).flatten(1)
        return h[:, :4] if float(x.mean()) > 0.5 else -h[:, :4]


class _ReluTwice(nn.Module):
    """A ReLU whose output feeds a max-pool and the read-out directly: the pooling must not move before it."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 3, 3, padding=1), nn.Linear(3 * 3 * 3 + 3 * 6 * 6, 4)

    def forward(self, x):
        r = F.relu(self.conv(x))
        return self.head(torch.cat([F.max_pool2d(r, 2).flatten(1), r.flatten(1)], 1))


def _order(graph_module):
    return [n.kind() for n in graph_module.graph.nodes() if n.kind() in ("aten::relu", "aten::relu_", "aten::max_pool2d")]


def test_graph_pools_before_relu_with_the_same_numbers():
    torch.manual_seed(0)     # ReLU (in place) then a padded 3x3/2 max-pool, and F.relu then a 2x2 pool
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3)).eval()
    x = torch.randn(9, 1, 12, 12).contiguous(memory_format=torch.channels_last)
    frozen = infer._freeze(model, x)
    assert _order(frozen) == ["aten::max_pool2d", "aten::relu_", "aten::max_pool2d", "aten::relu_"]
    assert close(frozen(x), eager(model, x))
    with torch.no_grad():    # the rewrite itself is exact: relu(max_pool(h)) == max_pool(relu(h)) bit for bit
        h = model[0](x)
        assert torch.equal(F.relu(F.max_pool2d(h, 3, 2, 1)), F.max_pool2d(F.relu(h), 3, 2, 1))
    twice = _ReluTwice().eval()
    x = torch.randn(5, 1, 6, 6).contiguous(memory_format=torch.channels_last)
    frozen = infer._freeze(twice, x)
    assert _order(frozen)[0].startswith("aten::relu")          # left alone: the ReLU output has another use
    assert close(frozen(x), eager(twice, x))


def test_untraceable_model_falls_back_with_one_warning():
    model = _Untraceable()
    X = torch.rand(10, 1, 4, 4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        outs = [infer.logits(model, X) for _ in range(3)]
    assert len([x for x in w if "mclib.infer" in str(x.message)]) == 1
    assert all(close(o, eager(model, X)) for o in outs)


def test_data_dependent_model_falls_back_on_new_inputs():
    model = _DataDependent()
    lo, hi = 0.2 * torch.rand(6, 1, 5, 5), 0.8 + 0.2 * torch.rand(6, 1, 5, 5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        infer.logits(model, lo)
        infer.logits(model, lo)                     # frozen here, on the low branch
        out = infer.logits(model, hi)               # the graph would take the wrong branch
    assert close(out, eager(model, hi))
    assert len([x for x in w if "mclib.infer" in str(x.message)]) == 1


def test_hooks_fire_on_the_users_model():
    model = _cnn()
    seen = []
    h = model[1][7].register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    try:
        infer.logits(model, torch.rand(10, 1, 12, 12), chunk=4)
    finally:
        h.remove()
    assert seen == [4, 4, 2]


def test_chunk_size_choice():
    assert infer.chunk_size(3 * 32 * 32, "cpu") == infer.CPU_CHUNK_SCALARS // 3072
    assert infer.chunk_size(784, "cpu") == infer.CPU_CHUNK_SCALARS // 784
    assert infer.chunk_size(1, "cpu") == 1024 and infer.chunk_size(10 ** 7, "cpu") == 16


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_chunk_size(bad):
    with pytest.raises((ValueError, TypeError), match="chunk_size must be a positive integer"):
        infer.logits(_cnn(), torch.rand(3, 1, 12, 12), chunk=bad)


def test_bad_inputs_named():
    model = _cnn()
    X = torch.rand(4, 1, 12, 12)
    X[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"X holds 1 non-finite values \(NaN or Inf\)"):
        infer.logits(model, X)
    with pytest.raises(ValueError, match="X is empty"):
        infer.logits(model, torch.zeros(0, 1, 12, 12))
    with pytest.raises(TypeError, match="floating-point"):
        infer.logits(model, torch.zeros(2, 1, 12, 12, dtype=torch.uint8))


def test_empty_batch_when_allowed_keeps_the_class_count_and_the_mode():
    model = _cnn().train()
    out = infer.logits(model, torch.zeros(0, 1, 12, 12), allow_empty=True)
    assert out.shape == (0, model(torch.rand(2, 1, 12, 12)).shape[1]) and out.dtype == torch.float32
    assert model.training  # evaluated in eval mode, the caller's mode restored


def test_paths_reject_inf_images_and_nan_models():
    model = _cnn()
    A, C = torch.rand(3, 1, 12, 12), torch.rand(3, 1, 12, 12)
    bad = A.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="A holds 1 non-finite values"):
        paths.linear_losses(model, bad, C, 0, 8)
    with pytest.raises(ValueError, match="A is empty"):
        paths.linear_losses(model, A[:0], C[:0], 0, 8)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        paths.linear_losses(model, A, C, 0, 8, chunk_size=0)
    with torch.no_grad():
        model[1][0].weight[0, 0, 0, 0] = float("nan")
    # before: NaN losses, and a NaN model reported "0 pairs with a barrier"
    with pytest.raises(ValueError, match="cross-entropy is not finite"):
        pairs.study_pairs(model, A, C, 0, num_points=8, progress=False)


class _NoInputGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, x):
        x = x.detach()      # and a loss barrier toward class 0 half-way between dark and bright inputs
        bump = 10 * torch.exp(-((x.mean((1, 2, 3)) - 0.5) / 0.1) ** 2)
        return self.lin(x.flatten(1)) + bump[:, None] * torch.tensor([0.0, 1.0, 0.0])


def test_no_input_gradient_is_a_clear_error():
    model = _NoInputGrad()
    A, C = 0.1 * torch.rand(2, 1, 4, 4), 0.9 + 0.1 * torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="no gradient with respect to its input.*bypass"):
        paths.bypass(model, A, C, 0, iterations=2, max_rounds=1, num_points=5, progress=False)
    with pytest.raises(ValueError, match="no gradient with respect to its input.*fvo"):
        synth.fvo(model, [0, 1], (1, 4, 4), steps=2, progress=False)


def test_linear_losses_equal_an_independent_eager_reference():
    model, x, y = thirdparty.trained(steps=3)
    A, C, t = x[:3], x[3:6], y[:3]
    a = torch.linspace(0, 1, 9)
    ref = torch.stack([F.cross_entropy(eager(model, (1 - a.view(-1, 1, 1, 1)) * A[p] + a.view(-1, 1, 1, 1) * C[p]),
                                       t[p].expand(9), reduction="none") for p in range(3)])
    for _ in range(2):                              # eager copy, then the frozen graph
        assert close(paths.linear_losses(model, A, C, t, 9), ref)


def test_configure_threads():
    old = torch.get_num_threads()
    try:
        got = infer.configure_threads(1)
        assert got["threads"] == 1 and got["OMP_WAIT_POLICY"] in ("PASSIVE", "ACTIVE")
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            infer.configure_threads(0)
    finally:
        torch.set_num_threads(old)


def test_static_forward_names_the_models_whose_trace_is_every_input():
    assert infer.static_forward(_cnn())
    assert infer.static_forward(models.build("resnet8", in_shape=(1, 12, 12), num_classes=5))
    assert not infer.static_forward(_DataDependent())

    class Sub(models.ResNet):          # the flag is not inherited: a subclass may override forward
        def forward(self, x):
            return super().forward(x)

    assert not infer.static_forward(Sub((1, 12, 12), 5, depth=8))


def test_static_model_graph_is_not_rechecked_but_others_are(monkeypatch):
    calls = []
    real = infer._check_graph
    monkeypatch.setattr(infer, "_check_graph", lambda *a: calls.append(a[0]) or real(*a))
    X = torch.rand(8, 1, 12, 12)
    cnn = _cnn()
    for _ in range(3):
        assert close(infer.logits(cnn, X), eager(cnn, X))
    assert calls == []                                     # a static model: checked once, when frozen
    dd = _DataDependent()
    Y = 0.2 * torch.rand(6, 1, 5, 5)
    for _ in range(3):
        infer.logits(dd, Y)
    assert calls == [dd, dd]                               # frozen on the second call, checked on every later one


def test_pinned_skips_the_signature_but_not_a_change_made_before_it(monkeypatch):
    model, X = _cnn(), torch.rand(9, 1, 12, 12)
    infer.logits(model, X)
    with torch.no_grad():
        model[1][0].weight.data.mul_(-1.0)                 # through .data: only the values can tell
    sigs = []
    real = infer._signature
    monkeypatch.setattr(infer, "_signature", lambda m: sigs.append(m) or real(m))
    with infer.pinned(model):
        outs = [infer.logits(model, X) for _ in range(4)]
        with infer.pinned(model):                          # blocks nest
            outs.append(infer.logits(model, X))
    assert len(sigs) == 1                                  # once, on entering the block
    assert all(close(o, eager(model, X)) for o in outs)    # the change made before the block is seen
    infer.logits(model, X)
    assert len(sigs) == 2 and not infer._PINNED            # outside the block: checked on every call again
