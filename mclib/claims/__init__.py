"""The book's claims: one :class:`mclib.claims.core.Claim` per id (A1..A10, B1..B3, C1..C8), records and the report.

See :mod:`mclib.claims.core` for the vocabulary (``holds`` / ``fails`` / ``inconclusive``) and the records;
each paper's claims and their criteria live in :mod:`mclib.claims.paper_a`, :mod:`mclib.claims.paper_b` and
:mod:`mclib.claims.paper_c`. ``CATALOGUE`` maps each id to its claim, in the order A1..A10, B1..B3, C1..C8; the
functions of :mod:`mclib.claims.core` are re-exported here (``claims.record``, ``claims.report`` ...).
"""
# the core's names are re-exported: notebooks call claims.record, claims.report, ...
from mclib.claims.core import (  # noqa: F401
    NOT_RUN, PAPERS, PROVENANCE, VERDICTS, Claim, DamagedRecord, StaleRecords, Verdict, checksum, claims_dir, combine, compare_interval, condition_label,
    counts_markdown, map_sentence,
    fails, fmt, fmt_interval, get, holds, inconclusive, judge_interval, load_all, load_needed, load_record, meta, mixed_runs, provenance,
    provenance_markdown, provenance_table, record, report, report_markdown, result_markdown, source_hash, summary)
from mclib.claims import paper_a, paper_b, paper_c  # noqa: E402

from mclib.claims.core import CATALOGUE  # noqa: E402 - claim id -> Claim, in the order A1..A10, B1..B3, C1..C8

CATALOGUE.update({c.id: c for c in (*paper_a.CLAIMS, *paper_b.CLAIMS, *paper_c.CLAIMS)})
