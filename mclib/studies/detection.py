"""The detection chapter's study (Vrabel et al., ICLR 2025, section 4.4): claims A8 and A9.

Built from :mod:`mclib.detect` (references, barrier features, detectors, metrics) and :mod:`mclib.stats`:

* the chapter's table -- :func:`standard_detectors` (single thresholds on barrier max and gap, logistic
  regressions, the max-softmax and Mahalanobis baselines) scored against every attack by :func:`detection_table`,
  also with a detector fitted on another attack's examples;
* attack strength and the worst case -- :func:`strength_table` (how far each attack moved its inputs and how high
  their barriers are) and :func:`transfer_table` (a detector fitted on plain PGD facing the adaptive attack);
* the condition map of claim A9 -- :func:`sweep` runs an attack at several confidences (Carlini & Wagner's margin
  ``kappa``, PGD steps after the first success), :func:`confidence_map` gives each setting's AUROC intervals for
  barrier max, barrier gap, max softmax and the combined detector (:func:`map_detectors`) and the paired interval
  of what the path features add to a logit-only detector (:func:`mclib.stats.auroc_difference_ci`);
  :func:`map_frame` puts it in long form and :func:`plot_condition_map` draws it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from mclib import config, detect, stats, train
from mclib.attacks import evasion

__all__ = ["Sizes", "barrier_ratio_evidence", "Chapter", "prepare", "ADAPTIVE", "plot_barrier_boxes",
           "plot_path_curves", "plot_roc_grid", "plot_confidence_map", "standard_detectors", "detection_table",
           "strength_table", "transfer_table", "map_detectors", "SweepPoint", "sweep", "setting_evidence",
           "confidence_map", "map_frame", "MAP_LINES", "plot_condition_map"]


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of the detection chapters (``a8_detection``, ``own_model``) from ``mclib/presets/detect.toml``;
    the file's comments say what each one is."""

    FILE: ClassVar[str] = "detect"
    n: int
    k: int
    num_points: int
    eps: float
    pgd_steps: int
    opt_lr: float
    opt_steps_first: int
    opt_steps_confident: int
    stop_quantile: float
    adaptive_steps: int
    adaptive_k: int
    adaptive_points: int
    adaptive_weight: float
    folds: int
    n_boot: int
    attack_batch: int
    map_n: int
    map_kappas: tuple[float, ...]
    map_extra_steps: tuple[int, ...]
    map_opt_steps: int
    map_n_boot: int


def barrier_ratio_evidence(clean_pairs, adv_pairs, n_boot: int = 2000, seed: int = 0) -> dict:
    """A8's evidence: median real-adversarial over median real-real barrier, bootstrap over inputs.

    ``clean_pairs`` (N, K) and ``adv_pairs`` (M, K): the barrier of each input with its K references; inputs
    (rows) are resampled, each group separately, and the medians are over all pairs of the resample. No ratio
    (None) when a group is empty, or when the real-real median is below :data:`mclib.detect.BARRIER_RESOLUTION`
    (a ratio to a number below the arithmetic's resolution is noise).
    """
    a, c = np.asarray(adv_pairs, dtype=float), np.asarray(clean_pairs, dtype=float)
    if len(a) == 0 or len(c) == 0:
        return {"ratio": None, "real_real": None, "real_adversarial": None, "inputs": [len(c), len(a)]}
    if np.median(c) < detect.BARRIER_RESOLUTION:
        return {"ratio": None, "real_real": float(np.median(c)), "real_adversarial": float(np.median(a)),
                "inputs": [len(c), len(a)], "below_resolution": float(detect.BARRIER_RESOLUTION)}
    iv = stats.two_sample_ci(a, c, lambda p, q: float(np.median(p) / np.median(q)), n_boot, seed)
    return {"ratio": dict(iv._asdict()), "real_real": float(np.median(c)), "real_adversarial": float(np.median(a)),
            "inputs": [len(c), len(a)]}


def standard_detectors(with_mahalanobis: bool = True) -> dict[str, Callable[[], object]]:
    """The chapter's detectors and baselines by name: single thresholds on barrier max and on barrier gap,
    logistic regression on all path + logit features, and the baselines (max softmax probability,
    Mahalanobis distance)."""
    out = {
        "threshold: barrier max": lambda: detect.ThresholdDetector("barrier_max"),
        "threshold: barrier gap": lambda: detect.ThresholdDetector("barrier_gap"),
        "logistic: path + logits": lambda: detect.LogisticDetector(detect.PATH_FEATURES + detect.LOGIT_FEATURES),
        "logistic: path only": lambda: detect.LogisticDetector(detect.PATH_FEATURES),
        "baseline: max softmax": lambda: detect.ThresholdDetector("max_softmax"),
    }
    if with_mahalanobis:
        out["baseline: Mahalanobis"] = lambda: detect.ThresholdDetector("mahalanobis")
    return out


