"""The optional extra ``mclib[book]``: what only the book runner and the chapter pages import.

``pip install mclib`` gives the science (models, training, curves, paths, attacks, claims, ...). The
runner (:mod:`mclib.book`, :mod:`mclib.jobs`) and the display helpers of :mod:`mclib.cards` need more:
papermill and a Jupyter kernel, jupyter-book with its bibliography and MathJax, submitit, PyYAML. They come
with ``pip install "mclib[book]"`` (``make`` installs the ``dev`` extra, which includes it), and
:func:`require_book` stops early with one message naming that command where they are missing.
"""
from __future__ import annotations

import importlib.util
from typing import Iterable

INSTALL = 'pip install "mclib[book]"'

#: Module -> the distribution of the ``book`` extra (pyproject.toml) that provides it.
BOOK_MODULES = {
    "papermill": "papermill", "nbformat": "papermill", "nbclient": "papermill",
    "ipykernel": "ipykernel", "jupyter_client": "ipykernel", "IPython": "ipykernel",
    "jupyter_book": "jupyter-book", "sphinxcontrib.bibtex": "sphinxcontrib-bibtex", "pybtex": "sphinxcontrib-bibtex",
    "mathjax": "django-static-mathjax", "submitit": "submitit", "yaml": "pyyaml",
}


def missing(modules: Iterable[str]) -> list[str]:
    """The ``modules`` that cannot be imported here (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a missing parent package, or a module without a spec
            found = False
        if not found:
            out.append(name)
    return out


def require_book(what: str, modules: Iterable[str] = tuple(BOOK_MODULES)) -> None:
    """Raise ImportError naming ``pip install "mclib[book]"`` unless every module of ``modules`` is importable."""
    gone = missing(modules)
    if gone:
        dists = sorted({BOOK_MODULES.get(m, m) for m in gone})
        raise ImportError(f"{what} needs the optional book packages; missing here: {', '.join(dists)}. "
                          f"Install them with: {INSTALL}", name=gone[0])
