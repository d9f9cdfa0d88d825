"""Issue 33: what misled a researcher on a pretrained third-party CIFAR ResNet, each point on the
third-party-style ResNet of ``tests/thirdparty.py`` (option-A shortcuts, functional ReLU, BatchNorm).

1. a curve's endpoints keep their own BatchNorm statistics when ``bn_data`` is given;
2. a real-real median barrier below the arithmetic's resolution is reported, not divided by;
3. ``ThresholdDetector`` reports its learned direction, and folds that disagree are flagged;
4. one eigenvalue default (the exact, cancellation-free pairwise form), decided on every input;
5. a wrong normalisation is detectable (``models.check_normalization``);
6. eps by channels, held-out SOM metrics, ``pre_activation`` says why it returns None;
7. progress bars on long calls, on a terminal only, silenced by ``MCLIB_PROGRESS=0``.
"""
import copy
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thirdparty import MEAN, STD, trained

from mclib import curves, detect, hessian, models, som, train
from mclib.studies import detection
from mclib.torchutil import show_progress


@pytest.fixture(scope="module")
def pair():
    """Two third-party ResNets (wrapped with their normalisation) trained from seeds 0 and 1, and the data."""
    m0, x, y = trained(seed=0)
    m1, _, _ = trained(seed=1)
    return m0, m1, x, y


