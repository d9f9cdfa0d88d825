"""Claims as objects: statement, the paper's value, a criterion that turns recorded values into a verdict.

A notebook measures, then calls :func:`record` with the raw values; the claim's judge (tested code in
``paper_a.py``, ``paper_b.py``, ``paper_c.py``) computes the verdict -- ``holds``, ``fails`` or
``inconclusive`` (the measurement could not discriminate) -- with a one-sentence reason made from the
numbers. Verdicts are judged on intervals (see :mod:`mclib.stats`): a criterion holds when the whole
interval lies on the right side of its threshold, fails when the whole interval lies on the wrong side,
and is inconclusive when the interval spans it.

Each record is one JSON file ``<build>/claims/<id>.json`` that carries its own provenance (preset, seed,
device, torch threads and version, and a hash of the chapter notebook and the mclib sources), so a book
assembled from several runs says so (:func:`mixed_runs`). Records hold no timestamps: a preset and a seed
give byte-identical records twice in a row on CPU.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from mclib import config, sequential, stats

#: The three verdicts a criterion can give.
VERDICTS = ("holds", "fails", "inconclusive")
#: The status of a catalogued claim that no notebook recorded.
NOT_RUN = "not run"
#: The fields of a record that say how it was made; records that differ in any of them come from different runs.
#: (Each record also holds ``source_hash``, which adds its own chapter notebook and so differs between chapters.)
PROVENANCE = ("preset", "seed", "device", "threads", "torch", "mclib_hash")
#: Paper group letter -> the paper's short title.
PAPERS = {
    "A": "Input space mode connectivity (Vrabel et al., ICLR 2025)",
    "B": "Internal codes and adversarial vulnerability (Lee & Vijayan)",
    "C": "Mode connectivity and adversarial robustness (Zhao et al., ICLR 2020)",
}


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Verdict:
    """The outcome of one criterion: ``status`` in :data:`VERDICTS` and one sentence ``reason`` with the numbers."""

    status: str
    reason: str

    def __post_init__(self):
        if self.status not in VERDICTS:
            raise ValueError(f"status must be one of {VERDICTS}, got {self.status!r}")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"a verdict needs a reason sentence, got {self.reason!r}")

    @classmethod
    def holds(cls, reason: str) -> "Verdict":
        return cls("holds", reason)

    @classmethod
    def fails(cls, reason: str) -> "Verdict":
        return cls("fails", reason)

    @classmethod
    def inconclusive(cls, reason: str) -> "Verdict":
        return cls("inconclusive", reason)

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def holds(reason: str) -> Verdict:
    return Verdict.holds(reason)


def fails(reason: str) -> Verdict:
    return Verdict.fails(reason)


def inconclusive(reason: str) -> Verdict:
    return Verdict.inconclusive(reason)


def fmt(x: Any, spec: str = ".3g") -> str:
    """A number for a reason sentence; ``%`` in ``spec`` formats a fraction as a percentage."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return format(float(x), spec)


