"""The own-model chapter's study (``notebooks/own_model.ipynb``): the book's analyses run on a model the reader
brings -- a third-party CIFAR ResNet -- with the detection chapter's sizes (:class:`mclib.studies.detection.Sizes`).

* :func:`fit_fresh` -- a freshly initialised model trained like the book's recipe (a reader's own training loop);
* :func:`pgd_strength_study` -- PGD stopped at its first success and at full strength against the barrier detector,
  with the direction each cross-validation fold's detector learned.
"""
from __future__ import annotations

import warnings
from typing import Callable

import pandas as pd
import torch
from torch import nn

from mclib import config, detect, train
from mclib.attacks import evasion
from mclib.studies import detection

__all__ = ["fit_fresh", "pgd_strength_study"]


def fit_fresh(ctx: config.Context, make: Callable[[], nn.Module], X: torch.Tensor, y: torch.Tensor, seed: int,
              max_epochs: int = 3) -> nn.Module:
    """``make()`` initialised under ``torch.manual_seed(seed)``, trained on ``(X, y)`` by :func:`mclib.train.fit` with
    the preset's batch size and learning rate and the recipe's other defaults (no augmentation), for at most
    ``max_epochs`` of the preset's epochs (minibatches from ``ctx.generator(seed)``). Returns it in eval mode."""
    torch.manual_seed(seed)
    model = make()
    train.fit(model, X, y, epochs=min(ctx.preset.epochs, max_epochs), batch_size=ctx.preset.batch_size,
              lr=ctx.preset.lr, generator=ctx.generator(seed), device=ctx.device, progress=False,
              **{k: v for k, v in train.recipe_defaults(ctx).items() if k != "augment"})
    return model.eval()


def pgd_strength_study(model: nn.Module, X_src: torch.Tensor, y_src: torch.Tensor, references: detect.References,
                       sizes: detection.Sizes, eps: float, generator: Callable[[], torch.Generator], seed: int = 0,
                       device=None) -> pd.DataFrame:
    """PGD (``eps``, ``sizes.pgd_steps``) stopped at its first success and at full strength, from the same random
    starts (a fresh ``generator()`` each), on the (correctly classified) inputs ``(X_src, y_src)``, against the first
    ``sizes.n`` of them as clean inputs: :func:`mclib.studies.detection.strength_table`, the direction each fold's
    barrier-max threshold learned (``sizes.folds``, "folds disagree" when they do) and that detector's
    cross-validated AUROC. One row per strength."""
    on = (lambda t: t.to(device)) if device is not None else (lambda t: t)
    clean_idx = torch.arange(min(sizes.n, len(X_src)))
    F_clean = detect.extract(model, X_src[clean_idx], references, sizes.num_points)
    attacked = {}
    for name, stop in (("PGD (first success)", True), ("PGD (full strength)", False)):
        g = generator()           # the same random starts for both strengths
        attack = lambda x, t, idx, stop=stop, g=g: evasion.pgd(   # noqa: E731
            model, on(x), on(t), eps, steps=sizes.pgd_steps, generator=g, stop_on_success=stop).cpu()
        Xa, src, _, _ = detect.collect_adversarial(model, attack, X_src, y_src, sizes.n)
        attacked[name] = (detect.extract(model, Xa, references, sizes.num_points), Xa - X_src[src], src)
    table = detection.strength_table(F_clean, {k: (f, d) for k, (f, d, _) in attacked.items()})
    threshold = lambda: detect.ThresholdDetector("barrier_max")  # noqa: E731
    with warnings.catch_warnings():     # folds that disagree on the direction: the table's last row says so
        warnings.filterwarnings("ignore", message=".*disagree on the learned direction")
        auroc, _ = detection.detection_table(F_clean.table, clean_idx.numpy(),
                                             {k: (f.table, s.numpy()) for k, (f, _, s) in attacked.items()},
                                             {"threshold: barrier max": threshold}, folds=sizes.folds, seed=seed)
        for name, (f, _, s) in attacked.items():   # the direction each fold's detector learned: part of the result
            try:
                out = detect.cross_val_scores(threshold, F_clean.table, f.table, clean_idx.numpy(), s.numpy(),
                                              sizes.folds, seed, return_detectors=True)
                dirs = sorted(set(d for d in detect.fold_directions(out[3]).values() if d))
                table.loc[name, "learned direction"] = " / ".join(dirs) + (" (folds disagree)" if len(dirs) > 1 else "")
            except ValueError as err:        # too few adversarial examples for the folds
                table.loc[name, "learned direction"] = f"n/a ({err})"
    table["AUROC (threshold: barrier max)"] = auroc.set_index("attack")["auroc"]
    return table
