"""Barrier features, detectors and metrics of mclib.detect."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mclib import detect, infer


def _tables(shift, n=300, seed=0):
    rng = np.random.default_rng(seed)
    clean = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(0, 1, n)})
    adv = pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})
    return clean, adv


@pytest.mark.parametrize("make", [lambda: detect.ThresholdDetector("a"), lambda: detect.LogisticDetector(["a", "b"])])
def test_separable_and_identical(make):
    clean, adv = _tables(shift=20.0)
    lab, s, p = detect.cross_val_scores(make, clean, adv, np.arange(300), np.arange(300) + 1000, folds=5)
    m = detect.metrics(lab, s, p)
    assert m["auroc"] > 0.999 and m["tpr@5%fpr"] > 0.99 and m["accuracy"] > 0.99
    clean, adv = _tables(shift=0.0, n=600)
    lab, s, p = detect.cross_val_scores(make, clean, adv, np.arange(600), np.arange(600) + 1000, folds=5)
    m = detect.metrics(lab, s, p)
    assert abs(m["auroc"] - 0.5) < 0.07 and abs(m["accuracy"] - 0.5) < 0.07


def test_threshold_learns_direction():
    clean, adv = _tables(shift=-20.0)           # adversarial *below*
    det = detect.ThresholdDetector("a").fit(pd.concat([clean, adv]), np.r_[np.zeros(300), np.ones(300)])
    assert det.sign == -1.0 and det.predict(adv).mean() > 0.99 and det.predict(clean).mean() < 0.01


def test_metrics_against_hand_computed():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.05])
    # AUROC = P(score_adv > score_clean): pairs won = 3+3+3+0 for three adv above three clean, ...
    won = sum((sa > sc) for sa in scores[4:] for sc in scores[:4])
    assert detect.metrics(labels, scores)["auroc"] == pytest.approx(won / 16)
    assert detect.tpr_at_fpr(labels, scores, 0.0) == pytest.approx(0.0)
    assert detect.tpr_at_fpr(labels, scores, 0.25) == pytest.approx(0.75)


def test_groups_never_split():
    clean, adv = _tables(shift=1.0, n=50)
    seen = []

    class Spy(detect.ThresholdDetector):
        def fit(self, table, labels):
            seen.append(set(np.round(table["a"].to_numpy(), 12)))
            return super().fit(table, labels)

    g = np.arange(50)
    lab, s, p = detect.cross_val_scores(lambda: Spy("a"), clean, adv, g, g, folds=5)
    # a clean row and the adversarial row with the same group id are in the same fold: for each fold, the
    # training set holds either both or neither
    for tr in seen:
        for i in range(50):
            assert (round(clean["a"][i], 12) in tr) == (round(adv["a"][i], 12) in tr)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


def _template_classifier(g):
    """Three random 4x4 templates and the linear nearest-template classifier they define."""
    templates = torch.rand(3, 16, generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(4 * templates)
        model[1].bias.copy_(-2 * (templates ** 2).sum(1))       # nearest-template classifier
    return templates, model


def test_references_and_curves_match_a_loop():
    g = torch.Generator().manual_seed(0)
    templates, model = _template_classifier(g)
    y = torch.arange(90) % 3
    X = (templates[y] + 0.15 * torch.randn(90, 16, generator=g)).clamp(0, 1).view(90, 1, 4, 4)
    y[:5] = (y[:5] + 1) % 3                      # a few misclassified pool images are never chosen
    refs = detect.select_references(model, X, y, k=3)
    with torch.no_grad():
        loss = F.cross_entropy(model(X), y, reduction="none")
        ok = model(X).argmax(1) == y
    for c in range(3):
        cand = ((y == c) & ok).nonzero()[:, 0]
        assert set(refs.indices[c].tolist()) == set(cand[loss[cand].argsort()[:3]].tolist())
    x = torch.rand(7, 1, 4, 4, generator=g)
    feats = detect.extract(model, x, refs, num_points=9)
    assert feats.curves.shape == (7, 3, 9) and len(feats.table) == 7
    for i in range(7):
        c = int(feats.pred[i])
        for j in range(3):
            a = torch.linspace(0, 1, 9).view(-1, 1, 1, 1)
            pts = (1 - a) * refs.images[c, j] + a * x[i]
            with torch.no_grad():
                ref = F.cross_entropy(model(pts), torch.full((9,), c), reduction="none")
            assert torch.allclose(feats.curves[i, j], ref, atol=1e-5)
            assert feats.pair_max[i, j] == pytest.approx(float(ref.max()), abs=1e-5)
    assert np.allclose(feats.table["barrier_max"], feats.pair_max.median(1).values.numpy(), atol=1e-6)
    assert np.allclose(feats.table["end_loss"], F.cross_entropy(feats.logits, feats.pred, reduction="none").numpy(),
                       atol=1e-5)
    assert np.allclose(feats.table["max_softmax"], feats.logits.softmax(1).max(1).values.numpy(), atol=1e-6)


def test_mahalanobis_baseline():
    model = _model()
    g = torch.Generator().manual_seed(1)
    X = torch.rand(200, 1, 4, 4, generator=g) * 0.5
    with torch.no_grad():
        y = model(X).argmax(1)
    maha = detect.Mahalanobis().fit(model, X, y)
    near = maha.score(model, torch.rand(50, 1, 4, 4, generator=g) * 0.5)
    far = maha.score(model, torch.rand(50, 1, 4, 4, generator=g) * 0.5 + 3.0)
    assert far.min() > near.max()
    H = detect.penultimate(model, X[:3])
    assert H.shape == (3, 12)


def test_collect_adversarial_keeps_successes():
    model = _model()
    X = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(X).argmax(1)
    flip = lambda x, yy, idx: torch.where((idx % 2 == 0).view(-1, 1, 1, 1), x * 0 + X[(idx + 1) % 40], x)  # noqa: E731
    Xa, src, tried, succeeded = detect.collect_adversarial(model, flip, X, y, n=100, batch_size=16)
    assert tried == 40 and succeeded == len(Xa)
    Xb, srcb, triedb, succb = detect.collect_adversarial(model, flip, X, y, n=3, batch_size=16)
    assert len(Xb) == 3 and triedb == 16 and succb >= 3 and (srcb == src[:3]).all()
    with torch.no_grad():
        assert (model(Xa).argmax(1) != y[src]).all()


def test_bad_input():
    model = _model()
    X = torch.rand(10, 1, 4, 4)
    with pytest.raises(ValueError, match="only"):
        detect.select_references(model, X, torch.zeros(10, dtype=torch.long), k=2, num_classes=3)
    with pytest.raises(ValueError, match="not in the table"):
        detect.ThresholdDetector("nope").fit(pd.DataFrame({"a": [1.0, 2.0]}), np.array([0, 1]))


@pytest.fixture(scope="module")
def confident():
    """The third-party CIFAR-style ResNet, over-confident: float32 cross-entropy exactly 0 on its pool."""
    import thirdparty
    return thirdparty.trained(confident=12.0)


def test_references_do_not_saturate(confident):
    model, X, y = confident
    with torch.no_grad():
        logits = model(X)
    ce32 = F.cross_entropy(logits, y, reduction="none")
    ok = logits.argmax(1) == y
    k = 3
    for c in range(4):       # the premise: float32 CE cannot rank these references (ties at exactly 0)
        assert int(((y == c) & ok & (ce32 == 0)).sum()) > k
    refs = detect.select_references(model, X, y, k=k)
    z = logits.double().numpy()
    rel = np.exp(z - z[np.arange(len(y)), y.numpy()][:, None])         # independent float64 reference:
    rel[np.arange(len(y)), y.numpy()] = 0.0                            # -log p_y = log1p(sum_{k!=y} e^(z_k-z_y))
    nll = np.log1p(rel.sum(1))
    assert (nll > 0).all() and len(np.unique(nll)) == len(nll)         # no ties left in float64
    for c in range(4):
        cand = ((y == c) & ok).nonzero()[:, 0].numpy()
        want = cand[np.argsort(nll[cand], kind="stable")[:k]]
        assert refs.indices[c].tolist() == want.tolist()
        # the library's logits come from the inference engine, which promises |z - z_eager| <= ATOL + RTOL |z|;
        # -log p_y ~ sum_k exp(z_k - z_y) here, so its relative error is at most twice that logit error
        rtol = 2 * (infer.ATOL + infer.RTOL * float(np.abs(z).max()))
        assert np.allclose(refs.losses[c].numpy(), nll[want], rtol=rtol, atol=0)
        assert (refs.losses[c] > 0).all() and refs.losses.dtype == torch.float64


def test_reference_ties_go_to_lower_pool_index():
    model = _model()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    X = x.repeat(18, 1, 1, 1)                # identical images: equal losses in any precision
    y = torch.arange(18) // 6                # six per class, in blocks
    refs = detect.select_references(model, X, y, k=4)
    for c in range(3):
        assert refs.indices[c].tolist() == [6 * c, 6 * c + 1, 6 * c + 2, 6 * c + 3]


def test_collect_adversarial_targeted_keeps_only_hits():
    model = _model()
    X = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(X).argmax(1)
    shuffle = lambda x, yy, idx: X[(idx + 7) % 40]                       # noqa: E731
    with torch.no_grad():
        pred = model(X[(torch.arange(40) + 7) % 40]).argmax(1)
    targets = (y + 1) % 3
    Xa, src, tried, succ = detect.collect_adversarial(model, shuffle, X, y, 100, batch_size=16, targets=targets)
    hits = pred == targets
    assert 0 < hits.sum() < (pred != y).sum()                          # some changed without reaching the target
    assert tried == 40 and succ == int(hits.sum()) and src.tolist() == hits.nonzero()[:, 0].tolist()
    Xu, srcu, _, succu = detect.collect_adversarial(model, shuffle, X, y, 100, batch_size=16)
    assert succu == int((pred != y).sum())


def test_extract_of_no_inputs_is_an_empty_table():
    model = _model()
    refs = detect.select_references(model, torch.rand(30, 1, 4, 4), torch.arange(30) % 3, k=2)
    f = detect.extract(model, torch.zeros(0, 1, 4, 4), refs, num_points=5)
    assert len(f) == 0 and f.logits.shape == (0, 3) and f.curves.shape == (0, 2, 5)
    assert list(f.table.columns) == [*detect.PATH_FEATURES, *detect.LOGIT_FEATURES] and len(f.table) == 0
    assert np.isnan(detect.median_barrier(f))




def test_collect_adversarial_min_margin_keeps_only_confident_hits():
    from mclib.attacks import evasion
    model = _model()
    X = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(X).argmax(1)
    shuffle = lambda x, yy, idx: X[(idx + 7) % 40]                       # noqa: E731
    with torch.no_grad():
        z = model(X[(torch.arange(40) + 7) % 40])
    targets = (y + 1) % 3
    margin = evasion.logit_margin(z, targets)                             # hand check of the margin itself:
    assert torch.allclose(margin, z[torch.arange(40), targets] - z.scatter(1, targets[:, None], -1e9).max(1).values)
    kappa = float(margin[margin > 0].median())
    Xa, src, tried, succ = detect.collect_adversarial(model, shuffle, X, y, 100, batch_size=16, targets=targets,
                                                      min_margin=kappa)
    want = (margin >= kappa).nonzero()[:, 0]
    assert 0 < len(want) < int((margin > 0).sum()) and src.tolist() == want.tolist() and succ == len(want)
    untargeted = evasion.logit_margin(z, y, targeted=False)
    _, srcu, _, _ = detect.collect_adversarial(model, shuffle, X, y, 100, batch_size=16, min_margin=0.1)
    assert srcu.tolist() == (untargeted >= 0.1).nonzero()[:, 0].tolist()
    with pytest.raises(ValueError, match="min_margin must be >= 0"):
        detect.collect_adversarial(model, shuffle, X, y, 5, min_margin=-1.0)


def test_metrics_refuse_nan_scores_and_one_class():
    """Issue 32: NaN or one-class inputs to detect.metrics gave sklearn's NaN (with a warning) or an error about y_true."""
    lab = np.r_[np.zeros(5), np.ones(5)].astype(int)
    sc = np.linspace(0, 1, 10)
    assert detect.metrics(lab, sc)["auroc"] == 1.0
    with pytest.raises(ValueError, match="1 NaN"):
        detect.metrics(lab, np.r_[sc[:9], np.nan])
    with pytest.raises(ValueError, match="only clean"):
        detect.metrics(np.zeros(10, dtype=int), sc)
    with pytest.raises(ValueError, match="only adversarial"):
        detect.metrics(np.ones(10, dtype=int), sc)
    with pytest.raises(ValueError, match="0 \\(clean\\) and 1"):
        detect.metrics(np.r_[lab[:9], 2], sc)


def test_threshold_detector_nan_no_longer_flips_the_direction():
    """Issue 32: one NaN in the table made the Mann-Whitney statistic NaN and flipped the learned direction."""
    import pandas as pd
    v = np.r_[np.arange(10.0), np.arange(10.0) + 5]
    lab = np.r_[np.zeros(10), np.ones(10)]
    det = detect.ThresholdDetector("f").fit(pd.DataFrame({"f": v}), lab)
    assert det.direction == "higher"
    v[0] = np.nan
    with pytest.raises(ValueError, match="'f' holds 1 NaN"):
        detect.ThresholdDetector("f").fit(pd.DataFrame({"f": v}), lab)
