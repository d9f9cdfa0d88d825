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
* :class:`Sizes` (``robustness.toml``) and :class:`Chapter`, the chapter's study: the endpoints, the curves, the
  measurements along them, C6's and C7's evidence (:meth:`Chapter.evidence`) and the C6 map
  (:meth:`Chapter.map_conditions`), with the record sentences :func:`c6_measured` and :func:`c7_measured`;
* :func:`plot_along` draws one profile along t with the straight line between its end values (no twin axes);
  :func:`plot_barrier_map` and :func:`plot_map_profiles` draw the C6 map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mclib import config, curves, data, hessian, stats, train
from mclib.attacks import pgd
from mclib.torchutil import device_of

__all__ = ["robustness_along", "barrier_interval", "barrier_map", "detrended_correlation", "across_inputs_correlation",
           "plot_along", "Sizes", "T_FIXED", "Chapter", "interval_text", "r_text", "c6_measured", "c7_measured",
           "plot_barrier_map", "plot_map_profiles", "PATH_NAMES"]


def _per_input_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int,
                    attack: Mapping | None = None, generator: torch.Generator | None = None):
    """Per-input cross-entropy and correctness (CPU tensors (N,)) of ``model`` in eval mode on ``(X, y)``, or on
    their L-inf PGD examples crafted against ``model`` when ``attack`` holds :func:`mclib.attacks.evasion.pgd`'s
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


# --------------------------------------------------------------------------- the chapter's sizes and study
@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of chapter C6/C7 (``c6_robustness_hessian``) from ``mclib/presets/robustness.toml``; the file's
    comments say what each one is."""

    FILE: ClassVar[str] = "robustness"
    archs: tuple[str, ...]
    datasets: dict[str, str]
    eps: float
    adv_steps: int
    adv_step_size: float
    eval_steps: int
    eval_step_size: float
    curve_epochs: int
    curve_lr: float
    curve_optimizer: str
    curve_weight_decay: float
    n_t: int
    n_eval: int
    n_hessian: int
    hessian_iters: int
    n_boot: int
    map_archs: tuple[str, ...]
    map_train_eps: tuple[float, ...]
    map_eval_eps: tuple[float, ...]
    map_step_fraction: float
    map_n_t: int
    map_n_eval: int


#: The point of the path where C7's across-input correlation is measured (fixed before measuring).
T_FIXED = 0.5


