"""Degenerate evidence never crashes a chapter and never holds (issue 27): a model at chance, an empty set
(no correctly classified input, no barrier pair) each give ``inconclusive`` with a reason naming what was missing.

The models here are a *constant-prediction* network (logits that ignore the input) -- what a ResNet whose
BatchNorm statistics had not settled produced on the paper path -- and a model whose loss is flat along every
straight line, so that no pair has a barrier.
"""

import pytest
import torch
from torch import nn

from mclib import claims, train
from mclib.claims import guards, paper_a, paper_c
from mclib.studies import pairs


class Constant(nn.Module):
    """Logits that do not depend on the input: every image is predicted as class ``k``."""

    def __init__(self, k: int = 0, num_classes: int = 10):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        with torch.no_grad():
            self.bias[k] = 5.0

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10


# ------------------------------------------------------------------------------------------ the guard
def test_a_constant_model_is_at_chance_and_a_good_one_is_not():
    X, y = _data()
    acc = train.evaluate(Constant(3), X, y)["acc"]
    assert acc == pytest.approx(0.1)
    v = guards.at_chance("the model", acc, len(X))
    assert v is not None and v.status == "inconclusive" and "at chance" in v.reason and "10.0%" in v.reason
    assert guards.at_chance("the model", 0.9, len(X)) is None
    # the whole interval must clear chance: 14% of 100 images does not ([8.5%, 22%]), 30% of 1000 does
    assert guards.at_chance("m", 0.14, 100) is not None
    assert guards.at_chance("m", 0.30, 1000) is None


@pytest.mark.parametrize("acc, n", [(None, 100), (float("nan"), 100), (0.9, 0)])
def test_an_unmeasured_accuracy_is_inconclusive_naming_it(acc, n):
    v = guards.at_chance("the cnn model", acc, n)
    assert v.status == "inconclusive" and "the cnn model" in v.reason


# ------------------------------------------------------------------------------------------ A1-A3
@pytest.mark.filterwarnings("ignore:mclib.infer")
def test_constant_model_pairs_study_and_judges_are_inconclusive():
    """Flat loss: no pair has a barrier; the study runs, A2/A3 say the bypass was never tested, and A1 -- which
    without the accuracy guard *fails* on a large sample (0% of pairs, interval below 5%) -- is inconclusive."""
    X, y = _data(400)
    net = Constant(0)
    s = pairs.barrier_sample(net, X, y, 40, tolerance=0.01, num_points=8, max_pairs=40)
    st = pairs.study_pairs(net, X[s.i], X[s.j], s.target, num_points=8, tolerance=0.01, iterations=4, max_rounds=1,
                           progress=False)
    assert st.bypass is None
    ev = st.evidence(n_boot=50, seed=0)
    assert ev["barrier_pairs"] == 0
    acc = train.evaluate(net, X, y)["acc"]
    runs = {"cnn seed 0": {**ev, "test_acc": acc, "n_test": len(X)}}
    for cid in ("A1", "A2", "A3"):
        v = claims.get(cid).verdict({"runs": runs, "conditions": []})
        assert v.status == "inconclusive", (cid, v)
        assert "at chance" in v.reason
    # zero barrier pairs from a model above chance: A2 and A3 name what was missing
    runs = {"cnn seed 0": {**ev, "test_acc": 0.95, "n_test": 1000}}
    for cid in ("A2", "A3"):
        v = claims.get(cid).verdict({"runs": runs})
        assert v.status == "inconclusive" and "no cnn seed 0 pair had a barrier" in v.reason


def test_a1_at_chance_does_not_fail_where_it_would_without_the_guard():
    big = {"pairs": 800, "barrier_pairs": 0, "tolerance": 0.01,
           "barrier_fraction": {"estimate": 0.0, "lo": 0.0, "hi": 0.0048, "n": 800}}
    assert paper_a.judge_a1({"runs": {"cnn": big}}).status == "fails"   # a trained model with no barrier: fails
    v = paper_a.judge_a1({"runs": {"cnn": {**big, "test_acc": 0.1, "n_test": 1000}}})
    assert v.status == "inconclusive" and "at chance" in v.reason


