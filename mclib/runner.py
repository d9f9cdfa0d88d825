"""Running one chapter: the notebooks of ``_toc.yml``, papermill in the book's kernel, and the run record.

The layer both executors share: :mod:`mclib.book` (the build, sequential runs, the HTML) and :mod:`mclib.jobs`
(chapters as local processes or Slurm jobs) call :func:`run_chapter`; neither imports the other's internals.
A run sets the chapter's last results aside and restores them if it is interrupted, executes the notebook
(:func:`execute`: a failing cell or a dead kernel is reported with the notebook and the cell), and writes the
chapter's *run record* ``<build>/runs/<stem>.json`` (preset, seed, device, threads, :func:`mclib.claims.core.source_hash`,
seconds, status) -- also when it fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from mclib import _optional

_optional.require_book("mclib.runner (the chapter runner)")  # before the imports that need it: one clear message

import yaml  # noqa: E402

from mclib import cards, claims, config  # noqa: E402


KERNEL = "mclib"
#: The device a local chapter job's run record names, resolved once by the runner (``--device auto`` needs torch to
#: resolve, and a job process that only drives papermill need not import it: 2 s of every chapter, issue 31).
DEVICE_ENV = "MCLIB_JOB_DEVICE"


class NotebookFailed(RuntimeError):
    """A notebook raised during execution (or its kernel died); the message names the notebook and the cell."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a notebook ran; the message names it (the CLI prints one line and exits 130)."""


# --- the chapters of the book ---------------------------------------------------------------------

def _root(root: str | os.PathLike | None) -> Path:
    path = Path(root) if root else (config.REPO_ROOT or Path.cwd())
    if not (path / "_toc.yml").exists():
        raise FileNotFoundError(f"no _toc.yml in {path}: run from the repository root or pass --root")
    return path


def toc_files(root: str | os.PathLike | None = None) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (the root first), in reading order, without suffix."""
    root = _root(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def notebooks(root: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks named in ``_toc.yml``, in order (paths relative to the root)."""
    root = _root(root)
    found = []
    for entry in toc_files(root):
        nb = Path(entry).with_suffix(".ipynb")
        if (root / nb).exists():
            found.append(nb)
        elif not (root / Path(entry).with_suffix(".md")).exists():
            raise FileNotFoundError(f"_toc.yml names {entry!r} but neither {nb} nor {entry}.md exists")
    return found


# --- the kernel -----------------------------------------------------------------------------------

def ensure_kernel() -> None:
    """Register the ``mclib`` Jupyter kernel for this Python if it is not registered yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                        "--display-name", "Python (mclib)"], check=True, capture_output=True)


def kernel_environment() -> None:
    """Thread settings the kernels inherit: OpenMP's own default wait policy, unless the user chose one.

    Measured both ways on this project's 2-core machine:

    * on a dedicated machine (the book alone, as in CI), ``OMP_WAIT_POLICY=PASSIVE`` made chapters 1.35-1.66x
      slower than spinning threads (A7 41 s vs 30 s, A4 80 s vs 48 s at the quick preset): a small network's
      training step is many short parallel regions, and sleeping threads pay a wake-up at each one;
    * on a shared, oversubscribed machine, spinning threads fight other processes: ``linear_losses`` with 2
      threads took 10x the wall time of 1 thread under load, 1.06x with ``PASSIVE``.

    So the runner leaves OpenMP's default (spin briefly, then sleep) and a user on a shared machine exports
    ``OMP_WAIT_POLICY=PASSIVE`` (the README says so); whatever the user sets is passed on unchanged and is
    recorded in each chapter's run record.
    """


# --- run records: what produced each executed copy ------------------------------------------------

def run_record_path(build_dir: Path, nb: Path) -> Path:
    return build_dir / "runs" / f"{Path(nb).stem}.json"


def read_run_record(build_dir: Path, nb: Path) -> dict | None:
    path = run_record_path(build_dir, nb)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kernel_threads() -> int:
    """The torch thread count a kernel started now gets (it inherits ``OMP_NUM_THREADS``)."""
    try:
        return int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        import torch

        return torch.get_num_threads()


def _claim_ids(nb: Path) -> list[str]:
    """Ids of the recorded claims whose ``chapter`` is this notebook."""
    ids = []
    for path in sorted(claims.claims_dir().glob("*.json")):
        if path.name.startswith("_"):
            continue
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and str(rec.get("chapter") or "").endswith(Path(nb).name):
            ids.append(path.stem)
    return ids


def _write_run_record(build_dir: Path, nb: Path, params: dict, root: Path, seconds: float, status: str,
                      error: str | None = None) -> dict:
    rec = {"notebook": Path(nb).as_posix(), "preset": params["preset"], "seed": params["seed"],
           "device": os.environ.get(DEVICE_ENV) or str(config.get_device(params["device"])),
           "torch_threads": _kernel_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "source_hash": claims.source_hash(nb, root),
           "seconds": round(seconds, 1), "status": status, "claims": _claim_ids(nb) if status == "ok" else [],
           "date": date.today().isoformat(), "build_id": os.environ.get("MCLIB_BUILD_ID")}
    if error:
        rec["error"] = error
    path = run_record_path(build_dir, nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def _has_error(executed: Path) -> bool:
    """Whether papermill marked an error in an executed copy (its red banner cell or a failed cell)."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    return bool(nb.metadata.get("papermill", {}).get("exception")) or any(
        "papermill-error-cell-tag" in c.metadata.get("tags", []) or c.metadata.get("papermill", {}).get("exception")
        for c in nb.cells)