def _scaled(model: nn.Sequential, factor: float) -> nn.Sequential:
    """A copy with the head (weights and bias) scaled: logits times ``factor``, a more confident model."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m[1].linear.weight.mul_(factor)
        m[1].linear.bias.mul_(factor)
    return m.eval()


# ------------------------------------------------------------------------------------ 1. endpoint BatchNorm
def test_curve_endpoints_keep_their_own_batchnorm_statistics(pair):
    m0, m1, x, y = pair
    c = curves.Curve([m0, m1], num_bends=1)
    bn_data = (0.5 * x).clamp(0, 1)          # not the training distribution: darker images
    df = curves.evaluate_along(c, [0.0, 0.5, 1.0], x, y, bn_data=bn_data)
    own = [train.evaluate(m, x, y) for m in (m0, m1)]
    assert df["loss"].iloc[0] == pytest.approx(own[0]["loss"], rel=1e-5)
    assert df["loss"].iloc[-1] == pytest.approx(own[1]["loss"], rel=1e-5)
    assert df["acc"].iloc[0] == own[0]["acc"] and df["acc"].iloc[-1] == own[1]["acc"]
    assert list(df["bn"]) == ["endpoint 0", "bn_data", "endpoint 1"]
    # re-estimating the endpoints on the wrong data degrades them: that is what the default avoids
    again = curves.evaluate_along(c, [0.0, 1.0], x, y, bn_data=bn_data, endpoint_bn="recompute")
    assert list(again["bn"]) == ["bn_data", "bn_data"]
    assert abs(again["loss"].iloc[0] - own[0]["loss"]) > 1e-3
    # the interior point is re-estimated either way: the same model as Curve.at(0.5, bn_data)
    mid = c.at(0.5, bn_data=bn_data)
    assert df["loss"].iloc[1] == pytest.approx(train.evaluate(mid, x, y)["loss"], rel=1e-5)
    s = curves.summary(df)
    assert s["end_acc"] == min(own[0]["acc"], own[1]["acc"])
    with pytest.raises(ValueError, match="endpoint_bn"):
        c.at(0.0, bn_data=bn_data, endpoint_bn="sometimes")


# ------------------------------------------------------------------------------------ 2. resolution
def test_strength_table_does_not_divide_by_a_barrier_below_resolution(pair):
    m0, _, x, y = pair
    model = _scaled(m0, 30.0)                 # as confident as a fully trained CIFAR ResNet
    refs = detect.select_references(model, x, y, 2)
    clean = detect.extract(model, x[:16], refs, 16)
    rr = detect.median_barrier(clean)
    assert detect.below_resolution(rr) and rr < detect.BARRIER_RESOLUTION
    # a resolvable median for the other row: the unscaled model's barriers to its PGD examples (on this toy data
    # the confident model's adversarial barriers are exactly 0 in float32 too)
    from mclib.attacks import evasion
    g = torch.Generator().manual_seed(0)
    xa = evasion.pgd(m0, x[16:32], y[16:32], 0.1, steps=10, generator=g)
    adv = detect.extract(m0, xa, detect.select_references(m0, x, y, 2), 16)
    assert not detect.below_resolution(detect.median_barrier(adv))
    t = detection.strength_table(clean, {"noise": (adv, xa - x[16:32])})
    assert np.isnan(t.loc["noise", "ratio to real-real"])
    assert "below resolution" in t.loc["noise", "ratio note"]
    assert t.loc["noise", "median barrier max"] == pytest.approx(detect.median_barrier(adv))
    # a resolvable real-real median is divided by, as before
    t2 = detection.strength_table(adv, {"clean": (clean, torch.zeros(16, 1))})
    assert t2.loc["clean", "ratio to real-real"] == pytest.approx(rr / detect.median_barrier(adv))
    assert t2.loc["clean", "ratio note"] == ""


# ------------------------------------------------------------------------------------ 3. direction
@pytest.fixture(scope="module")
def feature_tables(pair):
    m0, _, x, y = pair
    refs = detect.select_references(m0, x, y, 2)
    g = torch.Generator().manual_seed(1)
    noisy = (x + 0.4 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return detect.extract(m0, x, refs, 12).table, detect.extract(m0, noisy, refs, 12).table


def test_threshold_detector_reports_a_flipped_direction(feature_tables):
    clean, noisy = feature_tables
    # "adversarial" rows whose barriers are *lower* than the clean ones: real images against noisy ones
    assert clean["barrier_max"].median() < noisy["barrier_max"].median()
    tab = pd.concat([noisy, clean], ignore_index=True)
    lab = np.r_[np.zeros(len(noisy)), np.ones(len(clean))]
    det = detect.ThresholdDetector("barrier_max").fit(tab, lab)
    assert det.direction == "lower" and det.train_auroc < 0.5
    assert "lower" in repr(det)
    up = detect.ThresholdDetector("barrier_max").fit(tab, 1 - lab)
    assert up.direction == "higher" and up.train_auroc == pytest.approx(1 - det.train_auroc)
    # scores: lower feature = more adversarial
    assert np.array_equal(det.score(tab), -tab["barrier_max"].to_numpy())


def test_cross_validation_flags_folds_that_disagree_on_the_direction(feature_tables):
    clean, _ = feature_tables
    n = len(clean)
    half = n // 2                             # no signal: two halves of the same clean inputs
    a, b = clean.iloc[:half].reset_index(drop=True), clean.iloc[half:].reset_index(drop=True)
    make = lambda: detect.ThresholdDetector("barrier_max")  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = detect.cross_val_scores(make, a, b, np.arange(half), np.arange(n - half) + 1000, folds=4,
                                      return_detectors=True)
    dirs = detect.fold_directions(out[3])
    # independent: refit each fold's training rows here and read the directions
    expected = {k: det.direction for k, det in enumerate(out[3])}
    assert dirs == expected
    disagree = len(set(dirs.values())) > 1
    flagged = [w for w in caught if "disagree on the learned direction" in str(w.message)]
    assert bool(flagged) == disagree
    assert disagree, "the no-signal split is meant to make the folds disagree"
    assert len(out) == 4 and len(out[0]) == n
    # a clear signal: every fold learns the same direction, no warning
    _, noisy = feature_tables
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = detect.cross_val_scores(make, clean, noisy, np.arange(n), np.arange(len(noisy)) + 1000, folds=4,
                                      return_detectors=True)
    assert set(detect.fold_directions(res[3]).values()) == {"higher"}


def test_threshold_detector_refuses_a_nan_feature(feature_tables):
    clean, noisy = feature_tables
    tab = pd.concat([clean, noisy], ignore_index=True)
    lab = np.r_[np.zeros(len(clean)), np.ones(len(noisy))]
    tab.loc[3, "barrier_max"] = np.nan
    with pytest.raises(ValueError, match=r"barrier_max.*1 NaN"):
        detect.ThresholdDetector("barrier_max").fit(tab, lab)


# ------------------------------------------------------------------------------------ 4. eigenvalues
def _pairwise_reference(model64: nn.Module, x: torch.Tensor) -> float:
    """Independent float64 reference: the D x D matrix sum_{i<j} p_i p_j (J_i - J_j)(J_i - J_j)^T from a
    torch.func Jacobian of a float64 copy, and its largest eigenvalue (small D only)."""
    from torch.func import jacrev

    shape = x.shape[1:]
    f = lambda v: model64(v.view(1, *shape))[0]  # noqa: E731
    v = x.double().reshape(-1)
    J = jacrev(f)(v)
    with torch.no_grad():
        p = f(v).log_softmax(0).exp()
    C, D = J.shape
    H = torch.zeros(D, D, dtype=torch.float64)
    for i in range(C):
        for j in range(i + 1, C):
            d = J[i] - J[j]
            H += p[i] * p[j] * torch.outer(d, d)
    return float(torch.linalg.eigvalsh(H.detach())[-1])


@pytest.fixture(scope="module")
def saturated(pair):
    """One 3x8x8 input (D = 192) and a head scale that puts 1 - p_max near 1e-17 (float64 underflows 1 - p)."""
    m0, _, x, y = pair
    x8 = F.avg_pool2d(x, 4)
    with torch.no_grad():
        z = m0(x8)
    ok = (z.argmax(1) == y).nonzero()[:, 0]
    top2 = z[ok].topk(2, 1).values
    i = int(ok[(top2[:, 0] - top2[:, 1]).argmax()])
    margin = float(z[i].max() - z[i].topk(2).values[1])
    model = _scaled(m0, 39.0 / margin)
    with torch.no_grad():
        logp = model(x8[i:i + 1]).double().log_softmax(1)[0]
    gap = float(logp.exp().sort().values[:-1].sum())          # 1 - p_max from the other classes
    assert float(hessian.one_minus_pmax(logp[None])[0]) == pytest.approx(gap, rel=1e-12)
    assert 1e-19 < gap < 1e-15
    return model, x8[i:i + 1], y[i:i + 1]


def test_batch_top_eigenvalue_defaults_to_the_exact_path_on_a_saturated_input(saturated):
    model, x1, y1 = saturated
    ref = _pairwise_reference(copy.deepcopy(model).double().eval(), x1)
    assert ref > 0
    # the default, from several random starts (an iterative method's answer depends on its start vector here);
    # the exact path's error is the float32 model's Jacobian's (the reference runs a float64 copy)
    for seed in range(4):
        lam = float(hessian.batch_top_eigenvalue(model, x1, y1, generator=torch.Generator().manual_seed(seed)))
        assert lam == pytest.approx(ref, rel=1e-4, abs=0)
    assert float(hessian.top_eigenvalue(model, x1, y1)[0]) == pytest.approx(ref, rel=1e-4, abs=0)
    # a float64 Hessian-vector method cannot resolve it, and says so
    with pytest.warns(RuntimeWarning, match="1 - p_max"):
        hessian.top_eigenvalue(model, x1, y1, method="lanczos", precision="float64", iters=8)


def test_exact_form_is_free_of_cancellation_between_jacobian_rows(pair):
    """Adding one large row c to every logit's weights changes neither the softmax nor the Hessian, but
    gives the Jacobian rows a common component 1e6 times larger than their differences: J J^T cancels,
    the pairwise differences do not."""
    m0, _, x, y = pair
    x8 = F.avg_pool2d(x[:4], 4).double()
    plain = copy.deepcopy(m0).double().eval()
    shifted = copy.deepcopy(plain)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        shifted[1].linear.weight += 1e6 * torch.randn(1, shifted[1].linear.weight.shape[1], generator=g,
                                                      dtype=torch.float64)
    a = hessian.top_eigenvalue(plain, x8, y[:4], method="exact")
    b = hessian.top_eigenvalue(shifted, x8, y[:4], method="exact")
    assert torch.allclose(b, a, rtol=1e-7, atol=0)
    ref = _pairwise_reference(plain, x8[:1])
    assert float(a[0]) == pytest.approx(ref, rel=1e-9, abs=0)


class _Branchy(nn.Module):
    """The ResNet behind a smooth input transform applied only to bright inputs (a per-input branch)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        bright = x.mean((1, 2, 3), keepdim=True) > 0.9
        return self.net(torch.where(bright, 0.5 * (x + torch.tanh(x)), x))


