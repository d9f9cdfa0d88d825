"""Tests of mclib.studies.codes (claim B3): the minimal flipping radius, BMU change under attack, the pre-activation
and shallow-layer lookup on mclib's models, SOM protocols, the one-at-a-time design, and condition_map against an
independent scipy computation and a planted effect."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from mclib import models
from mclib import som as S
from mclib.studies import codes




# --------------------------------------------------------------------------- layers
def test_pre_activation_and_shallow_layers_of_mclib_models():
    cnn = models.build("cnn", in_shape=(1, 28, 28), num_classes=10)
    assert S.pre_activation(cnn, "1.1") == "1.0"          # ReLU in a Sequential: the convolution before it
    assert S.pre_activation(cnn, "1.9") is None            # the logits: no activation
    assert codes.shallow_layers(cnn) == {"L1": "1.1", "L1 pre-ReLU": "1.0", "L2": "1.4"}
    res = models.build("resnet8", in_shape=(1, 28, 28), num_classes=10, width=8)
    assert S.pre_activation(res, "1.stem") == "1.stem.1"  # conv, bn, relu stem: the BatchNorm output
    assert codes.shallow_layers(res) == {"L1": "1.stem", "L1 pre-ReLU": "1.stem.1", "L2": "1.layer1.0"}
    assert S.pre_activation(res, "1.layer1.0") is None     # a residual block applies its ReLU functionally
    tv = models.build("resnet18", in_shape=(3, 32, 32), num_classes=10)   # torchvision: relu is called after bn1
    assert codes.shallow_layers(tv) == {"L1": "1.relu", "L1 pre-ReLU": "1.bn1", "L2": "1.layer1.0"}
    with pytest.raises(ValueError, match="not a module"):
        S.pre_activation(cnn, "nope")
    # the pre-activation codes are what the ReLU reads: relu(pre) == post, element-wise, before channel means
    X = torch.rand(4, 1, 28, 28)
    store = {}
    mods = dict(cnn.named_modules())
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o)) for n in ("1.0", "1.1")]
    with torch.no_grad():
        cnn(X)
    for h in hs:
        h.remove()
    assert torch.equal(torch.relu(store["1.0"]), store["1.1"])


# --------------------------------------------------------------------------- protocols and design
def test_fit_protocol_is_fit_som_with_epochs_as_passes():
    X = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    m = codes.fit_protocol(X, 3, 3, {"standardize": False, "epochs": 2}, seed=1)
    ref = S.fit_som(X, 3, 3, backend="minisom", standardize=False, iterations=120, seed=1)
    assert m.backend == "minisom" and m.info["iterations"] == 120 and torch.equal(m.weights, ref.weights)
    b = codes.fit_protocol(X, 3, 3, {"backend": "torch", "sigma_end": 0.5, "epochs": 7, "fit_on": "train"})
    assert b.backend == "torch" and b.info["iterations"] == 7 and b.info["sigma_end"] == 0.5
    with pytest.raises(ValueError, match="unknown SOM protocol key"):
        codes.fit_protocol(X, 3, 3, {"sigma_start": 2})
    with pytest.raises(ValueError, match="sigma_end needs backend='torch'"):
        codes.fit_protocol(X, 3, 3, {"sigma_end": 0.5})
    with pytest.raises(ValueError, match="epochs"):
        codes.fit_protocol(X, 3, 3, {"epochs": 0})


def test_one_at_a_time_design():
    base = {"layer": "L1", "som": "10x10", "protocol": "chapter"}
    got = codes.one_at_a_time(base, {"layer": ["L1", "L2"], "som": ["5x5", "10x10", "16x16"], "protocol": []})
    assert got == [base, {**base, "layer": "L2"}, {**base, "som": "5x5"}, {**base, "som": "16x16"}]
    with pytest.raises(ValueError, match="lacks"):
        codes.one_at_a_time(base, {"model": ["cnn"]})


def test_rank_finite_keeps_spearman_of_censored_radii():
    eps = torch.tensor([0.1, float("inf"), 0.05, 0.3, float("inf"), 0.2])
    h = np.array([1.0, 0.2, 1.5, 0.5, 0.1, 0.9])
    assert spearmanr(h, codes._rank_finite(eps)).statistic == pytest.approx(spearmanr(h, eps.numpy()).statistic)
    assert np.isfinite(codes._rank_finite(torch.full((3,), float("inf")))).all()


# --------------------------------------------------------------------------- the map
def _toy(n=240, seed=0):
    """Codes = the inputs (a ReLU of an identity layer). Cluster A (code near (4, 0)) holds only class 0 and is
    hard to flip; cluster B (near (0, 4)) holds classes 0-2 and is easy to flip: B3's effect, planted."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g) < 0.5
    centre = torch.where(a[:, None], torch.tensor([4.0, 0.0]), torch.tensor([0.0, 4.0]))
    X = (centre + 0.3 * torch.randn(n, 2, generator=g)).clamp_min(0).view(n, 1, 1, 2)
    y = torch.where(a, torch.zeros(n, dtype=torch.long), torch.randint(0, 3, (n,), generator=g))
    eps = torch.where(a, 0.3, 0.1) + 0.05 * torch.rand(n, generator=g)
    eps[a & (torch.rand(n, generator=g) < 0.2)] = float("inf")     # some hard inputs are never flipped
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2)), lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), nn.Linear(2, 3)).eval()
    return model, X, y, eps


