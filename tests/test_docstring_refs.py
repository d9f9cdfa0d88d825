"""Every cross-reference in mclib's docstrings (``:func:`mclib.x.y``` and the other Python roles) names the module
that defines its target. The book's API page documents each object where it is defined, so the strict HTML build
(``-n``) refuses a reference through a re-export (``mclib.claims.load_needed`` for ``mclib.claims.core.load_needed``)
-- but only at the end of a book build; this finds it in a second."""
from __future__ import annotations

import builtins
import importlib
import importlib.util
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


def test_a_reference_to_a_module_level_object_names_one_the_api_page_lists():
    """The API page lists what each module exports (``__all__``): a reference to anything else (a private helper,
    a public function left out of ``__all__``) is one more warning that fails the strict build."""
    missing = []
    for where, ref in _references():
        if ref.startswith(BOOK_ONLY) and importlib.util.find_spec("papermill") is None:
            continue
        module, obj, rest = _resolve(ref)
        exported = getattr(module, "__all__", None)
        if len(rest) == 1 and exported is not None and rest[0] not in exported:
            missing.append(f"{where}: {ref}")
    assert not missing, "not in the module's __all__: " + "; ".join(missing)


SHORT = re.compile(r":(?:func|class|data|exc):`~?([A-Za-z_]\w*)`")


def _rendered_docstrings(module) -> list[str]:
    """The docstrings the API page shows: the module's, and those of its exported objects and their public methods."""
    docs = [module.__doc__ or ""]
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for n in names:
        obj = getattr(module, n, None)
        if getattr(obj, "__module__", module.__name__) != module.__name__:
            continue                                    # documented where it is defined
        docs.append(getattr(obj, "__doc__", None) or "" if inspect.isfunction(obj) or inspect.isclass(obj) else "")
        if inspect.isclass(obj):
            docs += [m.__doc__ or "" for k, m in vars(obj).items() if not k.startswith("_") and callable(m)]
    return docs


def test_a_short_reference_names_an_exported_object_of_its_own_module():
    """``:func:`name``` in a docstring the API page shows, inside module m, resolves to ``m.name``: it must
    exist there and be exported (a private helper is not on the page)."""
    bad = []
    for p in sorted((ROOT / "mclib").rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name.startswith(BOOK_ONLY) and importlib.util.find_spec("papermill") is None:
            continue
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        refs = {r for doc in _rendered_docstrings(module) for r in SHORT.findall(doc)}
        for ref in sorted(refs):
            if hasattr(builtins, ref):
                continue                                # OSError, ValueError: Python's own
            if not hasattr(module, ref) or (exported is not None and ref not in exported) or ref.startswith("_"):
                bad.append(f"{rel}: {ref}")
    assert not bad, "short references the API page cannot resolve: " + "; ".join(bad)