def detection_table(clean: pd.DataFrame, groups_clean, attacks: Mapping[str, tuple[pd.DataFrame, Sequence[int]]],
                    detectors: Mapping[str, Callable[[], object]], folds: int = 5, seed: int = 0,
                    fitted_on: Mapping[str, str] | None = None):
    """AUROC, TPR at 5% FPR and accuracy of every detector against every attack, out of fold
    (:func:`mclib.detect.cross_val_scores`).

    ``attacks``: ``{name: (adversarial feature table, source-image ids)}``; ``fitted_on``: ``{row name:
    attack name}`` adds rows where the detector is trained against another attack's examples (e.g. the
    adaptive attack's examples scored by a detector fitted on PGD); the row is named by the key and scored
    on the adversarial examples of ``attacks[key]``... given as ``{"adaptive PGD": "PGD"}``, the row label is
    ``"adaptive PGD (detector fitted on PGD)"``. Returns ``(table, rocs)`` with ``rocs[(attack, detector)] =
    (fpr, tpr)``.
    """
    rows, rocs = [], {}
    jobs = [(name, name, None) for name in attacks]
    for target, source in (fitted_on or {}).items():
        jobs.append((f"{target} (detector fitted on {source})", target, source))
    for label, name, source in jobs:
        adv, ga = attacks[name]
        for dname, make in detectors.items():
            kw = {}
            if source is not None:
                kw = dict(fit_adv=attacks[source][0], groups_fit_adv=attacks[source][1])
            try:
                lab, s, p = detect.cross_val_scores(make, clean, adv, groups_clean, ga, folds, seed, **kw)
            except ValueError:          # too few adversarial examples (e.g. an attack that failed at smoke size)
                rows.append({"attack": label, "detector": dname, "n_clean": len(clean), "n_adv": len(adv),
                             "auroc": float("nan"), "tpr@5%fpr": float("nan"), "accuracy": float("nan")})
                continue
            m = detect.metrics(lab, s, p)
            rows.append({"attack": label, "detector": dname, "n_clean": len(clean), "n_adv": len(adv), **m})
            rocs[(label, dname)] = detect.roc(lab, s)
    return pd.DataFrame(rows), rocs


def strength_table(clean: detect.Features, adv: Mapping[str, tuple[detect.Features, torch.Tensor]]) -> pd.DataFrame:
    """How far each attack moved its inputs and how high their barriers are, one row per attack.

    ``adv``: ``{name: (features of the adversarial examples, perturbations x_adv - x_source (N, ...))}``.
    Columns: ``kept`` (examples), ``median L-inf`` and ``median L2`` of the perturbations, ``median barrier
    max`` / ``gap`` over (input, reference) pairs (:func:`mclib.detect.median_barrier`) and ``ratio to real-real`` (the
    median barrier max over the clean inputs' one, claim A8's statistic) with ``ratio note``: a real-real median
    below the arithmetic's resolution (:data:`mclib.detect.BARRIER_RESOLUTION`, the inference engine's float32
    tolerance) is not divided by -- the ratio is NaN and the note says "below resolution" with the value, as
    a ratio of 2.8e-5 noise would print tens of thousands. Used to set an attack stopped at
    its first success next to the full-strength one: the weaker the attack, the closer its examples sit to
    the decision boundary and the lower their loss barriers.
    """
    rr = detect.median_barrier(clean)
    tiny = detect.below_resolution(rr)
    note = (f"below resolution: real-real median {rr:.2g} < {detect.BARRIER_RESOLUTION:g} (float32 tolerance)"
            if tiny else "")
    rows = []
    for name, (f, delta) in adv.items():
        d = torch.as_tensor(delta).flatten(1)
        if len(f) != len(d):
            raise ValueError(f"{name}: {len(f)} feature rows but {len(d)} perturbations")
        mx = detect.median_barrier(f)
        rows.append({"attack": name, "kept": len(f),
                     "median L-inf": float(d.abs().amax(1).median()) if len(d) else float("nan"),
                     "median L2": float(d.norm(dim=1).median()) if len(d) else float("nan"),
                     "median barrier max": mx, "median barrier gap": detect.median_barrier(f, "gap"),
                     "ratio to real-real": mx / rr if rr > 0 and not tiny else float("nan"),
                     "ratio note": note})
    return pd.DataFrame(rows).set_index("attack")