# --- one chapter, its last results kept until it finishes -----------------------------------------

def _previous(build_dir: Path, nb: Path) -> Path:
    return build_dir / "previous" / Path(nb).stem


def _set_aside(build_dir: Path, nb: Path) -> None:
    """Move a chapter's last results (run record, executed copy, claim records) aside before it runs again.

    They come back if the new run is interrupted (:func:`_restore`), so Ctrl-C never costs a finished chapter;
    they are dropped once the new run has finished or failed (a failed run's results replace them: the failure
    is what this code does now).
    """
    keep = _previous(build_dir, nb)
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    moves = [(run_record_path(build_dir, nb), keep / "run.json"), (build_dir / "src" / nb, keep / "copy.ipynb")]
    moves += [(claims.claims_dir() / f"{cid}.json", keep / "claims" / f"{cid}.json") for cid in _claim_ids(nb)]
    for src, dst in moves:
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)


def _restore(build_dir: Path, nb: Path) -> bool:
    """Put back what :func:`_set_aside` moved (after an interrupted run), replacing the partial results; whether
    there was a finished run to put back."""
    keep = _previous(build_dir, nb)
    if not (keep / "run.json").exists():  # nothing finished before: the partial run stays, with its record
        shutil.rmtree(keep, ignore_errors=True)
        return False
    for cid in _claim_ids(nb):  # claims the interrupted run wrote
        (claims.claims_dir() / f"{cid}.json").unlink(missing_ok=True)
    for src in (keep / "claims").glob("*.json") if (keep / "claims").exists() else []:
        os.replace(src, claims.claims_dir() / src.name)
    if (keep / "copy.ipynb").exists():
        os.replace(keep / "copy.ipynb", build_dir / "src" / nb)
    os.replace(keep / "run.json", run_record_path(build_dir, nb))
    shutil.rmtree(keep, ignore_errors=True)
    return True


def run_chapter(nb: Path, root: Path, build_dir: Path, params: dict, progress: bool = True) -> float:
    """Execute one chapter into ``<build>/src`` and write its run record (also when it fails).

    The chapter's previous results are set aside while it runs and restored if it is interrupted (Ctrl-C, a
    cancelled job), so an interrupted build loses no finished chapter and ``--resume`` reuses them.
    """
    _set_aside(build_dir, nb)  # no record while running: a killed run leaves none
    start = time.perf_counter()
    try:
        seconds = execute(nb, build_dir / "src" / nb, params, root, progress=progress)
    except KeyboardInterrupt as err:
        _write_run_record(build_dir, nb, params, root, time.perf_counter() - start, "interrupted",
                          error="interrupted")
        if _restore(build_dir, nb):
            raise Interrupted(f"interrupted while executing {nb}; its results from the last finished run are kept "
                              f"(python -m mclib.book build --resume goes on from there)") from None
        raise err
    except NotebookFailed as err:
        _write_run_record(build_dir, nb, params, root, time.perf_counter() - start, "failed", error=str(err))
        shutil.rmtree(_previous(build_dir, nb), ignore_errors=True)
        raise
    _write_run_record(build_dir, nb, params, root, seconds, "ok")
    shutil.rmtree(_previous(build_dir, nb), ignore_errors=True)
    return seconds


# --- executing a notebook -------------------------------------------------------------------------

