"""Shallow codes and vulnerability (Lee & Vijayan, arXiv 2205.10952, Section 3.3): claim B3.

The paper reads, per input, how homogeneous its shallow-layer code is -- the label entropy at its best-matching
unit on a SOM of the layer's codes (:func:`mclib.som.bmu_homogeneity`) -- against how vulnerable the input is, and
finds that inputs with homogeneous codes are the vulnerable ones. Built from :mod:`mclib.som` (layer codes, SOMs,
code metrics), :func:`mclib.attacks.evasion.pgd` and :mod:`mclib.stats`:

* :func:`minimal_eps` -- the smallest PGD radius that flips each input (binary search on a grid of radii);
* :func:`bmu_change` -- per layer, the share of inputs whose BMU changes under attack;
* the condition map: the paper leaves the shallow layer, the SOM size and the SOM protocol open, so claim B3 is
  measured over a small map of these choices (issue 16). :func:`shallow_layers` names the shallow codes,
  :func:`fit_protocol` fits a SOM by a protocol (:data:`PROTOCOL_KEYS`), :func:`one_at_a_time` lays out the design,
  :func:`homogeneity` and :func:`condition_map` give Spearman's rho with its interval per setting, and
  :func:`summarise_conditions` / :func:`plot_conditions` read and draw the map. The expensive part, the minimal
  flipping radius of every evaluated input (:func:`minimal_eps`), is computed once per model and vulnerability
  measure and reused by every SOM setting. Sample sizes come from :func:`mclib.stats.spearman_n_for_power`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mclib import config, data, sequential, som, stats, train
from mclib.attacks import pgd
from mclib.torchutil import device_of, eval_mode

__all__ = ["Sizes", "plot_condition_figure", "plot_entropy_vs_eps", "plot_bmu_change", "majority_hits", "code_evidence",
           "chapter_models", "layer_codes", "b3_study", "attack_change", "b_evidence", "B2_METRICS", "minimal_eps",
           "bmu_change", "PROTOCOL_KEYS", "shallow_layers", "fit_protocol", "one_at_a_time", "homogeneity",
           "condition_map", "sequential_inputs", "summarise_conditions", "plot_conditions"]


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of the internal-codes chapter (``b_internal_codes``) from ``mclib/presets/som.toml``; the file's
    comments say what each one is (``b3_*``: B3's condition map; ``protocols``: :func:`fit_protocol` mappings)."""

    FILE: ClassVar[str] = "som"
    archs: tuple[str, ...]
    recipe_changes: dict[str, Any]
    n_codes: int
    som_rows: int
    som_cols: int
    sigma: float
    learning_rate: float
    som_epochs: int
    n_vuln: int
    eps_max: float
    resolution: int
    pgd_steps: int
    attack_eps: float
    n_boot: int
    batch_size: int
    n_fit_train: int
    b3_budget: int
    b3_base: dict[str, Any]
    b3_layers: tuple[str, ...]
    b3_soms: tuple[str, ...]
    b3_protocols: tuple[str, ...]
    b3_vulnerability: tuple[str, ...]
    vulnerability: dict[str, Any]
    protocols: dict[str, Any]


def majority_hits(bmus, labels) -> np.ndarray:
    """Per input, 1 when its label is the majority class of its BMU (majorities from the whole sample), else 0.

    Their mean is :func:`mclib.som.purity`; as a mean of per-input indicators it can be bootstrapped without the
    upward bias that recomputing the majorities inside every resample would add.
    """
    b, y = np.asarray(bmus), np.asarray(labels)
    units, k = np.unique(b, return_inverse=True)
    classes, c = np.unique(y, return_inverse=True)
    n = np.zeros((len(units), len(classes)))
    np.add.at(n, (k, c), 1)
    return (c == n.argmax(1)[k]).astype(float)


