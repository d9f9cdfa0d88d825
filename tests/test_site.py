"""The rerun target: one repository address, taken at build time, for the buttons and the install cells alike."""
import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from mclib import book, site

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("remote", ["https://github.com/fork/mc-book.git", "https://github.com/fork/mc-book",
                                    "git@github.com:fork/mc-book.git", "ssh://git@github.com/fork/mc-book.git",
                                    "https://user@github.com/fork/mc-book/"])
def test_github_remotes_parse_to_owner_and_repo(remote):
    assert site.parse_remote(remote) == "fork/mc-book"


@pytest.mark.parametrize("remote", ["https://gitlab.com/fork/mc-book.git", "/srv/git/mc-book.git",
                                    "https://github.com/fork", "https://github.com.evil.org/a/b"])
def test_other_remotes_give_no_address(remote):
    assert site.parse_remote(remote) is None


@pytest.mark.parametrize("slug", ["fork", "a/b/c", "", " /x", "fork/..", "fo rk/x"])
def test_malformed_github_repository_is_an_error_naming_it(slug):
    with pytest.raises(ValueError, match="GITHUB_REPOSITORY must be 'owner/repo'"):
        site.repository(ROOT, env={"GITHUB_REPOSITORY": slug or " "})


def _git(path: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)


def test_address_comes_from_github_repository_else_origin_else_none(tmp_path):
    _git(tmp_path, "init", "-q")
    assert site.repository(tmp_path, env={}) is None
    _git(tmp_path, "remote", "add", "origin", "git@github.com:someone/their-fork.git")
    assert site.repository(tmp_path, env={}) == "https://github.com/someone/their-fork"
    env = {"GITHUB_REPOSITORY": "ci/owner-repo", "GITHUB_SERVER_URL": "https://github.example.com/"}
    assert site.repository(tmp_path, env=env) == "https://github.example.com/ci/owner-repo"
    assert site.repository(tmp_path / "not-a-checkout", env={}) is None


def test_every_chapter_has_the_colab_install_cell_before_its_parameters():
    for nb_path in book.notebooks(ROOT):
        nb = nbformat.read(ROOT / nb_path, as_version=4)
        cells = site.install_cells(nb)
        assert len(cells) == 1, f"{nb_path} has {len(cells)} Colab install cells"
        assert "remove-cell" in cells[0].metadata.get("tags", []), f"{nb_path}: the install cell is shown"
        params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        assert nb.cells.index(cells[0]) < params, f"{nb_path}: the install cell comes after the parameters"
        assert site.PLACEHOLDER in cells[0].source  # what the build substitutes


def _staged(tmp_path: Path, monkeypatch, env: dict) -> Path:
    """The repository's book staged as the runner stages it, its notebooks standing in for executed copies."""
    for key in ("GITHUB_REPOSITORY", "GITHUB_SERVER_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(site, "_origin", lambda root: None)  # this checkout's own remote must not leak in
    src = tmp_path / "_build" / "src"
    shutil.copytree(ROOT / "notebooks", src / "notebooks")
    book._stage(ROOT, src)
    return src


def test_staging_with_github_repository_points_buttons_and_install_cells_at_it(tmp_path, monkeypatch):
    src = _staged(tmp_path, monkeypatch, {"GITHUB_REPOSITORY": "fake-owner/fake-repo"})
    cfg = yaml.safe_load((src / "_config.yml").read_text())
    assert cfg["repository"]["url"] == "https://github.com/fake-owner/fake-repo"
    assert cfg["launch_buttons"]["colab_url"] and cfg["launch_buttons"]["binderhub_url"]
    assert cfg["html"]["use_repository_button"] is True
    for path in sorted((src / "notebooks").glob("*.ipynb")):
        (cell,) = site.install_cells(nbformat.read(path, as_version=4))
        assert 'git+https://github.com/fake-owner/fake-repo"' in cell.source, path.name
    assert not _placeholders(src)


def test_staging_without_an_address_hides_the_buttons_and_publishes_no_placeholder(tmp_path, monkeypatch):
    src = _staged(tmp_path, monkeypatch, {})
    cfg = yaml.safe_load((src / "_config.yml").read_text())
    # an empty url: a missing one would fall back to jupyter-book's own repository
    assert cfg["repository"]["url"] == "" and cfg["html"]["use_repository_button"] is False
    assert not any(cfg["launch_buttons"].get(k) for k in ("binderhub_url", "colab_url", "jupyterhub_url"))
    for path in sorted((src / "notebooks").glob("*.ipynb")):
        (cell,) = site.install_cells(nbformat.read(path, as_version=4))
        assert "built without a repository address" in cell.source and "git+" not in cell.source
    assert not _placeholders(src)


def _placeholders(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and p.suffix in (".yml", ".ipynb", ".md", ".html", ".js", ".txt")
            and site.PLACEHOLDER in p.read_text(errors="ignore")]


def test_claim_records_are_published_with_the_book(tmp_path):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    (claims_dir / "A1.json").write_text(json.dumps({"id": "A1"}))
    (claims_dir / "_meta.json").write_text("{}")
    src = tmp_path / "src"
    (src / site.CLAIMS_STATIC).mkdir(parents=True)
    (src / site.CLAIMS_STATIC / "Z9.json").write_text("{}")  # a claim no longer recorded
    site.publish_claims(src, claims_dir)
    assert sorted(p.name for p in (src / site.CLAIMS_STATIC).iterdir()) == ["A1.json", "_meta.json"]


@pytest.mark.slow
def test_tiny_book_html_has_buttons_and_install_cell_from_a_fake_github_repository(tmp_path, monkeypatch):
    """A real jupyter-book build of a one-chapter book: the launch buttons and the downloadable notebook's
    install cell name the fake repository, and no file of the HTML holds the placeholder."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    for name in ("_static", "_templates"):
        shutil.copytree(ROOT / "book" / name, root / "book" / name)
    shutil.copy(ROOT / "book" / "references.bib", root / "book" / "references.bib")
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/tiny\n")
    (root / "book" / "intro.md").write_text("# Intro\n\nA tiny book.\n")
    stored = nbformat.read(ROOT / "notebooks" / "a1_real_paths.ipynb", as_version=4)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "mclib", "display_name": "Python (mclib)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny\n\nOne cell."), site.install_cells(stored)[0],
                nbformat.v4.new_code_cell("x = 1")]
    build = tmp_path / "_build"
    (build / "src" / "notebooks").mkdir(parents=True)
    nbformat.write(nb, build / "src" / "notebooks" / "tiny.ipynb")
    monkeypatch.setenv("MCLIB_BUILD_DIR", str(build))
    monkeypatch.setenv("GITHUB_REPOSITORY", "fake-owner/fake-repo")
    html = book.build_html(root, build)
    page = (html / "notebooks" / "tiny.html").read_text()
    assert "https://colab.research.google.com/github/fake-owner/fake-repo/blob/main/notebooks/tiny.ipynb" in page
    assert "https://mybinder.org/v2/gh/fake-owner/fake-repo/main?urlpath=" in page
    assert 'href="https://github.com/fake-owner/fake-repo"' in page
    source = (html / "_sources" / "notebooks" / "tiny.ipynb").read_text()
    assert "git+https://github.com/fake-owner/fake-repo" in source
    assert not _placeholders(html)