def test_the_piecewise_linear_check_covers_every_input(pair):
    m0, _, x, y = pair
    model = _Branchy(m0).eval()
    xs = torch.cat([x[:16] * 0.5, torch.full((1, *x.shape[1:]), 0.95)])      # input 17 takes the smooth branch
    ys = torch.cat([y[:16], y[:1]])
    assert hessian.is_piecewise_linear(model, xs[:16]) and not hessian.is_piecewise_linear(model, xs[16:])
    _, info = hessian.top_eigenvalue(model, xs, ys, iters=4, return_info=True)
    assert not bool(info["exact"].any())                          # not the Gauss-Newton form: it is not exact here
    _, info = hessian.top_eigenvalue(model, xs[:16], ys[:16], return_info=True)
    assert bool(info["exact"].all())
    with pytest.raises(ValueError, match="not piecewise linear"):
        hessian.gauss_newton_spectrum(model, xs, ys)


# ------------------------------------------------------------------------------------ 5. normalisation
def test_check_normalization_flags_a_model_run_without_its_statistics(pair):
    m0, _, x, y = pair
    body = m0[1]
    with pytest.warns(UserWarning, match="check which statistics"):
        table = models.check_normalization(body, x, y, None, None)
    chosen = float(table.loc[table["chosen"], "acc"].iloc[0])
    assert chosen == train.evaluate(body, x, y)["acc"]
    assert table["acc"].iloc[0] > chosen + 0.05                     # the best candidate comes first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = models.check_normalization(body, x, y, MEAN, STD)
    assert float(right.loc[right["chosen"], "acc"].iloc[0]) == train.evaluate(m0, x, y)["acc"]
    assert "ImageNet" in set(right["statistics"]) and "cifar10" in set(right["statistics"])
    assert "transforms.Normalize" in models.with_normalization.__doc__     # where to find a model's statistics


