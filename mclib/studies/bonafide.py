"""Model repair with limited bonafide data, as the chapters study it (Zhao et al., ICLR 2020, sec. 3): claims C2-C4.

Built from :mod:`mclib.repair` (path repair and its baselines, clean accuracy and ASR) and :mod:`mclib.curves`:

* :func:`backdoored_recipe` -- the book's standard recipe with BadNets poisoning, for the tampered endpoints;
* :func:`sweep` -- path repair for every bonafide size N with equal optimiser steps (:func:`epochs_for`), measured
  along t (:class:`RepairSweep`); :func:`asr_metric` adds the attack success rate;
* :func:`repair_methods` and :func:`comparison_table` -- Table 1: every repair method with the same bonafide data
  and budget, clean accuracy and ASR of each;
* :func:`plot_sweep` and :func:`plot_map` draw the sweeps and the condition maps (:data:`MAP_MARKS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mclib import curves, repair, train
from mclib.attacks import backdoor

__all__ = ["backdoored_recipe", "epochs_for", "RepairSweep", "sweep", "asr_metric", "repair_methods", "comparison_table",
           "MAP_MARKS", "plot_sweep", "plot_map"]


def backdoored_recipe(ctx_or_preset, seed: int = 0, trigger: Mapping[str, Any] | None = None, mode: str = "single",
                      target: int = 0, rate: float = 0.1, arch: str | None = None,
                      dataset: str | None = None) -> train.Recipe:
    """The book's standard recipe (:func:`mclib.train.recipe_for`) with BadNets poisoning as its data hook, for
    ``arch`` on ``dataset`` (None: the preset's architecture and dataset).

    Two endpoints = the same poisoned data (poisoning drawn from the recipe's seed) and different seeds
    (Zhao et al. sec. 3.1). ``trigger`` is a dict of :class:`~mclib.attacks.backdoor.Trigger` arguments.
    """
    kw = {"mode": mode, "target": int(target), "rate": float(rate),
          "trigger": dict(trigger) if trigger is not None else backdoor.Trigger().to_dict()}
    on = {"dataset": dataset} if dataset is not None else {}
    return train.recipe_for(ctx_or_preset, arch=arch, seed=seed, data_hook="mclib.attacks.backdoor:poison",
                            data_hook_kwargs=kw, **on)


def epochs_for(n: int, steps: int, batch_size: int) -> int:
    """Epochs over ``n`` samples that give about ``steps`` optimiser steps (at least 1): equal budgets across N."""
    per_epoch = -(-n // batch_size)
    return max(1, round(steps / per_epoch))


@dataclass
class RepairSweep:
    """The result of :func:`sweep`: ``frame`` (one row per bonafide size N and t: ``N, t, loss, acc`` and the extra
    metrics), ``curves`` (N -> the repaired :class:`mclib.curves.Curve`) and ``bonafide`` (N -> the bonafide data
    ``(X_bona, y_bona)`` the curve was trained on, which also re-estimate its BatchNorm statistics)."""

    frame: "object"  # pandas.DataFrame
    curves: dict[int, curves.Curve]
    bonafide: dict[int, tuple[torch.Tensor, torch.Tensor]]


def sweep(m0: nn.Module, m1: nn.Module, X_test: torch.Tensor, y_test: torch.Tensor, ns, ts,
          metrics: Callable[[torch.Tensor, torch.Tensor], Mapping[str, Callable[[nn.Module], float]]] | None = None,
          steps: int = 150, batch_size: int = 64, generator_seed: int = 0, exclude: torch.Tensor | None = None,
          progress: bool = False, **budget) -> RepairSweep:
    """Path repair for every bonafide size ``N`` in ``ns``; returns a :class:`RepairSweep`.

    For each ``N``: :func:`mclib.repair.split_bonafide` (fixed halves, so one evaluation half for all N), a curve by
    :func:`mclib.repair.path_repair` with about ``steps`` optimiser steps (:func:`epochs_for`), then clean loss and
    accuracy on the evaluation half and every extra metric at each ``t`` (BN re-estimated on the
    bonafide data). ``metrics(X_eval, y_eval)`` builds name -> ``fn(model)``; ``exclude`` is a boolean
    mask over the evaluation half of images left out of the clean accuracy (e.g. the error-injected
    images). The result's ``frame`` has columns ``N, t, loss, acc, <metrics>``; ``curves`` maps N to its
    :class:`mclib.curves.Curve` and ``bonafide`` N to its bonafide data ``(X_bona, y_bona)``.
    """
    import pandas as pd

    frames, out, bona = [], {}, {}
    for n in ns:
        Xb, yb, Xe, ye = repair.split_bonafide(X_test, y_test, int(n))
        extra = dict(metrics(Xe, ye)) if metrics is not None else {}
        if exclude is not None:
            Xe, ye = Xe[~exclude], ye[~exclude]
        b = {**budget, "batch_size": batch_size, "epochs": epochs_for(int(n), steps, batch_size)}
        curve = repair.path_repair(m0, m1, Xb, yb, generator=torch.Generator().manual_seed(generator_seed + int(n)),
                                   progress=progress, **b)
        df = curves.evaluate_along(curve, ts, Xe, ye, bn_data=Xb, metrics=extra)
        df.insert(0, "N", int(n))
        frames.append(df)
        out[int(n)], bona[int(n)] = curve, (Xb, yb)
    return RepairSweep(pd.concat(frames, ignore_index=True), out, bona)


def asr_metric(trigger: backdoor.Trigger | Mapping | None = None, mode: str = "single", target: int = 0):
    """``metrics`` factory for :func:`sweep`: ``{"asr": fn(model)}`` on the evaluation half."""
    def build(Xe, ye):
        Xt, yt = backdoor.triggered_set(Xe, ye, trigger, mode, target)
        return {"asr": lambda m: train.evaluate(m, Xt, yt)["acc"]}
    return build


def repair_methods(m0: nn.Module, m1: nn.Module, X_bona: torch.Tensor, y_bona: torch.Tensor, t: float = 0.5,
                   curve: curves.Curve | None = None, prune_amount: float = 0.5,
                   generator: torch.Generator | None = None, device=None, progress: bool = False,
                   **budget) -> dict[str, nn.Module]:
    """Every repair of Zhao et al.'s Table 1 with the same bonafide data and budget, as name -> model.

    ``path (t=..)``: the curve point (``curve`` reused if given, else trained by :func:`mclib.repair.path_repair`),
    BN re-estimated on the bonafide data; ``endpoint``: ``m0`` untouched; ``fine-tune``,
    ``from scratch``, ``prune + fine-tune`` (from ``m0``); ``weight noise``: ``m0`` moved as far as
    :math:`w(t)` is from it.
    """
    b = repair.training_budget(budget)
    run = {"generator": generator, "device": device, "progress": progress}
    curve = curve if curve is not None else repair.path_repair(m0, m1, X_bona, y_bona, **run, **b)
    return {
        f"path (t={t:g})": curve.at(t, bn_data=X_bona),
        "endpoint (no repair)": m0,
        "fine-tune": repair.finetune(m0, X_bona, y_bona, **run, **b),
        "from scratch": repair.from_scratch(m0, X_bona, y_bona, **run, **b),
        "prune + fine-tune": repair.prune_finetune(m0, X_bona, y_bona, amount=prune_amount, **run, **b),
        "weight noise": repair.weight_noise(m0, repair.curve_distance(curve, t, 0), generator=generator),
    }


def comparison_table(models: Mapping[str, nn.Module], X_eval: torch.Tensor, y_eval: torch.Tensor,
                     trigger: backdoor.Trigger | Mapping | None = None, mode: str = "single", target: int = 0,
                     columns: Mapping[str, Any] | None = None):
    """A DataFrame with one row per method: ``method``, ``clean_acc``, ``asr`` (after constant ``columns``, e.g. ``{"N": 50}``)."""
    import pandas as pd

    rows = [{**dict(columns or {}), "method": name,
             **repair.clean_and_asr(m, X_eval, y_eval, trigger, mode, target)} for name, m in models.items()]
    return pd.DataFrame(rows)


#: The symbol a condition-map cell carries for each verdict (the colour is never the only cue).
MAP_MARKS = {"holds": "✓", "fails": "✗", "inconclusive": "?"}


# --- plots
def plot_sweep(frame, column: str = "asr", ax=None, title: str | None = None, label_fmt: str = "N = {}"):
    """One line per bonafide size N of ``frame[column]`` (percent) against t."""
    from mclib import plots

    if ax is None:
        _, ax = plots.subplots(figsize=(4.2, 3.2))
    for n, df in frame.groupby("N"):
        curves.plot_along(ax, df, column, label=label_fmt.format(n), percent=column != "loss")
    ax.set_ylim(-3, 103)
    if title:
        ax.set_title(title)
    return ax


def plot_map(ax, grid, marks=None, title: str | None = None, threshold: float | None = None, percent: bool = True,
             annotate: bool = True, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
             cbar_label: str = ""):
    """A condition map as a heatmap: ``grid`` a DataFrame (rows = settings, columns = one swept parameter).

    Each cell shows its value (in percent when ``percent``) when ``annotate``, and the symbol of
    :data:`MAP_MARKS` for ``marks`` (a DataFrame of verdicts of the same shape): where the criterion holds,
    fails or is undecided over its interval. The colour bar carries a line at ``threshold`` (the criterion's).
    """
    import numpy as np

    scale = 100.0 if percent else 1.0
    vals = grid.to_numpy(dtype=float) * scale
    im = ax.imshow(vals, cmap=cmap, aspect="auto", vmin=None if vmin is None else vmin * scale,
                   vmax=None if vmax is None else vmax * scale)
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [", ".join(map(str, r)) if isinstance(r, tuple) else str(r) for r in grid.index])
    ax.grid(False)
    lo, hi = im.get_clim()
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = vals[i, j]
            text = f"{v:.0f}" if annotate and np.isfinite(v) else ""
            if marks is not None:
                text = f"{text} {MAP_MARKS.get(marks.iat[i, j], '')}".strip()
            dark = np.isfinite(v) and (v - lo) < 0.5 * (hi - lo)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    cbar = ax.figure.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(cbar_label + (" (%)" if percent else ""))
    if threshold is not None:
        cbar.ax.axhline(threshold * scale, color="red", lw=2)
    if title:
        ax.set_title(title)
    return ax