def code_evidence(bmus_first, bmus_last, labels, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """What the judges of claims B1 and B2 read (:mod:`mclib.claims.paper_b`) for one model, with bootstrap
    intervals over inputs (rows resampled together).

    ``purity_first`` and ``purity_gain`` are means of per-input :func:`majority_hits` (percentile intervals);
    ``nmi_gain`` = NMI(last) - NMI(first) (:func:`mclib.som.nmi`) recomputed in each resample, with the basic
    (reverse-percentile) interval because plug-in mutual information is biased upward under resampling.
    """
    first, last = majority_hits(bmus_first, labels), majority_hits(bmus_last, labels)
    rows = np.stack([np.asarray(bmus_first), np.asarray(bmus_last), np.asarray(labels)], axis=1)
    return {
        "inputs": int(len(rows)),
        "purity_first": dict(stats.bootstrap_ci(first, np.mean, n_boot, seed)._asdict()),
        "purity_gain": dict(stats.bootstrap_ci(last - first, np.mean, n_boot, seed)._asdict()),
        "nmi_gain": dict(stats.bootstrap_ci(rows, lambda r: som.nmi(r[:, 1], r[:, 2]) - som.nmi(r[:, 0], r[:, 2]),
                                            n_boot, seed, method="basic")._asdict()),
        "nmi_first": som.nmi(rows[:, 0], rows[:, 2]), "nmi_last": som.nmi(rows[:, 1], rows[:, 2]),
        "purity_last": float(last.mean()),
    }


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def minimal_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_max: float,
    resolution: int = 64,
    steps: int = 10,
    norm: str = "linf",
    generator: torch.Generator | None = None,
    progress: bool = False,
    stop_on_success: bool = False,
) -> torch.Tensor:
    """Smallest PGD radius that flips each input's prediction, by binary search on ``eps``.

    The search runs on the grid ``eps_j = eps_max * j / resolution``: every bisection step attacks
    every still-open input once with ``mclib.attacks.pgd`` (``steps`` steps, random start),
    grouping inputs that share the same midpoint into one batched call, so the work is
    ``N * log2(resolution)`` attacks. Returns ``(N,)`` radii: 0 for inputs already misclassified,
    ``inf`` for inputs PGD cannot flip at ``eps_max``; otherwise the smallest grid radius found
    to flip (accurate to ``eps_max / resolution``, assuming success is monotone in eps).

    ``stop_on_success``: each attack stops an input at its first misclassified iterate (``pgd``'s option), so an
    input counts as flipped when any of the ``steps`` iterates flips it, and flipped inputs cost no further steps.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if eps_max <= 0 or resolution < 1:
        raise ValueError(f"need eps_max > 0 and resolution >= 1, got {eps_max}, {resolution}")
    device = device_of(model)
    x, y = x.to(device), y.to(device)

    def flips(idx: torch.Tensor, j: int) -> torch.Tensor:
        adv = pgd(model, x[idx], y[idx], eps=eps_max * j / resolution, steps=steps, norm=norm, generator=generator,
                  stop_on_success=stop_on_success)
        return _predict(model, adv) != y[idx]

    with eval_mode(model):
        out = torch.full((len(x),), float("inf"))
        wrong = (_predict(model, x) != y).cpu()
        out[wrong] = 0.0
        open_ = (~wrong).nonzero().flatten()
        hit = flips(open_.to(device), resolution).cpu() if len(open_) else torch.zeros(0, dtype=torch.bool)
        lo = torch.zeros(len(x), dtype=torch.long)          # known not to flip (index 0: clean input)
        hi = torch.full((len(x),), resolution, dtype=torch.long)  # known to flip
        todo = open_[hit]
        todo = todo[hi[todo] - lo[todo] > 1]
        bar = tqdm(total=max(1, math.ceil(math.log2(resolution))), desc="eps search", disable=not progress, leave=False)
        while len(todo):
            mid = (lo[todo] + hi[todo]) // 2
            for j in mid.unique().tolist():
                sel = todo[mid == j]
                f = flips(sel.to(device), j).cpu()
                hi[sel[f]] = j
                lo[sel[~f]] = j
            todo = todo[hi[todo] - lo[todo] > 1]
            bar.update(1)
        bar.close()
        done = open_[hit]
        out[done] = hi[done].float() * eps_max / resolution
        return out


def bmu_change(model: nn.Module, X: torch.Tensor, X_adv: torch.Tensor, codes: som.LayerCodes,
               batch_size: int = 256, reduce: str = "mean") -> dict[str, float]:
    """Per layer, the share of inputs whose BMU differs between ``X`` and its attacked copy ``X_adv``
    (both mapped through the layer's SOM from ``codes``)."""
    if X.shape != X_adv.shape:
        raise ValueError(f"X and X_adv differ in shape: {tuple(X.shape)} vs {tuple(X_adv.shape)}")
    a = som.activations(model, X, codes.layers, batch_size, reduce)
    b = som.activations(model, X_adv, codes.layers, batch_size, reduce)
    out = {}
    for n in codes.layers:
        m = codes.soms[n]
        out[n] = float((m.bmu(som.standardise(m, a[n])) != m.bmu(som.standardise(m, b[n]))).float().mean())
    return out


#: Keys a SOM protocol (:func:`fit_protocol`) may hold, and what each means.
PROTOCOL_KEYS = {
    "backend": "'minisom' (online rule) or 'torch' (batch map)",
    "standardize": "z-score each code dimension before fitting (bool)",
    "sigma": "initial neighbourhood width (default: half the longer map side)",
    "sigma_end": "final neighbourhood width (batch map only; MiniSom's schedule always ends at 1)",
    "epochs": "passes over the fitting codes (MiniSom: epochs * N single-sample updates; batch map: epochs passes)",
    "learning_rate": "MiniSom's initial learning rate",
    "fit_on": "name of the code set the SOM is fitted on (e.g. 'test', 'train', 'evaluated')",
}


def shallow_layers(model: nn.Module) -> dict[str, str]:
    """The shallow codes B3 can read, ``{label: module name}``: ``"L1"`` the first hooked layer of
    :func:`mclib.som.default_layers` (after its activation), ``"L1 pre-ReLU"`` the same layer before its
    activation where the model has it as a module (:func:`mclib.som.pre_activation`), and ``"L2"`` the second
    hooked layer."""
    names = som.default_layers(model)
    out = {"L1": names[0]}
    pre = som.pre_activation(model, names[0])
    if pre is not None:
        out["L1 pre-ReLU"] = pre
    if len(names) > 2:           # the last hooked layer is the logits, not a shallow code
        out["L2"] = names[1]
    return out


def fit_protocol(X: torch.Tensor, rows: int, cols: int, protocol: Mapping, seed: int = 0) -> som.SOM:
    """:func:`mclib.som.fit_som` with a SOM protocol given as a mapping (keys ``PROTOCOL_KEYS``; ``fit_on`` is read by
    the caller, not here). ``epochs`` counts passes over ``X``; missing keys take :func:`mclib.som.fit_som`'s defaults,
    except ``backend`` which defaults to ``"minisom"`` so a protocol means the same whatever fit_som's default."""
    unknown = sorted(set(protocol) - set(PROTOCOL_KEYS))
    if unknown:
        raise ValueError(f"unknown SOM protocol key(s) {unknown}; allowed: {', '.join(PROTOCOL_KEYS)}")
    p = dict(protocol)
    p.pop("fit_on", None)
    backend = p.pop("backend", "minisom")
    epochs = p.pop("epochs", None)
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise ValueError(f"protocol epochs must be a positive integer, got {epochs!r}")
    if backend == "minisom" and "sigma_end" in p:
        raise ValueError("protocol key sigma_end needs backend='torch'; MiniSom's neighbourhood always decays to 1")
    iterations = None if epochs is None else int(epochs) * (len(X) if backend == "minisom" else 1)
    return som.fit_som(X, rows, cols, backend=backend, iterations=iterations, seed=seed, **p)


def one_at_a_time(base: Mapping, variations: Mapping[str, Sequence]) -> list[dict]:
    """A one-at-a-time design: ``base`` first, then for each key of ``variations`` each of its values that
    differs from the base, with every other key at its base value. ``variations`` may only vary keys of
    ``base``."""
    extra = sorted(set(variations) - set(base))
    if extra:
        raise ValueError(f"variations name keys {extra} that the base setting {dict(base)} lacks")
    out = [dict(base)]
    for key, values in variations.items():
        out += [{**base, key: v} for v in values if v != base[key] and {**base, key: v} not in out]
    return out


def _size(som_size: str) -> tuple[int, int]:
    try:
        rows, cols = (int(s) for s in str(som_size).lower().split("x"))
    except ValueError:
        raise ValueError(f"a SOM size is written 'ROWSxCOLS' (e.g. '10x10'), got {som_size!r}") from None
    return rows, cols


def _rank_finite(eps: torch.Tensor) -> np.ndarray:
    """Radii with ``inf`` (not flipped within the search) replaced by a value above every finite radius: the
    ranks, and so Spearman's rho, are those of the censored radii with the censored inputs tied at the top."""
    e = torch.as_tensor(eps, dtype=torch.float64).numpy().copy()
    fin = np.isfinite(e)
    e[~fin] = (e[fin].max() if fin.any() else 0.0) * 2 + 1
    return e


def homogeneity(A_fit: torch.Tensor, y_fit: torch.Tensor, A_eval: torch.Tensor, som_size: str, protocol: Mapping,
                seed: int = 0, n_classes: int | None = None) -> tuple[torch.Tensor, som.SOM, torch.Tensor]:
    """Per evaluated input, the label entropy (bits) at its BMU on a SOM fitted to the codes ``A_fit`` (labels
    ``y_fit``) with ``protocol`` (:func:`fit_protocol`) and size ``som_size`` (``"ROWSxCOLS"``).

    The unit statistics come from the fitting set only (:func:`mclib.som.bmu_homogeneity` with ``query`` the evaluated
    inputs' BMUs), so when the SOM is fitted on other inputs an evaluated input's own label does not enter its
    homogeneity. Returns ``(label_entropy (N_eval,), the SOM, the fitting codes in the SOM's space)``.
    """
    rows, cols = _size(som_size)
    y_fit = torch.as_tensor(y_fit).long()
    m = fit_protocol(A_fit, rows, cols, protocol, seed)
    Z = som.standardise(m, A_fit)
    query = m.bmu(som.standardise(m, som.check_codes(A_eval, "evaluated codes")))
    h = som.bmu_homogeneity(m.bmu(Z), y_fit, m.n_units, n_classes=n_classes, query=query)["label_entropy"]
    return h, m, Z


def condition_map(model: nn.Module, X_eval: torch.Tensor, y_eval: torch.Tensor, eps: Mapping[str, torch.Tensor],
                  settings: Sequence[Mapping], layers: Mapping[str, str], protocols: Mapping[str, Mapping],
                  fit_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], n_boot: int = 2000, seed: int = 0,
                  batch_size: int = 256, tag: Mapping | None = None, progress: bool = False,
                  level: float = 0.95) -> list[dict]:
    """Spearman's rho between shallow-code homogeneity and vulnerability, for each setting of a condition map.

    Each setting is a mapping with ``layer`` (a key of ``layers``, which maps it to a module name), ``som``
    (``"ROWSxCOLS"``), ``protocol`` (a key of ``protocols``, see :func:`fit_protocol`; its ``fit_on`` names a key
    of ``fit_sets``, or ``"evaluated"`` for ``X_eval`` itself) and ``vulnerability`` (a key of ``eps``: one radius
    per evaluated input from :func:`minimal_eps`, computed once and shared by all settings). Per setting: the
    layer's codes of the fitting set get a SOM; each evaluated input's homogeneity is the label entropy at its
    BMU among the fitting set's inputs (:func:`mclib.som.bmu_homogeneity`); rho is :func:`mclib.stats.correlation`'s
    Spearman estimate with its pairs-bootstrap interval at ``level``, inputs not flipped within the search ranked
    last.

    Returns one entry per setting, ``{"setting": {**tag, **setting}, "measured": {"spearman": {estimate, lo, hi,
    n, p}, "module", "censored", "units_used", "quantization_error", "topographic_error"}}``, the form claims
    record under ``values["conditions"]``. Codes are computed once per (fitting set, module).
    """
    y_eval = torch.as_tensor(y_eval).long()
    sets = {**fit_sets, "evaluated": (X_eval, y_eval)}
    for s in settings:
        missing = [k for k in ("layer", "som", "protocol", "vulnerability") if k not in s]
        if missing:
            raise ValueError(f"setting {dict(s)} lacks {missing}")
        for key, table in (("layer", layers), ("protocol", protocols), ("vulnerability", eps)):
            if s[key] not in table:
                raise ValueError(f"setting {dict(s)}: unknown {key} {s[key]!r}; known: {', '.join(map(str, table))}")
        fit_on = protocols[s["protocol"]].get("fit_on", "evaluated")
        if fit_on not in sets:
            raise ValueError(f"protocol {s['protocol']!r} fits on {fit_on!r}, not a code set; known: {', '.join(sets)}")
        if len(eps[s["vulnerability"]]) != len(X_eval):
            raise ValueError(f"vulnerability {s['vulnerability']!r} has {len(eps[s['vulnerability']])} radii for "
                             f"{len(X_eval)} evaluated inputs")
    needed: dict[str, set] = {}
    for s in settings:
        needed.setdefault(protocols[s["protocol"]].get("fit_on", "evaluated"), set()).add(layers[s["layer"]])
    needed.setdefault("evaluated", set()).update(layers[s["layer"]] for s in settings)
    codes = {name: som.activations(model, sets[name][0], sorted(mods), batch_size) for name, mods in needed.items()}
    out = []
    for s in tqdm(settings, desc="condition map", disable=not progress, leave=False):
        proto, module = protocols[s["protocol"]], layers[s["layer"]]
        fit_on = proto.get("fit_on", "evaluated")
        h, m, Z = homogeneity(codes[fit_on][module], sets[fit_on][1], codes["evaluated"][module], s["som"], proto,
                              seed, n_classes=int(max(torch.as_tensor(sets[fit_on][1]).max(), y_eval.max())) + 1)
        e = eps[s["vulnerability"]]
        c = stats.correlation(h.double().numpy(), _rank_finite(e), n_boot=n_boot, seed=seed, level=level)
        out.append({"setting": {**(tag or {}), **s}, "measured": {
            "spearman": {"estimate": c["spearman"], "lo": c["spearman_lo"], "hi": c["spearman_hi"], "n": c["n"],
                         "p": c["spearman_p"], "level": level},
            "module": module, "censored": int(torch.isinf(torch.as_tensor(e)).sum()),
            "units_used": int(m.bmu(Z).unique().numel()), "quantization_error": m.quantization_error(Z),
            "topographic_error": m.topographic_error(Z)}})
    return out