@dataclass
class Chapter:
    """Chapter C6/C7's study: the run ``ctx``, its ``sizes`` and each architecture's ``dataset`` (``archs`` and
    ``map_archs``). :meth:`trained_pair` trains the regular and adversarial endpoints, :meth:`bezier` the curve
    between them, :meth:`along` measures it, :meth:`evidence` returns what C6's and C7's judges read and
    :meth:`map_conditions` the C6 map."""

    ctx: Any
    sizes: Sizes
    dataset: dict[str, str]
    train_sets: dict | None = None
    test_sets: dict | None = None

    @classmethod
    def prepare(cls, ctx, sizes: Sizes) -> "Chapter":
        """Each architecture on its own dataset (:func:`mclib.data.dataset_of`); the data come with :meth:`load`."""
        return cls(ctx, sizes, {arch: data.dataset_of(arch, sizes.datasets, ctx.preset.dataset)
                                for arch in dict.fromkeys([*sizes.archs, *sizes.map_archs])})

    def load(self) -> None:
        """Each dataset's training split (the preset's ``n_train``) and its first ``n_eval`` test images."""
        self.train_sets = data.load_each(self.dataset.values(), "train", n=self.ctx.preset.n_train,
                                         data_root=self.ctx.data_root)
        self.test_sets = data.load_each(self.dataset.values(), "test", n=self.sizes.n_eval, data_root=self.ctx.data_root)

    def adv_kwargs(self, train_eps: float) -> dict:
        """PGD adversarial training at radius ``train_eps``: the preset's steps, its step size scaled with the
        radius."""
        S = self.sizes
        return {"eps": train_eps, "steps": S.adv_steps, "step_size": round(S.adv_step_size * train_eps / S.eps, 6)}

    def trained_pair(self, arch: str, train_eps: float) -> list:
        """The regular and the adversarially trained run of ``arch`` (models with their metrics)."""
        regular = train.recipe_for(self.ctx, arch=arch, seed=self.ctx.seed, dataset=self.dataset[arch])
        robust = regular.replace(batch_hook="mclib.attacks.evasion:pgd", batch_hook_kwargs=self.adv_kwargs(train_eps))
        return [self.ctx.model(r, progress=False) for r in (regular, robust)]

    def bezier(self, arch: str, m0: nn.Module, m1: nn.Module, stream: int) -> curves.Curve:
        """The quadratic Bezier curve between ``m0`` and ``m1`` trained on ``arch``'s own training split (the
        preset's batch size, the chapter's curve optimiser, generator stream ``stream``)."""
        S = self.sizes
        X, y = self.train_sets[self.dataset[arch]]
        curve = curves.Curve([m0, m1], kind="bezier", num_bends=1).to(self.ctx.device)
        curves.train_curve(curve, X, y, epochs=S.curve_epochs, batch_size=self.ctx.preset.batch_size, lr=S.curve_lr,
                           weight_decay=S.curve_weight_decay, optimizer=S.curve_optimizer,
                           generator=self.ctx.generator(stream), device=self.ctx.device, progress=False)
        return curve

    def along(self, curve_of: Mapping[str, curves.Curve]) -> tuple[dict, dict]:
        """Per architecture, :func:`robustness_along` its curve on its dataset's test images: the frames and the
        per-input values."""
        S = self.sizes
        ts = curves.grid(S.n_t)
        frames, per_example = {}, {}
        for k, (arch, curve) in enumerate(curve_of.items()):
            (X, _), (Xt, yt) = self.train_sets[self.dataset[arch]], self.test_sets[self.dataset[arch]]
            frames[arch], per_example[arch] = robustness_along(
                curve, ts, Xt, yt, eps=S.eps, steps=S.eval_steps, step_size=S.eval_step_size,
                n_hessian=S.n_hessian, bn_data=X[:1000], hessian_kwargs={"iters": S.hessian_iters},
                generator=self.ctx.generator(200 + k), progress=False)
        return frames, per_example

    def t_index(self) -> int:
        """The index of the t grid's point nearest :data:`T_FIXED`."""
        ts = curves.grid(self.sizes.n_t)
        return min(range(len(ts)), key=lambda i: abs(ts[i] - T_FIXED))

    def evidence(self, frames: Mapping, per_example: Mapping) -> tuple[dict, dict]:
        """Per architecture, what C6's judge reads (the robustness- and standard-loss barriers with their bootstrap
        intervals, :func:`barrier_interval`) and what C7's reads (both profiles monotone, the along-path,
        detrended and across-input correlations); each with the worse endpoint's clean accuracy on the evaluated
        inputs (endpoints at chance make C6 and C7 inconclusive), ``n_eval`` and the ``dataset`` (C8 judges
        datasets too)."""
        boot = {"n_boot": self.sizes.n_boot, "seed": self.ctx.seed}
        k_fixed = self.t_index()
        c6_values, c7_values = {}, {}
        for arch, df in frames.items():
            per = per_example[arch]
            ends = {"end_acc": float(min(df["acc"].iloc[0], df["acc"].iloc[-1])),
                    "n_eval": len(self.test_sets[self.dataset[arch]][0]), "dataset": self.dataset[arch]}
            c6_values[arch] = {"robust": barrier_interval(per["pgd_loss"], **boot),
                               "standard": barrier_interval(per["loss"], **boot), **ends}
            c7_values[arch] = {"monotone": stats.is_monotone(df["pgd_loss"]) and stats.is_monotone(df["eig_mean"]),
                               "profile": stats.correlation(df["pgd_loss"], df["eig_mean"], **boot),
                               "detrended": detrended_correlation(df, **boot),
                               "across": across_inputs_correlation(per, k_fixed, **boot), **ends}
        return c6_values, c7_values

    def map_conditions(self, pairs: Mapping[str, Sequence[nn.Module]], curve_of: Mapping[str, curves.Curve]) -> list[dict]:
        """The C6 map (:func:`barrier_map`): for every architecture of ``map_archs`` and training radius of
        ``map_train_eps`` (the chapter's own pair and curve at ``eps``, else freshly trained endpoints and curve)
        the trained Bezier curve and the straight line, each dataset's paths on its own first ``map_n_eval`` test
        images, at every attack radius of ``map_eval_eps``."""
        S = self.sizes
        boot = {"n_boot": S.n_boot, "seed": self.ctx.seed}
        paths = []
        for a, arch in enumerate(S.map_archs):
            for j, train_eps in enumerate(S.map_train_eps):
                own = arch in curve_of and train_eps == S.eps  # the chapter's own pair and curve
                m0, m1 = pairs[arch] if own else [run.model for run in self.trained_pair(arch, train_eps)]
                curve = curve_of[arch] if own else self.bezier(arch, m0, m1, 300 + 10 * a + j)
                setting = {"arch": arch, "train_eps": train_eps}
                paths += [({**setting, "path": "bezier"}, curve),
                          ({**setting, "path": "line"}, curves.line(m0, m1).to(self.ctx.device))]
        conditions, gen = [], self.ctx.generator(400)
        for name in dict.fromkeys(self.dataset[arch] for arch in S.map_archs):  # each dataset's paths on its own images
            (X, _), (Xt, yt) = self.train_sets[name], self.test_sets[name]
            conditions += barrier_map([(s, c) for s, c in paths if self.dataset[s["arch"]] == name], S.map_eval_eps,
                                      curves.grid(S.map_n_t), Xt[:S.map_n_eval], yt[:S.map_n_eval],
                                      steps=S.eval_steps, step_fraction=S.map_step_fraction, bn_data=X[:1000],
                                      generator=gen, **boot)
        return conditions


