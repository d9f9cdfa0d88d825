"""Recording each claim's measured value against the paper's, and the reproduction report.

Every notebook ends with :func:`record` for the claims it tests; each call writes one JSON file,
``<build>/claims/<id>.json``. The files hold no timestamps, so a preset and a seed give byte-identical
claims twice in a row on CPU; the build's date, preset and device go to ``_meta.json`` (written by the
runner). :func:`report` gathers every claim of :data:`CATALOGUE` -- recorded or not -- into one table.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mclib import config

PAPERS = {
    "A": "Input space mode connectivity (Vrabel et al., ICLR 2025)",
    "B": "Internal codes and adversarial vulnerability (Lee & Vijayan)",
    "C": "Mode connectivity and adversarial robustness (Zhao et al., ICLR 2020)",
}

#: Claim id -> (short statement, the paper's number). Mirrors the project's CLAIMS list.
CATALOGUE: dict[str, tuple[str, str]] = {
    "A1": ("Real inputs of one class can show a loss barrier on the straight line between them",
           "GoogLeNet/ImageNet examples (jackfruit, banana, golf ball)"),
    "A2": ("One bypass point removes the barrier, and B' is nearly indistinguishable from B",
           "max pixel of B'-B is 1-5% of the image's max pixel"),
    "A3": ("Paths between connected inputs in trained models are simple, near-linear", "qualitative"),
    "A4": ("Interpolated inputs are connected like real ones", "qualitative"),
    "A5": ("Synthetic inputs (FVO from noise) are modes and are connected", "qualitative"),
    "A6": ("Untrained networks show input-space connectivity too",
           "2 bypass rounds, losses about 5e-4..5e-3 after"),
    "A7": ("Barriers evolve during early training", "first 30 batches, 10 classes x 5 FVO pairs"),
    "A8": ("Real-real pairs have low barriers, real-adversarial pairs high ones",
           "median barrier 0.93 (real-real) vs 5.96 (real-adversarial)"),
    "A9": ("Barrier heights detect adversarial examples", "single threshold accuracy ~0.89, AUROC ~0.94"),
    "A10": ("Connectivity is a geometric effect of high dimension, explained by percolation",
            "site p_c: 2D 0.5927, 3D 0.3116, 4D 0.1969, 5D 0.1408, 6D 0.1090, 7D 0.0889"),
    "B1": ("Shallow layers map inputs onto homogeneous codes", "ResNet-18/50, per composite layer"),
    "B2": ("Deep layers turn homogeneous codes into diverse codes", "ResNet-18/50, per composite layer"),
    "B3": ("Homogeneous codes underlie vulnerability to adversarial perturbations", "qualitative"),
    "C1": ("Untampered models are joined by high-accuracy curves where the straight line has a barrier",
           "VGG16 CIFAR-10: line max error 90% vs Bezier 7.01%"),
    "C2": ("A path between two backdoored models trained on limited bonafide data removes the backdoor",
           "t=0.1: 2500 samples 88% clean / 1.1% ASR; 50 samples 63% / 2.5%"),
    "C3": ("Path repair beats fine-tuning, training from scratch, pruning and weight noise",
           "fine-tune 84/1.5 and 46/2.8; pruning 88/43 and 81/82"),
    "C4": ("Paths also repair error-injected models", "88-92% clean accuracy, 0% injection success"),
    "C5": ("The repair holds against an attacker who knows the path", "repaired region narrows to t in [0.25, 0.75]"),
    "C6": ("A barrier in robustness loss lies between a regular and an adversarially trained model; standard loss has none",
           "PGD linf eps 8/255, 10 steps, step 2/255"),
    "C7": ("Robustness loss correlates with the largest input-Hessian eigenvalue along the path",
           "Pearson 0.71, 0.88, 0.86 for three model pairs"),
    "C8": ("These hold across architectures and datasets", "VGG/ResNet, CIFAR-10/SVHN"),
}


def claims_dir() -> Path:
    """``<build>/claims``, created if missing (see :func:`mclib.config.build_dir`)."""
    path = config.build_dir() / "claims"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    """JSON-friendly copy: numpy scalars/arrays and tensors become Python numbers/lists, floats rounded."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.6g}")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record(
    id: str,
    statement: str,
    paper: str,
    measured: str,
    criterion: str,
    holds: bool,
    values: Mapping[str, Any] | None = None,
    preset: str | None = None,
    chapter: str | None = None,
) -> dict:
    """Record one claim's outcome and return the record.

    ``measured`` is the sentence a reader sees (numbers included); ``criterion`` says what "holds"
    means, decided before looking at the number; ``values`` keeps the raw numbers for later use.
    Ids must be those of :data:`CATALOGUE` (A1..A10, B1..B3, C1..C8).
    """
    if id not in CATALOGUE:
        raise ValueError(f"unknown claim id {id!r}; valid ids: {', '.join(CATALOGUE)}")
    if not isinstance(holds, (bool, np.bool_)):
        raise TypeError(f"holds must be a bool, got {type(holds).__name__}")
    rec = {
        "id": id,
        "paper_group": id[0],
        "statement": statement,
        "paper": paper,
        "measured": measured,
        "criterion": criterion,
        "holds": bool(holds),
        "values": _plain(dict(values or {})),
        "preset": preset,
        "chapter": chapter,
    }
    (claims_dir() / f"{id}.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def load_all() -> dict[str, dict]:
    """Every recorded claim, by id."""
    out = {}
    for p in sorted(claims_dir().glob("*.json")):
        if not p.name.startswith("_"):
            rec = json.loads(p.read_text())
            out[rec["id"]] = rec
    return out


def _order(cid: str) -> tuple[str, int]:
    m = re.fullmatch(r"([A-Z])(\d+)", cid)
    return (m.group(1), int(m.group(2))) if m else (cid, 0)


def report(records: Mapping[str, dict] | None = None):
    """One pandas table of every catalogued claim: paper group, id, claim, paper's value, measured, holds.

    Claims no notebook recorded appear with ``holds = "not run"``.
    """
    import pandas as pd

    records = load_all() if records is None else records
    rows = []
    for cid in sorted(CATALOGUE, key=_order):
        statement, paper = CATALOGUE[cid]
        rec = records.get(cid)
        rows.append({
            "paper": PAPERS[cid[0]],
            "id": cid,
            "claim": statement,
            "paper's value": rec["paper"] if rec else paper,
            "measured": rec["measured"] if rec else "",
            "holds": ("yes" if rec["holds"] else "no") if rec else "not run",
            "chapter": (rec.get("chapter") or "") if rec else "",
        })
    return pd.DataFrame(rows)


def summary(records: Mapping[str, dict] | None = None) -> dict[str, int]:
    """Counts of claims holding, failing and not run."""
    table = report(records)
    return {k: int((table["holds"] == v).sum()) for k, v in (("holding", "yes"), ("failing", "no"), ("not run", "not run"))}


def meta() -> dict:
    """The build's preset, device, seed and date (written by the runner), or {} outside a build."""
    path = claims_dir() / "_meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_markdown(records: Mapping[str, dict] | None = None) -> str:
    """The reproduction report as MyST markdown: one table per paper, each claim linked to its chapter.

    Links point at the built HTML pages, relative to ``notebooks/`` where the report notebook lives.
    """
    table = report(records)
    marks = {"yes": "✅ holds", "no": "❌ fails", "not run": "— not run"}
    out = []
    for group, name in PAPERS.items():
        out += [f"### {name}", "", "| id | claim | paper | measured | result |", "| --- | --- | --- | --- | --- |"]
        for _, row in table[table["id"].str.startswith(group)].iterrows():
            cid = row["id"]
            if row["chapter"]:
                # a link in a notebook's *output* is not resolved by Sphinx: point at the built page
                cid = f"[{cid}]({Path(row['chapter']).stem}.html)"
            paper = row["paper's value"]
            out.append(f"| {cid} | {_cell(row['claim'])} | {_cell(paper)} | "
                       f"{_cell(row['measured'])} | {marks[row['holds']]} |")
        out.append("")
    return "\n".join(out)
