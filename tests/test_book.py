"""The runner: toc order, parameters, a failing notebook named with its cell, and the CLI's exit code."""
import shutil
from pathlib import Path

import nbformat
import pytest

from mclib import book, claims

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "mclib", "display_name": "Python (mclib)", "language": "python"}
    params = nbformat.v4.new_code_cell('preset = "quick"\ndevice = "auto"\nseed = 0\ndata_root = None\ncache_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def record_a1_in_good(root: Path) -> None:
    """Make the tiny book's 'good' chapter record claim A1 and its 'bad' chapter pass (a book whose run succeeds)."""
    _notebook(root / "notebooks" / "bad.ipynb", "pass")
    _notebook(root / "notebooks" / "good.ipynb",
              "from mclib import claims\nclaims.record('A1', values={'runs': {'cnn': {'tolerance': 0.01, "
              "'barrier_fraction': {'estimate': 0.1, 'lo': 0.06, 'hi': 0.15, 'n': 200}}}}, measured='m', "
              "chapter='notebooks/good.ipynb')")


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


# --- a stale or failed executed copy never reaches the HTML (issue 13, item 2) ---

def _all_good(book_root):
    _notebook(book_root / "notebooks" / "bad.ipynb", "pass")
    return book_root


@pytest.fixture
def no_html(monkeypatch):
    """Stub the jupyter-book step (tested by the smoke build): these tests are about what gets staged."""
    calls = []
    monkeypatch.setattr(book, "build_html", lambda root, build: calls.append(build) or build / "html")
    return calls


def test_only_refuses_to_publish_a_failed_copy(tiny_book, no_html):
    _all_good(tiny_book)
    book.build("smoke", html=False, root=tiny_book, progress=False)
    good = tiny_book / "notebooks" / "good.ipynb"
    stored = good.read_bytes()
    _notebook(good, "raise RuntimeError('fails at the paper preset')")
    assert book.main(["run", str(good), "--preset", "smoke", "--root", str(tiny_book)]) == 1
    good.write_bytes(stored)  # the source is as before; only its executed copy is a failure
    with pytest.raises(book.StaleChapters, match=r"(?s)good \(its last run failed\).*--only good after --preset smoke --seed 0"):
        book.build("smoke", only=["after"], html=True, root=tiny_book, progress=False)
    assert not no_html  # nothing was published


def test_only_refuses_copies_of_another_seed_or_source(tiny_book, no_html):
    _all_good(tiny_book)
    book.build("smoke", html=False, root=tiny_book, progress=False)
    book.build("smoke", only=["after"], html=True, root=tiny_book, progress=False)  # all current: publishes
    assert len(no_html) == 1
    with pytest.raises(book.StaleChapters, match=r"good \(run with seed 0, not 1\); bad \(run with seed 0, not 1\)"):
        book.build("smoke", seed=1, only=["after"], html=True, root=tiny_book, progress=False)
    _notebook(tiny_book / "notebooks" / "good.ipynb", "y = 2")
    with pytest.raises(book.StaleChapters, match=r"good \(the notebook or mclib changed since it ran\)"):
        book.build("smoke", only=["after"], html=True, root=tiny_book, progress=False)
    (Path(book.os.environ["MCLIB_BUILD_DIR"]) / "src" / "notebooks" / "bad.ipynb").unlink()
    with pytest.raises(book.StaleChapters, match=r"bad \(never executed\)"):
        book.build("smoke", only=["good", "after"], html=True, root=tiny_book, progress=False)
    assert len(no_html) == 1


def test_run_records_and_meta_do_not_claim_one_seed_for_mixed_runs(tiny_book):
    _all_good(tiny_book)
    book.build("smoke", html=False, root=tiny_book, progress=False)
    book.build("smoke", seed=1, only=["after"], html=False, root=tiny_book, progress=False)
    build = Path(book.os.environ["MCLIB_BUILD_DIR"])
    rec = book.read_run_record(build, Path("notebooks/after.ipynb"))
    assert rec["seed"] == 1 and rec["preset"] == "smoke" and rec["status"] == "ok" and rec["device"] == "cpu"
    assert rec["source_hash"] == claims.source_hash(Path("notebooks/after.ipynb"), tiny_book)
    assert {"torch_threads", "seconds"} <= set(rec)
    meta = book.json.loads((build / "claims" / "_meta.json").read_text())
    assert meta["seed"] == "mixed: 0, 1" and meta["mixed"] == ["seed"] and meta["preset"] == "smoke"
    assert {k: v["seed"] for k, v in meta["runs"].items()} == {"good": 0, "bad": 0, "after": 1}


# --- runner messages (issue 13, item 7) ---

def test_dying_kernel_is_reported_with_notebook_and_cell(tiny_book):
    _notebook(tiny_book / "notebooks" / "bad.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(book.NotebookFailed, match=r"notebooks/bad.ipynb: the kernel died at cell 4 \(counting from 1, `import os, signal`\)"):
        book.build("smoke", html=False, root=tiny_book, progress=False)
    rec = book.read_run_record(Path(book.os.environ["MCLIB_BUILD_DIR"]), Path("notebooks/bad.ipynb"))
    assert rec["status"] == "failed" and "kernel died" in rec["error"]


def test_ctrl_c_prints_one_line_and_exits_130(tiny_book, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    started = tmp_path / "started"
    _notebook(tiny_book / "notebooks" / "good.ipynb",
              f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "mclib.book", "build", "--preset", "smoke", "--no-html",
                             "--root", str(tiny_book)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            # a terminal's Ctrl-C reaches the build even when this runs in the background,
                            # where a shell starts commands with SIGINT ignored (and Python keeps it so)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert started.exists(), proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # the progress bar aside (tqdm's "Executing: ..."), one line: no traceback, not even the kernel's
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("Executing:")]
    assert lines == [f"mclib.book: interrupted while executing notebooks/good.ipynb; its partial copy is at "
                     f"{Path(os.environ['MCLIB_BUILD_DIR']) / 'src' / 'notebooks' / 'good.ipynb'} (Ctrl-C)"], err


@pytest.mark.parametrize("seed", ["3.7", "-1", "x"])
def test_bad_seed_on_the_command_line_fails_at_once(seed, capsys):
    with pytest.raises(SystemExit) as exit_:
        book.main(["build", "--preset", "smoke", "--seed", seed])
    assert exit_.value.code == 2
    assert f"seed must be an integer in [0, 2**63), got '{seed}'" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [3.7, -1, "0"])
def test_bad_seed_in_python_fails_before_any_work(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        book.parameters("smoke", "cpu", seed, None, None)


def test_kernels_keep_openmps_wait_policy_unless_the_user_chose(tiny_book, monkeypatch, tmp_path):
    seen = tmp_path / "policy"
    _notebook(tiny_book / "notebooks" / "good.ipynb",
              f"import os, pathlib\npathlib.Path({str(seen)!r}).write_text(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert book.main(["run", "notebooks/good.ipynb", "--preset", "smoke", "--root", str(tiny_book)]) == 0
    assert seen.read_text() == "unset"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert book.main(["run", "notebooks/good.ipynb", "--preset", "smoke", "--root", str(tiny_book)]) == 0
    assert seen.read_text() == "ACTIVE"


def test_summary_prints_per_chapter_times_and_whatever_claim_counts_it_gets(capsys):
    result = {"notebooks": {"notebooks/a1.ipynb": 75.0, "notebooks/report.ipynb": 2.0},
              "skipped": {"notebooks/c1.ipynb": 600.0}, "seconds": 77.0,
              "summary": {"holds": 12, "fails": 3, "inconclusive": 2, "not run": 4}}
    book.print_summary(result, "quick")
    out = capsys.readouterr().out
    assert "Executed 2 notebooks in 1:17 (preset quick); reused 1 (--resume)." in out
    assert "\n  a1        1:15\n  report    0:02\n  c1       10:00  (reused)\n" in out
    assert "Claims: 12 holds, 3 fails, 2 inconclusive, 4 not run." in out


# --- packaging and set-up (issue 13, items 1 and 9) ---

def test_build_folder_ignored_and_license_is_an_spdx_string():
    import tomllib

    assert "build/" in (ROOT / ".gitignore").read_text().splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # PEP 639 SPDX expression; the table form is deprecated
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first setuptools to accept it


def test_make_test_installs_the_browser_or_says_exactly_what_to_install(tmp_path):
    import os
    import subprocess

    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest: setup browser\n" in makefile
    # no apt-get on PATH and no chromium where the test looks: one message, a failing exit
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("id", "env", "sh"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_), "MCLIB_CHROMIUM": str(tmp_path / "none"), "MCLIB_CHROMEDRIVER": str(tmp_path / "none")}
    proc = subprocess.run([shutil.which("make"), "-s", "-C", str(ROOT), "browser"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    message = [line for line in proc.stderr.splitlines() if not line.startswith(("make: ", "make["))]
    assert len(message) == 1 and "apt-get install chromium chromium-driver" in message[0], proc.stderr
    if os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver", os.X_OK):
        ok = subprocess.run([shutil.which("make"), "-s", "-C", str(ROOT), "browser"], capture_output=True, text=True)
        assert ok.returncode == 0 and ok.stdout == "", ok.stdout + ok.stderr  # present: nothing to do