def _source_cell(executed: Path, index: int) -> str:
    """Name the failing cell as it is numbered in the stored notebook (papermill inserts a cell)."""
    import nbformat

    # papermill numbers cells before it adds its red error-banner cells to the copy it saves
    cells = [c for c in nbformat.read(executed, as_version=4).cells
             if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = sum("injected-parameters" in c.metadata.get("tags", []) for c in cells[:index])
    first = next((line for line in cells[index].source.splitlines() if line.strip()), "")
    return f"cell {index - injected + 1} (counting from 1, `{first[:60]}`)"


def _running_cell(executed: Path) -> int | None:
    """Index of the cell papermill was executing when the kernel died (from the copy it saved)."""
    import nbformat

    try:
        cells = nbformat.read(executed, as_version=4).cells
    except Exception:  # noqa: BLE001 - no readable copy: the caller names the notebook only
        return None
    # when the kernel dies papermill marks every later cell "completed" too, but only the cells that started
    # have a start time: the running cell is the last of those
    started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


@contextlib.contextmanager
def _kernel_stderr(log: Path):
    """Send what kernels write to their own stderr (IPKernelApp's warnings, its tracebacks while being
    shut down, C-level crash messages) to ``log``; this process keeps its stderr (``sys.stderr``).

    A kernel inherits file descriptor 2 when it starts, and papermill offers no way to redirect it, so
    fd 2 points at the log while the notebook runs and ``sys.stderr`` at a duplicate of the terminal.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    old = sys.stderr
    with open(log, "ab") as fh:
        os.dup2(fh.fileno(), 2)
    sys.stderr = open(saved, "w", closefd=False, buffering=1, encoding=getattr(old, "encoding", None) or "utf-8")
    try:
        yield log
    finally:
        sys.stderr.flush()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)


def execute(nb: Path, out: Path, params: dict, root: Path, progress: bool = True) -> float:
    """Execute one notebook with papermill; return seconds taken; raise :class:`NotebookFailed` on error.

    A kernel that dies (killed, out of memory, a segfault) is reported like an exception, with the
    notebook and the cell it was running; Ctrl-C raises :class:`Interrupted` naming the notebook.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    out.parent.mkdir(parents=True, exist_ok=True)
    kernel_environment()
    log = config.build_dir() / "logs" / f"{Path(nb).stem}.kernel.log"
    start = time.perf_counter()
    try:
        with _kernel_stderr(log):
            pm.execute_notebook(str(root / nb), str(out), parameters=params, kernel_name=KERNEL,
                                cwd=str((root / nb).parent), progress_bar=progress, log_output=False)
        _add_rerun_box(out, nb, params)
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(f"{nb} failed at {_source_cell(out, err.cell_index)}: {err.ename}: {err.evalue}\n"
                             f"  the executed copy, with the traceback, is kept at {out}") from None
    except DeadKernelError as err:
        index = _running_cell(out)
        where = f" at {_source_cell(out, index)}" if index is not None else ""
        raise NotebookFailed(f"{nb}: the kernel died{where} ({err}); out of memory or killed?\n"
                             f"  the executed copy, up to that cell, is kept at {out}; the kernel's log at {log}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while executing {nb}; its partial copy is at {out}") from None
    return time.perf_counter() - start


def rerun_box(nb: Path, params: dict) -> str:
    """The markdown of the "rerun this page" box: the command that reruns this notebook from a fresh clone.

    The command uses the checkout's own interpreter (``.venv/bin/python``, made by ``make setup``), so it
    works without activating anything; options equal to their defaults are left out. The box carries the
    class ``mclib-rerun``, whose CSS wraps the command instead of scrolling it out of sight.
    """
    defaults = {"device": "auto", "seed": 0, "data_root": None, "cache_dir": None}
    opts = f"--preset {params['preset']}" + "".join(
        f" --{k.replace('_', '-')} {params[k]}" for k, v in defaults.items() if params.get(k, v) != v)
    cli = ".venv/bin/python -m mclib.book"
    # named here, not "in the cell below": a page may hide its parameters cell (the report does)
    used = ", ".join(f"`{k}={params.get(k)!r}`" for k in ("preset", "seed", "device", "data_root", "cache_dir")
                     if k in params and (k in ("preset", "seed", "device") or params.get(k) is not None))
    return (":::{admonition} Rerun this page\n:class: tip mclib-rerun\n"
            f"This page was executed with {used}. To rerun it from a fresh clone of the repository:\n\n"
            f"```bash\nmake setup   # once: creates .venv with mclib and its notebook kernel\n"
            f"{cli} run {nb.as_posix()} {opts}\n```\n\n"
            f"The executed copy is written to `_build/src/{nb.as_posix()}`; `{cli} build --only {nb.stem} {opts}` "
            "also rebuilds this page of the book. Where the book was built with its repository's address, the launch "
            "button at the top of the page opens the notebook in Binder or Colab.\n"
            ":::")


def quiet_parameters(executed) -> None:
    """Show the parameters once, in words: tag the notebook's own ``parameters`` cell and papermill's
    ``injected-parameters`` cell ``remove-cell``.

    Papermill keeps the original cell (the defaults) and inserts its ``injected-parameters`` cell after it (the
    values this run used); the rerun box above them (:func:`rerun_box`) names every value that run used, so the page
    shows neither code cell. A notebook run without injected parameters keeps its own cell.
    """
    tags = [c.metadata.get("tags", []) for c in executed.cells]
    if any("injected-parameters" in t for t in tags):
        for cell, t in zip(executed.cells, tags):
            if ("parameters" in t or "injected-parameters" in t) and "remove-cell" not in t:
                cell.metadata["tags"] = [*t, "remove-cell"]


def _add_rerun_box(out: Path, nb: Path, params: dict) -> None:
    """Post-process an executed copy: the rerun box after the first markdown cell, parameters shown once."""
    import nbformat

    executed = nbformat.read(out, as_version=4)
    cell = nbformat.v4.new_markdown_cell(rerun_box(nb, params))
    cell.metadata["tags"] = ["mclib-rerun-box"]
    first_md = next((i for i, c in enumerate(executed.cells) if c.cell_type == "markdown"), -1)
    executed.cells.insert(first_md + 1, cell)
    # the chapter's verdicts and this build's scale, under its title
    cards.add_summary(executed, nb, params)
    quiet_parameters(executed)
    nbformat.write(executed, out)


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
