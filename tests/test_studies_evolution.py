"""Tests of mclib.studies.evolution (claim A7): the sizes, the statistic and the evidence."""
from dataclasses import replace
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mclib import config
from mclib.studies import evolution

pytestmark = pytest.mark.usefixtures("one_thread")


def test_evidence_holds_the_statistic_and_the_curves():
    gap = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 0.3], [0.05, 0.05, 0.05]])   # 3 probes, 3 pairs
    evo = NS(gap=gap, step=torch.tensor([0, 2, 4]), line_max=gap + 1, target=torch.tensor([0, 0, 1]),
             endpoint_loss=torch.ones(3, 3), fvo_steps=torch.tensor([5.0, 5.0, 5.0]), train_loss=[1.0, 0.5])
    S = replace(evolution.Sizes.read("smoke"), tolerance=0.01, n_boot=50)
    ev = evolution.evidence(evo, S, seed=0)
    # per-probe medians floored at the tolerance: 0.01, 0.2, 0.05 -> largest / smallest = 20
    assert ev["gap_change"]["estimate"] == pytest.approx(20.0)
    assert evolution.gap_change_statistic(gap.numpy(), 0.01) == pytest.approx(20.0)
    assert ev["probes"] == 3 and ev["pairs"] == 3 and ev["train_loss"] == [1.0, 0.5]
    np.testing.assert_allclose(np.stack([c.numpy() for c in ev["gap_per_class"]]), [[0, 0.15, 0.05], [0, 0.3, 0.05]],
                               rtol=1e-6)


def test_run_probes_at_the_planned_batches():
    ctx = config.setup("smoke", "cpu", style=False)
    X = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 2
    S = replace(evolution.Sizes.read(ctx), arch="mlp", batches=2, probe_every=1, n_classes=2, batch_size=16,
                num_points=5, fvo_steps=2)
    evo = evolution.run(ctx, S, X, y)
    assert evo.step.tolist() == [0, 1, 2] and evo.gap.shape == (3, 2)
    np.testing.assert_array_equal(evo.gap.numpy(), evolution.run(ctx, S, X, y).gap.numpy())