PROTOCOLS = {"chapter": {"standardize": True, "epochs": 2, "fit_on": "fit"},
             "evaluated": {"standardize": True, "epochs": 2, "fit_on": "evaluated"},
             "batch": {"backend": "torch", "sigma_end": 0.5, "epochs": 20, "fit_on": "fit"}}


def test_condition_map_matches_an_independent_computation_and_finds_the_planted_effect():
    model, X, y, eps = _toy()
    Xf, yf = X[:160], y[:160]
    layers = {"L1": "2", "L1 pre-ReLU": "1"}
    settings = codes.one_at_a_time({"layer": "L1", "som": "4x4", "protocol": "chapter", "vulnerability": "pgd"},
                               {"layer": ["L1 pre-ReLU"], "som": ["2x2"], "protocol": ["evaluated", "batch"]})
    out = codes.condition_map(model, X, y, {"pgd": eps}, settings, layers, PROTOCOLS, {"fit": (Xf, yf)}, n_boot=300,
                          tag={"model": "toy"})
    assert [e["setting"] for e in out] == [{"model": "toy", **s} for s in settings]
    # reference for the base setting, computed step by step with scipy's Spearman
    m = S.fit_som(X[:160].flatten(1), 4, 4, backend="minisom", iterations=320, seed=0)
    bm = m.bmu(S.standardise(m, X[:160].flatten(1)))
    q = m.bmu(S.standardise(m, X.flatten(1)))
    h = S.bmu_homogeneity(bm, yf, 16, n_classes=3, query=q)["label_entropy"].numpy()
    base = out[0]["measured"]
    assert base["spearman"]["estimate"] == pytest.approx(spearmanr(h, eps.numpy()).statistic, abs=1e-9)
    assert base["spearman"]["n"] == len(X) and base["censored"] == int(torch.isinf(eps).sum())
    assert base["module"] == "2" and out[1]["measured"]["module"] == "1"
    for e in out:   # the planted effect: homogeneous (mixed-class) codes are flipped by smaller radii
        sp = e["measured"]["spearman"]
        assert sp["lo"] <= sp["estimate"] <= sp["hi"] < -0.3, e
    # determinism
    again = codes.condition_map(model, X, y, {"pgd": eps}, settings[:1], layers, PROTOCOLS, {"fit": (Xf, yf)}, n_boot=300)
    assert again[0]["measured"] == base


def test_condition_map_no_effect_gives_an_interval_around_zero():
    model, X, y, _ = _toy(400, seed=1)
    eps = torch.rand(len(X), generator=torch.Generator().manual_seed(5))   # vulnerability unrelated to the code
    out = codes.condition_map(model, X, y, {"pgd": eps}, [{"layer": "L1", "som": "4x4", "protocol": "evaluated",
                          "vulnerability": "pgd"}], {"L1": "2"}, PROTOCOLS, {}, n_boot=300)
    sp = out[0]["measured"]["spearman"]
    assert sp["lo"] < 0 < sp["hi"]


@pytest.mark.parametrize("setting,match", [
    ({"layer": "L9", "som": "4x4", "protocol": "chapter", "vulnerability": "pgd"}, "unknown layer"),
    ({"layer": "L1", "som": "4x4", "protocol": "nope", "vulnerability": "pgd"}, "unknown protocol"),
    ({"layer": "L1", "som": "4x4", "protocol": "chapter", "vulnerability": "l2"}, "unknown vulnerability"),
    ({"layer": "L1", "som": "4x4", "protocol": "chapter"}, "lacks"),
    ({"layer": "L1", "som": "four", "protocol": "evaluated", "vulnerability": "pgd"}, "ROWSxCOLS"),
])
def test_condition_map_rejects_bad_settings(setting, match):
    model, X, y, eps = _toy(40)
    with pytest.raises(ValueError, match=match):
        codes.condition_map(model, X, y, {"pgd": eps}, [setting], {"L1": "2"}, PROTOCOLS, {"fit": (X, y)}, n_boot=10)