def test_a2_with_no_setting_in_its_map_is_inconclusive():
    ev = {"pairs": 20, "barrier_pairs": 0, "tolerance": 0.01,
          "barrier_fraction": {"estimate": 0.0, "lo": 0.0, "hi": 0.16, "n": 20}}
    v = claims.get("A2").verdict({"runs": {"mlp seed 0": ev}, "conditions": []})
    assert v.status == "inconclusive" and "never tested" in v.reason


# ------------------------------------------------------------------------------------------ C1, C2, C4
def _c1(end, worst_line, worst_bezier, n=1000):
    return {"n_test": n, "archs": {"resnet20": {"line": {"end_acc": end, "worst_acc": worst_line},
                                                "bezier": {"end_acc": end, "worst_acc": worst_bezier}}}}


def test_c1_endpoints_at_chance_are_inconclusive_not_failing():
    assert paper_c.judge_c1(_c1(0.10, 0.10, 0.10)).status == "inconclusive"
    assert "at chance" in paper_c.judge_c1(_c1(0.10, 0.10, 0.10)).reason
    assert paper_c.judge_c1(_c1(0.90, 0.90, 0.90)).status == "fails"       # no line barrier on a good model


def test_c2_backdoored_endpoints_at_chance_are_inconclusive():
    setting = {"trigger": "corner", "mode": "single", "end_acc": 0.1, "n_asr": 900,
               "n_max": {"N": 2500, "acc": 0.1, "asr": 0.0}, "n_min": {"N": 50, "acc": 0.1, "asr": 0.0}}
    v = paper_c.judge_c2({"n_eval": 1000, "settings": [setting]})
    assert v.status == "inconclusive" and "corner/single" in v.reason and "at chance" in v.reason


def test_c4_with_no_correct_input_to_inject_is_inconclusive_naming_it():
    """The c4 chapter records ``missing`` when no evaluation image is right for both untampered models (a model
    predicting one class); before, the chapter crashed in ``injected_pair`` (``X is empty``)."""
    reason = "resnet20: no evaluation image is classified correctly by both untampered models"
    v = claims.get("C4").verdict({"arch": "resnet20", "missing": reason,
                                  "other_archs": {"vgg16_bn": {"arch": "vgg16_bn", "missing": "vgg16_bn: none"}}})
    assert v.status == "inconclusive" and v.reason == reason
    per = paper_c.per_architecture("C4", {"arch": "resnet20", "missing": reason,
                                          "other_archs": {"vgg16_bn": {"arch": "vgg16_bn", "missing": "x"}}})
    assert {a: v.status for a, v in per.items()} == {"resnet20": "inconclusive", "vgg16_bn": "inconclusive"}


def test_c4_at_chance_or_without_injected_errors_never_holds():
    base = {"n_eval": 1000, "n_chosen": 40, "ref_acc": 0.1, "ref_injection": 1.0,
            "points": [{"N": 50, "acc": 0.1, "injection": 0.0}]}
    assert paper_c.judge_c4(base).status == "inconclusive"                      # was: holds
    good = {**base, "ref_acc": 0.9, "points": [{"N": 50, "acc": 0.9, "injection": 0.0}]}
    assert paper_c.judge_c4(good).status == "holds"
    v = paper_c.judge_c4({**good, "ref_injection": 0.0})
    assert v.status == "inconclusive" and "injected endpoints" in v.reason     # was: holds
    assert paper_c.judge_c4({**good, "n_chosen": 0}).status == "inconclusive"


def test_c8_with_degenerate_c4_is_inconclusive_not_a_crash():
    recs = {"C4": {"arch": "cnn", "missing": "cnn: no correct input", "other_archs": {"mlp": {"missing": "mlp: none"}}}}
    v = paper_c.judge_c8({"records": recs})
    assert v.status == "inconclusive" and "C4: cnn inconclusive, mlp inconclusive" in v.reason


