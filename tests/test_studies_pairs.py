"""Tests of mclib.studies.pairs: pair sampling, the straight-line barrier sample, the pair study and the condition map
of claims A1-A5 (the Bump model is test_paths', the one-thread fixture conftest's)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from mclib import paths
from mclib.studies import pairs
from test_paths import bump_pair  # noqa: F401 - a fixture, used by name

pytestmark = pytest.mark.usefixtures("one_thread")


def test_study_pairs_and_same_class_pairs(bump_pair):
    model, A, C = bump_pair
    AA = torch.cat([A, A])
    CC = torch.cat([C, A + 0.01])                   # pair 0 crosses the bump, pair 1 does not
    st = pairs.study_pairs(model, AA, CC, 0, num_points=32, max_rounds=4, progress=False)
    assert st.line_has_barrier.tolist() == [True, False]
    s = st.summary()
    assert s["pairs with a barrier"] == 1 and s["fraction with a barrier"] == 0.5
    assert s["connected at the end"] == 1.0 and s["bends (median)"] >= 1
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    X = torch.rand(6, 1, 4, 4)
    i, j = pairs.same_class_pairs(None, X, y, 7, generator=torch.Generator().manual_seed(0))
    assert (y[i] == y[j]).all() and (i != j).all() and set(y[i].tolist()) == {0, 1}   # class 2 has one input


class MeanLogit(nn.Module):
    """Two classes, logits (4 * mean pixel, 0): the CE toward class 0 falls as the mean pixel rises."""

    def forward(self, x):
        s = 4 * x.flatten(1).mean(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_same_class_pairs_lowest_loss_and_prefix():
    X = torch.linspace(0.5, 1.0, 12).view(12, 1, 1, 1).expand(12, 1, 2, 2).contiguous()   # all class 0, CE falls with i
    y = torch.zeros(12, dtype=torch.long)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    i, j = pairs.same_class_pairs(MeanLogit(), X, y, 30, generator=g(), lowest_loss=0.25)
    assert set(i.tolist()) | set(j.tolist()) <= {9, 10, 11} and (i != j).all()     # the 3 lowest-loss inputs
    i2, j2 = pairs.same_class_pairs(MeanLogit(), X, y, 2, generator=g(), lowest_loss=0.01)
    assert set(i2.tolist()) | set(j2.tolist()) == {10, 11}                           # at least two per class
    i3, j3 = pairs.same_class_pairs(MeanLogit(), X, y, 12, generator=g(), lowest_loss=0.25)
    assert torch.equal(i3, i[:12]) and torch.equal(j3, j[:12])                        # a smaller draw is a prefix
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="lowest_loss"):
            pairs.same_class_pairs(MeanLogit(), X, y, 2, lowest_loss=bad)
    with pytest.raises(ValueError, match="lowest_loss.*model"):
        pairs.same_class_pairs(None, X, y, 2, lowest_loss=0.5)


def test_barrier_sample_grows_only_while_undecided(bump_pair):
    model, A, C = bump_pair
    noise = 0.01 * torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    X = torch.cat([A.expand(10, -1, -1, -1), C.expand(10, -1, -1, -1)]) + noise   # two clusters across the bump
    y = torch.zeros(20, dtype=torch.long)
    decided = pairs.barrier_sample(model, X, y, 20, threshold=0.05, max_pairs=80, num_points=32, seed=0)
    assert decided.looks == [20] and len(decided) == 20
    lo = decided.fraction().lo
    assert lo > 0.05                      # about half the pairs cross the bump
    # the gaps are those of the returned pairs (independent: linear_losses + barrier on them)
    ref = paths.barrier(paths.linear_losses(model, X[decided.i], X[decided.j], 0, 32)).gap
    torch.testing.assert_close(decided.gap, ref)
    undecided = pairs.barrier_sample(model, X, y, 20, threshold=0.5, max_pairs=70, num_points=32, seed=0)
    assert undecided.looks[:2] == [20, 40] and undecided.looks[-1] <= 70 and len(undecided) == undecided.looks[-1]
    torch.testing.assert_close(undecided.gap[:20], decided.gap)                     # the first look's pairs kept
    m = undecided.measured()
    assert m["pairs"] == len(undecided) and m["barrier_fraction"]["n"] == len(undecided)
    assert m["barrier_fraction"]["estimate"] == pytest.approx(float(undecided.line_has_barrier.float().mean()))
    with pytest.raises(ValueError, match="max_pairs"):
        pairs.barrier_sample(model, X, y, 20, max_pairs=10)


def test_plot_condition_map_marks_each_setting():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = [{"setting": {"arch": "cnn"}, "measured": {"f": {"estimate": 0.1, "lo": 0.07, "hi": 0.14}}},
             {"setting": {"arch": "mlp"}, "measured": {"f": {"estimate": 0.02, "lo": 0.01, "hi": 0.04}}},
             {"setting": {"arch": "vgg"}, "measured": {"f": {"estimate": 0.05, "lo": 0.03, "hi": 0.08}}},
             {"setting": {"arch": "resnet"}, "measured": {"f": None}}]
    fig, ax = plt.subplots()
    pairs.plot_condition_map(ax, conds, "f", 0.05, scale=100, xlabel="share (%)")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["arch=cnn", "arch=mlp", "arch=vgg", "arch=resnet"]
    whiskers = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
    np.testing.assert_allclose([ln.get_xdata() for ln in whiskers], [(7, 14), (1, 4), (3, 8)])
    # blue where the interval clears the threshold, vermillion where it falls short, grey where it spans it
    from mclib import plots
    assert [ln.get_color() for ln in whiskers] == [plots.PALETTE[0], plots.PALETTE[1], "#888888"]
    assert any(t.get_text().strip() == "n/a" for t in ax.texts)
    plt.close(fig)


def test_condition_effects_compare_settings_that_differ_in_one_factor():
    def e(arch, epochs, est):
        return {"setting": {"arch": arch, "epochs": epochs}, "measured": {"f": {"estimate": est, "lo": 0, "hi": 1}}}
    conds = [e("cnn", 8, 0.10), e("cnn", 2, 0.25), e("mlp", 8, 0.02), e("mlp", 2, 0.0),
             {"setting": {"arch": "vgg", "epochs": 8}, "measured": {}}]
    eff = pairs.condition_effects(conds, "f")
    assert list(eff) == ["arch", "epochs"]
    assert eff["arch"][0] == pytest.approx(0.25) and eff["arch"][1] == 2       # (cnn, 2) vs (mlp, 2)
    assert eff["epochs"][0] == pytest.approx(0.15) and eff["epochs"][1] == 2   # cnn 8 vs 2
    lone = pairs.condition_effects([e("cnn", 8, 0.1)], "f")
    assert math.isnan(lone["arch"][0]) and lone["arch"][1] == 0


def test_barrier_sample_draws_on_until_enough_pairs_have_a_barrier(bump_pair):
    """A decided A1 still draws more pairs (within the budget) when A2/A3 would judge too few barrier pairs."""
    model, A, C = bump_pair
    noise = 0.01 * torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    X = torch.cat([A.expand(10, -1, -1, -1), C.expand(10, -1, -1, -1)]) + noise
    y = torch.zeros(20, dtype=torch.long)
    first = pairs.barrier_sample(model, X, y, 20, threshold=0.05, max_pairs=80, num_points=32, seed=0)
    k = int(first.line_has_barrier.sum())
    more = pairs.barrier_sample(model, X, y, 20, threshold=0.05, max_pairs=80, num_points=32, seed=0,
                                min_barrier_pairs=k + 1)
    assert more.looks[:2] == [20, 40] and int(more.line_has_barrier.sum()) > k
    rec = more.measured()["barrier_fraction"]
    assert rec["planned"] == [20, 40, 80] and rec["level"] == pytest.approx(1 - 0.05 / 3) and rec["looks"] == more.looks


class _Constant(nn.Module):
    """Equal logits for every input: at chance, no input is correctly classified... except by argmax tie-break."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.zeros(len(x), self.k)


