"""The C claims across architectures and datasets (Zhao et al., ICLR 2020): claim C8.

C8 reads the records of C1-C7 as this build wrote them and judges each claim per architecture with the claim's own
judge (:func:`mclib.claims.paper_c.c8_conditions`):

* :class:`Sizes` -- the datasets every C claim must be measured on (``mclib/presets/across.toml``);
* :func:`records_of` -- the records' values, each naming its architecture and dataset (the preset's where the
  record names none): exactly what :func:`mclib.claims.paper_c.judge_c8` reads under ``records``;
* :func:`measured` -- the sentence for C8's record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from mclib import config

__all__ = ["Sizes", "records_of", "measured"]


@dataclass(frozen=True)
class Sizes(config.Sizes):
    """The sizes of chapter C8 (``c8_across_architectures``) from ``mclib/presets/across.toml``: ``datasets``,
    every dataset on which each C claim must be measured before C8 can hold."""

    FILE: ClassVar[str] = "across"
    datasets: tuple[str, ...]


def records_of(records: Mapping[str, Mapping[str, Any]], preset: config.Preset) -> dict[str, dict[str, Any]]:
    """Claim id -> the values of its record (``records``: id -> record, :func:`mclib.claims.core.load_needed`), with the
    preset's ``arch`` and ``dataset`` where the record names none."""
    return {cid: {"arch": preset.arch, "dataset": preset.dataset, **rec["values"]} for cid, rec in records.items()}


def measured(datasets: Mapping[str, set[str]], table, required: Sequence[str]) -> str:
    """C8's sentence: the architectures measured, the datasets per claim (``datasets``: claim id -> the datasets its
    record names, :func:`mclib.claims.paper_c.datasets_of`) and those required, and each claim's status per
    architecture (``table``: one row per condition with ``claim``, ``arch``, ``status``)."""
    archs = sorted(table["arch"].unique()) if len(table) else []
    return (f"architectures {', '.join(archs)}; datasets measured per claim: "
            + "; ".join(f"{c}: {', '.join(sorted(v))}" for c, v in datasets.items())
            + f" (required: {', '.join(required)}); "
            + "; ".join(f"{c}: " + ", ".join(f"{r.arch} {r.status}" for r in g.itertuples())
                        for c, g in table.groupby("claim")))