def test_condition_map_rejects_unknown_fit_set_and_mismatched_radii():
    model, X, y, eps = _toy(40)
    s = {"layer": "L1", "som": "4x4", "protocol": "chapter", "vulnerability": "pgd"}
    with pytest.raises(ValueError, match="not a code set"):
        codes.condition_map(model, X, y, {"pgd": eps}, [s], {"L1": "2"}, PROTOCOLS, {}, n_boot=10)
    with pytest.raises(ValueError, match="radii"):
        codes.condition_map(model, X, y, {"pgd": eps[:5]}, [s], {"L1": "2"}, PROTOCOLS, {"fit": (X, y)}, n_boot=10)


def test_plot_conditions_draws_one_row_per_setting():
    import matplotlib
    matplotlib.use("Agg")
    conds = [{"setting": {"model": "a", "layer": "L1"}, "measured": {"spearman": {"estimate": -0.1, "lo": -0.2, "hi": 0.0}}},
             {"setting": {"model": "b", "layer": "L2"}, "measured": {"spearman": {"estimate": None, "lo": None, "hi": None}}}]
    ax = codes.plot_conditions(conds)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L1", "L2"]
    for c in conds:                       # a key constant over the map is left out of the labels
        c["setting"]["som"] = "10x10"
    assert [t.get_text() for t in codes.plot_conditions(conds).get_yticklabels()] == ["L1", "L2"]
    assert [t.get_text() for t in codes.plot_conditions(conds, label_keys=["som"]).get_yticklabels()] == ["10x10"] * 2