# ------------------------------------------------------------------------------------ 6. guessing
def test_attack_radius_by_channels(pair):
    _, _, x, _ = pair
    assert detect.attack_radius(x.shape[1], 0.2) == pytest.approx(8 / 255)          # 3-channel: CIFAR's 8/255
    assert detect.attack_radius(1, 0.2) == 0.2                                      # digits: the preset's
    with pytest.raises(ValueError, match="channels"):
        detect.attack_radius(0, 0.2)


def test_fit_layers_reports_held_out_metrics(pair):
    m0, _, x, y = pair
    layers = som.default_layers(m0)
    fit_acts = som.activations(m0, x[:40], layers)
    new_acts = som.activations(m0, x[40:], layers)
    codes = som.fit_layers(fit_acts, y[:40], rows=3, cols=3, seed=0, iterations=200, held_out=(new_acts, y[40:]))
    for col in ("purity", "nmi", "majority_acc_held_out", "purity_held_out", "nmi_held_out"):
        assert col in codes.metrics.columns
    name = layers[-1]
    s = codes.soms[name]
    # independent: each held-out input gets the fitting set's majority class of its BMU
    fit_b = s.bmu(som.standardise(s, fit_acts[name])).long()
    new_b = s.bmu(som.standardise(s, new_acts[name])).long()
    majority = {}
    for u in fit_b.unique().tolist():
        majority[u] = int(torch.bincount(y[:40][fit_b == u], minlength=4).argmax())
    acc = np.mean([majority.get(int(u), -1) == int(t) for u, t in zip(new_b, y[40:])])
    assert codes.metrics.loc[name, "majority_acc_held_out"] == pytest.approx(acc)
    plain = som.fit_layers(fit_acts, y[:40], rows=3, cols=3, seed=0, iterations=200)
    assert not any(c.endswith("_held_out") for c in plain.metrics.columns)
    pd.testing.assert_series_equal(plain.metrics["purity"], codes.metrics["purity"])


def test_pre_activation_says_why_it_returns_none(pair):
    m0 = pair[0]
    name, why = som.pre_activation(m0, "1.layer1.0", explain=True)
    assert name is None and "functional" in why and "1.layer1.0" in why
    name, why = som.pre_activation(m0, "1.linear", explain=True)
    assert name is None and "logits" in why
    assert som.pre_activation(m0, "1.layer1.0") is None                         # unchanged without explain


# ------------------------------------------------------------------------------------ 7. progress
def test_extract_shows_progress_on_request_only(pair, capsys, monkeypatch):
    m0, _, x, y = pair
    refs = detect.select_references(m0, x, y, 1)
    detect.extract(m0, x[:4], refs, 8, progress=True, chunk_size=8)
    assert "linear paths" in capsys.readouterr().err
    detect.extract(m0, x[:4], refs, 8, chunk_size=8)                        # default: stderr is no terminal here
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MCLIB_PROGRESS", "0")
    detect.extract(m0, x[:4], refs, 8, progress=True, chunk_size=8)
    assert capsys.readouterr().err == ""


