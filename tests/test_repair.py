"""Path repair and its baselines (mclib.repair)."""
import pytest
import torch
from torch import nn

from mclib import curves, models, repair
from mclib.attacks import backdoor as bd

SMALL = {"epochs": 2, "batch_size": 16, "lr": 1e-2}


def _data(n=60, c=1, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, hw, hw, generator=g), torch.arange(n) % 10


def _pair(arch="cnn", c=1, hw=8, **kw):
    out = []
    for s in (0, 1):
        torch.manual_seed(s)
        out.append(models.build(arch, in_shape=(c, hw, hw), num_classes=10, **kw).eval())
    return out


def test_split_bonafide_disjoint_halves_deterministic_and_nested():
    X = torch.arange(100).float().view(100, 1, 1, 1)
    y = torch.arange(100) % 10
    Xb, yb, Xe, ye = repair.split_bonafide(X, y, 20)
    assert len(Xb) == 20 and len(Xe) == 50
    ids_b, ids_e = set(Xb.flatten().tolist()), set(Xe.flatten().tolist())
    assert not ids_b & ids_e
    Xb2, _, Xe2, _ = repair.split_bonafide(X, y, 20)
    assert torch.equal(Xb, Xb2) and torch.equal(Xe, Xe2)
    # a larger n contains the smaller one; a generator reorders only within the bonafide half
    Xb50, _, Xe50, _ = repair.split_bonafide(X, y, 50)
    assert ids_b <= set(Xb50.flatten().tolist()) and torch.equal(Xe50, Xe)
    Xg, _, Xeg, _ = repair.split_bonafide(X, y, 50, generator=torch.Generator().manual_seed(3))
    assert set(Xg.flatten().tolist()) == set(Xb50.flatten().tolist()) and torch.equal(Xeg, Xe)
    assert torch.equal(yb, (Xb.flatten().long() % 10))
    with pytest.raises(ValueError, match="n must be"):
        repair.split_bonafide(X, y, 51)


def test_path_repair_trains_only_the_bend_and_keeps_endpoints():
    m0, m1 = _pair()
    X, y = _data()
    c = repair.path_repair(m0, m1, X, y, generator=torch.Generator().manual_seed(0), **SMALL)
    assert len(c.losses) == 2 * 4
    w0 = torch.cat([p.reshape(-1) for p in m0.parameters()])
    assert torch.equal(c.flat_weights(0.0), w0)
    mid = 0.5 * (c.ends[0] + c.ends[1])
    assert not torch.allclose(c.bends[0], mid)


def test_baselines_run_and_keep_shapes():
    m0, m1 = _pair()
    X, y = _data()
    ref = {k: v.shape for k, v in m0.state_dict().items()}
    w_before = [p.clone() for p in m0.parameters()]
    ft = repair.finetune(m0, X, y, **SMALL)
    sc = repair.from_scratch(m0, X, y, **SMALL)
    pr = repair.prune_finetune(m0, X, y, amount=0.5, **SMALL)
    for m in (ft, sc, pr):
        assert {k: v.shape for k, v in m.state_dict().items()} == ref
        assert m(X[:3]).shape == (3, 10)
    for a, b in zip(w_before, m0.parameters()):
        assert torch.equal(a, b)  # m0 untouched
    assert not torch.equal(ft.state_dict()["1.0.weight"], m0.state_dict()["1.0.weight"])


def test_prune_zeroes_lowest_l1_filters_and_they_stay_zero_after_finetuning():
    m0, _ = _pair()
    layer = repair.last_conv(m0)
    conv = m0.get_submodule(layer)
    norms = conv.weight.detach().abs().flatten(1).sum(1)
    pruned, kept = repair.prune_filters(m0, 0.5)
    assert int((~kept).sum()) == conv.out_channels // 2
    assert torch.all(norms[~kept].max() <= norms[kept].min())
    X, y = _data()
    pf = repair.prune_finetune(m0, X, y, amount=0.5, **SMALL)
    w = pf.get_submodule(layer).weight.detach()
    b = pf.get_submodule(layer).bias.detach()
    assert torch.all(w[~kept] == 0) and torch.all(b[~kept] == 0)
    assert w[kept].abs().sum() > 0
    assert not hasattr(pf.get_submodule(layer), "weight_mask")  # pruning made permanent