def sequential_inputs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, first: int, budget: int,
                      vulnerability: Mapping[str, Mapping], base: Mapping, layers: Mapping[str, str],
                      protocols: Mapping[str, Mapping], fit_sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                      resolution: int, generator: torch.Generator | None = None, n_boot: int = 2000, seed: int = 0,
                      batch_size: int = 256, alpha: float = 0.05):
    """B3's evaluated inputs on a sequential design: more correctly classified inputs while the base setting's rho
    interval spans 0.

    The looks are declared first (:meth:`mclib.sequential.Design.doubling` from ``first`` to ``budget``, both capped at
    the correctly classified inputs available), each look's interval at level ``1 - alpha / K``, so a decision on
    the sign of rho is wrong with probability at most ``alpha`` over all looks. At each look only the new inputs get
    their minimal flipping radius (:func:`minimal_eps`, per measure in ``vulnerability``), and the base setting's rho
    is measured by :func:`condition_map`. Returns ``(idx, eps, sample)``: the indices into ``X`` of the evaluated
    inputs, their radii per measure, and the :class:`mclib.sequential.Sample`; the caller measures the whole
    condition map on these inputs at ``sample.design.level``.
    """
    correct = (_predict(model, X) == torch.as_tensor(y).to(X.device)).nonzero().flatten().cpu()
    if len(correct) < 3:
        raise ValueError(f"B3 needs at least 3 correctly classified inputs, the model has {len(correct)}")
    cap = len(correct)
    design = sequential.Design.doubling(min(int(first), cap), min(max(int(budget), int(first)), cap), alpha)
    eps = {name: torch.zeros(0) for name in vulnerability}

    def measure(n: int, level: float):
        idx, new = correct[:n], correct[len(eps[base["vulnerability"]]):n]
        for name, kw in vulnerability.items():
            found = minimal_eps(model, X[new], y[new], resolution=resolution, stop_on_success=True,
                                generator=generator, **kw)
            eps[name] = torch.cat([eps[name], found.cpu()])
        e = {base["vulnerability"]: eps[base["vulnerability"]]}
        entry = condition_map(model, X[idx], y[idx], e, [base], layers, protocols, fit_sets, n_boot=n_boot, seed=seed,
                              batch_size=batch_size, level=level)[0]
        sp = entry["measured"]["spearman"]
        return stats.Interval(sp["estimate"], sp["lo"], sp["hi"], sp["n"])

    sample = sequential.run(design, measure, 0.0, above=False)
    return correct[:sample.looks[-1]], eps, sample


