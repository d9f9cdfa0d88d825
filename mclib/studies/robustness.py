"""Robustness along a weight-space path (Zhao et al., ICLR 2020, arXiv 2005.00060, Section 5): claims C6 and C7.

Zhao et al. walk the path between a regular and an adversarially trained model and find that the *robustness
loss* (cross-entropy on PGD examples) rises to a barrier while the standard loss does not (C6), and that the
robustness loss correlates with the largest eigenvalue of the input Hessian (C7). Built from
:mod:`mclib.curves` (the path and the barrier of a profile), :mod:`mclib.hessian` (the eigenvalue),
:func:`mclib.attacks.evasion.pgd` and :mod:`mclib.stats` (intervals, correlations):

* :func:`robustness_along` evaluates, at every t of a weight-space curve, the standard loss/accuracy, the PGD
  loss/accuracy (Madry et al. 2018) and the mean largest input-Hessian eigenvalue on clean inputs, with the
  per-input values behind each mean;
* :func:`barrier_interval` is the barrier height of the mean profile (:func:`mclib.curves.barrier_height`) with a
  bootstrap interval over inputs -- claim C6; :func:`barrier_map` measures it under conditions: several paths
  (trained Bezier vs straight line, per adversarial-training radius) and several attack radii at once;
* for C7, :func:`mclib.stats.correlation` compares the two profiles along t -- which cannot discriminate when both
  are monotone -- while :func:`detrended_correlation` removes the shared trend in t and
  :func:`across_inputs_correlation` correlates per-input PGD loss and eigenvalue at one fixed t;
* :func:`plot_along` draws one profile along t with the straight line between its end values (no twin axes).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib import curves, hessian, stats
from mclib.attacks import pgd
from mclib.torchutil import device_of

__all__ = ["robustness_along", "barrier_interval", "barrier_map", "detrended_correlation", "across_inputs_correlation",
           "plot_along"]


def _per_input_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int,
                    attack: Mapping | None = None, generator: torch.Generator | None = None):
    """Per-input cross-entropy and correctness (CPU tensors (N,)) of ``model`` in eval mode on ``(X, y)``, or on
    their L-inf PGD examples crafted against ``model`` when ``attack`` holds :func:`mclib.attacks.pgd`'s
    ``eps``, ``steps``, ``step_size``."""
    dev = device_of(model)
    losses, correct = [], []
    for i in range(0, len(X), batch_size):
        xb, yb = X[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
        if attack is not None:
            xb = pgd(model, xb, yb, generator=generator, **attack)
        with torch.no_grad():
            out = model(xb)
        losses.append(F.cross_entropy(out, yb, reduction="none").cpu())
        correct.append((out.argmax(1) == yb).cpu())
    return torch.cat(losses), torch.cat(correct)


def robustness_along(curve, ts: Sequence[float], X: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                     step_size: float | None = None, n_hessian: int | None = None, bn_data=None,
                     hessian_kwargs: Mapping | None = None, generator: torch.Generator | None = None,
                     batch_size: int = 500, progress: bool = True):
    """Standard and PGD loss/accuracy and the mean top input-Hessian eigenvalue at every t of ``curve``.

    ``curve`` is a :class:`mclib.curves.Curve` (anything with ``.at(t, bn_data=None) -> nn.Module``).
    At each t: cross-entropy ``loss`` and ``acc`` on ``(X, y)``; ``pgd_loss``/``pgd_acc`` on L-inf PGD
    examples (radius ``eps``, ``steps``, ``step_size``; Madry et al. 2018) crafted against the model
    at t; ``eig_mean``/``eig_median`` of lambda_max of the input Hessian (:func:`mclib.hessian.top_eigenvalue`) on the
    first ``n_hessian`` clean examples. Returns ``(DataFrame, per_example)`` where ``per_example``
    holds the per-input values for input-level bootstraps and across-input correlations: (T, N) arrays
    ``loss`` and ``pgd_loss`` and the (T, n_hessian) array ``eig`` (input k of ``eig`` is input k of the others).
    """
    import pandas as pd

    hessian.check_batch(X, y)
    n_hessian = len(X) if n_hessian is None else min(int(n_hessian), len(X))
    hk = dict(hessian_kwargs or {})
    rows, loss_rows, pgd_rows, eig_rows = [], [], [], []
    for t in tqdm(list(ts), desc="along t", disable=not progress, leave=False):
        model = curve.at(float(t), bn_data=bn_data).eval()
        dev = device_of(model)
        cl, correct = _per_input_loss(model, X, y, batch_size)
        pl, pcorrect = _per_input_loss(model, X, y, batch_size, attack={"eps": eps, "steps": steps,
                                                                         "step_size": step_size}, generator=generator)
        eig = hessian.top_eigenvalue(model, X[:n_hessian].to(dev), y[:n_hessian].to(dev), generator=generator, **hk).cpu()
        rows.append({"t": float(t), "loss": cl.mean().item(), "acc": correct.float().mean().item(),
                     "pgd_loss": pl.mean().item(), "pgd_acc": pcorrect.float().mean().item(),
                     "eig_mean": eig.mean().item(), "eig_median": eig.median().item()})
        loss_rows.append(cl.numpy())
        pgd_rows.append(pl.numpy())
        eig_rows.append(eig.numpy())
    return pd.DataFrame(rows), {"loss": np.stack(loss_rows), "pgd_loss": np.stack(pgd_rows), "eig": np.stack(eig_rows)}


def barrier_interval(per_input, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """:func:`mclib.curves.barrier_height` of the mean profile with a bootstrap interval over inputs.

    ``per_input`` is a (T, N) array of one loss per t and input (as :func:`robustness_along` returns).
    The inputs (columns) are resampled with replacement ``n_boot`` times; each resample's mean profile
    gives one barrier height (:func:`mclib.stats.bootstrap_ci`). Returns the interval as a dict
    (``estimate``, ``lo``, ``hi``, ``n``) plus the ``threshold`` of :func:`mclib.curves.barrier_threshold` on the
    mean profile, so a criterion can be judged on the interval.
    """
    a = np.asarray(per_input, dtype=float)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"per_input must be (T, N) with T >= 2, got shape {a.shape}")
    iv = stats.bootstrap_ci(a.T, lambda s: curves.barrier_height(s.mean(0)), n_boot=n_boot, seed=seed, level=level)
    return {**iv._asdict(), "threshold": curves.barrier_threshold(a.mean(1))}


def _fingerprint(model: nn.Module) -> str:
    """sha1 of a model's state (names and bytes of every parameter and buffer): equal for identical weights."""
    import hashlib

    h = hashlib.sha1()
    for name, value in model.state_dict().items():
        h.update(name.encode() + b"\0" + value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def barrier_map(paths: Sequence[tuple[Mapping[str, Any], Any]], eval_eps: Sequence[float], ts: Sequence[float],
                X: torch.Tensor, y: torch.Tensor, steps: int = 10, step_fraction: float = 0.25, bn_data=None,
                n_boot: int = 2000, seed: int = 0, generator: torch.Generator | None = None, batch_size: int = 500,
                progress: bool = False) -> list[dict]:
    """Claim C6 under conditions: the robustness- and standard-loss barriers for every path and attack radius.

    ``paths`` is a list of ``(setting, curve)``: ``setting`` a dict naming the path (e.g. ``{"arch": "cnn",
    "train_eps": 0.1, "path": "line"}``), ``curve`` anything with ``.at(t, bn_data)`` (a trained Bezier
    :class:`mclib.curves.Curve` or :func:`mclib.curves.line`). At every t the model w(t) is built once; its
    per-input standard cross-entropy and, for every radius e in ``eval_eps``, its per-input cross-entropy on L-inf
    PGD examples (``steps`` steps of ``step_fraction * e``, the paper's 2/255 for 8/255 being 1/4) are measured
    on ``(X, y)``. Each (path, e) gives one entry ``{"setting": {**setting, "eval_eps": e}, "measured":
    {"robust_barrier": ..., "standard_barrier": ..., "profile": {"t", "pgd_loss", "loss"}}}`` where the barriers
    are :func:`barrier_interval` dicts (height max_t L(t) - max(L(0), L(1)) of the mean profile, its bootstrap
    interval over inputs and its own :func:`mclib.curves.barrier_threshold`), and ``profile`` the mean losses along t -- the
    list claims record under ``values["conditions"]``. A model met twice (the endpoints shared by a pair's
    paths, or the regular endpoint shared by every pair) is evaluated once, so its losses, PGD random starts
    included, are the same in every entry that contains it.
    """
    hessian.check_batch(X, y)
    ts = [float(t) for t in ts]
    eval_eps = [float(e) for e in eval_eps]
    if len(ts) < 2:
        raise ValueError(f"ts must hold at least 2 points of the path, got {len(ts)}")
    if not eval_eps or min(eval_eps) <= 0:
        raise ValueError(f"eval_eps must be a non-empty list of radii > 0, got {eval_eps}")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must lie in (0, 1] (the PGD step as a fraction of the radius), got {step_fraction}")
    out, seen = [], {}
    for setting, curve in tqdm(list(paths), desc="paths", disable=not progress, leave=False):
        clean, robust = [], {e: [] for e in eval_eps}
        for t in ts:
            model = curve.at(t, bn_data=bn_data).eval()
            key = _fingerprint(model)
            if key not in seen:  # the shared endpoints (t = 0, 1 of every path of a pair) are attacked once
                attacks = [{"eps": e, "steps": steps, "step_size": step_fraction * e} for e in eval_eps]
                seen[key] = (_per_input_loss(model, X, y, batch_size)[0].numpy(),
                             [_per_input_loss(model, X, y, batch_size, a, generator)[0].numpy() for a in attacks])
            clean.append(seen[key][0])
            for e, losses in zip(eval_eps, seen[key][1]):
                robust[e].append(losses)
        clean = np.stack(clean)
        standard = barrier_interval(clean, n_boot=n_boot, seed=seed)
        for e in eval_eps:
            per = np.stack(robust[e])
            out.append({"setting": {**setting, "eval_eps": e},
                        "measured": {"robust_barrier": barrier_interval(per, n_boot=n_boot, seed=seed),
                                     "standard_barrier": standard,
                                     "profile": {"t": ts, "pgd_loss": per.mean(1).tolist(),
                                                 "loss": clean.mean(1).tolist()}}})
    return out


def detrended_correlation(df, x: str = "pgd_loss", y: str = "eig_mean", n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """Partial correlation of ``df[x]`` and ``df[y]`` along the path given ``t`` (:func:`mclib.stats.partial_correlation`).

    Regressing both profiles on ``[1, t]`` removes a shared linear trend; what correlates after that is
    co-variation beyond "both fall from the regular to the robust model".
    """
    return stats.partial_correlation(df[x], df[y], df["t"], n_boot=n_boot, seed=seed, level=level)


def across_inputs_correlation(per_example: Mapping[str, np.ndarray], t_index: int, n_boot: int = 2000,
                              seed: int = 0, level: float = 0.95) -> dict:
    """Correlation across inputs at one point of the path: per-input PGD loss vs per-input top eigenvalue.

    ``per_example`` as returned by :func:`robustness_along`; row ``t_index`` of ``pgd_loss`` (its first
    ``n_hessian`` inputs) against the same row of ``eig``. The weights are fixed, so no shared trend in t
    can produce the correlation; the interval is a pairs bootstrap over inputs (:func:`mclib.stats.correlation`).
    """
    eig = np.asarray(per_example["eig"], dtype=float)
    loss = np.asarray(per_example["pgd_loss"], dtype=float)
    if not -eig.shape[0] <= t_index < eig.shape[0]:
        raise ValueError(f"t_index must index one of the {eig.shape[0]} points of t, got {t_index}")
    return stats.correlation(loss[t_index, :eig.shape[1]], eig[t_index], n_boot=n_boot, seed=seed, level=level)


# --- plots
def plot_along(ax, df, column: str = "pgd_loss", label: str | None = None, color: str | None = None,
               threshold: bool = False, title: str | None = None):
    """Draw the profile ``df[column]`` against t on its own axis with the straight line between its end values.

    The dashed chord from v(0) to v(1) is what a profile without structure would do, so a bump above it
    (and above both ends) reads as a barrier and a monotone profile hugs or sags below it. ``threshold=True``
    also draws the C6 barrier line ``max(v(0), v(1)) + curves.barrier_threshold(v)`` (dotted): a profile has a
    barrier (:func:`mclib.curves.has_barrier`) exactly when it rises above that line. No twin axis: one quantity per panel.
    """
    from mclib.plots import PALETTE

    labels = {"pgd_loss": "robustness (PGD) loss", "loss": "standard loss", "eig_mean": "mean top eigenvalue",
              "pgd_acc": "PGD accuracy", "acc": "accuracy"}
    t, v = np.asarray(df["t"], dtype=float), np.asarray(df[column], dtype=float)
    color = color or PALETTE[1]
    ax.plot(t, v, "o-", color=color, markersize=3, label=label or labels.get(column, column))
    ax.plot([t[0], t[-1]], [v[0], v[-1]], "--", color="0.45", lw=1, label="straight line between the ends")
    if threshold:
        ax.axhline(max(v[0], v[-1]) + curves.barrier_threshold(v), color="0.2", ls=":", lw=1, label="barrier line")
    ax.set_xlabel("t (0 regular, 1 adversarial)")
    ax.set_ylabel(labels.get(column, column))
    ax.set_xlim(0, 1)
    if title:
        ax.set_title(title)
    return ax