def test_weight_noise_has_the_asked_distance():
    m0, m1 = _pair()
    c = curves.Curve([m0, m1])
    d = repair.curve_distance(c, 0.5)
    expected = (0.5 * (c.ends[1] - c.ends[0])).norm().item()  # bend on the line: w(0.5) is the midpoint
    assert d == pytest.approx(expected, rel=1e-5)
    noisy = repair.weight_noise(m0, d, generator=torch.Generator().manual_seed(0))
    diff = torch.cat([(a - b).reshape(-1) for a, b in zip(noisy.parameters(), m0.parameters())]).norm().item()
    assert diff == pytest.approx(d, rel=1e-4)


def test_budget_rejects_unknown_keys():
    m0, _ = _pair()
    X, y = _data()
    with pytest.raises(ValueError, match="budget"):
        repair.finetune(m0, X, y, epochz=3)


def test_trigger_gradient_mass_is_exactly_zero_where_the_data_are_zero():
    # clean data that are zero under the corner trigger (with the model's Normalize in front, the layer's input
    # there is the constant -mean/std, not zero: only the raw-pixel part of the gradient must vanish)
    X, y = _data(40, hw=8)
    trig = bd.Trigger(size=3, position="bottom_right")
    X[..., trig.mask(X.shape)] = 0.0
    for arch in ("cnn", "mlp"):
        m = _pair(arch)[0]
        g = repair.trigger_gradient_mass(m, X, y, trig)
        assert g["trigger"] == 0.0 and g["rest"] > 0 and g["per_pixel_ratio"] == 0.0
        assert (g["trigger_pixels"], g["rest_pixels"]) == (9, 55)
    # the same models see the centre pixels, which the data do not leave at zero
    g = repair.trigger_gradient_mass(_pair("cnn")[0], X, y, bd.Trigger(size=3, position="center"))
    assert g["trigger"] > 0


def test_trigger_gradient_mass_matches_the_first_linear_layers_autograd_columns():
    # without an input affine map, the trigger part of the gradient is the weight gradient's trigger columns
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
    X, y = _data(30, hw=8)
    trig = bd.Trigger(size=2, position="center")
    g = repair.trigger_gradient_mass(m, X, y, trig)
    m.zero_grad()
    nn.functional.cross_entropy(m(X), y).backward()
    cols = trig.mask(X.shape).flatten()
    W = m[1].weight.grad
    assert g["trigger"] == pytest.approx(W[:, cols].abs().sum().item(), rel=1e-5)
    assert g["rest"] == pytest.approx(W[:, ~cols].abs().sum().item(), rel=1e-5)


def test_trigger_gradient_mass_rejects_bad_input():
    m = _pair("cnn")[0]
    X, y = _data(4)
    with pytest.raises(ValueError, match="X must be"):
        repair.trigger_gradient_mass(m, X[0], y)
    with pytest.raises(ValueError, match="layer must name"):
        repair.trigger_gradient_mass(m, X, y, layer="0")


def test_prunable_layer_is_the_last_conv_or_the_mlps_last_hidden_linear():
    assert repair.prunable_layer(_pair("cnn")[0]) == repair.last_conv(_pair("cnn")[0])
    mlp = _pair("mlp")[0]
    name = repair.prunable_layer(mlp)
    assert mlp.get_submodule(name).out_features == 128   # hidden (256, 128), then the read-out
    pruned, kept = repair.prune_filters(mlp, 0.5)
    assert int(kept.sum()) == 64
    with pytest.raises(ValueError, match="no Conv2d and no hidden Linear"):
        repair.prunable_layer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