def summarise_conditions(conditions: Sequence[Mapping], key: str = "spearman", effect: float = 0.15,
                         alpha: float = 0.05) -> dict:
    """Where a correlation lives across a condition map: counts of settings whose interval of ``measured[key]``
    lies below 0 (``negative``), above 0 (``positive``), spans 0 but lies inside ``(-effect, effect)`` (``small``:
    no effect of ``|rho| >= effect`` either way), or spans 0 and reaches beyond ``±effect`` (``undecided``), plus
    ``settings``, the largest interval half-width and the range of the estimates. Settings without a finite
    interval count as ``undecided``.

    Many settings make some intervals miss 0 by chance (``alpha`` times the number of settings, expected, when
    there is no effect anywhere), so ``holm`` counts the settings whose p-value (``measured[key]["p"]``) survives
    Holm's step-down correction at family-wise level ``alpha``: with the ``m`` p-values sorted, the ``i``-th
    smallest (from 0) is rejected while ``p_(i) <= alpha / (m - i)``.
    """
    out = {"settings": len(conditions), "negative": 0, "positive": 0, "small": 0, "undecided": 0}
    halves, ests = [], []
    for c in conditions:
        iv = c["measured"][key]
        lo, hi, est = iv.get("lo"), iv.get("hi"), iv.get("estimate")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            out["undecided"] += 1
            continue
        halves.append((hi - lo) / 2)
        if est is not None and math.isfinite(est):
            ests.append(est)
        kind = ("negative" if hi < 0 else "positive" if lo > 0 else "small" if -effect < lo and hi < effect
                else "undecided")
        out[kind] += 1
    out["max_halfwidth"] = max(halves) if halves else math.nan
    out["estimate_range"] = (min(ests), max(ests)) if ests else (math.nan, math.nan)
    ps = sorted(p for c in conditions if (p := c["measured"][key].get("p")) is not None and math.isfinite(p))
    out["holm"] = next((i for i, p in enumerate(ps) if p > alpha / (len(ps) - i)), len(ps))
    out["expected_by_chance"] = alpha * len(conditions)
    return out