def fmt_interval(iv: Mapping[str, Any] | None, spec: str = ".3g") -> str:
    """``"0.04 [0.02, 0.07]"`` from an interval dict (``estimate``, ``lo``, ``hi``); ``"n/a"`` for None."""
    if iv is None:
        return "n/a"
    if hasattr(iv, "_asdict"):  # an mclib.stats.Interval
        iv = iv._asdict()
    return f"{fmt(iv.get('estimate'), spec)} [{fmt(iv.get('lo'), spec)}, {fmt(iv.get('hi'), spec)}]"


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def compare_interval(name: str, lo: float | None, hi: float | None, threshold: float, above: bool = True,
                     estimate: float | None = None, spec: str = ".3g") -> Verdict:
    """Judge ``[lo, hi]`` against ``threshold``.

    ``above=True`` asks for at least ``threshold``: holds when ``lo >= threshold``, fails when
    ``hi < threshold``; ``above=False`` asks for at most ``threshold``: holds when ``hi <= threshold``, fails
    when ``lo > threshold``. Otherwise the interval spans the threshold: inconclusive. A missing or
    non-finite bound is inconclusive too (nothing was measured to judge). ``spec`` formats the numbers
    (``".0%"`` for fractions).
    """
    shown = (f"{fmt(estimate, spec)} " if estimate is not None else "") + f"[{fmt(lo, spec)}, {fmt(hi, spec)}]"
    want = f"{'at least' if above else 'at most'} {fmt(threshold, spec)}"
    if not _finite(lo, hi):
        return inconclusive(f"{name} has no finite interval ({shown}), so it cannot be compared with {want}")
    if lo > hi:
        raise ValueError(f"interval of {name} has lo {lo} > hi {hi}")
    side = stats.interval_side(lo, hi, threshold, above)
    if side == "holds":
        return holds(f"{name} is {shown}, {want} over the whole interval")
    if side == "fails":
        return fails(f"{name} is {shown}, short of {want} over the whole interval" if above
                     else f"{name} is {shown}, above the allowed {want.replace('at most ', '')} over the whole interval")
    return inconclusive(f"{name} is {shown}, an interval that spans the threshold {fmt(threshold, spec)}")


#: An interval from fewer units than this is inconclusive (:data:`mclib.stats.MIN_UNITS`, the rule's one home).
MIN_UNITS = stats.MIN_UNITS


def judge_interval(name: str, iv: Mapping[str, Any] | None, threshold: float, above: bool = True,
                   spec: str = ".3g") -> Verdict:
    """:func:`compare_interval` on an interval dict (``estimate``, ``lo``, ``hi``, ``n``) as the records store it.

    An interval from fewer than :data:`MIN_UNITS` units is inconclusive whatever its bounds.
    """
    if iv is None:
        return inconclusive(f"{name} was not measured")
    if iv.get("n") is not None and iv["n"] < MIN_UNITS:
        return inconclusive(f"{name} rests on {iv['n']} unit(s), fewer than the {MIN_UNITS} an interval needs")
    verdict = compare_interval(name, iv.get("lo"), iv.get("hi"), threshold, above, iv.get("estimate"), spec)
    if verdict.status == "inconclusive" and _finite(iv.get("lo"), iv.get("hi")):
        # what would decide it: the interval's width shrinks as 1/sqrt(n) (mclib.sequential.units_to_decide)
        needed = iv.get("needed") or sequential.units_to_decide(iv, threshold)
        if needed:
            verdict = inconclusive(f"{verdict.reason} (from {iv['n']} units; about {needed:,} would decide it at "
                                   "this spread)")
        elif iv.get("n"):
            verdict = inconclusive(f"{verdict.reason} (its estimate sits on the threshold: no sample size decides it)")
    return verdict


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """All parts of a criterion together: any ``fails`` -> fails, else any ``inconclusive`` -> inconclusive, else holds.

    The reason joins the reasons of the parts that decided the outcome (the failing ones, else the
    inconclusive ones, else all), separated by semicolons, so it stays one sentence.
    """
    verdicts = list(verdicts)
    if not verdicts:
        return inconclusive("no part of the criterion could be evaluated")
    for status in ("fails", "inconclusive", "holds"):
        deciding = [v for v in verdicts if v.status == status]
        if deciding:
            return Verdict(status, "; ".join(v.reason for v in deciding))
    raise AssertionError("unreachable")


