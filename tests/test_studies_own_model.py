"""Tests of mclib.studies.own_model: training a reader's model like the recipe, and the PGD-strength study."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from mclib import config, detect
from mclib.studies import detection, own_model
from test_detect import _template_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_fresh_is_seeded_and_returns_an_eval_model():
    ctx = config.setup("smoke", "cpu", style=False)
    X, y = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 2
    make = lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 2))  # noqa: E731
    a, b = own_model.fit_fresh(ctx, make, X, y, seed=3), own_model.fit_fresh(ctx, make, X, y, seed=3)
    assert not a.training and torch.equal(a[1].weight, b[1].weight)
    assert not torch.equal(a[1].weight, own_model.fit_fresh(ctx, make, X, y, seed=4)[1].weight)


def test_pgd_strength_study_one_row_per_strength():
    g = torch.Generator().manual_seed(1)
    templates, model = _template_classifier(g)
    y = torch.arange(60) % 3
    X = (templates[y] + 0.05 * torch.randn(60, 16, generator=g)).clamp(0, 1).reshape(-1, 1, 4, 4)
    refs = detect.select_references(model, X[:30], y[:30], k=2)
    S = replace(detection.Sizes.read("smoke"), n=8, num_points=5, pgd_steps=3, folds=2)
    table = own_model.pgd_strength_study(model, X[30:], y[30:], refs, S, 0.5, lambda: torch.Generator().manual_seed(3))
    assert list(table.index) == ["PGD (first success)", "PGD (full strength)"]
    assert {"learned direction", "AUROC (threshold: barrier max)", "median L-inf"} <= set(table.columns)
    assert (table["median L-inf"] <= 0.5 + 1e-6).all()
