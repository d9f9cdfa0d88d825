"""Every cross-reference in mclib's docstrings (``:func:`mclib.x.y``` and the other Python roles) names the module
that defines its target. The book's API page documents each object where it is defined, so the strict HTML build
(``-n``) refuses a reference through a re-export (``mclib.claims.load_needed`` for ``mclib.claims.core.load_needed``)
-- but only at the end of a book build; this finds it in a second."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(?:func|class|meth|data|attr|mod|exc|obj):`~?(mclib\.[\w.]+)`")
BOOK_ONLY = ("mclib.book", "mclib.jobs", "mclib.runner", "mclib.site")   # need the extra mclib[book]


def _references() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), m.group(1)) for p in sorted((ROOT / "mclib").rglob("*.py"))
            for m in ROLE.finditer(p.read_text(encoding="utf-8"))]


def _resolve(ref: str):
    """(module, the object the reference names) -- the longest importable prefix, then attributes."""
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        obj = module
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return module, obj, parts[i:]
    raise ImportError(ref)


def test_the_docstrings_hold_references():
    assert len(_references()) > 100


@pytest.mark.parametrize("where,ref", _references())
def test_a_reference_names_the_module_that_defines_its_target(where, ref):
    if ref.startswith(BOOK_ONLY):
        pytest.importorskip("papermill")
    try:
        module, obj, rest = _resolve(ref)
    except (AttributeError, ImportError) as err:
        pytest.fail(f"{where}: {ref} names nothing ({err})")
    if len(rest) == 1 and (inspect.isfunction(obj) or inspect.isclass(obj)):
        assert obj.__module__ == module.__name__, f"{where}: {ref} is defined in {obj.__module__}; reference it there"
