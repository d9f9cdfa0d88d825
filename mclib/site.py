"""Where the published book points a reader: the repository address, in one place, applied at build time.

The sources record no repository address (a fork builds a book that points at itself). The address is taken
once, when the book is staged (``mclib.book._stage``), by :func:`repository`:

1. ``$GITHUB_REPOSITORY`` (``owner/repo``, set by GitHub Actions; ``$GITHUB_SERVER_URL`` gives the host),
2. else ``git remote get-url origin`` of the checkout, when it names a repository on github.com,
3. else nothing.

:func:`apply` then writes it into the staged ``_config.yml`` (the repository button and the Binder and Colab
launch buttons are built from ``repository.url``) and into every staged notebook's Colab install cell, so
buttons and install cells always agree. With no address the launch and repository buttons are switched off and
the install cell says how to install instead: the stored notebooks' placeholder address is never published.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Mapping

#: The placeholder the stored notebooks' install cells carry; :func:`apply` replaces it in the staged copies.
#: (Its value is not shown on the API page, which must not publish it either.)
#:
#: :meta hide-value:
PLACEHOLDER = "OWNER/REPO"

#: The first line of a notebook's Colab install cell (how :func:`install_cells` finds it).
INSTALL_MARK = "# In Colab only: install mclib"

_NAME = r"[A-Za-z0-9_.-]+"
_SLUG = re.compile(rf"({_NAME})/({_NAME}?)(?:\.git)?/?")
#: git remote forms on github.com: https://github.com/o/r(.git), git@github.com:o/r(.git), ssh://git@github.com/o/r
_REMOTE = re.compile(rf"^(?:https?://(?:[^@/]+@)?github\.com/|(?:ssh://)?git@github\.com[:/])({_NAME})/({_NAME}?)(?:\.git)?/?$")


def parse_slug(slug: str) -> str:
    """``"owner/repo"`` checked (one slash, GitHub's name characters); raises ``ValueError`` naming the value."""
    m = _SLUG.fullmatch(slug.strip()) if isinstance(slug, str) else None
    if not m or m.group(1) in (".", "..") or m.group(2) in ("", ".", ".."):
        raise ValueError(f"GITHUB_REPOSITORY must be 'owner/repo', got {slug!r}")
    return f"{m.group(1)}/{m.group(2)}"


def parse_remote(url: str) -> str | None:
    """``owner/repo`` of a github.com remote URL (https or ssh form, with or without ``.git``); else None."""
    m = _REMOTE.match(url.strip())
    return f"{m.group(1)}/{m.group(2)}" if m else None


def _origin(root: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def repository(root: str | os.PathLike = ".", env: Mapping[str, str] | None = None) -> str | None:
    """The book's repository URL (``https://github.com/owner/repo``), or None when no address is known.

    ``env`` defaults to ``os.environ``: ``GITHUB_REPOSITORY`` wins (a malformed value is an error, not a
    silent fallback), else the checkout's ``origin`` remote when it is on github.com.
    """
    env = os.environ if env is None else env
    slug = env.get("GITHUB_REPOSITORY")
    if slug:
        server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        return f"{server}/{parse_slug(slug)}"
    remote = _origin(Path(root))
    slug = parse_remote(remote) if remote else None
    return f"https://github.com/{slug}" if slug else None


def configure(cfg: dict, url: str | None) -> dict:
    """The book configuration with ``url`` as its repository; without one, no repository or launch buttons."""
    cfg = dict(cfg)
    repo = dict(cfg.get("repository") or {})
    html = dict(cfg.get("html") or {})
    if url:
        repo["url"] = url
    else:
        # an empty url, not a missing one: jupyter-book's default would point at its own repository
        repo["url"] = ""
        for key in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            html[key] = False
        launch = dict(cfg.get("launch_buttons") or {})
        for key in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url"):
            launch[key] = ""
        launch["thebe"] = False
        cfg["launch_buttons"] = launch
    cfg["repository"], cfg["html"] = repo, html
    return cfg


def install_source(url: str | None) -> str:
    """The Colab install cell: installs mclib from ``url`` in Colab, a no-op anywhere else (papermill included)."""
    head = (f"{INSTALL_MARK} from the book's repository (a no-op anywhere else, papermill runs included).\n"
            "import sys\n\n")
    if url:
        return head + f'if "google.colab" in sys.modules:\n    %pip install -q "mclib @ git+{url}"'
    return head + ('if "google.colab" in sys.modules:\n'
                   '    raise RuntimeError("this copy of the notebook was built without a repository address: "\n'
                   '                       "install mclib from your clone of the repository (pip install -e .)")')


def install_cells(nb) -> list:
    """The code cells of ``nb`` (an nbformat notebook) that are its Colab install cell."""
    return [c for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith(INSTALL_MARK)]


def apply(src: str | os.PathLike, url: str | None) -> list[Path]:
    """Point the staged book in ``src`` at ``url``: its ``_config.yml`` and every notebook's install cell.

    Returns the notebooks rewritten. Only the install cell's source changes; outputs stay as executed.
    """
    import nbformat
    import yaml

    src = Path(src)
    cfg_path = src / "_config.yml"
    cfg = configure(yaml.safe_load(cfg_path.read_text()), url)
    cfg_path.write_text("# staged by mclib.book: the repository address is set by mclib.site at build time\n"
                        + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    changed = []
    for path in sorted(src.rglob("*.ipynb")):
        if {"_build", ".ipynb_checkpoints"} & set(path.relative_to(src).parts):
            continue
        nb = nbformat.read(path, as_version=4)
        cells = install_cells(nb)
        want = install_source(url)
        if cells and any(c.source != want for c in cells):
            for cell in cells:
                cell.source = want
            nbformat.write(nb, path)
            changed.append(path)
    return changed


#: Where the claim records are published in the HTML book (``_static`` is copied as is by Sphinx).
CLAIMS_STATIC = Path("_static") / "claims"


def publish_claims(src: str | os.PathLike, claims_dir: str | os.PathLike) -> list[Path]:
    """Copy the claim records (``<build>/claims/*.json``, ``_meta.json`` included) to ``src/_static/claims``.

    The cards link each claim's raw values there (``../_static/claims/<id>.json`` from a chapter page).
    Stale copies of claims no longer recorded are removed.
    """
    import shutil

    dest = Path(src) / CLAIMS_STATIC
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.json"):
        old.unlink()
    out = []
    for path in sorted(Path(claims_dir).glob("*.json")):
        shutil.copy2(path, dest / path.name)
        out.append(dest / path.name)
    return out


def stage(root: str | os.PathLike, src: str | os.PathLike, claims_dir: str | os.PathLike | None = None) -> str | None:
    """What ``mclib.book._stage`` adds to the staged book: the repository address (see :func:`apply`)
    and the published claim records (see :func:`publish_claims`). Returns the address used, or None."""
    url = repository(root)
    apply(src, url)
    if claims_dir is not None:
        publish_claims(src, claims_dir)
    return url
