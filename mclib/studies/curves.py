"""Curves between two untampered models, as chapter C1 studies them (Garipov et al. 2018; Zhao et al. 2020 sec. 2).

For each architecture and each pair of endpoint seeds, the straight line, a Bezier curve and a polygonal chain
are trained between the same two endpoints (:func:`connect`) and evaluated along t. The claim reads, per path,
the accuracy drop from the worse endpoint to the worst point along t. Both are measured on the same test images,
so the drop is a *paired* difference, and the evidence keeps its 2x2 table of per-image correctness
(:func:`mclib.curves.paired_table`): its interval (:func:`mclib.stats.paired_difference_from_counts`) counts
only the images on which the two points disagree.

Training-seed variation: the chapter repeats the study for every pair of endpoint seeds in its preset, and the
claim must hold for each pair (:func:`mclib.claims.paper_c.judge_c1`), so that a verdict does not rest on one
pair of trained models (whose weights move with the machine's float rounding).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mclib import curves

__all__ = ["KINDS", "PathResult", "connect", "path_evidence", "evidence", "table", "measured"]

#: the paths the chapter compares; the claim reads the line and the Bezier curve
KINDS = ("line", "bezier", "polychain")


@dataclass
class PathResult:
    """One path between two endpoints: ``frame`` (loss and accuracy along t, :func:`mclib.curves.evaluate_along`),
    ``summary`` (:func:`mclib.curves.summary`), ``table`` (the 2x2 correctness table of the worse endpoint and the
    worst point, :func:`mclib.curves.paired_table`) and the training ``seconds``."""

    kind: str
    frame: Any  # pandas.DataFrame
    summary: dict[str, float]
    table: dict[str, int]
    seconds: float
    curve: curves.Curve = field(repr=False)


def connect(m0: nn.Module, m1: nn.Module, X: torch.Tensor, y: torch.Tensor, Xt: torch.Tensor, yt: torch.Tensor,
            ts: Sequence[float], *, num_bends: int, epochs: int, batch_size: int, lr: float, weight_decay: float,
            optimizer: str, generator: torch.Generator | None = None, bn_data: torch.Tensor | None = None,
            device: torch.device | str | None = None, kinds: Sequence[str] = KINDS) -> dict[str, PathResult]:
    """Every path of ``kinds`` between ``m0`` and ``m1``, trained on ``(X, y)`` (the line has nothing to train) and
    evaluated on ``(Xt, yt)`` at ``ts`` (which must include 0 and 1). Each curve's training draws from a copy of
    ``generator``'s state, so every kind sees the same batches and t samples."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds must be among {KINDS}, got {unknown}")
    state = generator.get_state() if generator is not None else None
    out = {}
    for kind in kinds:
        curve = curves.line(m0, m1) if kind == "line" else curves.Curve([m0, m1], kind=kind, num_bends=num_bends)
        gen = None
        if state is not None:
            gen = torch.Generator()
            gen.set_state(state)
        start = time.perf_counter()
        curves.train_curve(curve, X, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           optimizer=optimizer, generator=gen, device=device, progress=False)
        seconds = time.perf_counter() - start
        bn = bn_data if curve.has_bn else None
        frame = curves.evaluate_along(curve, ts, Xt, yt, bn_data=bn)
        s = curves.summary(frame)
        table = curves.paired_table(curve, s["t_end"], s["t_worst"], Xt, yt, bn_data=bn)
        out[kind] = PathResult(kind, frame, s, table, seconds, curve)
    return out


def path_evidence(result: PathResult) -> dict[str, Any]:
    """What :func:`mclib.claims.paper_c.judge_c1` reads of one path: the worse endpoint's and the worst point's
    accuracies, where they lie, the loss barrier, and the 2x2 table that pairs them."""
    s = result.summary
    return {"end_acc": s["end_acc"], "worst_acc": s["worst_acc"], "t_end": s["t_end"], "t_worst": s["t_worst"],
            "loss_barrier": s["loss_barrier"], "table": dict(result.table)}