def test_pairable_needs_two_correct_inputs_of_one_class():
    X = torch.rand(6, 1, 2, 2)
    assert not pairs.pairable(_Constant(), X, torch.tensor([1, 1, 2, 2, 1, 2]))   # argmax is class 0: none correct
    assert pairs.pairable(_Constant(), X, torch.tensor([0, 0, 1, 2, 1, 2]))       # two correct inputs of class 0
    assert not pairs.pairable(_Constant(), X, torch.tensor([0, 1, 1, 2, 1, 2]))


def test_real_pairs_evidence_of_a_run_that_could_not_pair():
    """A run without a sample has zero pairs and says why, with its accuracy, in the runs' order."""
    from types import SimpleNamespace as NS
    from mclib import config

    X, y = torch.rand(6, 1, 2, 2), torch.tensor([1, 1, 2, 2, 1, 2])
    S = pairs.Sizes.read("smoke")
    runs = {"m seed 0": NS(model=_Constant(), metrics={"test_acc": 0.0})}
    real = pairs.RealPairs(ctx=config.setup("smoke", "cpu", style=False), sizes=S, X=X, y=y, threshold=0.05,
                           archs=("m",), runs=runs, samples={"m seed 0": None}, studies={})
    ev = real.evidence()
    assert list(ev) == ["m seed 0"] and ev["m seed 0"]["pairs"] == 0 and ev["m seed 0"]["barrier_fraction"] is None
    assert "no class had two correctly classified" in ev["m seed 0"]["missing"] and ev["m seed 0"]["test_acc"] == 0.0
    assert real.seed0 == S.train_seeds[0] and list(real.table().index) == ["m seed 0"]
    assert real.a2_map() == ([], {})
