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


# ------------------------------------------------------------------------------ the layer table (issue 29)
def _module_name(path: Path) -> str:
    parts = path.relative_to(MCLIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {_module_name(p): p for p in MODULES}


def mclib_imports(path: Path) -> dict[str, int]:
    """The mclib modules one module imports -- at the top or inside a function -- with a line of each.

    ``from mclib.x import y`` imports ``mclib.x.y`` when that is a module, else ``mclib.x``; relative imports are
    resolved; the package ``mclib`` itself is no edge (``from mclib import x`` imports ``mclib.x``).
    """
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in NAMES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in NAMES:
                name = name.rpartition(".")[0]
            if name and name not in ("mclib", me):
                out.setdefault(name, node.lineno)
    return out


def layer_of(module: str) -> int:
    import mclib

    top = module.split(".")[1] if "." in module else ""
    for i, (_, members) in enumerate(mclib.LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module} is in no layer of mclib.LAYERS: add it to the table (and the README's)")


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle_and_passes_a_chain():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle():
    # a package's own submodules importing it (claims.core -> claims) are how packages load, not a circle
    edges = {m: {t for t in mclib_imports(p) if not m.startswith(t + ".")} for m, p in NAMES.items()}
    assert import_cycles(edges) == []


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_imports_go_down_the_layer_table(path):
    import mclib

    me = _module_name(path)
    if me == "mclib":
        return
    mine = layer_of(me)
    up = {t: line for t, line in mclib_imports(path).items() if layer_of(t) > mine}
    assert not up, (f"{_rel(path)} ({mclib.LAYERS[mine][0]}) imports modules of a higher layer: "
                    + ", ".join(f"{t} ({mclib.LAYERS[layer_of(t)][0]}, line {line})" for t, line in up.items()))


def test_the_readme_shows_the_layer_table():
    import mclib

    readme = (MCLIB.parent / "README.md").read_text()
    for name, members in mclib.LAYERS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| {name}")), None)
        assert row is not None, f"README's Layout table has no row for the layer {name!r}"
        missing = [m for m in members if f"`{m}" not in row]
        assert not missing, f"README's row {name!r} does not name {missing}"