# --- the chapter (B1-B3)
def chapter_models(ctx: config.Context, sizes: Sizes):
    """The chapter's trained models, ``recipe_for(ctx, arch=a, **sizes.recipe_changes.get(a, {}))`` for each of
    ``sizes.archs`` (cached, shared with other chapters). Returns ``(nets, rows)``: the models by architecture and
    one row per model (epochs, batch size, architecture options, test accuracy, training seconds)."""
    changes = dict(sizes.recipe_changes)
    nets, rows = {}, []
    for arch in sizes.archs:
        recipe = train.recipe_for(ctx, arch=arch, **changes.get(arch, {}))
        trained = ctx.model(recipe, progress=False)
        nets[arch], m = trained.model, trained.metrics
        rows.append({"model": arch, "epochs": recipe.epochs, "batch size": recipe.batch_size,
                     "architecture": ", ".join(f"{k}={v}" for k, v in dict(recipe.arch_kwargs).items()) or "default",
                     "test acc": m["test_acc"], "train seconds": m["seconds"]})
    return nets, rows


def layer_codes(nets: Mapping[str, nn.Module], X: torch.Tensor, y: torch.Tensor, sizes: Sizes,
                seed: int = 0) -> dict[str, som.LayerCodes]:
    """Per model, a SOM per hooked layer fitted on the codes of ``X`` (:func:`mclib.som.fit_layers`, the default
    batch-map torch SOM of ``sizes.som_rows`` x ``sizes.som_cols`` units, ``sizes.sigma``)."""
    return {arch: som.fit_layers(som.activations(model, X, batch_size=sizes.batch_size), y, rows=sizes.som_rows,
                                 cols=sizes.som_cols, sigma=sizes.sigma, seed=seed)
            for arch, model in nets.items()}


