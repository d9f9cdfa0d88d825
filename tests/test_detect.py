"""Barrier features, detectors and metrics of mclib.detect."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mclib import detect, infer, paths, stats


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


def test_transfer_table_flags_an_inverted_detector():
    rng = np.random.default_rng(0)
    n = 200
    clean = pd.DataFrame({"barrier_max": rng.normal(0, 1, n)})
    pgd = pd.DataFrame({"barrier_max": rng.normal(6, 1, n)})            # plain attack: high barriers
    adaptive = pd.DataFrame({"barrier_max": rng.normal(-3, 1, n)})      # flattened below the clean ones
    g = np.arange(n)
    dets = {"threshold: barrier max": lambda: detect.ThresholdDetector("barrier_max")}
    table, _ = detect.detection_table(clean, g, {"PGD": (pgd, g), "adaptive PGD": (adaptive, g)}, dets, folds=4,
                                      fitted_on={"adaptive PGD": "PGD"})
    t = detect.transfer_table(table, "adaptive PGD", "PGD")
    row = t.loc["threshold: barrier max"]
    assert row["AUROC fitted on PGD"] < 0.05 and row["AUROC refitted on adaptive PGD"] > 0.95 and row["inverted"]
    with pytest.raises(ValueError, match="fitted_on"):
        detect.transfer_table(table, "adaptive PGD", "FGSM")


def test_strength_table_against_hand_computed():
    model = _model()
    g = torch.Generator().manual_seed(5)
    refs = detect.select_references(model, torch.rand(60, 1, 4, 4, generator=g), torch.arange(60) % 3, k=2)
    clean = detect.extract(model, torch.rand(5, 1, 4, 4, generator=g), refs, num_points=5)
    adv = detect.extract(model, torch.rand(4, 1, 4, 4, generator=g), refs, num_points=5)
    delta = torch.zeros(4, 1, 4, 4)
    delta[:, 0, 0, 0] = torch.tensor([0.1, -0.3, 0.2, 0.05])
    t = detect.strength_table(clean, {"a": (adv, delta)})
    assert t.loc["a", "kept"] == 4
    assert t.loc["a", "median L-inf"] == pytest.approx(float(torch.tensor([0.1, 0.3, 0.2, 0.05]).median()))
    assert t.loc["a", "ratio to real-real"] == pytest.approx(float(adv.pair_max.flatten().median() /
                                                                    clean.pair_max.flatten().median()))


def test_extract_of_no_inputs_is_an_empty_table():
    model = _model()
    refs = detect.select_references(model, torch.rand(30, 1, 4, 4), torch.arange(30) % 3, k=2)
    f = detect.extract(model, torch.zeros(0, 1, 4, 4), refs, num_points=5)
    assert len(f) == 0 and f.logits.shape == (0, 3) and f.curves.shape == (0, 2, 5)
    assert list(f.table.columns) == [*detect.PATH_FEATURES, *detect.LOGIT_FEATURES] and len(f.table) == 0
    assert np.isnan(detect.median_barrier(f))


# ------------------------------------------------------------------------------------ the condition map (A9)
def test_auroc_difference_ci_is_paired():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    lab = np.r_[np.zeros(150), np.ones(60)].astype(int)
    a = rng.normal(0, 1, 210) + 0.8 * lab                  # a moderate detector: wide AUROC interval
    b = a + rng.normal(0, 0.05, 210)                        # nearly the same detector
    d = detect.auroc_difference_ci(lab, a, b, n_boot=500, seed=0)
    assert d.estimate == pytest.approx(roc_auc_score(lab, a) - roc_auc_score(lab, b), abs=1e-12)
    own = stats.auroc_ci(lab, a, n_boot=500, seed=0)
    # paired: the shared difficulty cancels, so the difference is far better known than either AUROC
    assert d.hi - d.lo < 0.25 * (own.hi - own.lo) and d.lo <= 0 <= d.hi
    assert tuple(detect.auroc_difference_ci(lab, a, a, n_boot=50))[:3] == (0.0, 0.0, 0.0)
    better = detect.auroc_difference_ci(lab, a + 5.0 * lab, a, n_boot=500)
    assert better.lo > 0.1 and better.n == 210
    assert np.isnan(detect.auroc_difference_ci(np.ones(5), a[:5], b[:5]).estimate)
    with pytest.raises(ValueError, match="equal length"):
        detect.auroc_difference_ci(lab, a, b[:-1])


def _feature_tables(shift_path, shift_logit, n_clean=160, n_adv=80, seed=0):
    """Synthetic detection tables with every path and logit feature; the adversarial rows are shifted in the
    path features by ``shift_path`` and in the logit features by ``shift_logit``."""
    rng = np.random.default_rng(seed)
    cols = [*detect.PATH_FEATURES, *detect.LOGIT_FEATURES]

    def table(n, sp, sl):
        return pd.DataFrame({c: rng.normal(sp if c in detect.PATH_FEATURES else sl, 1.0, n) for c in cols})

    return table(n_clean, 0, 0), table(n_adv, shift_path, shift_logit)


def test_setting_evidence_measures_what_the_path_adds():
    from sklearn.metrics import roc_auc_score
    gc, ga = np.arange(160), np.arange(80)                  # adversarial rows made from the first 80 clean images
    clean, adv = _feature_tables(shift_path=3.0, shift_logit=0.0)
    e = detect.setting_evidence({"attack": "toy", "kappa": 1}, clean, gc, adv, ga, folds=4, seed=0, n_boot=300)
    m = e["measured"]
    assert e["setting"] == {"attack": "toy", "kappa": 1} and m["n_clean"] == 160 and m["n_adv"] == 80
    assert m["median_logit_margin"] == pytest.approx(float(np.median(adv["logit_margin"])))
    lab, s, _ = detect.cross_val_scores(lambda: detect.ThresholdDetector("barrier_max"), clean, adv, gc, ga, 4, 0)
    assert m["auroc_barrier_max"]["estimate"] == pytest.approx(roc_auc_score(lab, s))
    assert set(m["auroc_barrier_max"]) == {"estimate", "lo", "hi", "n"}
    # only the path separates: the barrier detects, the confidence does not, and the path adds to the logits
    assert m["auroc_barrier_max"]["lo"] > 0.9 and m["auroc_max_softmax"]["hi"] < 0.7
    assert m["auroc_gain_from_path"]["lo"] > 0.2
    # only the logits separate: the path features add nothing measurable
    clean, adv = _feature_tables(shift_path=0.0, shift_logit=3.0, seed=1)
    m = detect.setting_evidence({"attack": "toy", "kappa": 10}, clean, gc, adv, ga, folds=4, n_boot=300)["measured"]
    assert m["auroc_max_softmax"]["lo"] > 0.9 and m["auroc_barrier_max"]["hi"] < 0.7
    assert m["auroc_gain_from_path"]["lo"] < 0.01 < m["auroc_combined"]["lo"] + 1
    assert abs(m["auroc_gain_from_path"]["estimate"]) < 0.02
    # too few adversarial rows to trust, or for the folds: nothing is measured, nothing raises
    m = detect.setting_evidence({"attack": "toy", "kappa": 30}, clean, gc, adv[:4], ga[:4], folds=4)["measured"]
    assert m["auroc_barrier_max"] is None and m["auroc_gain_from_path"] is None and m["n_adv"] == 4
    m = detect.setting_evidence({"attack": "toy", "kappa": 30}, clean, gc, adv[:6], np.zeros(6, int), folds=4,
                                n_boot=50)["measured"]     # one source image: some training fold has no adversarial row
    assert m["auroc_barrier_max"] is None and m["auroc_gain_from_path"] is None


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


def test_sweep_confidence_map_and_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mclib.attacks import evasion
    g = torch.Generator().manual_seed(0)
    templates, model = _template_classifier(g)
    y = torch.arange(150) % 3
    X = (templates[y] + 0.1 * torch.randn(150, 16, generator=g)).clamp(0, 1).view(150, 1, 4, 4)
    with torch.no_grad():
        ok = model(X).argmax(1) == y
    pool, test = torch.arange(150) < 90, torch.arange(150) >= 90
    refs = detect.select_references(model, X[pool], y[pool], k=2)
    Xs, ys = X[test & ok], y[test & ok]
    clean = detect.extract(model, Xs, refs, num_points=6)

    def pgd(s):
        return lambda x, yy, i: evasion.pgd(model, x, yy, 0.4, steps=6, random_start=False, stop_on_success=True,
                                            extra_steps=s["extra_steps"])

    settings = [{"attack": "PGD", "extra_steps": e} for e in (0, 4)]
    points = detect.sweep(model, settings, pgd, Xs, ys, refs, n=40, num_points=6, batch_size=16)
    assert [p.setting for p in points] == settings
    for p in points:
        assert len(p.features) == len(p.sources) > 10 and (p.features.pred != ys[p.sources]).all()
    capped = detect.sweep(model, settings[:1], pgd, Xs, ys, refs, n=40, num_points=6, batch_size=8, attempts=12)
    assert capped[0].attempted == 12 and capped[0].sources.max() < 12
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        detect.sweep(model, settings, pgd, Xs, ys, refs, n=40, attempts=0)
    margins = [float(np.median(p.features.table["logit_margin"])) for p in points]
    assert margins[1] > margins[0]                         # pushed further past the boundary: more confident
    targets = (ys + 1) % 3
    kappas = detect.sweep(model, [{"attack": "optimisation", "kappa": 1.0}],
                          lambda s: lambda x, yy, i: evasion.optimisation_attack(
                              model, x, targets[i], lr=0.05, steps=100, stop_margin=s["kappa"]),
                          Xs, ys, refs, n=40, num_points=6, targets=targets, margin_key="kappa", batch_size=64)
    assert (kappas[0].features.table["logit_margin"] >= 1.0 - 1e-3).all() and len(kappas[0].features) > 5
    cmap = detect.confidence_map(clean.table, np.arange(len(Xs)), points + kappas, folds=3, n_boot=100)
    assert [c["setting"] for c in cmap] == settings + [{"attack": "optimisation", "kappa": 1.0}]
    for c, p in zip(cmap, points + kappas):
        assert c["measured"]["success_rate"] == pytest.approx(p.succeeded / p.attempted)
        assert {f"auroc_{d}" for d in detect.map_detectors()} <= set(c["measured"])
    frame = detect.map_frame(cmap)
    assert set(frame["knob"]) == {"extra_steps", "kappa"}
    assert len(frame[frame["quantity"] == "auroc_barrier_max"]) == 3
    fig, axes = plt.subplots(1, 3)
    drawn = detect.plot_condition_map(axes[:2], cmap, gain_ax=axes[2])
    assert len(drawn) == 3 and len(axes[0].get_lines()) == len(detect.MAP_LINES) + 1   # + the threshold line
    assert axes[0].get_title() == "PGD" and axes[1].get_xlabel() == "kappa"
    with pytest.raises(ValueError, match="2 attack families"):
        detect.plot_condition_map(axes[:1], cmap)
    plt.close(fig)
    with pytest.raises(ValueError, match="exactly one other parameter"):
        detect.map_frame([{"setting": {"attack": "x", "a": 1, "b": 2}, "measured": {}}])
