"""Detecting adversarial inputs from input-space loss barriers (claims A8, A9), with baselines.

Vrabel, Shem-Ur, Oz & Krueger, *Input space mode connectivity in deep neural networks* (ICLR 2025),
section 4.4 "Adversarial detection". A real test input ``x`` and a real image ``r`` of the class
``c`` that the model predicts for ``x`` are joined by a low barrier along the linear path

    x(a) = (1 - a) r + a x,   a in [0, 1],   L(a) = CE(f(x(a)), c),

whereas an adversarial input (predicted ``c``, but made from an image of another class) and a real
image of ``c`` are separated by a high one. This module turns that into a measured detector:

* :func:`select_references` -- for each class ``c``, the ``K`` correctly classified images of ``c``
  with the lowest loss in a *reference pool* (the training split here; disjoint from the test inputs);
* :func:`loss_curves` / :func:`extract` -- for N inputs, their predicted classes and the N x K x T
  loss curves to their references, all in a few large batched forward passes
  (:func:`mclib.paths.linear_losses`), and per-input features: barrier max, gap, position and relative
  height (:func:`mclib.paths.barrier`, median over the K references), curve statistics, and the logits;
* detectors: :class:`ThresholdDetector` (a single threshold on one feature) and
  :class:`LogisticDetector` (scikit-learn logistic regression, regularisation chosen by internal
  cross-validation); :func:`cross_val_scores` gives out-of-fold scores with folds grouped by source image;
* metrics: :func:`roc`, :func:`metrics` (AUROC, TPR at 5% FPR, accuracy);
* resolution: :data:`BARRIER_RESOLUTION` and :func:`below_resolution` -- a barrier below the inference
  engine's float32 tolerance is noise, reported as such and never divided by;
* baselines: the maximum softmax probability (Hendrycks & Gimpel 2017), a feature in :func:`extract`,
  and the Mahalanobis distance on penultimate-layer features (Lee et al. 2018, tied covariance,
  :class:`Mahalanobis`);
* :func:`collect_adversarial` -- successful adversarial examples from any batched attack, optionally
  only those misclassified with a logit margin of at least ``kappa``;
* :func:`plot_roc` draws ROC curves.

The chapter's study built from these -- the detection table against every attack, attack strength and the
worst case of a non-adaptive defender, the condition map of claim A9 -- is :mod:`mclib.studies.detection`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mclib import infer, paths
from mclib.attacks import evasion
from mclib.torchutil import show_progress

__all__ = [
    "References", "class_loss_quantile", "reference_loss", "select_references", "loss_curves", "Features", "extract", "PATH_FEATURES", "LOGIT_FEATURES",
    "penultimate", "Mahalanobis", "ThresholdDetector", "LogisticDetector", "cross_val_scores", "roc", "metrics",
    "tpr_at_fpr", "collect_adversarial", "pair_barriers", "median_barrier", "plot_roc", "MARGIN_TOL",
    "BARRIER_RESOLUTION", "below_resolution", "fold_directions", "attack_radius", "CIFAR_EPS",
]

#: Per-input features from the K loss curves (medians over references unless stated).
PATH_FEATURES = ("barrier_max", "barrier_gap", "barrier_position", "barrier_relative", "barrier_max_min",
                 "curve_mean", "curve_std", "end_loss")
#: Per-input features from the logits.
LOGIT_FEATURES = ("max_softmax", "max_logit", "logit_margin", "entropy")
#: Relative float32 tolerance of :func:`collect_adversarial`'s ``min_margin`` test.
MARGIN_TOL = 1e-4
#: The smallest loss barrier the measurement resolves: the inference engine's float32 promise against the
#: eager model (``mclib.infer.ATOL``, absolute, on every logit -- so on every cross-entropy value). A
#: barrier below it (a confident model's clean median barrier is often ~1e-5) is rounding noise: a ratio
#: to it is a ratio of noise, so :func:`mclib.studies.detection.strength_table` reports it as below resolution.
BARRIER_RESOLUTION = infer.ATOL


#: The usual L-inf attack radius of 3-channel natural images (CIFAR-10, SVHN; Madry et al. 2018), the paper preset's.
CIFAR_EPS = 8 / 255


def attack_radius(channels: int, preset_eps: float) -> float:
    """The L-inf radius to attack a model with, chosen by its data: :data:`CIFAR_EPS` (8/255) for 3-channel
    images, else ``preset_eps`` (the quick preset's 0.2 is a radius for MNIST-like digits, absurd on CIFAR,
    where it allows visible changes of a fifth of the pixel range)."""
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive int (the images' channel count), got {channels!r}")
    if not preset_eps > 0:
        raise ValueError(f"preset_eps must be > 0 (an L-inf radius in [0, 1] pixel units), got {preset_eps}")
    return CIFAR_EPS if int(channels) == 3 else float(preset_eps)


def below_resolution(value: float, resolution: float = BARRIER_RESOLUTION) -> bool:
    """Whether a (non-negative) loss or barrier ``value`` lies below the arithmetic's resolution
    (:data:`BARRIER_RESOLUTION` by default), so that dividing by it would report noise. NaN is not below."""
    return bool(abs(float(value)) < resolution)


# ------------------------------------------------------------------------------------ references
@dataclass
class References:
    """``K`` reference images per class: ``images`` (num_classes, K, C, H, W), their ``losses``
    (num_classes, K) toward their own class and ``indices`` (num_classes, K) into the pool."""

    images: torch.Tensor
    losses: torch.Tensor
    indices: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.images.shape[1])

    def of(self, classes: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The references of each entry of ``classes`` (N,): (N, k, C, H, W) (the first ``k``, default all)."""
        if k is not None and not 1 <= k <= self.k:
            raise ValueError(f"k = {k} references per input requested, but the references hold {self.k} per class; "
                             f"allowed: 1..{self.k} (select more with select_references)")
        classes = torch.as_tensor(classes).long().cpu()
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= len(self.images)):
            raise ValueError(f"classes in [{int(classes.min())}, {int(classes.max())}]; allowed: 0..{len(self.images) - 1}")
        imgs = self.images[classes]
        return imgs if k is None else imgs[:, :k]