def test_minimal_eps_stopping_at_first_success_finds_the_exact_radius():
    # logit1 - logit0 = 2 x - 1 on one pixel: an image of value c (class 0, c < 0.5) flips at eps = 0.5 - c
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [2.0]])), lin.bias.copy_(torch.tensor([0.0, -1.0]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    c = torch.tensor([0.455, 0.305, 0.1])
    eps = codes.minimal_eps(model, c.view(-1, 1, 1, 1), torch.zeros(3, dtype=torch.long), eps_max=0.32, resolution=32,
                        steps=10, stop_on_success=True, generator=torch.Generator().manual_seed(0))
    # grid step 0.01: the smallest grid radius at or above 0.5 - c = 0.045, 0.195
    assert torch.allclose(eps[:2], torch.tensor([0.05, 0.20])), eps
    assert math.isinf(eps[2])  # needs 0.4 > eps_max


def test_summarise_conditions_sorts_intervals_by_sign_and_size():
    def c(lo, hi):
        return {"setting": {}, "measured": {"spearman": {"estimate": (lo + hi) / 2 if lo is not None else None,
                                                         "lo": lo, "hi": hi}}}
    got = codes.summarise_conditions([c(-0.3, -0.1), c(0.02, 0.2), c(-0.1, 0.1), c(-0.2, 0.05), c(None, None)])
    assert {k: got[k] for k in ("settings", "negative", "positive", "small", "undecided")} == \
        {"settings": 5, "negative": 1, "positive": 1, "small": 1, "undecided": 2}
    assert got["max_halfwidth"] == pytest.approx(0.125) and got["estimate_range"] == pytest.approx((-0.2, 0.11))


@pytest.mark.parametrize("ps,rejected", [
    ([0.001, 0.02, 0.5], 2),     # Holm: 0.001 <= 0.05/3, 0.02 <= 0.05/2 (Bonferroni's 0.05/3 would keep only one)
    ([0.02, 0.03, 0.04], 0),     # the smallest already misses 0.05/3: nothing is rejected
    ([0.001, 0.01, 0.02, 0.04], 4),
    ([None, 0.3], 0),
])
def test_summarise_conditions_holm_correction(ps, rejected):
    conds = [{"setting": {}, "measured": {"spearman": {"estimate": 0.1, "lo": 0.0, "hi": 0.2, "p": p}}} for p in ps]
    got = codes.summarise_conditions(conds)
    assert got["holm"] == rejected and got["expected_by_chance"] == pytest.approx(0.05 * len(ps))


def test_bmu_change_zero_for_identical_inputs():
    model = models.build("cnn", dataset="digits").eval()
    X = torch.rand(60, 1, 8, 8)
    y = torch.arange(60) % 10
    layer_codes = S.fit_layers(S.activations(model, X), y, rows=3, cols=3, iterations=120)
    assert list(layer_codes.metrics.index) == layer_codes.layers
    assert set(layer_codes.metrics.columns) >= {"units_used", "bmu_entropy", "purity", "mi", "within_class_spread",
                                          "quantization_error", "topographic_error"}
    assert all(v == 0.0 for v in codes.bmu_change(model, X, X.clone(), layer_codes).values())


def test_minimal_eps_linear_model():
    # logit1 - logit0 = sum(x) - 2.2 on 4 pixels; an L-inf step eps changes it by at most 4 eps, so the
    # smallest flipping radius for a constant image x = c (true class 0) is (2.2 - 4c) / 4
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        lin.bias.copy_(torch.tensor([0.0, -2.2]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    c = torch.tensor([0.53, 0.5, 0.45, 0.2, 0.6])
    x = c.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    y = torch.zeros(5, dtype=torch.long)
    eps_max, res = 0.2, 64
    eps = codes.minimal_eps(model, x, y, eps_max=eps_max, resolution=res, steps=10, generator=torch.Generator().manual_seed(0))
    exact = torch.tensor([0.02, 0.05, 0.1])
    assert torch.all((eps[:3] - exact).abs() <= eps_max / res + 1e-6), eps
    assert torch.all(eps[:3] >= exact - 1e-6)  # never below the true radius: PGD cannot flip there
    assert math.isinf(eps[3])  # needs 0.35 > eps_max
    assert eps[4] == 0.0  # already misclassified


def test_sequential_inputs_attacks_only_new_inputs_and_stops_when_the_sign_is_decided(monkeypatch):
    """B3's inputs grow on the declared looks while the base rho interval spans 0; each input is attacked once."""
    class Fixed(nn.Module):  # classifies every input correctly: its logit is the label read off the first pixel
        def forward(self, x):
            return nn.functional.one_hot(x.flatten(1)[:, 0].long(), 3).float()

    X = torch.zeros(40, 1, 2, 2)
    y = torch.arange(40) % 3
    X[:, 0, 0, 0] = y.float()
    attacked = []

    def fake_eps(model, x, yy, **kw):
        attacked.append(len(x))
        return torch.linspace(0.1, 0.2, len(x))

    spans = iter([(-0.3, 0.1), (-0.3, -0.05)])  # undecided at the first look, negative at the second

    def fake_map(model, Xe, ye, eps, settings, *a, level=0.95, **kw):
        lo, hi = next(spans)
        return [{"measured": {"spearman": {"estimate": (lo + hi) / 2, "lo": lo, "hi": hi, "n": len(Xe), "level": level}}}]

    monkeypatch.setattr(codes, "minimal_eps", fake_eps)
    monkeypatch.setattr(codes, "condition_map", fake_map)
    base = {"layer": "L1", "som": "2x2", "protocol": "p", "vulnerability": "v"}
    idx, eps, sample = codes.sequential_inputs(Fixed(), X, y, 10, 40, {"v": {}}, base, {}, {}, {}, resolution=4)
    assert sample.looks == [10, 20] and sample.design.looks == (10, 20, 40) and sample.status == "holds"
    assert attacked == [10, 10] and len(eps["v"]) == 20 and idx.tolist() == list(range(20))
    assert sample.design.level == pytest.approx(1 - 0.05 / 3)


def test_b_evidence_by_claim():
    """B1 and B2 read code_evidence of the first and last layer's BMUs, B2 also the per-layer metrics, B3 the base
    setting's interval per model and the condition map; each model's evidence carries its test accuracy."""
    import pandas as pd
    from types import SimpleNamespace as NS
    from torch import nn

    y = torch.arange(40) % 4
    c = NS(layers=["a", "b"], bmus={"a": torch.zeros(40, dtype=torch.long), "b": y.clone()},
           metrics=pd.DataFrame({k: [0.1, 0.9] for k in codes.B2_METRICS}, index=["a", "b"]))
    X = torch.eye(4)[y].reshape(40, 1, 2, 2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(4))                     # a perfect classifier of these inputs
    vuln = {"m": {"base": {"spearman": {"estimate": -0.5}}, "censored": 1}}
    S = codes.Sizes.read("smoke")
    ev = codes.b_evidence({"m": net}, {"m": c}, X, y, vuln, {"m": {"per_layer": {"a": 0.1}}}, ["map"], S, seed=0)
    assert ev["B1"]["models"]["m"] == ev["B2"]["models"]["m"]
    b1 = ev["B1"]["models"]["m"]
    assert b1["purity_first"]["estimate"] == 0.25 and b1["purity_last"] == 1.0 and b1["test_acc"] == 1.0
    assert b1 == {**codes.code_evidence(c.bmus["a"], c.bmus["b"], y, n_boot=S.n_boot, seed=0), "test_acc": 1.0,
                  "n_test": 40}
    assert ev["B2"]["metrics"]["m"]["purity"] == [0.1, 0.9]
    assert ev["B3"]["conditions"] == ["map"] and ev["B3"]["models"]["m"]["setting"] == dict(S.b3_base)