def b3_study(ctx: config.Context, sizes: Sizes, nets: Mapping[str, nn.Module], X: torch.Tensor, y: torch.Tensor):
    """Claim B3 over its one-at-a-time design around ``sizes.b3_base``: per model, inputs drawn on the sequential
    design (:func:`sequential_inputs`: more while the base setting's rho interval spans 0), the condition map of
    every setting the model has (:func:`condition_map`), and the base setting's per-input label entropy at the BMU
    (:func:`homogeneity`). Returns ``(vuln, conditions)``: per model ``idx``, ``eps`` (base vulnerability measure),
    ``entropy``, ``censored`` (inputs never flipped), ``looks`` and ``base`` (the base setting's measured entry)."""
    S = sizes
    protocols = {name: dict(p) for name, p in S.protocols.items()}
    X_fit, y_fit = data.load(ctx.preset.dataset, "train", n=S.n_fit_train, data_root=ctx.data_root)
    base = dict(S.b3_base)
    design = one_at_a_time(base, {"layer": S.b3_layers, "som": S.b3_soms, "protocol": S.b3_protocols,
                                  "vulnerability": S.b3_vulnerability})
    vuln, conditions = {}, []
    fit_sets = {"test": (X, y), "train": (X_fit, y_fit)}
    for arch, model in nets.items():
        layers = shallow_layers(model)
        measures = {name: S.vulnerability[name] for name in dict.fromkeys(s["vulnerability"] for s in design)}
        idx, eps, looked = sequential_inputs(model, X, y, S.n_vuln, S.b3_budget, measures, base, layers, protocols,
                                             fit_sets, resolution=S.resolution, generator=ctx.generator(1),
                                             n_boot=S.n_boot, seed=ctx.seed, batch_size=S.batch_size)
        settings = [s for s in design if s["layer"] in layers]  # a model without a pre-activation module skips that row
        conditions += condition_map(model, X[idx], y[idx], eps, settings, layers, protocols, fit_sets,
                                    n_boot=S.n_boot, seed=ctx.seed, batch_size=S.batch_size, tag={"model": arch},
                                    level=looked.design.level)
        # the base setting's per-input homogeneity, for the scatter plot (the chapter's SOM protocol and layer)
        module, proto = layers[base["layer"]], protocols[base["protocol"]]
        fit_X, fit_y = fit_sets.get(proto["fit_on"], (X[idx], y[idx]))
        entropy, _, _ = homogeneity(som.activations(model, fit_X, [module])[module], fit_y,
                                    som.activations(model, X[idx], [module])[module], base["som"], proto, ctx.seed)
        e = eps[base["vulnerability"]]
        vuln[arch] = {"idx": idx, "eps": e, "entropy": entropy, "censored": int(torch.isinf(e).sum()),
                      "looks": looked.looks,
                      "base": next(c for c in conditions if c["setting"] == {"model": arch, **base})["measured"]}
    return vuln, conditions