def interval_text(d: Mapping, spec: str = ".3f") -> str:
    """``"0.123 [0.100, 0.150]"``: an estimate with its interval (``estimate``, ``lo``, ``hi``)."""
    return f"{d['estimate']:{spec}} [{d['lo']:{spec}}, {d['hi']:{spec}}]"


def r_text(c: Mapping) -> str:
    """``"0.85 [0.70, 0.93]"``: a Pearson correlation with its interval (:func:`mclib.stats.correlation`)."""
    return f"{c['pearson']:.2f} [{c['pearson_lo']:.2f}, {c['pearson_hi']:.2f}]"


def c6_measured(c6_values: Mapping, dataset: Mapping[str, str], sizes: Sizes, n_conditions: int) -> str:
    """C6's sentence for the record: per architecture both barriers with their thresholds, the attack, the map."""
    S = sizes
    return ("; ".join(
        f"{arch}: robustness-loss barrier {interval_text(v['robust'])} nats (threshold {v['robust']['threshold']:.3f}), "
        f"standard-loss barrier {interval_text(v['standard'])} (threshold {v['standard']['threshold']:.3f})"
        for arch, v in c6_values.items())
        + f" ({', '.join(f'{a} on {d}' for a, d in dataset.items() if a in c6_values)}, PGD eps {S.eps:g}, "
          f"{S.eval_steps} steps of {S.eval_step_size:g}; 95% bootstrap over {S.n_eval} test inputs); the map over "
          f"{n_conditions} settings (training radius x attack radius x path, {', '.join(S.map_archs)}) is in the "
          "values under conditions")


def c7_measured(c7_values: Mapping, t_fixed: float, sizes: Sizes) -> str:
    """C7's sentence for the record: per architecture the across-input, along-path and detrended correlations."""
    return "; ".join(
        f"{arch}: across {sizes.n_hessian} inputs at t={t_fixed:.2g} Pearson {r_text(v['across'])}; along the path "
        f"Pearson {r_text(v['profile'])} ({'both profiles monotone' if v['monotone'] else 'not both monotone'}), "
        f"detrended by t {r_text(v['detrended'])}" for arch, v in c7_values.items()) \
        + f" (95% pairs-bootstrap intervals, {sizes.n_t} points of t)"


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


