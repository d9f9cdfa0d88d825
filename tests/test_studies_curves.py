"""The C1 study (mclib.studies.curves): paths between two endpoints, their evidence and the seed-pair shape."""
import pytest
import torch

from mclib import claims, curves, models
from mclib.claims import paper_c
from mclib.studies import curves as study


def _pair(arch="cnn"):
    torch.manual_seed(0)
    m0 = models.build(arch, in_shape=(1, 8, 8), num_classes=4)
    torch.manual_seed(1)
    m1 = models.build(arch, in_shape=(1, 8, 8), num_classes=4)
    return m0.eval(), m1.eval()


FIT = dict(num_bends=1, epochs=1, batch_size=16, lr=0.05, weight_decay=5e-4, optimizer="sgd")


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_connect_measures_every_kind_and_pairs_the_drop():
    (X, y), (Xt, yt) = _data(), _data(40, 1)
    out = study.connect(*_pair(), X, y, Xt, yt, curves.grid(5), generator=torch.Generator().manual_seed(1), **FIT)
    assert list(out) == list(study.KINDS)
    for kind, r in out.items():
        assert list(r.frame["t"]) == [0, 0.25, 0.5, 0.75, 1.0]
        t = r.table
        assert sum(t.values()) == 40
        # the table pairs the worse endpoint with the worst point: its margins are their accuracies
        assert (t["both"] + t["ref_only"]) / 40 == pytest.approx(r.summary["end_acc"], abs=1e-6)
        assert (t["both"] + t["point_only"]) / 40 == pytest.approx(r.summary["worst_acc"], abs=1e-6)
    # the line is the straight line whatever was "trained": its midpoint is the average of the endpoints' weights
    assert out["line"].seconds >= 0 and out["bezier"].curve.num_bends == 1


def test_connect_gives_every_kind_the_same_batches_and_refuses_unknown_kinds():
    (X, y), (Xt, yt) = _data(), _data(40, 1)
    a = study.connect(*_pair(), X, y, Xt, yt, [0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(1),
                      kinds=("bezier",), **FIT)
    b = study.connect(*_pair(), X, y, Xt, yt, [0.0, 0.5, 1.0], generator=torch.Generator().manual_seed(1), **FIT)
    assert torch.equal(a["bezier"].curve.bends, b["bezier"].curve.bends)
    with pytest.raises(ValueError, match="kinds must be among"):
        study.connect(*_pair(), X, y, Xt, yt, [0.0, 1.0], kinds=("spline",), **FIT)


def test_evidence_is_what_judge_c1_reads_for_every_seed_pair():
    (X, y), (Xt, yt) = _data(), _data(40, 1)
    res = {"cnn": study.connect(*_pair(), X, y, Xt, yt, [0.0, 0.5, 1.0], kinds=("line", "bezier"), **FIT)}
    values = study.evidence(res, 40, more={"2/3": res}, label="seeds 0/1")
    assert set(values) == {"n_test", "archs", "seeds_label", "seed_pairs"}
    assert set(values["archs"]["cnn"]["bezier"]) == {"end_acc", "worst_acc", "t_end", "t_worst", "loss_barrier", "table"}
    assert values["seed_pairs"]["2/3"]["archs"] == values["archs"]
    v = claims.CATALOGUE["C1"].verdict(values)
    one = claims.CATALOGUE["C1"].verdict({"n_test": 40, "archs": values["archs"]})
    assert v.status == one.status and v.reason.startswith("seeds 0/1:") and "; seeds 2/3:" in v.reason
    rows = study.table({"0/1": res})
    assert list(rows["path"]) == ["line", "bezier"] and rows["95% interval"].str.startswith("[").all()
    assert "cnn, seeds 0/1" in study.measured({"0/1": res})


def test_evidence_names_each_architectures_dataset_and_test_size():
    """Each architecture's entry carries the dataset it was measured on and its own n_test, so that C8 reads the
    datasets (paper_c.datasets_of) and C1 judges each architecture on its own number of test images."""
    (X, y), (Xt, yt) = _data(), _data(40, 1)
    res = {arch: study.connect(*_pair(), X, y, Xt, yt, [0.0, 0.5, 1.0], kinds=("line", "bezier"), **FIT)
           for arch in ("vgg", "resnet")}
    datasets = {"vgg": "cifar10", "resnet": "svhn"}
    values = study.evidence(res, {"vgg": 40, "resnet": 30}, more={"2/3": res}, datasets=datasets)
    assert values["n_test"] == 30
    assert {a: (e["dataset"], e["n_test"]) for a, e in values["archs"].items()} == {"vgg": ("cifar10", 40), "resnet": ("svhn", 30)}
    assert values["seed_pairs"]["2/3"]["archs"]["resnet"]["dataset"] == "svhn"
    assert paper_c.datasets_of(values) == {"cifar10", "svhn"}
    assert paper_c.dataset_per_arch(values) == datasets
    # the judge reads the bezier and line entries as before: the extra keys change nothing
    plain = study.evidence(res, 40)
    assert "dataset" not in plain["archs"]["vgg"] and plain["archs"]["vgg"]["n_test"] == 40
    assert claims.CATALOGUE["C1"].verdict(plain).status == claims.CATALOGUE["C1"].verdict(study.evidence(res, 40, datasets=datasets)).status
    rows = study.table({"0/1": res}, datasets)
    assert list(rows["dataset"]) == ["cifar10"] * 2 + ["svhn"] * 2
    assert "resnet on svhn, seeds 0/1" in study.measured({"0/1": res}, datasets)