# ------------------------------------------------------------------------------------------ C5, C6, C7
def test_c5_backdoored_endpoint_at_chance_is_inconclusive_not_failing():
    """A constant model predicting the target class: planted ASR 100%, the optimiser 'recovers' it, and the path
    keeps 100% ASR -- before the guard C5 *failed* on it."""
    values = {"n_asr": 500, "change": 0.3, "planted_asr": 1.0, "control_asr": 1.0,
              "aware": [{"t": 0.5, "asr": 1.0}]}
    assert paper_c.judge_c5(values).status == "fails"
    v = paper_c.judge_c5({**values, "end_acc": 0.1, "n_eval": 1000})
    assert v.status == "inconclusive" and "backdoored endpoint is at chance" in v.reason


def test_c6_c7_endpoints_at_chance_are_inconclusive():
    flat = {"estimate": 0.0, "lo": 0.0, "hi": 0.0, "threshold": 0.2}
    c6 = {"archs": {"cnn": {"robust": flat, "standard": flat, "end_acc": 0.1, "n_eval": 500}}}
    assert paper_c.judge_c6({"archs": {"cnn": {"robust": flat, "standard": flat}}}).status == "fails"
    assert paper_c.judge_c6(c6).status == "inconclusive"
    r = {"pearson": 0.1, "pearson_lo": -0.2, "pearson_hi": 0.3}
    c7 = {"t_fixed": 0.5, "archs": {"cnn": {"monotone": False, "profile": r, "across": r}}}
    assert paper_c.judge_c7(c7).status == "fails"
    c7["archs"]["cnn"].update(end_acc=0.1, n_eval=500)
    v = paper_c.judge_c7(c7)
    assert v.status == "inconclusive" and "cnn: the worse endpoint is at chance" in v.reason


# ------------------------------------------------------------------------------------------ A4, A5, B1-B3
def test_a4_a5_runs_at_chance_are_inconclusive():
    fvo = {"pairs": 20, "barrier_pairs": 0, "tolerance": 0.01,
           "mode_fraction": {"estimate": 0.0, "lo": 0.0, "hi": 0.16, "n": 20},
           "connected_all": {"estimate": 1.0, "lo": 0.84, "hi": 1.0, "n": 20}}
    assert paper_a.judge_a5({"runs": {"cnn / FVO": fvo}}).status == "fails"     # no FVO input became a mode
    v = paper_a.judge_a5({"runs": {"cnn / FVO": {**fvo, "test_acc": 0.1, "n_test": 1000}}})
    assert v.status == "inconclusive" and "the cnn / FVO model is at chance" in v.reason
    many = {**fvo, "connected_all": {"estimate": 1.0, "lo": 0.95, "hi": 1.0, "n": 80}}
    assert paper_a.judge_a4({"runs": {"cnn / same": many}}).status == "holds"    # a flat loss connects everything
    assert paper_a.judge_a4({"runs": {"cnn / same": {**many, "test_acc": 0.1, "n_test": 1000}}}).status == "inconclusive"


def test_b_claims_on_a_model_at_chance_are_inconclusive():
    from mclib.claims import paper_b

    ev = {"purity_first": {"estimate": 0.3, "lo": 0.25, "hi": 0.35, "n": 500},
          "purity_gain": {"estimate": -0.2, "lo": -0.25, "hi": -0.15, "n": 500},
          "nmi_gain": {"estimate": -0.2, "lo": -0.25, "hi": -0.15, "n": 500},
          "spearman": {"estimate": 0.3, "lo": 0.2, "hi": 0.4, "n": 500}}
    before = [paper_b.judge_b1({"models": {"cnn": ev}}).status, paper_b.judge_b2({"models": {"cnn": ev}}).status,
              paper_b.judge_b3({"models": {"cnn": ev}}).status]
    assert before == ["holds", "fails", "fails"]
    chance = {"cnn": {**ev, "test_acc": 0.1, "n_test": 500}}
    for judge in (paper_b.judge_b1, paper_b.judge_b2, paper_b.judge_b3):
        v = judge({"models": chance})
        assert v.status == "inconclusive" and "the cnn model is at chance" in v.reason
    good = {"cnn": {**ev, "test_acc": 0.9, "n_test": 500}}
    assert [j({"models": good}).status for j in (paper_b.judge_b1, paper_b.judge_b2, paper_b.judge_b3)] == before


