"""Bad inputs get one clear error naming the argument, the value and what is allowed (issue 13, part 2, item 8)."""
import numpy as np
import pytest
import torch
from torch import nn

from mclib import detect, percolation, som
from mclib.attacks import backdoor, evasion


def _model(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, classes)).eval()


X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("attack", [
    lambda x, y: evasion.pgd(_model(), x, y, eps=0.1, steps=2),
    lambda x, y: evasion.fgsm(_model(), x, y, 0.1),
    lambda x, y: evasion.optimisation_attack(_model(), x, y, steps=2),
    lambda x, y: evasion.adaptive_pgd(_model(), x, y, X[:, None], eps=0.1, steps=2, num_points=2),
])
def test_attacks_reject_bad_images(attack):
    with pytest.raises(ValueError, match=r"x has values in \[5.69307, 254.252\]; allowed: pixels in \[0, 1\]"):
        attack(X * 255, Y)                      # a 0-255 image is not clamped into [0, 1]
    with pytest.raises(TypeError, match="x has integer dtype torch.uint8.*x.float\\(\\) / 255"):
        attack((X * 255).to(torch.uint8), Y)    # an integer image is not silently used
    bad = X.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="x holds 1 NaN/Inf"):
        attack(bad, Y)


@pytest.mark.parametrize("attack", [
    lambda y: evasion.pgd(_model(), X, y, eps=0.1, steps=2),
    lambda y: evasion.pgd(_model(), X, y, eps=0.1, steps=2, targeted=True),
    lambda y: evasion.fgsm(_model(), X, y, 0.1),
    lambda y: evasion.optimisation_attack(_model(), X, y, steps=2),
    lambda y: evasion.adaptive_pgd(_model(), X, y, X[:, None], eps=0.1, steps=2, num_points=2),
])
def test_attacks_reject_out_of_range_labels(attack):
    with pytest.raises(ValueError, match=r"labels in \[0, 3\]; allowed: 0..2"):
        attack(torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels in \[-1, 2\]; allowed: 0..2"):
        attack(torch.tensor([0, -1, 2, 0]))


def test_inject_errors_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"wrong_labels has labels in \[1, 7\]; allowed: 0..2"):
        backdoor.inject_errors(_model(), X[:2], torch.tensor([1, 7]), X, Y, steps=1)
    with pytest.raises(ValueError, match=r"y_keep has labels in \[-2, 2\]; allowed: 0..2"):
        backdoor.inject_errors(_model(), X[:2], torch.tensor([1, 2]), X, torch.tensor([0, 1, 2, -2]), steps=1)


def test_asr_rejects_out_of_range_target():
    with pytest.raises(ValueError, match=r"target = 12 is not a class; allowed: 0..9"):
        backdoor.asr(_model(), X, Y, target=12)
    with pytest.raises(ValueError, match=r"target = 5 is not a class; allowed: 0..2"):
        backdoor.asr(_model(), X, Y, target=5, num_classes=10)      # the model has only 3 outputs


def test_extract_rejects_more_references_than_selected():
    model = _model()
    pool = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    refs = detect.select_references(model, pool, torch.arange(30) % 3, k=2)
    with pytest.raises(ValueError, match=r"k = 5 references per input requested.*hold 2.*allowed: 1..2"):
        detect.extract(model, X, refs, num_points=4, k=5)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_fit_som_rejects_non_finite_codes(value):
    codes = torch.randn(20, 3)
    codes[4, 1] = value
    with pytest.raises(ValueError, match=r"codes hold 1 NaN/Inf values in 1 of 20 rows \(first rows \[4\]\)"):
        som.fit_som(codes, 3, 3)


@pytest.mark.parametrize("call", [
    lambda: percolation.random_sites((4, 4), 1.5),
    lambda: percolation.random_bonds((4, 4), -0.1),
    lambda: percolation.threshold_dimension(2.0),
    lambda: percolation.connection_surface([0.2, 1.2], [2], 64, 2),
])
def test_percolation_rejects_p_outside_unit_interval(call):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        call()


@pytest.mark.parametrize("call", [
    lambda: percolation.bethe_estimate(0),
    lambda: percolation.pc_series(0),
    lambda: percolation.side_for(0, 100),
    lambda: percolation.connection_surface([0.2], [0, 2], 64, 2),
    lambda: percolation.random_labelling([0.5, 0.5], [0], 64, 2),
])
def test_percolation_rejects_zero_dimension(call):
    with pytest.raises(ValueError, match=r"must be integer dimensions >= 1, got"):
        call()


def test_valid_inputs_still_pass():
    assert percolation.bethe_estimate(np.array([2, 3])).shape == (2,)
    assert evasion.pgd(_model(), X, Y, eps=0.1, steps=1).shape == X.shape