def class_loss_quantile(model: nn.Module, X: torch.Tensor, y: torch.Tensor, q: float = 0.5,
                        num_classes: int | None = None) -> torch.Tensor:
    """Per class ``c``, the ``q``-quantile of the cross-entropy of the correctly classified images of ``c`` in
    ``(X, y)``: (num_classes,). With ``q = 0.5`` this is "the loss of a typical real image", the stopping
    threshold of the paper's high-confidence optimisation attack."""
    out = infer.logits(model, X, allow_empty=True)
    nc = int(num_classes or out.shape[1])
    loss = F.cross_entropy(out, y, reduction="none")
    ok = out.argmax(1) == y
    return torch.stack([loss[(y == c) & ok].quantile(q) if ((y == c) & ok).any() else torch.tensor(float("nan"))
                        for c in range(nc)])


def _order(ok: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Indices sorting correct entries (by loss) before incorrect ones (by loss); equal losses keep their
    pool order (a stable sort), so ties go to the lower pool index."""
    key = torch.where(ok, 0.0, 1.0).double()
    by_loss = loss.argsort(stable=True)
    return by_loss[key[by_loss].argsort(stable=True)]


def reference_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ranking key of :func:`select_references`: the cross-entropy ``-log p(y | x)``, (N,), computed
    so that it does not saturate on confidently classified inputs.

    A confident model's float32 cross-entropy ``logsumexp(z) - z_y`` is exactly 0 once the logit margin
    exceeds about 17 (``1 + e^{-17}`` rounds to 1), and in float64 once it exceeds about 37, so on a
    well-trained CIFAR ResNet hundreds of images per class tie at 0 and "the lowest-loss images" is
    decided by sort order. The same quantity written as

        -log p(y | x) = log(1 + sum_{k != y} exp(z_k - z_y)) = softplus(logsumexp_{k != y}(z_k - z_y))

    and evaluated in float64 keeps resolving margins up to about 700 (where ``exp`` underflows).
    """
    z = logits.double()
    y = y.long().view(-1, 1)
    rel = (z - z.gather(1, y)).scatter(1, y, float("-inf"))          # z_k - z_y, the true class masked out
    return F.softplus(torch.logsumexp(rel, 1))


def select_references(model: nn.Module, X: torch.Tensor, y: torch.Tensor, k: int, num_classes: int | None = None,
                      batch_size: int = 1024) -> References:
    """For each class ``c``, the ``k`` correctly classified images of class ``c`` in the pool ``(X, y)``
    with the lowest cross-entropy toward ``c`` (the paper's "real reference images of the predicted class").

    The cross-entropy is computed from the logits in float64 (:func:`reference_loss`): in float32 it
    saturates at exactly 0 on confidently classified images, which would turn the choice into a tie.
    Remaining ties (equal float64 losses, e.g. duplicate images) go to the lower index in the pool.
    ``References.losses`` holds these float64 losses.

    The pool must be disjoint from the inputs to be tested (the notebook uses the training split). Only if a
    class has fewer than ``k`` correctly classified images (a barely trained model) are its misclassified
    images used too, again lowest loss first.
    """
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    evasion.check_images(X, "X")            # 0-255 pool images would be refused by every path and attack later
    out = infer.logits(model, X, chunk=batch_size, allow_empty=True)
    nc = int(num_classes or out.shape[1])
    y = y.cpu()
    loss = reference_loss(out, y)
    ok = out.argmax(1) == y
    imgs, losses, idx = [], [], []
    for c in range(nc):
        members = (y == c).nonzero()[:, 0]
        if members.numel() < k:
            raise ValueError(f"class {c} has only {members.numel()} images in the reference pool; need k = {k} "
                             f"(use a larger pool or a smaller k)")
        # correctly classified first (by loss), then -- only if too few are correct -- the rest by loss
        order = members[_order(ok[members], loss[members])[:k]]
        imgs.append(X[order.to(X.device)])
        losses.append(loss[order])
        idx.append(order)
    return References(images=torch.stack(imgs), losses=torch.stack(losses), indices=torch.stack(idx))


# ------------------------------------------------------------------------------------ features
def loss_curves(model: nn.Module, x: torch.Tensor, references: References, classes: torch.Tensor,
                num_points: int = 64, k: int | None = None, chunk_size: int | None = None,
                progress: bool | None = False) -> torch.Tensor:
    """Loss curves (N, k, T) from each input's references to the input.

    ``L[i, j, t] = CE(f((1 - a_t) r_ij + a_t x_i), classes[i])`` with ``r_ij`` the j-th reference of
    class ``classes[i]`` and ``a_t = linspace(0, 1, T)[t]``, so ``a = 0`` is the real reference and ``a = 1``
    the tested input. All N * k * T points go through the model in large chunks
    (:func:`mclib.paths.linear_losses`); ``progress`` as in :func:`extract`.
    """
    classes = torch.as_tensor(classes).long().cpu()
    if classes.shape != (x.shape[0],):
        raise ValueError(f"classes must have shape ({x.shape[0]},), got {tuple(classes.shape)}")
    R = references.of(classes, k)                                   # (N, k, C, H, W)
    N, K = R.shape[:2]
    A = R.reshape(N * K, *x.shape[1:])
    C = x.detach().cpu().repeat_interleave(K, 0)
    L = paths.linear_losses(model, A, C, classes.repeat_interleave(K), num_points=num_points, chunk_size=chunk_size,
                            progress=show_progress(progress))
    return L.view(N, K, -1)


@dataclass
class Features:
    """What :func:`extract` computes for N inputs: ``pred`` (N,), ``logits`` (N, classes),
    ``curves`` (N, K, T) loss curves, ``pair_max`` and ``pair_gap`` (N, K) per-pair barriers, and
    ``table`` (a DataFrame, one row per input, columns :data:`PATH_FEATURES` + :data:`LOGIT_FEATURES`
    [+ ``mahalanobis``])."""

    pred: torch.Tensor
    logits: torch.Tensor
    curves: torch.Tensor
    pair_max: torch.Tensor
    pair_gap: torch.Tensor
    table: pd.DataFrame

    def __len__(self) -> int:
        return int(self.pred.shape[0])


def _path_features(curves: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    N, K, T = curves.shape
    b = paths.barrier(curves.reshape(N * K, T))
    mx, gap = b.max.view(N, K), b.gap.view(N, K)
    feats = {
        "barrier_max": mx.median(1).values,
        "barrier_gap": gap.median(1).values,
        "barrier_position": b.position.view(N, K).median(1).values,
        "barrier_relative": b.relative.view(N, K).median(1).values,
        "barrier_max_min": mx.min(1).values,
        "curve_mean": curves.mean((1, 2)),
        "curve_std": curves.std(2).median(1).values,
        "end_loss": curves[:, 0, -1],
    }
    return feats, mx, gap


def _logit_features(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    p = logits.softmax(1)
    top2 = logits.topk(2, dim=1).values
    return {
        "max_softmax": p.max(1).values,
        "max_logit": top2[:, 0],
        "logit_margin": top2[:, 0] - top2[:, 1],
        "entropy": -(p * p.clamp_min(1e-30).log()).sum(1),
    }


def extract(model: nn.Module, x: torch.Tensor, references: References, num_points: int = 64, k: int | None = None,
            mahalanobis: "Mahalanobis | None" = None, chunk_size: int | None = None,
            batch_size: int = 1024, progress: bool | None = None) -> Features:
    """Detection features of N inputs (batched): predicted class, logits, the N x k x T loss curves to the
    references of the predicted class (:func:`loss_curves`) and the per-input feature table.

    Path features (median over the k references): ``barrier_max`` = max_a L(a), ``barrier_gap`` =
    max_a L(a) - max(L(0), L(1)), ``barrier_position`` = argmax position, ``barrier_relative`` = largest
    excess over the chord between the end losses (:func:`mclib.paths.barrier`); ``barrier_max_min`` the
    smallest barrier max over references; ``curve_mean``, ``curve_std`` (along the path); ``end_loss``
    = L(1), the input's own loss. Logit features: ``max_softmax`` (the MSP baseline), ``max_logit``,
    ``logit_margin`` (top-1 minus top-2 logit), ``entropy`` of the softmax. With ``mahalanobis`` the
    table also gets the Mahalanobis baseline's score.

    The N * k * T path points are most of the cost (on one CPU core a CIFAR ResNet-20 takes minutes for a
    few hundred inputs): ``progress`` shows a bar over their chunks -- ``None`` (default) on a terminal
    only (:func:`mclib.torchutil.show_progress`; ``MCLIB_PROGRESS=0`` silences it), ``True``/``False`` always/never.
    Inputs must be images in [0, 1] (0-255 images are refused with a message: divide by 255).
    """
    evasion.check_images(x, "x")
    x = x.detach().cpu()
    logits = infer.logits(model, x, chunk=batch_size, allow_empty=True)
    pred = logits.argmax(1)
    if len(x) == 0:             # e.g. an attack that succeeded nowhere: an empty table with every column
        K = references.of(pred, k).shape[1]
        cols = [*PATH_FEATURES, *LOGIT_FEATURES] + (["mahalanobis"] if mahalanobis is not None else [])
        empty = torch.zeros(0, K)
        return Features(pred=pred, logits=logits, curves=torch.zeros(0, K, num_points), pair_max=empty,
                        pair_gap=empty, table=pd.DataFrame({c: np.zeros(0) for c in cols}))
    curves = loss_curves(model, x, references, pred, num_points, k, chunk_size, progress=progress)
    pf, mx, gap = _path_features(curves)
    cols = {**pf, **_logit_features(logits)}
    if mahalanobis is not None:
        cols["mahalanobis"] = mahalanobis.score(model, x)
    table = pd.DataFrame({n: v.double().numpy() for n, v in cols.items()})
    return Features(pred=pred, logits=logits, curves=curves, pair_max=mx, pair_gap=gap, table=table)


def median_barrier(feats: Features, which: str = "max") -> float:
    """Median per-pair barrier (see :func:`pair_barriers`); NaN when there are no pairs."""
    v = pair_barriers(feats, which)
    return float(v.median()) if v.numel() else float("nan")


def pair_barriers(feats: Features, which: str = "max") -> torch.Tensor:
    """All N * K per-pair barrier values (``which`` = ``"max"`` or ``"gap"``), flattened: the quantities of the
    paper's Figure 6 box plots."""
    if which not in ("max", "gap"):
        raise ValueError(f"which must be 'max' or 'gap', got {which!r}")
    return (feats.pair_max if which == "max" else feats.pair_gap).reshape(-1)


# ------------------------------------------------------------------------------------ Mahalanobis baseline
def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError("the model has no nn.Linear layer; penultimate features are taken as the input of the last one")
    return last


@torch.no_grad()
def penultimate(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Penultimate-layer features (N, D): the input of the model's last ``nn.Linear`` layer (eval mode)."""
    layer = _last_linear(model)
    grabbed: list[torch.Tensor] = []
    h = layer.register_forward_hook(lambda mod, inp, out: grabbed.append(inp[0].detach().flatten(1).float().cpu()))
    try:
        infer.logits(model, X, chunk=batch_size, allow_empty=True)
    finally:
        h.remove()
    return torch.cat(grabbed) if grabbed else torch.zeros(0, layer.in_features)


class Mahalanobis:
    """Mahalanobis-distance baseline (Lee et al. 2018): class means ``mu_c`` and one tied covariance
    ``Sigma`` of penultimate features on clean training data; an input's score is
    ``min_c (h - mu_c)^T Sigma^-1 (h - mu_c)`` (high = unlike any class = adversarial)."""

    def __init__(self, shrinkage: float = 1e-3):
        self.shrinkage = float(shrinkage)

    def fit(self, model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> "Mahalanobis":
        H = penultimate(model, X).double()
        classes = torch.unique(y)
        self.means = torch.stack([H[y == c].mean(0) for c in classes])
        centred = H - self.means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / max(1, len(H) - 1)
        cov += self.shrinkage * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
        self.precision = torch.linalg.inv(cov)
        return self

    def score(self, model: nn.Module, X: torch.Tensor) -> torch.Tensor:
        H = penultimate(model, X).double()
        d = H[:, None, :] - self.means[None]                                       # (N, classes, D)
        return torch.einsum("ncd,de,nce->nc", d, self.precision, d).min(1).values.float()


# ------------------------------------------------------------------------------------ detectors
class ThresholdDetector:
    """A single threshold on one feature. ``fit`` picks the direction (adversarial above or below, by the
    training AUROC) and the threshold that maximises balanced accuracy on the training data.

    The learned direction is part of the result: ``direction`` is ``"higher"`` when adversarial inputs
    score above the threshold (the paper's barrier detector: adversarial barriers are *higher*), ``"lower"``
    when the detector had to flip the feature -- e.g. an attack whose barriers sit *below* clean ones;
    an AUROC then measures a detector of the opposite effect. ``train_auroc`` is the raw feature's
    training AUROC (adversarial high; < 0.5 means "lower"). :func:`cross_val_scores` warns when folds
    learn different directions (:func:`fold_directions` lists them).

    Rows with a NaN feature are refused in ``fit`` (a NaN made the Mann-Whitney statistic NaN, which
    silently flipped the direction).
    """

    def __init__(self, feature: str):
        self.feature = feature

    def _col(self, table: pd.DataFrame) -> np.ndarray:
        if self.feature not in table.columns:
            raise ValueError(f"feature {self.feature!r} not in the table; available: {list(table.columns)}")
        return table[self.feature].to_numpy(dtype=float)

    @property
    def direction(self) -> str:
        """``"higher"`` (adversarial iff the feature >= threshold) or ``"lower"`` (iff <= threshold); set by ``fit``."""
        if not hasattr(self, "sign"):
            raise AttributeError("the detector is not fitted: call fit(table, labels) first")
        return "higher" if self.sign > 0 else "lower"

    def fit(self, table: pd.DataFrame, labels: np.ndarray) -> "ThresholdDetector":
        v, lab = self._col(table), np.asarray(labels).astype(bool)
        if len(lab) != len(v):
            raise ValueError(f"labels has {len(lab)} entries but the table has {len(v)} rows")
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(f"feature {self.feature!r} holds {int(bad.sum())} NaN/Inf value(s) (first at row "
                             f"{int(np.nonzero(bad)[0][0])}); a threshold cannot rank them -- drop those rows "
                             f"(e.g. table[table[{self.feature!r}].notna()]) and report how many")
        # direction by the training AUROC (Mann-Whitney U; ties count half): robust where medians tie
        from scipy.stats import mannwhitneyu
        n_pos, n_neg = int(lab.sum()), int((~lab).sum())
        u = mannwhitneyu(v[lab], v[~lab]).statistic if n_pos and n_neg else 0.5 * n_pos * n_neg
        self.train_auroc = float(u / (n_pos * n_neg)) if n_pos and n_neg else float("nan")
        self.sign = 1.0 if u >= 0.5 * n_pos * n_neg else -1.0
        s = self.sign * v
        cand = np.unique(s)
        order = np.sort(s)
        # balanced accuracy of "adversarial iff s >= thr" for every candidate threshold, vectorised
        pos, neg = np.sort(s[lab]), np.sort(s[~lab])
        tpr = 1 - np.searchsorted(pos, cand, side="left") / max(1, len(pos))
        tnr = np.searchsorted(neg, cand, side="left") / max(1, len(neg))
        best = int(np.argmax(tpr + tnr)) if len(cand) else 0
        self.threshold = float(cand[best]) if len(order) else 0.0
        return self

    def score(self, table: pd.DataFrame) -> np.ndarray:
        return self.sign * self._col(table)

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        return self.score(table) >= self.threshold

    def __repr__(self) -> str:
        if not hasattr(self, "sign"):
            return f"ThresholdDetector({self.feature!r}, not fitted)"
        op = ">=" if self.sign > 0 else "<="
        return (f"ThresholdDetector({self.feature!r}: adversarial iff {self.feature} {op} {self.sign * self.threshold:.4g}, "
                f"direction {self.direction!r}, training AUROC of the raw feature {self.train_auroc:.3f})")


class LogisticDetector:
    """Logistic regression (scikit-learn) on standardised features, with the inverse regularisation
    strength chosen by ``cv``-fold internal cross-validation (``LogisticRegressionCV``)."""

    def __init__(self, features: Sequence[str], cv: int = 3, seed: int = 0):
        self.features, self.cv, self.seed = list(features), int(cv), int(seed)

    def _X(self, table: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in table.columns]
        if missing:
            raise ValueError(f"features {missing} not in the table; available: {list(table.columns)}")
        return table[self.features].to_numpy(dtype=float)

    def fit(self, table: pd.DataFrame, labels: np.ndarray) -> "LogisticDetector":
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        import warnings
        from sklearn.exceptions import ConvergenceWarning
        self.model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-2, 1, 4), cv=self.cv,
                                                                          max_iter=1000))
        with warnings.catch_warnings():     # separable folds make large-C fits stop at max_iter; sklearn's
            warnings.simplefilter("ignore", ConvergenceWarning)     # deprecation notices and small-fold notes
            warnings.simplefilter("ignore", FutureWarning)          # are not about our results
            warnings.simplefilter("ignore", UserWarning)
            self.model.fit(self._X(table), np.asarray(labels).astype(int))
        return self

    def score(self, table: pd.DataFrame) -> np.ndarray:
        return self.model.decision_function(self._X(table))

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        return self.score(table) >= 0.0


def cross_val_scores(make_detector: Callable[[], object], clean: pd.DataFrame, adv: pd.DataFrame,
                     groups_clean: Sequence[int], groups_adv: Sequence[int], folds: int = 5, seed: int = 0,
                     fit_adv: pd.DataFrame | None = None, groups_fit_adv: Sequence[int] | None = None,
                     return_detectors: bool = False):
    """Out-of-fold detector scores for clean (label 0) and adversarial (label 1) inputs.

    Folds are drawn over *source images* (``groups_*``: the test image each row came from), so a clean
    image and the adversarial example made from it are never split between training and testing.
    With ``fit_adv`` the detector is trained on those adversarial rows instead of ``adv`` (same folds by
    group): a detector fitted against one attack, evaluated against another (e.g. the adaptive attack).
    Returns ``(labels, scores, predictions)`` over ``clean`` rows then ``adv`` rows, and with
    ``return_detectors`` also the list of the ``folds`` fitted detectors (``None`` for an empty fold).

    A detector that learns a direction (:class:`ThresholdDetector`) may learn a different one per fold when
    the feature barely separates the classes; the out-of-fold scores then mix opposite detectors, so a
    ``UserWarning`` names the folds of each direction (:func:`fold_directions`).
    """
    gc, ga = np.asarray(groups_clean), np.asarray(groups_adv)
    fit_tab = adv if fit_adv is None else fit_adv
    gf = ga if fit_adv is None else np.asarray(groups_fit_adv)
    if len(gc) != len(clean) or len(ga) != len(adv) or len(gf) != len(fit_tab):
        raise ValueError("each table needs one group id per row")
    uniq = np.unique(np.concatenate([gc, ga, gf]))
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(uniq.tolist(), (rng.permutation(len(uniq)) % folds).tolist()))
    fc, fa, ff = (np.array([fold_of[g] for g in gg.tolist()], dtype=int) for gg in (gc, ga, gf))
    scores = np.zeros(len(clean) + len(adv))
    preds = np.zeros(len(clean) + len(adv), dtype=bool)
    detectors: list = [None] * folds
    for k in range(folds):
        tr = pd.concat([clean[fc != k], fit_tab[ff != k]], ignore_index=True)
        lab = np.r_[np.zeros(int((fc != k).sum())), np.ones(int((ff != k).sum()))]
        te = pd.concat([clean[fc == k], adv[fa == k]], ignore_index=True)
        if len(te) == 0:
            continue
        if lab.min() == lab.max():
            raise ValueError(f"training fold {k} holds only {'adversarial' if lab[0] else 'clean'} rows; "
                             f"too few rows ({len(clean)} clean, {len(fit_tab)} adversarial) for {folds} folds")
        det = detectors[k] = make_detector().fit(tr, lab)
        where = np.r_[np.nonzero(fc == k)[0], len(clean) + np.nonzero(fa == k)[0]]
        scores[where] = det.score(te)
        preds[where] = det.predict(te)
    labels = np.r_[np.zeros(len(clean)), np.ones(len(adv))].astype(int)
    dirs = fold_directions(detectors)
    if len(set(d for d in dirs.values() if d is not None)) > 1:
        import warnings
        by = {d: [k for k, v in dirs.items() if v == d] for d in ("higher", "lower")}
        warnings.warn(f"{detectors[next(iter(k for k, v in dirs.items() if v))]!r}: the folds disagree on the "
                      f"learned direction (adversarial higher in folds {by['higher']}, lower in folds {by['lower']}); "
                      f"the out-of-fold scores mix opposite detectors, so their AUROC is not one detector's",
                      UserWarning, stacklevel=2)
    return (labels, scores, preds, detectors) if return_detectors else (labels, scores, preds)


def fold_directions(detectors: Sequence[object]) -> dict[int, str | None]:
    """``{fold: "higher" | "lower" | None}``: the direction each fold's detector learned
    (``ThresholdDetector.direction``), ``None`` for a skipped fold or a detector without a direction
    (e.g. :class:`LogisticDetector`). From ``cross_val_scores(..., return_detectors=True)``."""
    return {k: getattr(d, "direction", None) if d is not None else None for k, d in enumerate(detectors)}


# ------------------------------------------------------------------------------------ metrics
def roc(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` of scores (higher = adversarial) against labels (1 = adversarial)."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
    return fpr, tpr


def tpr_at_fpr(labels, scores, fpr: float = 0.05) -> float:
    """The largest true-positive rate at a false-positive rate of at most ``fpr``."""
    f, t = roc(labels, scores)
    return float(t[f <= fpr + 1e-12].max())


def _check_scored(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    lab, sc = np.asarray(labels), np.asarray(scores, dtype=float)
    if lab.shape != sc.shape or lab.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got shapes {lab.shape} and {sc.shape}")
    bad = ~np.isfinite(sc)
    if bad.any():
        raise ValueError(f"scores hold {int(bad.sum())} NaN/Inf value(s) (first at index {int(np.nonzero(bad)[0][0])}); "
                         f"an AUROC cannot rank them -- drop those inputs and report how many")
    kinds = set(np.unique(lab).tolist())
    if not kinds <= {0, 1}:
        raise ValueError(f"labels must be 0 (clean) and 1 (adversarial), got values {sorted(kinds)}")
    if len(kinds) < 2:
        raise ValueError(f"labels hold only {'adversarial' if kinds == {1} else 'clean' if kinds else 'no'} inputs "
                         f"({len(lab)}); AUROC and TPR need both clean (0) and adversarial (1) inputs")
    return lab, sc


def metrics(labels, scores, preds=None) -> dict[str, float]:
    """AUROC, TPR at 5% FPR and (with ``preds``) accuracy of a detector's scores.

    Needs both classes and finite scores: NaN scores or one-class labels raise a ``ValueError`` saying so
    (scikit-learn would return NaN with a warning, or fail with a message about ``y_true``); a caller that
    wants NaN for a degenerate comparison catches it and says why (as
    :func:`mclib.studies.detection.detection_table` does for too few examples).
    """
    from sklearn.metrics import roc_auc_score
    labels, scores = _check_scored(labels, scores)
    out = {"auroc": float(roc_auc_score(np.asarray(labels), np.asarray(scores))),
           "tpr@5%fpr": tpr_at_fpr(labels, scores, 0.05)}
    if preds is not None:
        out["accuracy"] = float((np.asarray(preds).astype(int) == np.asarray(labels)).mean())
    return out


# ------------------------------------------------------------------------------------ adversarial inputs
def collect_adversarial(model: nn.Module, attack: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                        X: torch.Tensor, y: torch.Tensor, n: int, batch_size: int = 256,
                        targets: torch.Tensor | None = None, min_margin: float = 0.0,
                        progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Up to ``n`` *successful* adversarial examples.

    Untargeted (``targets=None``) an example succeeds when the model's prediction differs from ``y``.
    For a targeted attack pass its ``targets`` (one per row of ``X``): an example then succeeds only when
    it is classified as its target -- a targeted attack that merely leaves the true class (a "targeted
    miss") is not a success of that attack, and its example would not be the one the detector's
    references were chosen for.

    ``min_margin`` (Carlini & Wagner's ``kappa``) asks for a confident success: the attack's
    :func:`mclib.attacks.evasion.logit_margin` (toward the target, or of the best wrong class over ``y``)
    must also be at least ``min_margin``, up to float32 rounding (:data:`MARGIN_TOL`, relative): an attack
    that stopped on reaching the margin may have evaluated its logits in a different batch.

    ``attack(x, y, idx) -> x_adv`` is called on successive batches of ``(X, y)`` (``idx`` their indices
    into ``X``) until ``n`` successes or the sources run out. Returns ``(X_adv, source_index, attempted,
    succeeded)``: the first ``n`` successes, their indices into ``X``, and the number of sources attacked
    and of successes among them (``succeeded / attempted`` is the attack's success rate). ``progress``: a bar
    over the sources attacked (``None``: on a terminal only, :func:`mclib.torchutil.show_progress`).
    """
    if len(X) != len(y):
        raise ValueError(f"X and y differ in length: {len(X)} vs {len(y)}")
    if not min_margin >= 0:
        raise ValueError(f"min_margin must be >= 0 (a logit margin; 0 is any success), got {min_margin}")
    need = min_margin - MARGIN_TOL * max(1.0, abs(float(min_margin)))
    if targets is not None:
        targets = torch.as_tensor(targets).long().cpu()
        if targets.shape != (len(X),):
            raise ValueError(f"targets must have shape ({len(X)},), one per source image, got {tuple(targets.shape)}")
    got, src, tried = [], [], 0
    count = 0
    from tqdm.auto import tqdm
    bar = tqdm(total=len(X), desc="attack", unit="input", leave=False, disable=not show_progress(progress))
    for s in range(0, len(X), batch_size):
        if count >= n:
            break
        idx = torch.arange(s, min(len(X), s + batch_size))
        xa = attack(X[idx], y[idx], idx)
        out = infer.logits(model, xa, allow_empty=True)
        pred = out.argmax(1)
        ok = pred != y[idx].cpu() if targets is None else pred == targets[idx]
        if min_margin > 0:
            lab = y[idx].cpu() if targets is None else targets[idx]
            ok &= evasion.logit_margin(out, lab, targeted=targets is not None) >= need
        tried += len(idx)
        got.append(xa[ok].cpu())
        src.append(idx[ok])
        count += int(ok.sum())
        bar.update(len(idx))
        bar.set_postfix(succeeded=count)
    bar.close()
    if not got:
        return X[:0].clone(), torch.zeros(0, dtype=torch.long), 0, 0
    Xa, si = torch.cat(got)[:n], torch.cat(src)[:n]
    return Xa, si, tried, count


# --- plots
def plot_roc(ax, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str | None = None):
    """ROC curves ``{label: (fpr, tpr)}`` on ``ax`` with the chance diagonal and the 5% FPR line."""
    for name, (f, t) in curves.items():
        ax.plot(f, t, lw=1.6, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.axvline(0.05, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(loc="lower right")
    return ax