#: The C6 map's paths in words.
PATH_NAMES = {"bezier": "trained Bezier curve", "line": "straight line"}


def plot_barrier_map(conditions: Sequence[Mapping], key: str = "robust_barrier"):
    """The C6 map (:meth:`Chapter.map_conditions`): per architecture one row of two heatmaps (trained curve,
    straight line) of the barrier height minus its own threshold, per training radius (rows) and attack radius
    (columns), each cell annotated with the height, its interval, its threshold and BARRIER where the interval lies
    wholly above the threshold. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    map_archs = list(dict.fromkeys(c["setting"]["arch"] for c in conditions))
    margins = [c["measured"][key]["estimate"] - c["measured"][key]["threshold"] for c in conditions]
    span = max(1e-3, max(abs(m) for m in margins))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-span, vmax=span)
    fig, axes = plt.subplots(len(map_archs), 2, figsize=(9, 3.6 * len(map_archs)), squeeze=False, sharey=True)
    for row, arch in zip(axes, map_archs):
        for ax, path in zip(row, PATH_NAMES):
            cells = [{"train ε": c["setting"]["train_eps"], "attack ε": c["setting"]["eval_eps"], **c["measured"][key]}
                     for c in conditions if c["setting"]["arch"] == arch and c["setting"]["path"] == path]
            te, ee = sorted({r["train ε"] for r in cells}), sorted({r["attack ε"] for r in cells})
            grid = np.full((len(te), len(ee)), np.nan)
            for r in cells:
                i, k = te.index(r["train ε"]), ee.index(r["attack ε"])
                grid[i, k] = r["estimate"] - r["threshold"]
                barrier = r["lo"] > r["threshold"]
                dark = abs(grid[i, k]) > 0.55 * span  # white text on the saturated ends of the colour map
                ax.text(k, i, f"{r['estimate']:.2f}\n[{r['lo']:.2f}, {r['hi']:.2f}]\nthr {r['threshold']:.2f}"
                        + ("\nBARRIER" if barrier else ""), ha="center", va="center", fontsize=9,
                        color="white" if dark else "black", fontweight="bold" if barrier else "normal")
            im = ax.imshow(grid, cmap="RdBu_r", norm=norm, aspect="auto")
            ax.set_xticks(range(len(ee)), [f"{e:g}" for e in ee])
            ax.set_yticks(range(len(te)), [f"{e:g}" for e in te])
            ax.set(xlabel="attack radius ε (evaluation)", title=f"{arch}: {PATH_NAMES[path]}")
            ax.grid(False)
        row[0].set_ylabel("adversarial-training radius ε")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="barrier − threshold (nats)")
    return fig


def plot_map_profiles(conditions: Sequence[Mapping]):
    """The mean PGD loss along every path of the C6 map for its first architecture, one panel per attack radius:
    colours the adversarial-training radius, solid the trained curve, dashed the straight line. Returns the figure."""
    import matplotlib.pyplot as plt

    from mclib import plots

    eval_radii = sorted({c["setting"]["eval_eps"] for c in conditions})
    train_radii = sorted({c["setting"]["train_eps"] for c in conditions})
    first = next(iter(dict.fromkeys(c["setting"]["arch"] for c in conditions)))
    fig, axes = plt.subplots(1, len(eval_radii), figsize=(10, 3.2), squeeze=False)
    for ax, e in zip(axes[0], eval_radii):
        for c in conditions:
            s = c["setting"]
            if s["eval_eps"] != e or s["arch"] != first:
                continue
            prof = c["measured"]["profile"]
            ax.plot(prof["t"], prof["pgd_loss"], "o-" if s["path"] == "bezier" else "s--", markersize=3,
                    color=plots.PALETTE[train_radii.index(s["train_eps"])],
                    label=f"train ε {s['train_eps']:g}, {PATH_NAMES[s['path']]}")
        ax.set(xlabel="t (0 regular, 1 adversarial)", title=f"{first}: attack ε = {e:g}", xlim=(0, 1))
    axes[0][0].set_ylabel("PGD loss (nats)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    return fig
