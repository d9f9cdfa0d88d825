"""Repair of error-injected models, as chapter C4 studies it (Zhao et al., ICLR 2020, sec. 3.2; Liu et al. 2017).

Two untampered endpoints (one pair of seeds) get the same ``n_chosen`` errors injected
(:func:`mclib.attacks.backdoor.inject_errors`): the first evaluation images both classify right are pushed to the
label ``y + 1 (mod 10)`` by changing one layer. A path between the two injected models is then trained on N
bonafide images (:func:`mclib.studies.bonafide.sweep`) and measured along t: clean accuracy on the evaluation
images (the chosen ones left out) and the injection success, the fraction of the chosen images still given their
injected label.

* :func:`injected_pair` -- the injected endpoints (:class:`InjectedPair`), or what was missing to inject any;
* :func:`injected_for` -- the same with the chapter's sizes and data (:class:`mclib.studies.bonafide.RepairData`);
* :func:`sweep` -- the repair along t for every N;
* :func:`evidence` -- exactly what :func:`mclib.claims.paper_c.judge_c4` reads, and the sentence for the record.

The injection success is a rate over the chosen images, a sample of the errors an attacker could inject, and
C4 judges its interval: a count over five images ("0 of 5 survive") flipped with one image's rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from mclib import train
from mclib.attacks import backdoor
from mclib.studies import bonafide

__all__ = ["InjectedPair", "injected_pair", "injected_for", "sweep", "evidence"]


@dataclass
class InjectedPair:
    """The endpoints of one pair of seeds with the same errors injected. ``injected`` is None when none could be
    injected, and ``missing`` says why. ``ends``: one row per seed and model (clean, injected) with its clean
    accuracy and injection success; ``exclude`` marks the chosen images in the evaluation set (left out of the
    clean accuracy). ``dataset``: the dataset the endpoints were trained on and the errors chosen from (None: the
    run's preset dataset)."""

    arch: str
    seeds: tuple[int, ...]
    ends: Any  # pandas.DataFrame
    injected: list | None = None
    missing: str | None = None
    X_chosen: torch.Tensor | None = field(default=None, repr=False)
    wrong: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long), repr=False)
    exclude: torch.Tensor | None = field(default=None, repr=False)
    layer: str | None = None
    dataset: str | None = None


def injected_pair(ctx, arch: str, seeds: Sequence[int], X_eval: torch.Tensor, y_eval: torch.Tensor,
                  X_train: torch.Tensor, y_train: torch.Tensor, n_chosen: int, steps: int,
                  dataset: str | None = None) -> InjectedPair:
    """Train (or load) the untampered endpoints of ``seeds`` with the run's standard recipe for ``arch`` (on
    ``dataset``, which ``X_eval`` and ``X_train`` must come from; None: the preset's dataset), choose
    the first ``n_chosen`` evaluation images that both classify right, and inject the error ``y + 1 (mod 10)``
    on each, into the default layer (:func:`mclib.attacks.backdoor.default_layer`), keeping ``(X_train,
    y_train)`` right. When no image is classified right by both (a model at chance), nothing is injected and
    ``missing`` names the accuracies."""
    import pandas as pd

    seeds = tuple(int(s) for s in seeds)
    on = {"dataset": dataset} if dataset is not None else {}
    clean = [ctx.model(train.recipe_for(ctx, arch=arch, seed=s, **on), progress=False).model for s in seeds]
    right = [train.logits(m, X_eval).argmax(1) == y_eval for m in clean]
    chosen = torch.nonzero(torch.stack(right).all(0)).flatten()[: int(n_chosen)]
    if len(chosen) == 0:   # degenerate evidence: C4 is then inconclusive, naming what was missing
        acc = [float(r.float().mean()) for r in right]
        missing = (f"{arch}: no evaluation image is classified correctly by both untampered models (test accuracy "
                   f"{100 * acc[0]:.1f}% and {100 * acc[1]:.1f}%), so no error could be injected")
        ends = pd.DataFrame([{"arch": arch, "seed": s, "model": "clean", "layer": None, "clean_acc": acc[i],
                              "injection_success": float("nan")} for i, s in enumerate(seeds)])
        return InjectedPair(arch, seeds, ends, missing=missing, dataset=dataset)
    X_chosen, wrong = X_eval[chosen], (y_eval[chosen] + 1) % 10
    exclude = torch.zeros(len(X_eval), dtype=torch.bool)
    exclude[chosen] = True   # the chosen images are left out of the clean accuracy
    layer = backdoor.default_layer(clean[0])
    injected = [backdoor.inject_errors(m, X_chosen, wrong, X_train, y_train, layer=layer, steps=steps,
                                       generator=ctx.generator(20 + s)) for s, m in zip(seeds, clean)]
    ends = pd.DataFrame([{"arch": arch, "seed": s, "model": name, "layer": layer,
                          "clean_acc": train.evaluate(m, X_eval[~exclude], y_eval[~exclude])["acc"],
                          "injection_success": backdoor.injection_success(m, X_chosen, wrong)}
                         for i, s in enumerate(seeds) for name, m in (("clean", clean[i]), ("injected", injected[i]))])
    return InjectedPair(arch, seeds, ends, injected, None, X_chosen, wrong, exclude, layer, dataset)


