"""Tests of mclib.studies.untrained (claim A6): the sizes, the rounds table and A6's evidence."""
from dataclasses import replace
from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mclib import config
from mclib.studies import untrained

pytestmark = pytest.mark.usefixtures("one_thread")


def test_max_by_round_repeats_the_last_round():
    b = NS(max_history=lambda: torch.tensor([[3.0, 2.0], [1.0, 0.5]]))
    h = untrained.max_by_round(b, rounds=3)
    assert h.tolist() == [[3.0, 2.0], [1.0, 0.5], [1.0, 0.5], [1.0, 0.5]]


def _result():
    loss = torch.tensor([1e-4, 2e-4, 1e-3, 3e-4])           # 2 pairs: A losses then C losses
    line = NS(max=torch.tensor([0.5, 0.01]), gap=torch.tensor([0.4, 0.0]))
    final = NS(max=torch.tensor([4e-3, 6e-3]))
    bypass = NS(max_history=lambda: torch.tensor([[0.5, 0.01], [4e-3, 6e-3]]), barriers=[line, final],
                connected=torch.tensor([True, False]), rounds=torch.tensor([1, 2]))
    return NS(target=torch.tensor([0, 1]), modes=NS(loss=loss, converged=loss < 5e-4), line_barrier=line,
              bypass=bypass)


def test_evidence_against_hand_computed_values():
    S = replace(untrained.Sizes.read("smoke"), rounds=2, tolerance=0.01)
    ev = untrained.evidence(_result(), S)
    assert ev["pairs"] == 2 and ev["fvo_converged_fraction"] == 0.75 and ev["fvo_ce_max"] == pytest.approx(1e-3)
    assert ev["line_barrier_fraction"].estimate == 0.5 and ev["connected"].estimate == 0.5
    assert ev["final_max_in_paper_range_fraction"] == 0.5        # 4e-3 <= 5e-3 < 6e-3
    assert ev["final_max_min"] == pytest.approx(4e-3) and ev["rounds_mean"] == 1.5
    assert len(ev["max_after_rounds_median"]) == 3               # the line, then rounds 1 and 2


def test_run_gives_one_result_per_architecture_and_is_deterministic():
    ctx = config.setup("smoke", "cpu", style=False)
    S = replace(untrained.Sizes.read(ctx), in_shape=(3, 8, 8), archs=("cnn",), n_classes=(2,), fvo_steps=(3,),
                bypass_iterations=(3,), num_points=5)
    a, b = untrained.run(ctx, S), untrained.run(ctx, S)
    assert list(a) == ["cnn"] and a["cnn"].A.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(a["cnn"].line.numpy(), b["cnn"].line.numpy())
    assert set(untrained.evidence(a["cnn"], S)) >= {"connected", "line_barrier_fraction"}
