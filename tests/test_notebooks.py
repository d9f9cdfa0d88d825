"""Every notebook of the book executes under the smoke preset, and the strict HTML build succeeds.

This is the slow part of the suite (a few minutes): one smoke build of the whole book, shared by the
tests below, in a temporary folder so the repository's own _build/ is untouched.
"""
import json
import posixpath
import re
from pathlib import Path

import pytest

from mclib import book

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [str(nb) for nb in book.notebooks(ROOT)]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executes_under_smoke(smoke_build, notebook):
    assert notebook in smoke_build["notebooks"]
    executed = json.loads((smoke_build["build"] / "src" / notebook).read_text())
    errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors


@pytest.mark.slow
def test_every_chapter_records_its_claims(smoke_build):
    recorded = smoke_build["claims"]
    assert recorded, "no notebook recorded a claim"
    for rec in recorded.values():
        assert rec["preset"] == "smoke" and rec["measured"] and rec["criterion"]


@pytest.mark.slow
def test_html_index_links_every_chapter(smoke_build):
    html = Path(smoke_build["html"])
    page = "index.html"
    if "http-equiv" in html.read_text():  # jupyter-book's index.html redirects to the root page
        page = book.toc_files(ROOT)[0] + ".html"
    text = (html.parent / page).read_text()
    links = {posixpath.normpath(posixpath.join(posixpath.dirname(page), link))
             for link in re.findall(r'href="([^"#:]+)', text)}
    for entry in book.toc_files(ROOT)[1:]:
        assert entry + ".html" in links, f"{page} does not link {entry}"
        assert (html.parent / (entry + ".html")).exists()


@pytest.mark.slow
def test_same_preset_and_seed_give_the_same_claims(smoke_build, tmp_path, monkeypatch):
    """Rerun the first chapter from scratch (fresh build folder and model cache): identical claims JSON."""
    from mclib import claims

    chapter = "a1_real_paths"
    first = {k: v for k, v in smoke_build["claims"].items() if v.get("chapter", "").endswith(chapter + ".ipynb")}
    assert first, f"{chapter} recorded no claim"
    monkeypatch.setenv("MCLIB_BUILD_DIR", str(tmp_path / "_build"))
    monkeypatch.setenv("MCLIB_CACHE", str(tmp_path / "cache"))
    book.build(preset="smoke", device="cpu", only=[chapter], html=False, root=ROOT, progress=False)
    again = claims.load_all()
    for cid, rec in first.items():
        assert again[cid] == rec, f"claim {cid} differs between two identical runs"