def attack_change(ctx: config.Context, sizes: Sizes, nets: Mapping[str, nn.Module], X: torch.Tensor, y: torch.Tensor,
                  vuln: Mapping[str, Mapping], codes: Mapping[str, som.LayerCodes]) -> dict[str, dict]:
    """Per model, one L-inf PGD attack (``sizes.attack_eps``, ``sizes.pgd_steps``) on B3's inputs: the share of BMUs
    changed per layer (:func:`bmu_change`) and the share of predictions flipped."""
    change = {}
    for arch, model in nets.items():
        idx = vuln[arch]["idx"]
        adv = pgd(model, X[idx].to(ctx.device), y[idx].to(ctx.device), eps=sizes.attack_eps, steps=sizes.pgd_steps,
                  generator=ctx.generator(3)).cpu()
        flipped = float((train.logits(model, adv).argmax(1) != y[idx]).float().mean())
        change[arch] = {"per_layer": bmu_change(model, X[idx], adv, codes[arch]), "flipped": flipped}
    return change


#: The per-layer SOM statistics B2's record keeps.
B2_METRICS = ("units_used", "bmu_entropy", "purity", "mi", "nmi", "within_class_spread", "quantization_error",
              "topographic_error")


def b_evidence(nets: Mapping[str, nn.Module], codes: Mapping[str, som.LayerCodes], X: torch.Tensor, y: torch.Tensor,
               vuln: Mapping[str, Mapping], change: Mapping[str, Mapping], conditions: list, sizes: Sizes,
               seed: int = 0) -> dict:
    """What the judges of B1-B3 read (:mod:`mclib.claims.paper_b`), by claim: ``"B1"`` and ``"B2"`` per model
    :func:`code_evidence` of the shallowest and deepest layer's BMUs (B2 also the per-layer :data:`B2_METRICS`);
    ``"B3"`` per model the base setting's Spearman interval, censored inputs, setting and BMU change, and B3's
    condition map ``conditions`` (:func:`b3_study`). Each model's evidence carries its test accuracy on ``X`` (a model
    at chance makes B1-B3 inconclusive)."""
    acc = {a: {"test_acc": train.evaluate(nets[a], X, y)["acc"], "n_test": len(X)} for a in codes}
    ev = {a: {**code_evidence(c.bmus[c.layers[0]], c.bmus[c.layers[-1]], y, n_boot=sizes.n_boot, seed=seed),
              **acc[a]} for a, c in codes.items()}
    metrics = {a: {k: list(c.metrics[k]) for k in B2_METRICS} for a, c in codes.items()}
    spearman = {a: {"spearman": v["base"]["spearman"], "censored": v["censored"], "setting": dict(sizes.b3_base),
                    "bmu_change": change[a]["per_layer"], **acc[a]} for a, v in vuln.items()}
    return {"B1": {"models": ev}, "B2": {"models": ev, "metrics": metrics},
            "B3": {"models": spearman, "conditions": conditions}}


