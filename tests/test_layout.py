"""The library's layout rules (issue 18), checked on the source so that they stay:

* one plotting rule: :mod:`mclib.plots` holds the shared style; in every other module the ``plot_*`` functions sit
  in one final section that starts with the line ``# --- plots`` -- no public function or class that is not a
  ``plot_*`` comes after the module's first ``plot_*`` (private helpers of the plots may);
* studies sit above concepts: :mod:`mclib.studies` imports the concept modules, never the reverse.
"""
import ast
from pathlib import Path

import pytest

MCLIB = Path(__file__).resolve().parent.parent / "mclib"
MODULES = sorted(p for p in MCLIB.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(MCLIB.parent))


def _top_level_defs(tree: ast.Module) -> list[ast.AST]:
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def plot_rule_violations(source: str) -> list[str]:
    """What breaks the plotting rule in one module's source (empty when it is kept)."""
    defs = _top_level_defs(ast.parse(source))
    first = next((i for i, n in enumerate(defs) if n.name.startswith("plot_")), None)
    if first is None:
        return []
    out = [f"{n.name} (line {n.lineno}) comes after the first plot function {defs[first].name}"
           for n in defs[first:] if not n.name.startswith(("plot_", "_"))]
    lines = source.splitlines()
    marks = [i + 1 for i, line in enumerate(lines) if line.rstrip() == "# --- plots"]
    if len(marks) != 1:
        out.append(f"needs exactly one '# --- plots' line, found {len(marks)}")
    elif marks[0] > defs[first].lineno:
        out.append(f"'# --- plots' (line {marks[0]}) comes after the first plot function {defs[first].name}")
    return out


def test_the_plot_rule_checker_catches_both_ways_of_breaking_it():
    ok = "def f():\n    pass\n\n\n# --- plots\ndef plot_a(ax):\n    pass\n\n\ndef _helper():\n    pass\n"
    assert plot_rule_violations(ok) == []
    late = "def plot_a(ax):\n    pass\n\n\ndef study():\n    pass\n"
    assert any("study (line 5)" in v for v in plot_rule_violations(late))
    assert any("exactly one" in v for v in plot_rule_violations(late))
    assert plot_rule_violations("def f():\n    pass\n") == []   # no plots, no section needed


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "plots.py"], ids=_rel)
def test_plot_functions_sit_in_one_final_section(path):
    assert plot_rule_violations(path.read_text()) == []


def _imports(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("path", [p for p in MODULES if "studies" not in p.parts], ids=_rel)
def test_concept_modules_do_not_import_studies(path):
    bad = sorted(m for m in _imports(ast.parse(path.read_text())) if m.startswith("mclib.studies"))
    assert not bad, f"{_rel(path)} imports {bad}: studies are built from concepts, not the reverse"
