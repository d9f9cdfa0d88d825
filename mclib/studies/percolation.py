"""The percolation study (Vrabel et al., ICLR 2025, section 5, Conjecture 5.1): claim A10.

Built from :mod:`mclib.percolation` (lattice percolation, the two-point connection probability, the random-labelling
model, low-loss fractions around real inputs):

* :class:`Sizes` -- the chapter's sizes from ``mclib/presets/percolation.toml``;
* :func:`pc_table` -- the p_c estimates per dimension next to the literature's;
* :func:`real_fractions` and :func:`measured_fractions` -- the low-loss fraction p around test inputs for the trained
  and an untrained copy of the standard network, and the three fractions the chapter places on the p_c(d) curve;
* :func:`evidence` -- what A10's judge reads (:func:`mclib.claims.paper_a.judge_a10`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from mclib import config, data, train
from mclib import percolation as perc

__all__ = ["Sizes", "pc_table", "real_fractions", "measured_fractions", "evidence"]


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of ``a10_percolation`` from ``mclib/presets/percolation.toml``; the file's comments say what each
    one is (``span``: side lengths and samples per dimension, :func:`mclib.percolation.pc_study`)."""

    FILE: ClassVar[str] = "percolation"
    steps: int
    n_boot: int
    span: dict[str, Any]
    criterion_dims: tuple[int, ...]
    surface_ps: tuple[float, ...]
    surface_ds: tuple[int, ...]
    surface_sites: int
    surface_samples: int
    p_ref: float
    labelling_probs: tuple[float, ...]
    labelling_ds: tuple[int, ...]
    labelling_sites: int
    labelling_samples: int
    real_inputs: int
    real_points: int
    real_radii: tuple[float, ...]


def pc_table(study: Mapping[int, Mapping]) -> pd.DataFrame:
    """One column per dimension of :func:`mclib.percolation.pc_study`'s result: the side lengths, samples per side,
    the p_c estimate with its sigma, bootstrap SE and pair spread, the literature's p_c, 1/(2d-1), and the distance
    of the estimate from the literature in sigmas."""
    ds = sorted(study)
    table = pd.DataFrame({d: {
        "sizes L": ", ".join(map(str, study[d]["thresholds"])),
        "samples per L": len(next(iter(study[d]["thresholds"].values()))),
        "p_c estimate": f"{study[d]['pc']:.4f}", "σ": f"{study[d]['sigma']:.4f}",
        "bootstrap SE": f"{study[d]['se_boot']:.4f}", "pair spread": f"{study[d]['spread']:.4f}",
        "literature p_c": f"{study[d]['literature']:.4f}", "1/(2d-1)": f"{study[d]['bethe']:.4f}",
        "|estimate - literature| / σ": f"{abs(study[d]['pc'] - study[d]['literature']) / study[d]['sigma']:.2f}",
    } for d in ds})
    table.columns = [f"d = {d}" for d in ds]
    return table


def real_fractions(ctx: config.Context, sizes: Sizes):
    """Low-loss fractions around ``sizes.real_inputs`` class-balanced test inputs
    (:func:`mclib.percolation.label_fractions` in L-inf boxes of ``sizes.real_radii``) for the standard recipe's
    trained network and an untrained copy. Returns ``(trained, real, n_inputs)``: ``trained`` the
    :class:`mclib.train.Trained` run, ``real`` the fractions by network (``"trained"``, ``"untrained"``)."""
    trained = ctx.model(train.recipe_for(ctx))
    raw = train.recipe_for(ctx).build().to(ctx.device).eval()
    Xt, yt = data.load(ctx.preset.dataset, "test", data_root=ctx.data_root)
    idx = perc.balanced_indices(yt, sizes.real_inputs, generator=ctx.generator(3))
    real = {name: perc.label_fractions(model, Xt[idx], yt[idx], sizes.real_radii, n_points=sizes.real_points,
                                       generator=ctx.generator(4))
            for name, model in [("trained", trained.model), ("untrained", raw)]}
    return trained, real, len(idx)


def measured_fractions(real: Mapping[str, Mapping]) -> dict[str, float]:
    """The fractions p the chapter places on the p_c(d) curve, in the largest box: the trained and the untrained
    network's own-class fraction, and the untrained network's rarest predicted class (0 when it predicts none)."""
    rarest = real["untrained"]["class_fractions"][-1]
    return {
        "trained CNN, own class": float(real["trained"]["p_own"][-1]),
        "untrained CNN, own class": float(real["untrained"]["p_own"][-1]),
        "untrained CNN, rarest predicted class": float(rarest[rarest > 0].min()) if (rarest > 0).any() else 0.0,
    }


def evidence(study: Mapping[int, Mapping], surf: Mapping, lab: Mapping, measured_p: Mapping[str, float],
             sizes: Sizes, test_acc_trained=None) -> dict[str, Any]:
    """A10's values: the p_c estimates, sigmas, literature values and curve crossings per dimension, the connection
    probability tau at the grid's p nearest ``sizes.p_ref`` (with its SE) and the whole surface, the random-labelling
    tau, the measured fractions and the trained network's test accuracy."""
    ds = sorted(study)
    j_ref = int(np.argmin(np.abs(surf["p"] - sizes.p_ref)))
    return {"criterion_dims": [int(d) for d in sizes.criterion_dims], "pc": {d: study[d]["pc"] for d in ds},
            "sigma": {d: study[d]["sigma"] for d in ds}, "literature": {d: study[d]["literature"] for d in ds},
            "crossings": {d: {f"{a}-{b}": v for (a, b), v in study[d]["crossings"].items()} for d in ds},
            "tau_ref": surf["tau"][:, j_ref], "tau_ref_se": surf["tau_se"][:, j_ref], "p_ref": float(surf["p"][j_ref]),
            "tau": surf["tau"], "tau_p": surf["p"], "tau_d": surf["d"], "labelling_tau": lab["tau"],
            "measured_p": measured_p, "test_acc_trained": test_acc_trained}