def evidence(results: Mapping[str, Mapping[str, PathResult]], n_test: int | Mapping[str, int],
             more: Mapping[str, Mapping[str, Mapping[str, PathResult]]] | None = None,
             label: str = "seeds 0/1", datasets: Mapping[str, str] | None = None) -> dict[str, Any]:
    """C1's values: ``{"n_test", "archs": {arch: {kind: path_evidence, "dataset", "n_test"}}}`` for the first pair
    of endpoint seeds (``label``), and ``seed_pairs`` (a label such as ``"2/3"`` -> the same values) for the others
    in ``more``.

    ``datasets`` (architecture -> dataset name, :func:`mclib.data.dataset_of`) names the dataset each architecture
    was trained and measured on, so that C8 judges datasets as well as architectures
    (:func:`mclib.claims.paper_c.datasets_of`); ``n_test`` is the number of test images, one for all or one per
    architecture (datasets of different sizes). The top-level ``n_test`` is the smallest."""
    def n_of(arch):
        return int(n_test[arch]) if isinstance(n_test, Mapping) else int(n_test)

    def entry(arch, paths):
        out: dict[str, Any] = {kind: path_evidence(r) for kind, r in paths.items()}
        out["n_test"] = n_of(arch)
        if datasets and arch in datasets:
            out["dataset"] = str(datasets[arch])
        return out

    def archs(res):
        return {arch: entry(arch, paths) for arch, paths in res.items()}

    n_all = min(n_test.values()) if isinstance(n_test, Mapping) else n_test
    values: dict[str, Any] = {"n_test": int(n_all), "archs": archs(results)}
    if more:
        values["seeds_label"] = label
        values["seed_pairs"] = {k: {"n_test": int(n_all), "archs": archs(res)} for k, res in more.items()}
    return values


def table(paths: Mapping[str, Mapping[str, Mapping[str, PathResult]]], datasets: Mapping[str, str] | None = None):
    """The chapter's table: one row per pair of endpoint seeds, architecture (and its dataset, where ``datasets``
    names one) and path, with the worse endpoint's
    and the worst point's accuracy (%), the drop and its paired 95% interval (points), the maximum error, the loss
    barrier and the training seconds. ``paths``: seed-pair label -> architecture -> kind -> :class:`PathResult`."""
    import pandas as pd

    from mclib.stats import paired_difference_from_counts

    rows = []
    for seeds, by_arch in paths.items():
        for arch, results in by_arch.items():
            for kind, r in results.items():
                s, t = r.summary, r.table
                iv = paired_difference_from_counts(t["both"], t["ref_only"], t["point_only"], t["neither"])
                where = {"dataset": datasets[arch]} if datasets and arch in datasets else {}
                rows.append({"seeds": seeds, "arch": arch, **where, "path": kind, "endpoint acc (%)": 100 * s["end_acc"],
                             "worst acc (%)": 100 * s["worst_acc"], "at t": s["t_worst"],
                             "drop (points)": 100 * s["acc_drop"], "95% interval": f"[{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]",
                             "max error (%)": 100 * s["max_error"], "loss barrier": s["loss_barrier"],
                             "training (s)": r.seconds})
    return pd.DataFrame(rows)


def measured(paths: Mapping[str, Mapping[str, Mapping[str, PathResult]]], datasets: Mapping[str, str] | None = None) -> str:
    """One sentence per pair of endpoint seeds and architecture (with its dataset, where ``datasets`` names one):
    the endpoints' accuracy and the worst point of each path, for the claim record's ``measured`` text."""
    parts = []
    for seeds, by_arch in paths.items():
        for arch, r in by_arch.items():
            line, bez = r["line"].summary, r["bezier"].summary
            on = f" on {datasets[arch]}" if datasets and arch in datasets else ""
            text = (f"{arch}{on}, seeds {seeds}: worse endpoint {100 * line['end_acc']:.1f}% test acc, worst along the line "
                    f"{100 * line['worst_acc']:.1f}% (max error {100 * line['max_error']:.1f}%), Bezier "
                    f"{100 * bez['worst_acc']:.1f}% (max error {100 * bez['max_error']:.1f}%)")
            if "polychain" in r:
                text += f", polychain {100 * r['polychain'].summary['worst_acc']:.1f}%"
            parts.append(text)
    return "; ".join(parts)