def transfer_table(table: pd.DataFrame, attack: str, source: str) -> pd.DataFrame:
    """The worst case of a non-adaptive defender, per detector, from a :func:`detection_table` result.

    ``table`` must hold the rows of ``attack`` (detector refitted on its own examples) and of
    ``f"{attack} (detector fitted on {source})"`` (``detection_table(..., fitted_on={attack: source})``).
    Returns per detector the AUROC refitted and fitted on ``source`` only, and ``inverted``: the
    detector fitted on ``source`` has AUROC < 0.5, i.e. it ranks the attack's examples as *more* clean
    than clean inputs -- an attacker who can make that happen has turned the detector against its user
    (flipping its sign would help, but only a defender who has seen the attack knows to).
    """
    transfer = f"{attack} (detector fitted on {source})"
    missing = [a for a in (attack, transfer) if a not in set(table["attack"])]
    if missing:
        raise ValueError(f"table has no rows for {missing}; call detection_table(..., fitted_on={{{attack!r}: {source!r}}})")
    auroc = {a: table[table["attack"] == a].set_index("detector")["auroc"] for a in (attack, transfer)}
    out = pd.DataFrame({f"AUROC refitted on {attack}": auroc[attack], f"AUROC fitted on {source}": auroc[transfer]})
    out["inverted"] = out[f"AUROC fitted on {source}"] < 0.5      # NaN (too few examples) is not inverted
    return out


def map_detectors() -> dict[str, Callable[[], object]]:
    """The detectors of the condition map, by the short names its records use (``auroc_<name>``).

    ``barrier_max``, ``barrier_gap`` and ``max_softmax``: a single threshold on that feature;
    ``combined``: the logistic regression on path and logit features (the chapter's "logistic: path +
    logits"); ``logits_only``: the same regression without the path features -- the model's confidence
    alone, the control that says whether the barrier adds anything.
    """
    return {
        "barrier_max": lambda: detect.ThresholdDetector("barrier_max"),
        "barrier_gap": lambda: detect.ThresholdDetector("barrier_gap"),
        "max_softmax": lambda: detect.ThresholdDetector("max_softmax"),
        "combined": lambda: detect.LogisticDetector(detect.PATH_FEATURES + detect.LOGIT_FEATURES),
        "logits_only": lambda: detect.LogisticDetector(detect.LOGIT_FEATURES),
    }


@dataclass
class SweepPoint:
    """One setting of a condition map: its parameters ``setting``, the ``features`` of its successful
    adversarial examples, their ``sources`` (indices into the attacked images), and the number of
    images ``attempted`` and of those that ``succeeded``."""

    setting: dict
    features: detect.Features
    sources: torch.Tensor
    attempted: int
    succeeded: int


def sweep(model: nn.Module, settings: Sequence[Mapping], make_attack: Callable[[Mapping], Callable],
          X: torch.Tensor, y: torch.Tensor, references: detect.References, n: int, num_points: int = 64,
          k: int | None = None, targets: torch.Tensor | None = None, margin_key: str | None = None,
          batch_size: int = 256, chunk_size: int | None = None, attempts: int | None = None) -> list[SweepPoint]:
    """Adversarial examples and their detection features for every setting of a condition map.

    For each ``setting`` (a dict of the attack's parameters, e.g. ``{"attack": "PGD", "extra_steps": 2}``),
    ``make_attack(setting)`` gives the batched attack ``(x, y, idx) -> x_adv``; up to ``n`` successful
    examples are collected from ``(X, y)`` (:func:`mclib.detect.collect_adversarial`, ``targets`` for a targeted attack)
    and their features extracted (:func:`mclib.detect.extract`). With ``margin_key`` the setting's value under that key
    is the confidence ``kappa`` an example must reach to count (``min_margin`` of
    :func:`mclib.detect.collect_adversarial`), so a setting holds only examples at least that confidently misclassified.
    Every setting attacks the same images in the same order, so settings differ only in the attack.
    ``attempts`` caps the images attacked per setting (default all): a setting the attack rarely reaches
    would otherwise run the attack's full step budget on every image.
    """
    if attempts is not None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1 (images attacked per setting), got {attempts}")
        X, y = X[:attempts], y[:attempts]
        targets = None if targets is None else targets[:attempts]
    out = []
    for setting in settings:
        kappa = float(setting[margin_key]) if margin_key is not None else 0.0
        Xa, src, tried, ok = detect.collect_adversarial(model, make_attack(setting), X, y, n, batch_size, targets,
                                                 min_margin=kappa)
        feats = detect.extract(model, Xa, references, num_points, k, chunk_size=chunk_size)
        out.append(SweepPoint(dict(setting), feats, src, tried, ok))
    return out


