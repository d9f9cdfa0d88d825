"""The chapters hold narrative, calls and plots (issue 29): at most 120 code lines per notebook, typed sizes instead
of string keys, and no ``def`` that computes a measured value. Static checks on the stored notebooks (nothing runs).

Every notebook of the book is checked: the A, B and C chapters, the reader's own model and the report."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
MAX_CODE_LINES = 120
#: Local functions a chapter may keep: display helpers (format or rescale for showing, move to a device), the reader's
#: own model (own_model brings a third-party network and trains it through mclib.studies.own_model.fit_fresh).
ALLOWED_DEFS = {"_show", "line", "where", "on", "__init__", "forward", "trained_model"}


def _code(stem: str) -> list[str]:
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]


def code_lines(source: str) -> int:
    """Non-blank lines that are not comments."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))


def test_every_notebook_is_checked():
    # the 14 notebooks of the book: nine A/B/own-model chapters, five C chapters and the report
    assert len(CHAPTERS) == 14 and {"c1_curves", "c2_backdoor_repair", "c4_error_injection", "c6_robustness_hessian",
                                    "c8_across_architectures", "report"} <= set(CHAPTERS)


def test_code_lines_counts_code_only():
    assert code_lines("# a comment\n\nx = 1\n  # indented comment\ny = f(x)  # trailing\n") == 2


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_is_glue(stem):
    cells = _code(stem)
    n = sum(code_lines(c) for c in cells)
    assert n <= MAX_CODE_LINES, f"{stem}: {n} code lines (at most {MAX_CODE_LINES}); move computing code to its study"
    text = "\n".join(cells)
    assert not re.search(r"\bS\[[\"']", text), f"{stem} reads a size by string key: use the study's typed Sizes"
    assert ".section(" not in text, f"{stem} reads a preset section by name: use <study>.Sizes.read(ctx)"
    # magics (%pip) are not Python: parse them as ``pass`` at their indentation
    tree = ast.parse("\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                               else line for line in text.splitlines()))
    defs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert defs <= ALLOWED_DEFS, f"{stem} defines {sorted(defs - ALLOWED_DEFS)}: computing helpers belong in a study"
