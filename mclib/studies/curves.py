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

The chapter reads its sizes as :class:`Sizes` (``curves.toml``) and runs as :class:`Chapter`: the endpoints
(:meth:`Chapter.endpoints`), the paths (:meth:`Chapter.paths`) and exactly what C1's judge reads
(:meth:`Chapter.evidence`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

from mclib import config, curves, data, train

__all__ = ["KINDS", "PathResult", "connect", "path_evidence", "evidence", "table", "measured", "Sizes", "Chapter", "seeds_label"]

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


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of chapter C1 (``c1_curves``) from ``mclib/presets/curves.toml``; the file's comments say what each
    one is."""

    FILE: ClassVar[str] = "curves"
    archs: tuple[str, ...]
    datasets: dict[str, str]
    seed_pairs: tuple[tuple[int, ...], ...]
    num_bends: int
    curve_epochs: int
    curve_batch_size: int
    curve_optimizer: str
    curve_lr: float
    curve_weight_decay: float
    n_t: int
    n_bn: int

    def archs_of(self, i: int) -> tuple[str, ...]:
        """The architectures connected at the ``i``-th pair of endpoint seeds: all at the first, the main one (the
        first of ``archs``) at every other (training-seed variation)."""
        return self.archs if i == 0 else self.archs[:1]


def seeds_label(seeds: Sequence[int]) -> str:
    """``(0, 1)`` -> ``"0/1"``: how the chapter and its record name a pair of endpoint seeds."""
    return "/".join(map(str, seeds))


@dataclass
class Chapter:
    """Chapter C1's study: the run ``ctx``, its ``sizes``, each architecture's ``dataset`` and that dataset's
    ``train_sets`` (the preset's ``n_train``) and ``test_sets`` (``n_test``), the t grid ``ts`` and the endpoint
    seed ``pairs`` (the run's seed added). :meth:`endpoints` trains the endpoints, :meth:`paths` the paths between
    them, :meth:`evidence` returns what C1's judge reads."""

    ctx: Any
    sizes: Sizes
    dataset: dict[str, str]
    train_sets: dict
    test_sets: dict
    ts: Any
    pairs: list[tuple[int, ...]]

    @classmethod
    def prepare(cls, ctx, sizes: Sizes) -> "Chapter":
        """Each architecture on its own dataset (:func:`mclib.data.dataset_of`), the data, the grid and the seeds."""
        p = ctx.preset
        dataset = {arch: data.dataset_of(arch, sizes.datasets, p.dataset) for arch in sizes.archs}
        train_sets = data.load_each(dataset.values(), "train", n=p.n_train, data_root=ctx.data_root)
        test_sets = data.load_each(dataset.values(), "test", n=p.n_test, data_root=ctx.data_root)
        pairs = [tuple(ctx.seed + int(s) for s in pair) for pair in sizes.seed_pairs]
        return cls(ctx, sizes, dataset, train_sets, test_sets, curves.grid(sizes.n_t), pairs)

    @property
    def first(self) -> str:
        """The label of the first pair of endpoint seeds (every architecture and path is measured there)."""
        return seeds_label(self.pairs[0])

    def describe(self) -> str:
        """The chapter's scale in one line."""
        return ("; ".join(f"{name}: {len(self.train_sets[name][0])} train / {len(self.test_sets[name][0])} test images"
                          for name in self.train_sets)
                + f"; architectures {', '.join(f'{a} ({d})' for a, d in self.dataset.items())}; "
                f"endpoint seed pairs {[seeds_label(p) for p in self.pairs]}; {len(self.ts)} values of t; "
                f"device {self.ctx.device}")

    def endpoints(self) -> dict[tuple[str, int], Any]:
        """(arch, seed) -> the trained run (:meth:`mclib.config.Context.model`, the standard recipe on the
        architecture's dataset): every architecture at the first pair of seeds, the main one at every pair."""
        return {(arch, s): self.ctx.model(train.recipe_for(self.ctx, arch=arch, seed=s, dataset=self.dataset[arch]),
                                          progress=False)
                for i, pair in enumerate(self.pairs) for arch in self.sizes.archs_of(i) for s in pair}

    def connect(self, runs, arch: str, pair, kinds) -> dict[str, PathResult]:
        """The paths of ``kinds`` between the endpoints of ``pair`` (:func:`connect`): trained on the architecture's
        training split, BatchNorm re-estimated on its first ``n_bn`` images, evaluated on its test split."""
        S = self.sizes
        (X, y), (Xt, yt) = self.train_sets[self.dataset[arch]], self.test_sets[self.dataset[arch]]
        return connect(runs[arch, pair[0]].model, runs[arch, pair[1]].model, X, y, Xt, yt, self.ts,
                       bn_data=X[: S.n_bn], generator=self.ctx.generator(1), kinds=kinds, num_bends=S.num_bends,
                       epochs=S.curve_epochs, batch_size=S.curve_batch_size, lr=S.curve_lr,
                       weight_decay=S.curve_weight_decay, optimizer=S.curve_optimizer, device=self.ctx.device)

    def paths(self, runs) -> dict[str, dict[str, dict[str, PathResult]]]:
        """Seed-pair label -> architecture -> kind -> :class:`PathResult`: the first pair of endpoint seeds gets
        all three paths (:data:`KINDS`), the others the line and the Bezier curve the claim reads."""
        return {seeds_label(pair): {arch: self.connect(runs, arch, pair, KINDS if i == 0 else ("line", "bezier"))
                                    for arch in self.sizes.archs_of(i)}
                for i, pair in enumerate(self.pairs)}

    def n_test(self) -> dict[str, int]:
        """Architecture -> the number of test images of its dataset."""
        return {arch: len(self.test_sets[self.dataset[arch]][0]) for arch in self.sizes.archs}

    def evidence(self, paths) -> dict[str, Any]:
        """C1's values (:func:`evidence`): the first pair of seeds' paths, the other pairs under ``seed_pairs``."""
        return evidence(paths[self.first], self.n_test(), more={k: v for k, v in paths.items() if k != self.first},
                        label=f"seeds {self.first}", datasets=self.dataset)

    def measured(self, paths) -> str:
        """C1's sentence for the record: the test images per architecture, the grid, and :func:`measured`."""
        n_test = self.n_test()
        return (", ".join(f"{arch}: {n_test[arch]} {self.dataset[arch]} test images" for arch in self.sizes.archs)
                + f"; {len(self.ts)} values of t: " + measured(paths, self.dataset))


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