def injected_for(ctx, sizes: bonafide.Sizes, data: bonafide.RepairData, arch: str, seeds: Sequence[int]) -> InjectedPair:
    """:func:`injected_pair` for ``arch`` on its own dataset of the repair chapters' ``data``
    (:class:`mclib.studies.bonafide.RepairData`), with the chapter's ``n_chosen`` and ``inject_steps``."""
    (X_train, y_train), (X_eval, y_eval) = data.train_of(arch), data.eval_of(arch)
    return injected_pair(ctx, arch, seeds, X_eval, y_eval, X_train, y_train, n_chosen=sizes.n_chosen,
                         steps=sizes.inject_steps, dataset=data.dataset[arch])


def sweep(pair: InjectedPair, X_test: torch.Tensor, y_test: torch.Tensor, ns, ts, *, steps: int, batch_size: int,
          generator_seed: int, **budget):
    """The repair of ``pair`` for every bonafide size in ``ns``, along ``ts`` (:func:`mclib.studies.bonafide.sweep`,
    the chosen images excluded from the bonafide data and the clean accuracy), with the injection success as an
    extra column ``injection``. None when nothing was injected."""
    if pair.injected is None:
        return None
    X_chosen, wrong = pair.X_chosen, pair.wrong
    return bonafide.sweep(
        pair.injected[0], pair.injected[1], X_test, y_test, ns, ts,
        metrics=lambda Xe, ye: {"injection": lambda m: backdoor.injection_success(m, X_chosen, wrong)},
        steps=steps, batch_size=batch_size, generator_seed=generator_seed, exclude=pair.exclude, **budget).frame


def evidence(pair: InjectedPair, frame, t: float) -> tuple[dict[str, Any], str]:
    """C4's values for one pair of endpoints at the path point ``t`` -- ``{"arch", "t", "n_eval", "n_chosen",
    "ref_acc", "ref_injection", "points": [{"N", "acc", "injection"}], "along", "endpoints"}`` (``ref_*``: the
    injected endpoints' mean), or ``{"arch", "missing", "endpoints"}`` when nothing was injected -- and the
    sentence that describes them. Both carry ``dataset`` where the pair names one (C8 reads it,
    :func:`mclib.claims.paper_c.datasets_of`)."""
    import numpy as np

    on = {"dataset": pair.dataset} if pair.dataset is not None else {}
    if pair.injected is None:
        return {"arch": pair.arch, **on, "missing": pair.missing, "endpoints": pair.ends.to_dict("records")}, pair.missing
    at_t = frame[np.isclose(frame["t"], t)].set_index("N")[["acc", "injection"]]
    e = pair.ends.query("model == 'injected'")
    ref, ref_inj = float(e["clean_acc"].mean()), float(e["injection_success"].mean())
    k = len(pair.wrong)
    parts = [f"N={n}: {100 * r['acc']:.1f}% clean / {round(r['injection'] * k)} of {k} injected errors survive"
             for n, r in at_t.iterrows()]
    values = {"arch": pair.arch, **on, "t": t, "n_eval": int((~pair.exclude).sum()), "n_chosen": k, "ref_acc": ref,
              "ref_injection": ref_inj, "points": [{"N": int(n), "acc": r["acc"], "injection": r["injection"]}
                                                    for n, r in at_t.iterrows()],
              "along": frame.to_dict("records"), "endpoints": pair.ends.to_dict("records")}
    text = (f"{pair.arch}{' on ' + pair.dataset if pair.dataset else ''}: {k} injected errors in layer {pair.layer!r}; injected endpoints {100 * ref:.1f}% "
            f"clean, {100 * ref_inj:.0f}% injection success; path point t={t:g}: " + "; ".join(parts))
    return values, text
