"""The C4 study (mclib.studies.error_injection): injected endpoints, degenerate evidence and the judge's values."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from mclib.claims import paper_c
from mclib.studies import error_injection as inj


class _Oracle(nn.Module):
    """Reads the label written into the first 10 pixels (logits 5 * one-hot(label) plus noise); one linear layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:, :10].copy_(5 * torch.eye(10))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x.flatten(1))


class _Constant(nn.Module):
    """Predicts class 0 for every input (zero weights, the bias of class 0 highest)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.eye(10)[0])

    def forward(self, x):
        return self.fc(x.flatten(1))


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    X = torch.rand(n, 1, 4, 4, generator=g)   # the last 6 pixels are noise the layer can use to single images out
    X.view(n, -1)[:, :10] += torch.eye(10)[y]
    return X, y


def _ctx(model):
    return SimpleNamespace(model=lambda recipe, progress=False: SimpleNamespace(model=model),
                           generator=lambda k: torch.Generator().manual_seed(k))


@pytest.fixture(autouse=True)
def _no_recipes(monkeypatch):
    monkeypatch.setattr(inj.train, "recipe_for", lambda ctx, arch=None, seed=0: (arch, seed))


def test_a_model_that_gets_nothing_right_gives_missing_evidence_and_an_undecided_c4():
    X, y = _data(60, 0)
    y = torch.where(y == 0, torch.ones_like(y), y)   # the constant model predicts 0: nothing is right
    pair = inj.injected_pair(_ctx(_Constant()), "cnn", (0, 1), X, y, X, y, n_chosen=8, steps=5)
    assert pair.injected is None and "no evaluation image is classified correctly" in pair.missing
    assert inj.sweep(pair, X, y, [10], [0.0, 1.0], steps=1, batch_size=8, generator_seed=0) is None
    values, text = inj.evidence(pair, None, 0.5)
    assert values["missing"] == pair.missing == text
    assert paper_c.judge_c4(values).status == "inconclusive"


def test_injected_pair_flips_the_chosen_images_and_evidence_counts_survivors():
    X, y = _data(80, 1)
    pair = inj.injected_pair(_ctx(_Oracle()), "oracle", (0, 1), X, y, X, y, n_chosen=6, steps=300)
    assert pair.layer == "fc" and len(pair.wrong) == 6 and int(pair.exclude.sum()) == 6
    assert torch.equal(pair.wrong, (y[pair.exclude] + 1) % 10)
    ends = pair.ends.set_index(["seed", "model"])
    assert ends.loc[(0, "clean"), "injection_success"] == 0.0
    assert ends.loc[(0, "injected"), "injection_success"] >= 0.5   # the attack flips most chosen images
    # a frame as the sweep makes it: one survivor of six at N=10, none at N=20
    frame = pd.DataFrame([{"N": n, "t": t, "loss": 0.1, "acc": 0.9, "injection": inj_}
                          for n, inj_ in ((10, 1 / 6), (20, 0.0)) for t in (0.0, 0.5, 1.0)])
    values, text = inj.evidence(pair, frame, 0.5)
    assert values["n_chosen"] == 6 and values["n_eval"] == 74 and values["ref_injection"] >= 0.5
    assert [p["N"] for p in values["points"]] == [10, 20]
    assert "N=10: 90.0% clean / 1 of 6 injected errors survive" in text
    assert paper_c.judge_c4(values).status == "inconclusive"   # six images cannot bound a rate below 10%


def test_the_pair_trains_on_its_dataset_and_the_evidence_names_it(monkeypatch):
    """The endpoints' recipe gets the architecture's dataset; the values (injected or missing) carry it for C8."""
    asked = []
    monkeypatch.setattr(inj.train, "recipe_for", lambda ctx, arch=None, seed=0, **kw: asked.append(kw) or (arch, seed))
    X, y = _data(80, 1)
    pair = inj.injected_pair(_ctx(_Oracle()), "oracle", (0, 1), X, y, X, y, n_chosen=4, steps=50, dataset="svhn")
    assert asked == [{"dataset": "svhn"}] * 2 and pair.dataset == "svhn"
    frame = pd.DataFrame([{"N": 10, "t": t, "loss": 0.1, "acc": 0.9, "injection": 0.0} for t in (0.0, 0.5, 1.0)])
    values, text = inj.evidence(pair, frame, 0.5)
    assert values["dataset"] == "svhn" and text.startswith("oracle on svhn:")
    assert paper_c.datasets_of(values) == {"svhn"}
    y0 = torch.where(y == 0, torch.ones_like(y), y)
    missing = inj.injected_pair(_ctx(_Constant()), "cnn", (0, 1), X, y0, X, y0, n_chosen=4, steps=5, dataset="cifar10")
    assert inj.evidence(missing, None, 0.5)[0]["dataset"] == "cifar10"
    # without a dataset the preset's is used, and the values name none (the record's own dataset applies)
    asked.clear()
    plain = inj.injected_pair(_ctx(_Oracle()), "oracle", (0, 1), X, y, X, y, n_chosen=4, steps=5)
    assert asked == [{}] * 2 and "dataset" not in inj.evidence(plain, frame, 0.5)[0]
