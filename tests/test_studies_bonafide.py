"""Tests of mclib.studies.bonafide (claims C2-C4): the sweep over bonafide sizes, Table 1's comparison of every
repair method, the condition-map plot (the small models and data are test_repair's)."""
import pytest
import torch

from mclib import curves, repair, train
from mclib.attacks import backdoor as bd
from mclib.studies import bonafide
from test_repair import SMALL, _data, _pair


def test_sweep_returns_frame_curves_and_the_bonafide_data_of_every_n():
    m0, m1 = _pair()
    X, y = _data(n=80)
    res = bonafide.sweep(m0, m1, X, y, [8, 20], [0.0, 0.5, 1.0], metrics=bonafide.asr_metric(bd.Trigger(), "all2all"),
                         steps=4, batch_size=8, lr=1e-2)
    assert list(res.frame.columns) == ["N", "t", "loss", "acc", "asr"] and len(res.frame) == 6
    assert set(res.curves) == set(res.bonafide) == {8, 20}
    for n in (8, 20):
        Xb, yb, Xe, ye = repair.split_bonafide(X, y, n)
        assert torch.equal(res.bonafide[n][0], Xb) and torch.equal(res.bonafide[n][1], yb)
        assert len(res.curves[n].losses) == bonafide.epochs_for(n, 4, 8) * -(-n // 8)   # the steps it was given
        row = res.frame[(res.frame["N"] == n) & (res.frame["t"] == 1.0)].iloc[0]
        assert row["acc"] == pytest.approx(train.evaluate(m1, Xe, ye)["acc"])          # t = 1 is endpoint m1
    assert not hasattr(res.curves[8], "bonafide")                                      # nothing attached to the curve
    assert isinstance(res.curves[8], curves.Curve)


def test_comparison_table_and_backdoor_along():
    m0, m1 = _pair()
    X, y = _data(n=80)
    Xb, yb, Xe, ye = repair.split_bonafide(X, y, 20)
    methods = bonafide.repair_methods(m0, m1, Xb, yb, t=0.5, generator=torch.Generator().manual_seed(0), **SMALL)
    assert list(methods) == ["path (t=0.5)", "endpoint (no repair)", "fine-tune", "from scratch",
                             "prune + fine-tune", "weight noise"]
    table = bonafide.comparison_table(methods, Xe, ye, bd.Trigger(), "single", 0, columns={"N": 20})
    assert list(table.columns) == ["N", "method", "clean_acc", "asr"]
    assert len(table) == 6 and table["clean_acc"].between(0, 1).all() and table["asr"].between(0, 1).all()
    c = repair.path_repair(m0, m1, Xb, yb, **SMALL)
    df = repair.backdoor_along(c, [0.0, 0.5, 1.0], Xe, ye, bd.Trigger(), "all2all")
    assert list(df.columns) == ["t", "loss", "acc", "asr"]
    assert df["asr"].iloc[0] == pytest.approx(bd.asr(m0, Xe, ye, bd.Trigger(), "all2all"))
    assert df["acc"].iloc[-1] == pytest.approx(train.evaluate(m1, Xe, ye)["acc"])


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet8"])
def test_paper_code_paths_on_3x32x32(arch):
    kw = {"widths": (8, "M", 8, "M")} if arch == "vgg_bn" else {"width": 4}
    m0, m1 = _pair(arch, c=3, hw=32, **kw)
    X, y = _data(n=40, c=3, hw=32)
    Xb, yb, Xe, ye = repair.split_bonafide(X, y, 16)
    methods = bonafide.repair_methods(m0, m1, Xb, yb, t=0.1, **{**SMALL, "epochs": 1})
    table = bonafide.comparison_table(methods, Xe, ye, bd.Trigger(), "single", 0)
    assert len(table) == 6
    pruned = methods["prune + fine-tune"]
    conv = pruned.get_submodule(repair.last_conv(pruned))
    assert int((conv.weight.detach().flatten(1).abs().sum(1) == 0).sum()) >= conv.out_channels // 2


def test_plot_map_marks_each_cell_and_the_threshold():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    grid = pd.DataFrame([[0.02, 0.5], [0.0, 0.9]], index=["a", "b"], columns=[50, 500])
    marks = pd.DataFrame([["holds", "fails"], ["holds", "inconclusive"]], index=grid.index, columns=grid.columns)
    fig, ax = plt.subplots()
    bonafide.plot_map(ax, grid, marks, threshold=0.1)
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(["2 ✓", "50 ✗", "0 ✓", "90 ?"])
    cbar_lines = [l for l in fig.axes[1].lines if l.get_ydata()[0] == pytest.approx(10.0)]
    assert cbar_lines
    plt.close(fig)


def test_backdoored_recipe_trains_on_the_architectures_dataset():
    from mclib import config
    from mclib.studies import bonafide as bf

    paper = config.get_preset("paper")
    r = bf.backdoored_recipe(paper, seed=1, arch="vgg16", dataset="svhn")
    assert (r.arch, r.dataset, r.seed, r.data_hook) == ("vgg16", "svhn", 1, "mclib.attacks.backdoor:poison")
    default = bf.backdoored_recipe(paper, seed=1, arch="vgg16")
    assert default.dataset == paper.dataset == "cifar10" and default.replace(dataset="svhn") == r