# --- plots
def plot_conditions(conditions: Sequence[Mapping], key: str = "spearman", effect: float = 0.15, ax=None,
                    label_keys: Sequence[str] | None = None, xlabel: str = "Spearman's rho"):
    """Dot-and-whisker plot of a condition map: one row per setting, the estimate of ``measured[key]`` with its
    interval, zero and ``±effect`` marked, one colour per ``setting["model"]`` (if recorded). Row labels show the
    setting's ``label_keys`` (default: the keys, other than ``model``, whose value differs between settings)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.32 * len(conditions) + 1.2), constrained_layout=True)
    models_ = list(dict.fromkeys(str(c["setting"].get("model", "")) for c in conditions))
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(models_)}
    ypos = np.arange(len(conditions))[::-1]
    if label_keys is None:
        keys_ = list(dict.fromkeys(k for c in conditions for k in c["setting"] if k != "model"))
        label_keys = [k for k in keys_ if len({str(c["setting"].get(k)) for c in conditions}) > 1] or keys_
    labels = []
    for yp, c in zip(ypos, conditions):
        iv, st = c["measured"][key], c["setting"]
        est, lo, hi = (np.nan if iv.get(k) is None else iv[k] for k in ("estimate", "lo", "hi"))
        colour = colours[str(st.get("model", ""))]
        ax.errorbar([est], [yp], xerr=[[est - lo], [hi - est]], fmt="o", color=colour, ms=4, capsize=2)
        labels.append(", ".join(str(st[k]) for k in label_keys if k in st))
    ax.axvline(0, color="black", lw=0.8)
    for x in (-effect, effect):
        ax.axvline(x, color="grey", lw=0.8, ls="--")
    ax.set_yticks(ypos, labels, fontsize="small")
    ax.set_xlabel(f"{xlabel} (95% bootstrap interval); dashed: ±{effect:g}")
    if len(models_) > 1 or models_[0]:
        from matplotlib.lines import Line2D
        ax.legend([Line2D([], [], marker="o", color=colours[m], ls="") for m in models_], models_, fontsize="small",
                  loc="best")
    return ax


def plot_entropy_vs_eps(vuln: Mapping[str, Mapping], seed: int = 0):
    """Per model, each input's label entropy at its shallow BMU (jittered, from a generator seeded ``seed`` for each
    model) against its smallest flipping radius (inputs never flipped drawn just above the largest radius), titled
    with the base setting's Spearman interval. Returns the figure."""
    from mclib import plots

    fig, axes = plots.subplots(1, len(vuln), figsize=(min(9, 4.5 * len(vuln)), 3.8), squeeze=False)
    for ax, (arch, v) in zip(axes[0], vuln.items()):
        e = v["eps"].clone()
        e[torch.isinf(e)] = float(e[torch.isfinite(e)].max()) * 1.05 if torch.isfinite(e).any() else 1.0
        jitter = (torch.rand(len(e), generator=torch.Generator().manual_seed(seed)) - 0.5) * 0.05
        ax.scatter(v["entropy"] + jitter, e, s=8, alpha=0.5)
        sp = v["base"]["spearman"]
        ax.set_xlabel(f"label entropy at BMU of {v['base']['module']} (bits)")
        ax.set_ylabel("smallest flipping L-inf radius")
        ax.set_title(f"{arch}: Spearman {sp['estimate']:.2f} [{sp['lo']:.2f}, {sp['hi']:.2f}]", fontsize=10)
    return fig


def plot_bmu_change(change: Mapping[str, Mapping]):
    """The share of BMUs changed by the attack against relative depth, one line per model (:func:`attack_change`).
    Returns the figure."""
    from mclib import plots

    fig, ax = plots.subplots(figsize=(6.4, 3.4))
    for arch, ch in change.items():
        vals = list(ch["per_layer"].values())
        ax.plot(np.linspace(0, 1, len(vals)), vals, "o-", label=f"{arch} (attack flips {ch['flipped']:.0%})")
    ax.set_xlabel("relative depth (0 = first layer, 1 = logits)")
    ax.set_ylabel("share of BMUs changed")
    ax.set_ylim(0, 1.02)
    ax.legend()
    return fig


def plot_condition_figure(conditions: Sequence[Mapping]):
    """B3's condition map as the chapter shows it: :func:`plot_conditions` sized to its rows, small row labels and
    legend. Returns the figure."""
    import matplotlib.pyplot as plt

    ax = plot_conditions(conditions)
    ax.tick_params(axis="y", labelsize=9)
    ax.figure.set_size_inches(8, 0.3 * len(conditions) + 1.6)
    if ax.get_legend():
        plt.setp(ax.get_legend().get_texts(), fontsize=9)
    return ax.figure