def test_show_progress_follows_the_terminal_and_the_environment(monkeypatch):
    class Tty:
        def isatty(self):
            return True

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    monkeypatch.delenv("MCLIB_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress(None) and not show_progress(False)
    monkeypatch.setenv("MCLIB_PROGRESS", "0")
    assert not show_progress(None) and not show_progress(True)
    monkeypatch.setenv("MCLIB_PROGRESS", "1")
    assert show_progress(None)


# ------------------------------------------------------------------------------------ issue 32 cases on this model
def test_pixels_outside_unit_box_are_refused(pair):
    m0, _, x, y = pair
    with pytest.raises(ValueError, match="255"):
        detect.select_references(m0, x * 255, y, 1)
    refs = detect.select_references(m0, x, y, 1)
    with pytest.raises(ValueError, match="255"):
        detect.extract(m0, x[:4] * 255, refs, 8)


# ------------------------------------------------------------------------------------ the page and the README
def test_own_model_page_follows_its_advice_and_is_linked_from_the_readme():
    """The page uses the exact eigenvalue default, the channel-chosen radius, endpoint BatchNorm kept, reports the
    learned detector direction, checks the normalisation, shows held-out SOM metrics; the README links it.
    (The page itself runs under the smoke preset in tests/test_notebooks.py.)"""
    import ast
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parent.parent
    nb = nbformat.read(root / "notebooks" / "own_model.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.lstrip().startswith("%")
                     and "google.colab" not in c.source)
    calls = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.setdefault(node.func.attr, []).append({k.arg: ast.unparse(k.value) for k in node.keywords})
    assert "attack_radius" in calls and "S.eps" not in code.replace("attack_radius(meta.in_shape[0], S.eps)", "")
    # the eigenvalue of record is the default (exact); power iteration only as the named comparison
    eig = calls["batch_top_eigenvalue"]
    assert any("method" not in kw for kw in eig) and all(kw.get("method") in (None, "'power'") for kw in eig)
    # the curve's table keeps the endpoints' statistics; recomputing them only as the check
    along = calls["evaluate_along"]
    assert any("endpoint_bn" not in kw for kw in along)
    # the page's PGD-strength table (mclib.studies.own_model) reports each fold's learned direction
    assert "pgd_strength_study" in calls
    study = (root / "mclib" / "studies" / "own_model.py").read_text()
    study_calls = {}
    for node in ast.walk(ast.parse(study)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            study_calls.setdefault(node.func.attr, []).append({k.arg: ast.unparse(k.value) for k in node.keywords})
    assert "fold_directions" in study_calls and "return_detectors" in study_calls["cross_val_scores"][0]
    assert "check_normalization" in calls
    assert "held_out" in calls["fit_layers"][0] and calls["pre_activation"][0].get("explain") == "True"
    readme = (root / "README.md").read_text()
    assert "(notebooks/own_model.ipynb)" in readme


def test_collect_adversarial_shows_progress_on_request(pair, capsys):
    m0, _, x, y = pair
    attack = lambda xb, yb, idx: (1 - xb)            # noqa: E731  (inverted images: many are misclassified)
    out = detect.collect_adversarial(m0, attack, x[:8], y[:8], 8, batch_size=4, progress=True)
    assert "attack" in capsys.readouterr().err
    again = detect.collect_adversarial(m0, attack, x[:8], y[:8], 8, batch_size=4)
    assert capsys.readouterr().err == ""
    assert torch.equal(out[0], again[0]) and out[2:] == again[2:]


def test_an_eigenvalue_below_float32_range_is_not_silently_zero(pair):
    """A very saturated input's exact eigenvalue (~1e-80) does not fit in float32: returned as 0 with a warning,
    and in float64 by gauss_newton_spectrum."""
    m0, _, x, y = pair
    x8 = F.avg_pool2d(x[:1], 4)
    with torch.no_grad():
        z = m0(x8)[0]
    model = _scaled(m0, 200.0 / float(z.max() - z.topk(2).values[1]))      # 1 - p_max near e^-200
    with pytest.warns(RuntimeWarning, match="below torch.float32's range"):
        lam = hessian.top_eigenvalue(model, x8, y[:1])
    assert float(lam[0]) == 0.0
    lam64 = hessian.gauss_newton_spectrum(model, x8, y[:1])[:, -1]
    assert 0 < float(lam64[0]) < 1e-45