def setting_evidence(setting: Mapping, clean: pd.DataFrame, groups_clean, adv: pd.DataFrame, groups_adv,
                     folds: int = 5, seed: int = 0, n_boot: int = 2000,
                     detectors: Mapping[str, Callable[[], object]] | None = None, min_adv: int = 5) -> dict:
    """One entry of a condition map: ``{"setting": ..., "measured": ...}`` as claim records store it.

    Every detector of ``detectors`` (default :func:`map_detectors`) is scored out of fold
    (:func:`mclib.detect.cross_val_scores`: the same folds, grouped by source image, for all of them) and its AUROC
    recorded with a stratified bootstrap interval (:func:`mclib.stats.auroc_ci`) as ``auroc_<name>``.
    When both ``combined`` and ``logits_only`` are among them, ``auroc_gain_from_path`` is the paired
    bootstrap interval of their difference (:func:`mclib.stats.auroc_difference_ci`): what the path features add to the
    model's own confidence. Also recorded: ``n_clean``, ``n_adv``, ``median_logit_margin`` (how confidently
    the examples are misclassified: top-1 minus top-2 logit) and ``median_barrier_max``. With fewer than
    ``min_adv`` adversarial examples (an attack that rarely reaches the setting's confidence) no AUROC is
    recorded: an interval over a handful of positives would look precise and mean nothing. A detector that
    cannot be cross-validated (too few adversarial rows for the folds) gets None too.
    """
    detectors = map_detectors() if detectors is None else detectors
    measured: dict = {"n_clean": len(clean), "n_adv": len(adv),
                      "median_logit_margin": float(np.median(adv["logit_margin"])) if len(adv) else None,
                      "median_barrier_max": float(np.median(adv["barrier_max"])) if len(adv) else None}
    scores = {}
    for name, make in detectors.items():
        if len(adv) < min_adv:
            measured[f"auroc_{name}"] = None
            continue
        try:
            lab, scores[name], _ = detect.cross_val_scores(make, clean, adv, groups_clean, groups_adv, folds, seed)
        except ValueError:          # too few adversarial examples for the folds
            measured[f"auroc_{name}"] = None
            continue
        measured[f"auroc_{name}"] = dict(stats.auroc_ci(lab, scores[name], n_boot, seed)._asdict())
    if "combined" in detectors and "logits_only" in detectors:
        measured["auroc_gain_from_path"] = (
            dict(stats.auroc_difference_ci(lab, scores["combined"], scores["logits_only"], n_boot, seed)._asdict())
            if "combined" in scores and "logits_only" in scores else None)
    return {"setting": dict(setting), "measured": measured}


def confidence_map(clean: pd.DataFrame, groups_clean, points: Sequence[SweepPoint], folds: int = 5, seed: int = 0,
                   n_boot: int = 2000, detectors: Mapping[str, Callable[[], object]] | None = None,
                   min_adv: int = 5) -> list[dict]:
    """The condition map of claim A9: :func:`setting_evidence` of every :func:`sweep` point against the same
    clean inputs, plus each setting's ``success_rate`` (succeeded / attempted). The list is what a claim
    records under ``values["conditions"]`` (:func:`mclib.claims.core.map_sentence` reads it)."""
    out = []
    for p in points:
        entry = setting_evidence(p.setting, clean, groups_clean, p.features.table, p.sources.numpy(), folds, seed,
                                 n_boot, detectors, min_adv)
        entry["measured"]["success_rate"] = p.succeeded / p.attempted if p.attempted else None
        out.append(entry)
    return out


def map_frame(conditions: Sequence[Mapping]) -> pd.DataFrame:
    """A condition map in long form, one row per (setting, measured interval): ``attack``, ``knob`` (the
    setting's other parameter), ``x`` (its value), ``margin`` (median logit margin of the examples),
    ``quantity`` (e.g. ``auroc_barrier_max``), ``estimate``, ``lo``, ``hi``, ``n``."""
    rows = []
    for entry in conditions:
        setting, measured = dict(entry["setting"]), entry["measured"]
        knobs = [k for k in setting if k != "attack"]
        if len(knobs) != 1:
            raise ValueError(f"a setting needs 'attack' and exactly one other parameter, got {setting}")
        for q, iv in measured.items():
            if isinstance(iv, Mapping):
                rows.append({"attack": setting.get("attack"), "knob": knobs[0], "x": setting[knobs[0]],
                             "margin": measured.get("median_logit_margin"), "quantity": q,
                             **{f: iv.get(f) for f in ("estimate", "lo", "hi", "n")}})
    cols = ["attack", "knob", "x", "margin", "quantity", "estimate", "lo", "hi", "n"]
    return pd.DataFrame(rows, columns=cols).astype({f: float for f in ("estimate", "lo", "hi")})


#: Lines of :func:`plot_condition_map`: record key -> legend label.
MAP_LINES = {"auroc_barrier_max": "threshold: barrier max", "auroc_barrier_gap": "threshold: barrier gap",
             "auroc_max_softmax": "baseline: max softmax", "auroc_combined": "logistic: path + logits"}


#: The adaptive attack of :meth:`Chapter.attacks`: A8 and A9 judge it apart from the plain attacks.
ADAPTIVE = "adaptive PGD"


