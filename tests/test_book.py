"""The runner: toc order, parameters, a failing notebook named with its cell, and the CLI's exit code."""
import shutil
from pathlib import Path

import nbformat
import pytest

from mclib import book

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "mclib", "display_name": "Python (mclib)", "language": "python"}
    params = nbformat.v4.new_code_cell('preset = "quick"\ndevice = "auto"\nseed = 0\ndata_root = None\ncache_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


@pytest.fixture
def tiny_book(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: P\n    chapters:\n"
        "      - file: notebooks/good\n      - file: notebooks/bad\n      - file: notebooks/after\n")
    _notebook(tmp_path / "notebooks" / "good.ipynb", "from mclib import config\nassert config.get_preset(preset).name == 'smoke'")
    _notebook(tmp_path / "notebooks" / "bad.ipynb", "raise ZeroDivisionError('planted failure')")
    _notebook(tmp_path / "notebooks" / "after.ipynb", "pass")
    return tmp_path


def test_repo_toc_lists_existing_notebooks_in_order():
    files = book.toc_files(ROOT)
    assert files[0] == "book/intro" and files.count("notebooks/report") == 1
    nbs = book.notebooks(ROOT)
    assert nbs[-1].stem == "report" and all((ROOT / nb).exists() for nb in nbs)


def test_toc_entry_without_a_file_is_an_error(tiny_book):
    (tiny_book / "notebooks" / "after.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="notebooks/after"):
        book.notebooks(tiny_book)


def test_bad_parameters_fail_before_any_work():
    with pytest.raises(ValueError, match="unknown preset"):
        book.parameters("huge", "auto", 0, None, None)
    with pytest.raises(ValueError, match="unknown device"):
        book.parameters("smoke", "gpu", 0, None, None)


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(tiny_book, capsys):
    code = book.main(["build", "--preset", "smoke", "--no-html", "--root", str(tiny_book)])
    assert code == 1
    err = capsys.readouterr().err
    assert "notebooks/bad.ipynb failed at cell 4 (counting from 1, `raise ZeroDivisionError" in err and "ZeroDivisionError: planted failure" in err
    build = Path(book.os.environ["MCLIB_BUILD_DIR"])
    kept = build / "src" / "notebooks" / "bad.ipynb"
    assert kept.exists() and "planted failure" in kept.read_text()  # kept for reading
    assert (build / "src" / "notebooks" / "good.ipynb").exists()
    assert not (build / "src" / "notebooks" / "after.ipynb").exists()  # stopped at the first failure


def test_only_unknown_notebook_is_an_error(tiny_book):
    with pytest.raises(ValueError, match="not in _toc.yml"):
        book.build("smoke", only=["nope"], html=False, root=tiny_book)
