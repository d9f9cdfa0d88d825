"""The book's claims: one :class:`Claim` per id (A1..A10, B1..B3, C1..C8), records and the reproduction report.

See :mod:`mclib.claims.core` for the vocabulary (``holds`` / ``fails`` / ``inconclusive``) and the records;
each paper's claims and their criteria live in ``paper_a``, ``paper_b`` and ``paper_c``.
"""
from mclib.claims.core import (NOT_RUN, PAPERS, PROVENANCE, VERDICTS, Claim, Verdict, claims_dir, combine,
                               compare_interval, counts_markdown, fmt, fmt_interval, fails, get, holds,
                               inconclusive, judge_interval, load_all, meta, mixed_runs, provenance,
                               provenance_markdown, provenance_table, record, report, report_markdown,
                               result_markdown, source_hash, summary)
from mclib.claims import paper_a, paper_b, paper_c

#: Claim id -> :class:`Claim`, in the order A1..A10, B1..B3, C1..C8.
CATALOGUE: dict = {c.id: c for c in (*paper_a.CLAIMS, *paper_b.CLAIMS, *paper_c.CLAIMS)}

__all__ = ["CATALOGUE", "NOT_RUN", "PAPERS", "PROVENANCE", "VERDICTS", "Claim", "Verdict", "claims_dir", "combine",
           "compare_interval", "counts_markdown", "fmt", "fmt_interval", "fails", "get", "holds", "inconclusive",
           "judge_interval", "load_all", "meta", "mixed_runs", "provenance", "provenance_markdown",
           "provenance_table", "record", "report", "report_markdown", "result_markdown", "source_hash", "summary"]