@dataclass
class Chapter:
    """The detection chapter's fixed pieces (claims A8, A9), made once by :func:`prepare`: the ``model`` (on
    ``device``), the ``references`` (the ``sizes.k`` lowest-loss correctly classified pool images per class), the
    Mahalanobis baseline fitted on the pool, ``real_loss`` (each class's median pool CE, the high-confidence
    optimisation attack's stopping loss), the correctly classified test images ``X_src``, ``y_src`` the attacks
    start from, a random wrong ``targets`` class per source, and ``generator`` (the PGD and adaptive attacks'
    random starts, drawn in the chapter's order). Its methods run the chapter's measurements."""

    model: nn.Module
    sizes: Sizes
    device: torch.device
    seed: int
    references: detect.References
    mahalanobis: detect.Mahalanobis
    real_loss: torch.Tensor
    X_src: torch.Tensor
    y_src: torch.Tensor
    targets: torch.Tensor
    test_acc: float
    n_test: int
    generator: torch.Generator

    def _on(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def attacks(self) -> dict[str, Callable]:
        """The chapter's five attacks ``(x, y, i) -> x_adv``: FGSM and PGD at ``sizes.eps`` (untargeted), the paper's
        optimisation attack toward ``targets`` stopped at the first success or at a typical real image's loss, and
        the adaptive PGD that also lowers the barrier to the target's references
        (:mod:`mclib.attacks.evasion`)."""
        S, m, on, t, gen = self.sizes, self.model, self._on, self.targets, self.generator
        return {
            "FGSM": lambda x, y, i: evasion.fgsm(m, on(x), on(y), S.eps).cpu(),
            "PGD": lambda x, y, i: evasion.pgd(m, on(x), on(y), S.eps, steps=S.pgd_steps, generator=gen).cpu(),
            "optimisation (first success)": lambda x, y, i: evasion.optimisation_attack(
                m, on(x), on(t[i]), lr=S.opt_lr, steps=S.opt_steps_first, stop_on_success=True).cpu(),
            "optimisation (high confidence)": lambda x, y, i: evasion.optimisation_attack(
                m, on(x), on(t[i]), lr=S.opt_lr, steps=S.opt_steps_confident,
                stop_loss=on(self.real_loss[t[i]])).cpu(),
            "adaptive PGD": lambda x, y, i: evasion.adaptive_pgd(
                m, on(x), on(t[i]), on(self.references.of(t[i], S.adaptive_k)), S.eps, steps=S.adaptive_steps,
                num_points=S.adaptive_points, barrier_weight=S.adaptive_weight, generator=gen).cpu(),
        }

    def features(self, X: torch.Tensor) -> detect.Features:
        """:func:`mclib.detect.extract` of ``X`` against the references, ``sizes.num_points`` path points."""
        return detect.extract(self.model, X, self.references, self.sizes.num_points, mahalanobis=self.mahalanobis)

    def collect(self, attack: Callable, targeted: bool = False) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Up to ``sizes.n`` successful adversarial examples of ``attack`` from the sources
        (:func:`mclib.detect.collect_adversarial`): ``(X_adv, source indices, tried, succeeded)``."""
        return detect.collect_adversarial(self.model, attack, self.X_src, self.y_src, self.sizes.n,
                                          batch_size=self.sizes.attack_batch,
                                          targets=self.targets if targeted else None)

    def run_attacks(self):
        """Every attack of :meth:`attacks`, in order: ``(clean_idx, F_clean, adv, F_adv, rows)`` -- the first
        ``sizes.n`` sources as the clean inputs and their features, per attack its examples with their sources and
        their features, and one row per attack (kept, attacked, success rate, median L-inf and L2 distance to the
        source, seconds)."""
        clean_idx = torch.arange(min(self.sizes.n, len(self.X_src)))
        F_clean = self.features(self.X_src[clean_idx])
        adv, F_adv, rows = {}, {}, []
        for name, attack in self.attacks().items():
            t0 = time.perf_counter()
            Xa, src, tried, succeeded = self.collect(attack, targeted=name not in ("FGSM", "PGD"))
            F_adv[name] = self.features(Xa)
            adv[name] = (Xa, src)
            d = (Xa - self.X_src[src]).flatten(1)
            rows.append({"attack": name, "kept": len(Xa), "attacked": tried,
                         "success rate": succeeded / max(1, tried), "median L-inf": float(d.abs().amax(1).median()),
                         "median L2": float(d.norm(dim=1).median()), "seconds": time.perf_counter() - t0})
        return clean_idx, F_clean, adv, F_adv, rows

    def pgd_strengths(self) -> dict[str, tuple[detect.Features, torch.Tensor, torch.Tensor]]:
        """PGD stopped at its first success and at full strength, from the same random starts: per strength the
        examples' features, their perturbations and their sources."""
        out = {}
        for name, stop in (("PGD (first success)", True), ("PGD (full strength)", False)):
            g_s = self._generator(5)          # the same random starts for both strengths
            attack = lambda x, y, i, stop=stop, g_s=g_s: evasion.pgd(   # noqa: E731
                self.model, self._on(x), self._on(y), self.sizes.eps, steps=self.sizes.pgd_steps, generator=g_s,
                stop_on_success=stop).cpu()
            Xa, src, _, _ = self.collect(attack)
            out[name] = (self.features(Xa), Xa - self.X_src[src], src)
        return out

    def optimisation_to(self, setting: Mapping) -> Callable:
        """The optimisation attack with Carlini & Wagner's margin loss, stopped at logit margin ``setting["kappa"]``."""
        S = self.sizes
        return lambda x, y, i: evasion.optimisation_attack(self.model, self._on(x), self._on(self.targets[i]),
                                                           lr=S.opt_lr, loss="margin", steps=S.map_opt_steps,
                                                           stop_margin=setting["kappa"]).cpu()

    def pgd_past(self, setting: Mapping) -> Callable:
        """PGD taking ``setting["extra_steps"]`` steps after its first success (the same random starts in every
        setting)."""
        g_s = self._generator(6)
        return lambda x, y, i: evasion.pgd(self.model, self._on(x), self._on(y), self.sizes.eps,
                                           steps=self.sizes.pgd_steps, generator=g_s, stop_on_success=True,
                                           extra_steps=setting["extra_steps"]).cpu()

    def confidence_points(self) -> list[SweepPoint]:
        """A9's condition map's attacks (:func:`sweep`): the optimisation attack at each ``sizes.map_kappas`` and PGD
        at each ``sizes.map_extra_steps``, ``sizes.map_n`` examples per setting within ``2 map_n`` attempts."""
        S = self.sizes
        common = dict(X=self.X_src, y=self.y_src, references=self.references, n=S.map_n, num_points=S.num_points,
                      batch_size=S.map_n, attempts=2 * S.map_n)   # a rarely reached confidence must not run over all
        return (sweep(self.model, [{"attack": "optimisation", "kappa": k} for k in S.map_kappas],
                      self.optimisation_to, targets=self.targets, margin_key="kappa", **common)
                + sweep(self.model, [{"attack": "PGD", "extra_steps": e} for e in S.map_extra_steps], self.pgd_past,
                        **common))

    def threshold_auroc(self, threshold, F_clean: detect.Features, clean_idx: torch.Tensor, F_adv: detect.Features,
                        sources: torch.Tensor):
        """A9's evidence for one attack: the out-of-fold AUROC of the ``threshold`` detector (the detection table's
        folds and seed) with its bootstrap interval (``sizes.n_boot``); None when the attack left too few examples
        for the folds."""
        try:
            lab, score, _ = detect.cross_val_scores(threshold, F_clean.table, F_adv.table, clean_idx.numpy(),
                                                    sources.numpy(), self.sizes.folds, self.seed)
        except ValueError:
            return None
        return stats.auroc_ci(lab, score, n_boot=self.sizes.n_boot, seed=self.seed)

    def ratio_evidence(self, F_clean: detect.Features, F_adv: detect.Features) -> dict:
        """A8's evidence for one attack: :func:`barrier_ratio_evidence` of the pairs' barrier max."""
        return barrier_ratio_evidence(F_clean.pair_max.numpy(), F_adv.pair_max.numpy(), n_boot=self.sizes.n_boot,
                                      seed=self.seed)

    def a8_evidence(self, F_clean: detect.Features, F_adv: Mapping[str, detect.Features]) -> dict:
        """What A8's judge reads: per attack :meth:`ratio_evidence` (``attacks``; the adaptive attack's apart as
        ``adaptive``), the model's test accuracy (a model at chance makes A8 inconclusive) and the real-real pair
        count."""
        ratio = {k: self.ratio_evidence(F_clean, F_adv[k]) for k in F_adv}
        return {"attacks": {k: v for k, v in ratio.items() if k != ADAPTIVE}, "adaptive": ratio.get(ADAPTIVE),
                "test_acc": self.test_acc, "n_test": self.n_test,
                "pairs_real_real": int(detect.pair_barriers(F_clean).numel())}

    def a9_evidence(self, threshold, F_clean: detect.Features, clean_idx: torch.Tensor,
                    F_adv: Mapping[str, detect.Features], adv: Mapping, conditions: list, table: pd.DataFrame,
                    attack_rows: Sequence[Mapping]) -> dict:
        """What A9's judge reads: per attack :meth:`threshold_auroc` (``auroc``; the adaptive attack's apart as
        ``adaptive``), the model's test accuracy, the condition map ``conditions`` (:func:`confidence_map`), and for
        the record the detection ``table`` and the attacks' rows (without their seconds)."""
        auroc = {k: self.threshold_auroc(threshold, F_clean, clean_idx, F_adv[k], adv[k][1]) for k in F_adv}
        return {"auroc": {k: v for k, v in auroc.items() if k != ADAPTIVE}, "adaptive": auroc.get(ADAPTIVE),
                "test_acc": self.test_acc, "n_test": self.n_test, "conditions": conditions,
                "table": table.round(4).to_dict(orient="records"),
                "attack_stats": [{k: v for k, v in row.items() if k != "seconds"} for row in attack_rows]}

    def strength(self, F_clean: detect.Features, clean_idx: torch.Tensor, threshold) -> pd.DataFrame:
        """:func:`strength_table` of :meth:`pgd_strengths` with each strength's cross-validated AUROC of the
        ``threshold`` detector (:func:`detection_table`)."""
        strengths = self.pgd_strengths()
        out = strength_table(F_clean, {k: (f, d) for k, (f, d, _) in strengths.items()})
        s_table, _ = detection_table(F_clean.table, clean_idx.numpy(),
                                     {k: (f.table, s.numpy()) for k, (f, _, s) in strengths.items()},
                                     {"threshold: barrier max": threshold}, folds=self.sizes.folds, seed=self.seed)
        out["AUROC (threshold: barrier max)"] = s_table.set_index("attack")["auroc"]
        return out


def prepare(model: nn.Module, sizes: Sizes, X_pool: torch.Tensor, y_pool: torch.Tensor, X_test: torch.Tensor,
            y_test: torch.Tensor, device, seed: int = 0) -> Chapter:
    """The detection chapter's :class:`Chapter` for ``model``: references and the Mahalanobis baseline from the pool
    ``(X_pool, y_pool)``, sources from the correctly classified test images, a random wrong target per source (from
    the generator seeded ``seed + 4``, which then gives the attacks' random starts)."""
    model = model.to(device)
    refs = detect.select_references(model, X_pool.to(device), y_pool.to(device), sizes.k)
    refs = detect.References(refs.images.cpu(), refs.losses.cpu(), refs.indices.cpu())
    maha = detect.Mahalanobis().fit(model, X_pool, y_pool)
    real_loss = detect.class_loss_quantile(model, X_pool, y_pool, sizes.stop_quantile)
    correct = (train.logits(model, X_test).argmax(1) == y_test).nonzero()[:, 0]
    X_src, y_src = X_test[correct], y_test[correct]
    gen = torch.Generator().manual_seed(int(seed) + 4)
    n_cls = len(refs.images)
    targets = (y_src + torch.randint(1, n_cls, y_src.shape, generator=gen)) % n_cls   # a random wrong class per source
    return Chapter(model=model, sizes=sizes, device=device, seed=int(seed), references=refs, mahalanobis=maha,
                   real_loss=real_loss, X_src=X_src, y_src=y_src, targets=targets,
                   test_acc=len(correct) / len(X_test), n_test=len(X_test), generator=gen)


# --- plots
def plot_condition_map(axes, conditions: Sequence[Mapping], threshold: float = 0.9, lines: Mapping[str, str] = MAP_LINES,
                       gain_ax=None):
    """AUROC against attack confidence: one panel per attack family (in ``axes``, in order of first
    appearance), the family's knob on the x axis (symlog), one line per detector of ``lines`` with its
    interval as a band, and ``threshold`` as a dashed line. With ``gain_ax``, a last panel draws
    ``auroc_gain_from_path`` (combined minus logits only, paired interval) against the examples' median
    logit margin, one line per family, with the zero line. Returns the axes drawn on."""
    import matplotlib.pyplot as plt
    frame = map_frame(conditions)
    families = list(dict.fromkeys(frame["attack"]))
    if len(families) > len(axes):
        raise ValueError(f"the map has {len(families)} attack families {families} but only {len(axes)} axes")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, fam in zip(axes, families):
        sub = frame[frame["attack"] == fam]
        for (q, label), col in zip(lines.items(), colours):
            d = sub[sub["quantity"] == q].sort_values("x")
            ax.plot(d["x"], d["estimate"], "o-", color=col, lw=1.6, ms=4, label=label)
            ax.fill_between(d["x"], d["lo"], d["hi"], color=col, alpha=0.15, lw=0)
        ax.axhline(threshold, color="k", ls="--", lw=0.9)
        ax.text(0.99, threshold, f"threshold {threshold:g}", transform=ax.get_yaxis_transform(), ha="right",
                va="bottom", fontsize="small")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(sorted(sub["x"].unique()), [f"{v:g}" for v in sorted(sub["x"].unique())])
        ax.set_xlabel(sub["knob"].iloc[0].replace("_", " "))
        ax.set_ylabel("cross-validated AUROC")
        ax.set_title(fam)
    if families:
        axes[0].legend(loc="lower left", fontsize="small")
    drawn = list(axes[:len(families)])
    if gain_ax is not None:
        for fam, col in zip(families, colours[len(lines):] + colours):
            d = frame[(frame["attack"] == fam) & (frame["quantity"] == "auroc_gain_from_path")].sort_values("margin")
            gain_ax.plot(d["margin"], d["estimate"], "s-", color=col, lw=1.6, ms=4, label=fam)
            gain_ax.fill_between(d["margin"], d["lo"], d["hi"], color=col, alpha=0.15, lw=0)
        gain_ax.axhline(0.0, color="k", lw=0.8)
        gain_ax.set_xlabel("median logit margin of the examples")
        gain_ax.set_ylabel("AUROC gain from the path features")
        gain_ax.set_title("does the barrier add to the logits?")
        if gain_ax.get_legend_handles_labels()[0]:
            gain_ax.legend(loc="best", fontsize="small")
        drawn.append(gain_ax)
    return drawn


def plot_barrier_boxes(groups: Mapping[str, detect.Features]):
    """Box plots of every (input, reference) pair's barrier max (left) and gap (right), one box per group
    (``{"real–real": ..., "real–<attack>": ...}``, the first on top), on log axes. Returns the figure."""
    from matplotlib import ticker

    from mclib import plots

    labels = ["clean (real–real)"] + [g.replace("real–", "") for g in list(groups)[1:]]
    fig, axes = plots.subplots(1, 2, figsize=(9, 0.45 * len(groups) + 1.4), sharey=True)
    for ax, which in zip(axes, ["max", "gap"]):
        vals = [detect.pair_barriers(f, which).clamp_min(1e-6).numpy() for f in groups.values()]
        ax.boxplot(vals, orientation="horizontal", showfliers=False, tick_labels=labels)
        ax.set_xscale("log")
        ax.set_xlabel(f"barrier {which} (cross-entropy, log scale)")
        ax.set_title(f"barrier {which} per pair")
        lo, hi = ax.get_xlim()
        if hi / lo < 30:            # less than about a decade: plain tick labels instead of crowded minor ones
            ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    axes[0].invert_yaxis()   # real–real on top
    return fig


def plot_path_curves(groups: Mapping[str, detect.Features], max_curves: int = 20):
    """Loss along the straight path from the first reference to the input, up to ``max_curves`` pairs per group and
    their median, one panel per group (2 x 3 grid, outer axes labelled). Returns the figure."""
    from mclib import paths, plots

    labels = ["clean (real–real)"] + [g.replace("real–", "") for g in list(groups)[1:]]
    fig, axes = plots.subplots(2, 3, figsize=(9, 5.6), sharex=True, sharey=True)
    for ax, label, f, col in zip(axes.flat, labels, groups.values(), plots.PALETTE):
        paths.plot_loss_curves(ax, f.curves[:max_curves, 0], color=col, max_curves=max_curves, log=True)
        ax.set_title(label.replace(" (", "\n("), fontsize=10)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    for ax in axes.flat:          # label the outer axes only
        ax.set_xlabel("")
        ax.set_ylabel("")
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-entropy (log)")
    for ax in axes[-1]:
        ax.set_xlabel("path position a (0 = reference, 1 = input)")
    return fig


def plot_roc_grid(table: pd.DataFrame, rocs: Mapping, show: Sequence[str], short: Mapping[str, str] = {}):
    """The ROC curves of the detectors ``show`` from :func:`detection_table`'s ``rocs``, one panel per attack of
    ``table`` (titles shortened by ``short``), outer axes labelled, one legend below. Returns the figure."""
    from mclib import plots

    names = list(dict.fromkeys(table["attack"]))
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plots.subplots(rows, cols, figsize=(9, 3.2 * rows + 0.8), squeeze=False, sharex=True, sharey=True)
    for ax, name in zip(axes.flat, names):
        detect.plot_roc(ax, {d: rocs[(name, d)] for d in show if (name, d) in rocs},
                        title=short.get(name, name).replace(" (", "\n("))
        if ax.get_legend():
            ax.get_legend().remove()
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for ax in axes.flat:          # label the outer axes only
        ax.set_xlabel("false-positive rate" if ax in axes[-1] else "")
        ax.set_ylabel("true-positive rate" if ax in axes[:, 0] else "")
    handles = next((ax.get_legend_handles_labels() for ax in axes.flat if ax.get_legend_handles_labels()[0]), ([], []))
    if handles[0]:
        fig.legend(*handles, loc="outside lower center", ncols=2)
    return fig


def plot_confidence_map(conditions: Sequence[Mapping], threshold: float):
    """A9's condition map in one figure: :func:`plot_condition_map` with one panel per attack family on top and the
    AUROC gain from the path features below. Returns the figure."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 7.2), layout="constrained")
    panels = fig.subplot_mosaic([["family 1", "family 2"], ["gain", "gain"]])
    plot_condition_map([panels["family 1"], panels["family 2"]], conditions, threshold, gain_ax=panels["gain"])
    for ax in panels.values():
        if ax.get_legend():
            plt.setp(ax.get_legend().get_texts(), fontsize=9)
    return fig