def required(values: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``values[key]``, a non-empty mapping (the runs or architectures a judge goes through); missing or empty, it
    raises ``KeyError(key)``, which :meth:`Claim.verdict` reports as a missing value naming the key."""
    entries = values[key]
    if not entries:
        raise KeyError(key)
    return entries


# --------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One claim of a paper: what it says, the paper's number, and the criterion that judges a measurement.

    ``judge`` receives the JSON-plain ``values`` a notebook records (the same dict that lands in the JSON
    file), so any verdict can be recomputed from a stored record; ``criterion`` says in one sentence what
    "holds" means; ``cite`` is a key of ``book/references.bib``; ``chapter`` the notebook that measures it.
    """

    id: str
    statement: str
    paper_value: str
    cite: str
    criterion: str
    judge: Callable[[Mapping[str, Any]], Verdict]
    chapter: str
    #: The claims whose records this claim's judge reads, by id (C8 reads C1 to C7). The runner runs the chapters
    #: that record them first, in the same build, and :func:`load_needed` refuses records from another run.
    needs: tuple[str, ...] = ()

    def verdict(self, values: Mapping[str, Any]) -> Verdict:
        """The verdict for ``values`` (made JSON-plain first); a missing value raises naming the claim and key."""
        try:
            out = self.judge(_plain(dict(values)))
        except KeyError as err:
            raise ValueError(f"claim {self.id}: the recorded values lack {err.args[0]!r}, which its criterion "
                             f"needs; got keys {sorted(values)}") from None
        if not isinstance(out, Verdict):
            raise TypeError(f"claim {self.id}: the judge returned {type(out).__name__}, not a Verdict")
        return out


def _plain(value: Any) -> Any:
    """JSON-friendly copy: numpy scalars/arrays and tensors become Python numbers/lists, floats rounded to 6 digits.

    NaN becomes None; named tuples (e.g. :class:`mclib.stats.Interval`) become dicts.
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isinf(value) else float(f"{value:.6g}")
    if hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: claim id -> :class:`Claim`, in the order A1..A10, B1..B3, C1..C8: filled by :mod:`mclib.claims` from the papers'
#: modules, which build on this one (so this module reads the catalogue without importing them).
CATALOGUE: dict[str, Claim] = {}


def catalogue() -> dict[str, Claim]:
    return CATALOGUE


def get(id: str) -> Claim:
    """The catalogued :class:`Claim` called ``id``; an unknown id raises listing the valid ones."""
    cat = catalogue()
    if id not in cat:
        raise ValueError(f"unknown claim id {id!r}; valid ids: {', '.join(cat)}")
    return cat[id]


# --------------------------------------------------------------------------- records and provenance
def claims_dir() -> Path:
    """``<build>/claims``, created if missing (see :func:`mclib.runtime.build_dir`)."""
    path = config.build_dir() / "claims"
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_hash(chapter: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> str:
    """sha256 (64 hex digits) over every mclib source and preset file and, when given and found, the chapter
    notebook ``root / chapter`` (``root``: the checkout, :data:`mclib.runtime.REPO_ROOT`).

    The one hash stored under ``source_hash``: the runner's run records and the claim records both carry it, so
    a run record and the claims its chapter wrote agree. Files are hashed by relative path and bytes (mclib's
    files relative to the folder that holds the package, the notebook by ``chapter`` as given). Without
    ``chapter`` it is the hash of the mclib sources alone (``mclib_hash`` of a record).
    """
    pkg = Path(__file__).resolve().parent.parent
    files = sorted(p for p in pkg.rglob("*") if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts)
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(pkg.parent).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    root = Path(root) if root is not None else config.REPO_ROOT
    if chapter is not None and root is not None and (root / chapter).is_file():
        h.update(Path(chapter).as_posix().encode() + b"\0" + (root / chapter).read_bytes() + b"\0")
    return h.hexdigest()


def provenance(chapter: str | None = None) -> dict[str, Any]:
    """How the current run is made: preset, seed and device from :func:`mclib.config.current` (None outside a
    notebook), torch threads and version, and :func:`source_hash`."""
    import torch

    ctx = config.current()
    return {
        "preset": ctx.preset.name if ctx else None,
        "seed": ctx.seed if ctx else None,
        "device": str(ctx.device) if ctx else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mclib_hash": source_hash(None),
        "source_hash": source_hash(chapter),
    }


def record(id: str, values: Mapping[str, Any], measured: str, chapter: str | None = None) -> dict:
    """Judge claim ``id`` on ``values``, write ``<build>/claims/<id>.json`` and return the record.

    ``measured`` is the sentence a reader sees (numbers included); ``values`` the raw numbers the criterion
    reads. The verdict is computed here by the claim's judge, never passed in. ``chapter`` overrides the
    claim's own notebook (a chapter that re-measures another's claim).
    """
    claim = get(id)
    if not isinstance(measured, str) or not measured.strip():
        raise ValueError(f"measured must be a non-empty sentence, got {measured!r}")
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping of the measured numbers, got {type(values).__name__}")
    plain = _plain(dict(values))
    verdict = claim.verdict(plain)
    chapter = chapter or claim.chapter
    rec = {
        "id": id,
        "paper_group": id[0],
        "statement": claim.statement,
        "paper_value": claim.paper_value,
        "cite": claim.cite,
        "criterion": claim.criterion,
        "measured": measured,
        "status": verdict.status,
        "reason": verdict.reason,
        "values": plain,
        "chapter": chapter,
        **provenance(chapter),
    }
    rec["checksum"] = checksum(rec)
    (claims_dir() / f"{id}.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


class DamagedRecord(ValueError):
    """A claim record that cannot be trusted: unreadable, incomplete, renamed, or edited after it was written."""


#: the fields every record holds (a record lacking one was not written by :func:`record`)
RECORD_FIELDS = ("id", "statement", "criterion", "measured", "status", "reason", "values", "chapter", "checksum")


def checksum(rec: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of a record's canonical JSON without its own ``checksum`` field.

    :func:`record` stores it; :func:`load_record` recomputes it, so a record edited by hand (a status changed,
    a value nudged) is refused rather than published.
    """
    body = {k: v for k, v in rec.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_record(path: str | Path) -> dict:
    """One claim record, checked and re-judged: raises :class:`DamagedRecord` naming the file when it is not
    valid JSON, lacks a field of :data:`RECORD_FIELDS`, holds another claim's id than its file name, or fails its
    checksum. The verdict (``status``, ``reason``) is recomputed from the recorded ``values`` with today's judge,
    so the report never shows a verdict its own criterion would not give."""
    path = Path(path)
    rerun = "rerun the chapter that records it (python -m mclib.book build --only <chapter>) or delete the file"
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedRecord(f"claim record {path} is not valid JSON ({err}); {rerun}") from None
    if not isinstance(rec, dict):
        raise DamagedRecord(f"claim record {path} holds a {type(rec).__name__}, not a record; {rerun}")
    missing = [k for k in RECORD_FIELDS if k not in rec]
    if missing:
        raise DamagedRecord(f"claim record {path} lacks {missing}; {rerun}")
    if rec["id"] != path.stem:
        raise DamagedRecord(f"claim record {path} holds claim {rec['id']!r}, not {path.stem!r}; {rerun}")
    if rec["checksum"] != checksum(rec):
        raise DamagedRecord(f"claim record {path} was changed after it was written (its checksum does not match); "
                            f"{rerun}")
    try:
        verdict = get(rec["id"]).verdict(rec["values"])
    except ValueError as err:
        raise DamagedRecord(f"claim record {path}: {err}; {rerun}") from None
    rec["status"], rec["reason"] = verdict.status, verdict.reason
    return rec


def load_all() -> dict[str, dict]:
    """Every recorded claim, by id, each checked and re-judged by :func:`load_record`."""
    out = {}
    for p in sorted(claims_dir().glob("*.json")):
        if not p.name.startswith("_"):
            rec = load_record(p)
            out[rec["id"]] = rec
    return out


class StaleRecords(ValueError):
    """Records a claim needs are missing or were made by another run; the message names the chapters."""


def load_needed(id: str) -> dict[str, dict]:
    """The records claim ``id`` reads (its :attr:`Claim.needs`), each made by this run's code and settings.

    Each needed record must exist and pass :func:`load_record`; its preset, seed, device, torch and mclib sources
    must equal this run's (:func:`provenance`), and its ``source_hash`` must equal the hash of its chapter as it
    is now. Inside a build (the runner sets ``MCLIB_BUILD_ID``) the chapter's run record must also say that it
    finished in this same build. Otherwise :class:`StaleRecords` names every chapter to run first and why.
    """
    claim = get(id)
    here = provenance()
    build_id = os.environ.get("MCLIB_BUILD_ID")
    out, problems = {}, {}
    for cid in claim.needs:
        need = get(cid)
        path = claims_dir() / f"{cid}.json"
        if not path.exists():
            problems.setdefault(need.chapter, []).append(f"{cid} was not recorded")
            continue
        rec = load_record(path)
        differ = [k for k in ("preset", "seed", "device", "torch", "mclib_hash") if rec.get(k) != here[k]]
        if differ:
            problems.setdefault(rec["chapter"], []).append(
                f"{cid} was made with another {', '.join(differ)} ({', '.join(f'{k} {rec.get(k)!r}' for k in differ)})")
            continue
        if rec.get("source_hash") != source_hash(rec["chapter"]):
            problems.setdefault(rec["chapter"], []).append(f"{cid} was made by another version of its notebook")
            continue
        if build_id:
            run = config.build_dir() / "runs" / f"{Path(rec['chapter']).stem}.json"
            try:
                ran = json.loads(run.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                ran = {}
            if ran.get("status") != "ok" or ran.get("build_id") != build_id:
                problems.setdefault(rec["chapter"], []).append(f"{cid} was not made in this build")
                continue
        out[cid] = rec
    if problems:
        listing = "; ".join(f"{Path(ch).stem} ({', '.join(why)})" for ch, why in problems.items())
        raise StaleRecords(f"claim {id} reads claims that this run did not make: {listing}. Run those chapters "
                           f"first in the same build: python -m mclib.book build (the runner orders them).")
    return out


def meta() -> dict:
    """The build's preset, device, seed and date (written by the runner), or {} outside a build."""
    path = claims_dir() / "_meta.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DamagedRecord(f"the build's metadata {path} is not valid JSON ({err}); rebuild the book "
                            "(python -m mclib.book build) or delete the file") from None


def _order(cid: str) -> tuple[str, int]:
    m = re.fullmatch(r"([A-Z])(\d+)", cid)
    return (m.group(1), int(m.group(2))) if m else (cid, 0)


# --------------------------------------------------------------------------- the report
def report(records: Mapping[str, dict] | None = None):
    """One pandas table of every catalogued claim: paper, id, claim, paper's value, measured, status, reason,
    chapter and provenance. Claims no notebook recorded appear with status ``"not run"``."""
    import pandas as pd

    records = load_all() if records is None else records
    rows = []
    for cid in sorted(catalogue(), key=_order):
        claim, rec = catalogue()[cid], records.get(cid)
        rows.append({
            "paper": PAPERS[cid[0]],
            "id": cid,
            "claim": claim.statement,
            "paper's value": claim.paper_value,
            "measured": rec["measured"] if rec else "",
            "status": rec["status"] if rec else NOT_RUN,
            "reason": rec["reason"] if rec else "no notebook recorded this claim",
            "chapter": (rec.get("chapter") or "") if rec else "",
            **{k: (rec.get(k) if rec else None) for k in PROVENANCE},
        })
    return pd.DataFrame(rows)


def summary(records: Mapping[str, dict] | None = None) -> dict[str, int]:
    """Counts of claims that hold, fail, are inconclusive, and were not run."""
    status = list(report(records)["status"])
    return {k: status.count(k) for k in (*VERDICTS, NOT_RUN)}


def provenance_table(records: Mapping[str, dict] | None = None):
    """One row per distinct run (preset, seed, device, threads, torch, source hash) with the claims it made."""
    import pandas as pd

    records = load_all() if records is None else records
    groups: dict[tuple, list[str]] = {}
    for cid in sorted(records, key=_order):
        key = tuple(records[cid].get(k) for k in PROVENANCE)
        groups.setdefault(key, []).append(cid)
    rows = [{**dict(zip(PROVENANCE, key)), "claims": ", ".join(ids)} for key, ids in groups.items()]
    table = pd.DataFrame(rows, columns=[*PROVENANCE, "claims"])
    table["mclib_hash"] = table["mclib_hash"].map(lambda h: h[:12] if isinstance(h, str) else h)
    return table


def mixed_runs(records: Mapping[str, dict] | None = None) -> list[str]:
    """The provenance fields in which the records differ (empty when one run made them all)."""
    records = load_all() if records is None else records
    return [k for k in PROVENANCE if len({json.dumps(r.get(k)) for r in records.values()}) > 1]


#: One symbol per verdict, shared by the report and the cards (:mod:`mclib.cards`) so both mark a verdict alike:
#: text symbols, not emoji, which render without an emoji font (headless browsers, many Linux desktops).
BADGES = {"holds": "✔", "fails": "✘", "inconclusive": "?", NOT_RUN: "–"}
_MARKS = {s: f"{BADGES[s]} {s}" for s in (*VERDICTS, NOT_RUN)}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


#: characters of a long measured value or reason shown before the rest folds away in the report's table
FOLD_AT = 120


def _fold(text: str, at: int = FOLD_AT) -> str:
    """A table cell that shows the first clause of a long sentence and folds the rest into ``<details>``.

    The cut is at the first ``"; "`` (the records join one part per model or setting that way) between
    ``at / 2`` and ``2 * at`` characters, else after the last comma (or space) before ``at``; short text is returned
    as is. A reader sees the first part whole and opens the rest on demand, so a table row stays a few
    lines tall.
    """
    text = _cell(text)
    if len(text) <= at + 20:             # nothing worth folding
        return text

    def outside_brackets(sep: str, lo: int, hi: int) -> list[int]:
        # never inside an interval "[0.48, 0.55]" or a parenthesis
        out, depth = [], 0
        for i, ch in enumerate(text[:hi]):
            depth += (ch in "[(") - (ch in "])")
            if i >= lo and depth == 0 and text.startswith(sep, i):
                out.append(i)
        return out

    semis = outside_brackets("; ", at // 2, 2 * at)   # a head of at least half a fold: "gain; NMI" is no summary
    commas = outside_brackets(", ", at // 2, at)
    cut = semis[0] if semis else commas[-1] if commas else text.rfind(" ", 0, at)
    if cut <= 0 or len(text) - cut < 20:
        return text
    head, rest = text[:cut], text[cut:].lstrip(";, ")
    return f"{head} <details><summary>more</summary>{rest}</details>"


def counts_markdown(records: Mapping[str, dict] | None = None) -> str:
    """``"**8** hold, **5** fail, **2** inconclusive, **6** not run (of 21 claims)."``"""
    s = summary(records)
    return (f"**{s['holds']}** hold, **{s['fails']}** fail, **{s['inconclusive']}** inconclusive, "
            f"**{s[NOT_RUN]}** not run (of {sum(s.values())} claims).")


def provenance_markdown(records: Mapping[str, dict] | None = None) -> str:
    """A warning when the records come from different runs (naming the fields that differ), else one line."""
    records = load_all() if records is None else records
    if not records:
        return "No claim has been recorded yet."
    mixed = mixed_runs(records)
    if not mixed:
        r = next(iter(records.values()))
        return (f"Every claim comes from one run: preset {r.get('preset')}, seed {r.get('seed')}, device "
                f"{r.get('device')}, {r.get('threads')} torch threads, torch {r.get('torch')}, mclib sources "
                f"{str(r.get('mclib_hash'))[:12]}.")
    return (f"**Mixed runs:** these claims were not all made by one run; they differ in {', '.join(mixed)}. "
            "Compare the provenance table before reading the verdicts side by side.")


def report_markdown(records: Mapping[str, dict] | None = None) -> str:
    """The reproduction report as MyST markdown: counts on top, a provenance line, one table per paper with
    each claim's verdict and reason, each claim linked to its chapter's built page."""
    records = load_all() if records is None else records
    table = report(records)
    out = [counts_markdown(records), "", provenance_markdown(records), ""]
    for group, name in PAPERS.items():
        out += [f"### {name}", "", "| id | claim | paper | measured | verdict |", "| --- | --- | --- | --- | --- |"]
        for _, row in table[table["id"].str.startswith(group)].iterrows():
            cid = row["id"]
            if row["chapter"]:
                # to the claim's card (id "claim-<id>", mclib.cards) on its chapter's page: inline HTML, as a
                # MyST link's fragment must be a Sphinx label; relative to notebooks/, where the report lives
                cid = f'<a href="{Path(row["chapter"]).stem}.html#claim-{cid.lower()}">{cid}</a>'
            # the verdict word stands apart in bold; long reasons and measured values fold (see _fold)
            verdict = (f"**{_MARKS[row['status']]}**: {_fold(row['reason'])}" if row["status"] != NOT_RUN
                       else _MARKS[NOT_RUN])
            paper = row["paper's value"]
            out.append(f"| {cid} | {_cell(row['claim'])} | {_cell(paper)} | {_fold(row['measured'])} | {verdict} |")
        out.append("")
    return "\n".join(out)


def result_markdown(ids: Sequence[str], records: Mapping[str, dict] | None = None) -> str:
    """A chapter's "Result" text, generated from its verdicts: the counts, and each claim's verdict linked to its
    card (``#claim-<id>``, :func:`mclib.cards.card_html`). It does not repeat the cards: their reasons, measured
    values and criteria are on the cards (and in the summary box under the chapter's title)."""
    records = load_all() if records is None else records
    words = {"holds": "holds", "fails": "fails", "inconclusive": "is inconclusive"}
    said, missing = [], []
    for cid in ids:
        claim, rec = get(cid), records.get(cid)
        if rec is None:
            missing.append(f"**{cid}** ({claim.statement}) was not recorded in this build.")
        else:
            said.append(f'<a href="#claim-{cid.lower()}">{cid}</a> {words[rec["status"]]}')
    statuses = [records[c]["status"] for c in ids if c in records]
    head = ", ".join(f"{statuses.count(s)} {s}" for s in VERDICTS if s in statuses) or "nothing recorded"
    parts = [f"Of {len(ids)} claim(s) on this page: {head}."]
    if said:
        parts.append("; ".join(said) + ". Each claim's card above gives the reason in one line and folds the "
                     "numbers (the paper's value, the measured one, the criterion and the whole reason).")
    return "\n\n".join(parts + missing)


# --------------------------------------------------------------------------- condition maps
def condition_label(setting: Mapping[str, Any]) -> str:
    """``"arch=cnn, epochs=8"`` for a setting dict (keys in their recorded order)."""
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "the default setting"


def map_sentence(conditions: Sequence[Mapping[str, Any]] | None, key: str, threshold: float, above: bool = True,
                 name: str | None = None, spec: str = ".3g") -> str:
    """One sentence saying under which recorded conditions an effect appears, vanishes or stays undecided.

    ``conditions`` is the list a claim records under ``values["conditions"]`` (one entry per setting:
    ``{"setting": {...parameters...}, "measured": {key: interval dict, ...}}``). Each setting's interval
    ``measured[key]`` is judged against ``threshold`` with :func:`judge_interval` (the claim's own rule), and
    the settings are grouped by outcome: "appears" (holds over the whole interval), "vanishes" (fails over
    the whole interval) and "undecided" (spans the threshold, or too few units). The claim's verdict is
    not changed by this: the verdict judges the chapter's main setting, the map says where the effect lives.
    """
    if not conditions:
        return "no condition map was recorded"
    name = name or key
    groups: dict[str, list[str]] = {"holds": [], "fails": [], "inconclusive": []}
    for entry in conditions:
        iv = (entry.get("measured") or {}).get(key)
        status = judge_interval(name, iv, threshold, above, spec).status
        shown = fmt_interval(iv, spec) if iv is not None else "n/a"
        groups[status].append(f"{condition_label(entry.get('setting') or {})} ({shown})")
    want = f"{'at least' if above else 'at most'} {fmt(threshold, spec)}"
    parts = []
    for status, word in (("holds", "appears"), ("fails", "vanishes"), ("inconclusive", "is undecided")):
        if groups[status]:
            parts.append(f"{word} at {'; '.join(groups[status])}")
    return f"across {len(conditions)} settings, {name} ({want}) " + ", and ".join(parts)