# ------------------------------------------------------------------------------------------ C8 across datasets
def _c4_ok(dataset=None):
    v = {"n_eval": 1000, "n_chosen": 40, "ref_acc": 0.9, "ref_injection": 1.0,
         "points": [{"N": 50, "acc": 0.9, "injection": 0.0}]}
    return {**v, **({"dataset": dataset} if dataset else {})}


def test_c8_needs_every_required_dataset():
    """Zhao et al.'s C8 is "across architectures AND datasets": with SVHN required, records on CIFAR-10 alone can
    no longer let C8 hold (before, the judge compared architectures only)."""
    cifar = {"arch": "vgg16_bn", **_c4_ok("cifar10"), "other_archs": {"resnet20": _c4_ok()}}
    assert paper_c.datasets_of(cifar) == {"cifar10"}
    recs = {cid: cifar for cid in ("C1", "C2", "C3", "C4", "C5", "C6", "C7")}   # judged with C4's rule below
    import unittest.mock as mock

    with mock.patch.dict(paper_c.JUDGES, {c: paper_c.judge_c4 for c in recs}):
        assert paper_c.judge_c8({"records": recs}).status == "holds"
        v = paper_c.judge_c8({"records": recs, "datasets_required": ["cifar10", "svhn"]})
        assert v.status == "inconclusive" and "C4 was not measured on svhn" in v.reason
        both = {"arch": "vgg16_bn", **_c4_ok("cifar10"), "other_archs": {"resnet20": _c4_ok("svhn")}}
        assert paper_c.datasets_of(both) == {"cifar10", "svhn"}
        v = paper_c.judge_c8({"records": {c: both for c in recs}, "datasets_required": ["cifar10", "svhn"]})
        assert v.status == "holds", v


def test_paper_preset_names_the_papers_datasets():
    from mclib import config

    p = config.get_preset("paper")
    datasets = {p.dataset} | set(p.section("across")["datasets"])
    assert {"cifar10", "svhn"} <= datasets                  # CLAIMS.md: C8 "VGG/ResNet, CIFAR-10/SVHN"
    for name in ("smoke", "quick"):                          # one dataset each: C8 unchanged there
        q = config.get_preset(name)
        assert list(q.section("across")["datasets"]) == [q.dataset]


def test_a8_a9_on_a_model_at_chance_are_inconclusive():
    """Found at the paper-smoke preset: a ResNet-20 at 13% test accuracy gave A9 'holds' (AUROC 1.0) and A8 'fails'."""
    auroc = {"estimate": 1.0, "lo": 1.0, "hi": 1.0, "n": 40}
    assert paper_a.judge_a9({"auroc": {"FGSM": auroc}}).status == "holds"
    v = paper_a.judge_a9({"auroc": {"FGSM": auroc}, "test_acc": 0.133, "n_test": 128})
    assert v.status == "inconclusive" and "the attacked model is at chance" in v.reason
    ratio = {"ratio": {"estimate": 1.04, "lo": 1.04, "hi": 1.04, "n": 40}}
    assert paper_a.judge_a8({"attacks": {"FGSM": ratio}}).status == "fails"
    assert paper_a.judge_a8({"attacks": {"FGSM": ratio}, "test_acc": 0.133, "n_test": 128}).status == "inconclusive"
    assert paper_a.judge_a9({"auroc": {"FGSM": auroc}, "test_acc": 0.95, "n_test": 1000}).status == "holds"
