"""The book runner: papermill over every notebook in ``_toc.yml`` order, then ``jupyter-book build``.

Usage (``make book`` runs the first line)::

    python -m mclib.book build --preset quick            # execute every notebook, then build the HTML
    python -m mclib.book build --preset smoke --no-html  # execute only (what the tests do)
    python -m mclib.book build --only a1_real_paths      # re-execute one notebook, rebuild the HTML
    python -m mclib.book run notebooks/a1_real_paths.ipynb --preset quick   # one notebook, no HTML
    python -m mclib.book build --executor local --jobs 4  # chapters as parallel jobs (see mclib.jobs)
    python -m mclib.book build --resume                   # skip chapters already run with these settings

Notebooks are stored without outputs. Executed copies go to ``_build/src/notebooks/``; the book is
built from ``_build/src`` (a staged copy of ``_config.yml``, ``_toc.yml``, ``book/`` and the executed
notebooks) into ``_build/html`` with ``execute_notebooks: off`` and ``-W -n --keep-going``, so
every warning fails the build and the git tree stays as clean as before. The first failing notebook
stops the run, naming the notebook and the cell; its executed copy is kept for reading.

Every execution leaves a *run record* ``_build/runs/<stem>.json`` (preset, seed, device, threads, the
source hash of the notebook and of mclib, seconds, status). A copy is published or reused (``--only``,
``--resume``) only if its record says it succeeded with the same preset, seed and source hash, so a stale
or failed copy never reaches the HTML.
"""
from __future__ import annotations

import argparse
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

_optional.require_book("mclib.book (the book runner)")  # before the imports that need it: one clear message

import torch  # noqa: E402

from mclib import claims, config, jobs  # noqa: E402
# one chapter's run and its record live in mclib.runner, shared with mclib.jobs; re-exported as the book's API
from mclib.runner import (  # noqa: E402,F401
    KERNEL, Interrupted, NotebookFailed, _claim_ids, _fmt, _has_error, _previous, _root, ensure_kernel, execute,
    kernel_environment, notebooks, quiet_parameters, read_run_record, rerun_box, run_chapter, run_record_path,
    toc_files)


class StaleChapters(ValueError):
    """``--only`` would publish executed copies that are missing, failed, or made by another run."""


def parameters(preset: str, device: str, seed: int, data_root: str | None, cache_dir: str | None) -> dict:
    """The papermill parameters every notebook takes (validated here, so a typo fails before any work)."""
    config.check_preset(preset)
    config.get_device(device)
    return {"preset": preset, "device": device, "seed": config.check_seed(seed), "data_root": data_root,
            "cache_dir": str(cache_dir) if cache_dir else None}


def stale_reason(root: Path, build_dir: Path, nb: Path, params: dict, claims_needed: bool = False) -> str | None:
    """Why the executed copy of ``nb`` cannot be published or reused with ``params``; None if it can."""
    out = build_dir / "src" / nb
    rec = read_run_record(build_dir, nb)
    if not out.exists():
        return "never executed"
    if rec is None:
        return "no run record"
    if rec.get("status") != "ok":
        return f"its last run {rec.get('status', 'did not finish')}"
    if _has_error(out):
        return "its executed copy holds an error"
    for key in ("preset", "seed"):
        if rec.get(key) != params[key]:
            return f"run with {key} {rec.get(key)!r}, not {params[key]!r}"
    if rec.get("source_hash") != claims.source_hash(nb, root):
        return "the notebook or mclib changed since it ran"
    lost = sorted(set(rec.get("claims", [])) - set(_claim_ids(nb)))
    if lost:
        return f"its claims {lost} are missing"
    if claims_needed and not rec.get("claims"):
        return "it recorded no claims"
    for cid in rec.get("claims", []):
        try:
            claims.load_record(claims.claims_dir() / f"{cid}.json")
        except claims.DamagedRecord as err:
            return str(err).split(";")[0]
    return None


def set_aside_damaged(build_dir: Path) -> list[str]:
    """Move every claim record that :func:`mclib.claims.core.load_record` refuses (edited, truncated, renamed, written by
    an older mclib without a checksum) to ``<build>/claims/refused/``, printing one line per file; returns the
    file names. The chapter that records it then counts as not run (``--resume`` and ``--only`` rerun or name it)."""
    out = []
    folder = claims.claims_dir()
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("_"):
            continue
        try:
            claims.load_record(path)
        except claims.DamagedRecord as err:
            (folder / "refused").mkdir(exist_ok=True)
            os.replace(path, folder / "refused" / path.name)
            print(f"       refused {err}".split("; rerun")[0] + f" (moved to {folder / 'refused'})", flush=True)
            out.append(path.name)
    return out


# --- chapters that read other chapters' claims ---------------------------------------------------------

def chapter_needs(chapters: list[Path]) -> dict[str, set[str]]:
    """For each chapter (stem), the chapters whose claims it reads, from the claims' ``needs`` declarations.

    A claim with ``needs`` (C8 reads C1..C7) makes its chapter depend on the chapters that record the needed
    claims; every executor runs a chapter only after those finished in the same build. Raises ``ValueError``
    on a cycle.
    """
    stems = {nb.stem for nb in chapters}
    out: dict[str, set[str]] = {s: set() for s in stems}
    for claim in claims.CATALOGUE.values():
        me = Path(claim.chapter).stem
        if me in stems:
            out[me] |= {Path(claims.get(cid).chapter).stem for cid in claim.needs} & stems - {me}
    order_chapters(chapters, out)  # raises on a cycle
    return out


def order_chapters(chapters: list[Path], needs: dict[str, set[str]], seconds: dict[str, float] | None = None
                   ) -> list[Path]:
    """``chapters`` in an order that runs every chapter after those it needs.

    Among the chapters whose needs are met, the one with the longest chain of work ahead first: its own
    ``seconds`` (the last run records' times) plus the longest chain of chapters that wait for it (list
    scheduling by *bottom level*). With several jobs the longest chapter then does not start last, and a
    chapter that another waits for (c4 for c8) does not start so late that the reader ends the build alone;
    ties keep the table-of-contents order.
    """
    seconds = seconds or {}
    left, done, order = list(chapters), set(), []
    in_build = {nb.stem for nb in chapters}
    level = _bottom_levels(in_build, needs, seconds)
    while left:
        ready = [nb for nb in left if not (needs.get(nb.stem, set()) & in_build) - done]
        if not ready:
            raise ValueError(f"the chapters' claim needs form a cycle: {sorted(nb.stem for nb in left)}")
        nb = max(ready, key=lambda n: (level[n.stem], -left.index(n)))
        order.append(nb)
        done.add(nb.stem)
        left.remove(nb)
    return order


#: Seconds from a chapter job's start to its run record's clock (the job's process and imports; 2-3 s measured on
#: two one-thread local jobs): every chapter of a chain pays it, so :func:`order_chapters` counts it per chapter.
JOB_START_SECONDS = 3.0


def _bottom_levels(stems: set[str], needs: dict[str, set[str]], seconds: dict[str, float]) -> dict[str, float]:
    """Per chapter: its seconds plus the longest chain of seconds of the chapters that (transitively) need it,
    each chapter with :data:`JOB_START_SECONDS` added. A cycle contributes nothing here (:func:`order_chapters`
    reports it)."""
    waiting = {s: {t for t in stems if s in needs.get(t, set())} for s in stems}
    level: dict[str, float] = {}

    def visit(s: str, path: frozenset) -> float:
        if s not in level:
            level[s] = seconds.get(s, 0.0) + JOB_START_SECONDS + max(
                (visit(t, path | {s}) for t in waiting[s] if t not in path), default=0.0)
        return level[s]

    for s in stems:
        visit(s, frozenset())
    return level


#: A chapter's seconds at the quick preset (two one-thread local jobs on a 2-core Xeon, issue 31's fourth round): the
#: longest-first order of a build that has no run records yet (a fresh clone). Only an order, never a result.
TYPICAL_SECONDS = {"c2_backdoor_repair": 182, "c1_curves": 153, "a6_untrained": 140, "c6_robustness_hessian": 125,
                   "a8_detection": 96, "a1_real_paths": 92, "own_model": 86, "b_internal_codes": 73,
                   "a10_percolation": 53, "a4_interpolated_synthetic": 52, "c4_error_injection": 46,
                   "a7_barrier_evolution": 22, "c8_across_architectures": 6}


def last_seconds(build_dir: Path, chapters: list[Path]) -> dict[str, float]:
    """Each chapter's seconds in its last run record (for longest-first ordering), else :data:`TYPICAL_SECONDS`."""
    out = {nb.stem: float(TYPICAL_SECONDS[nb.stem]) for nb in chapters if nb.stem in TYPICAL_SECONDS}
    for nb in chapters:
        rec = read_run_record(build_dir, nb) or (json.loads((_previous(build_dir, nb) / "run.json").read_text())
                                                 if (_previous(build_dir, nb) / "run.json").exists() else None)
        if rec and isinstance(rec.get("seconds"), (int, float)):
            out[nb.stem] = float(rec["seconds"])
    return out


def _adopt(build_dir: Path, nb: Path) -> None:
    """Mark a reused chapter's run record as part of this build (``--resume``, ``--only``): checked publishable
    by the caller, so a chapter that needs it may read its claims (:func:`mclib.claims.core.load_needed`)."""
    rec = read_run_record(build_dir, nb)
    if rec is not None:
        rec["build_id"] = os.environ.get("MCLIB_BUILD_ID")
        run_record_path(build_dir, nb).write_text(json.dumps(rec, indent=2) + "\n")


class BuildLocked(RuntimeError):
    """Another build is using the same build folder."""


@contextlib.contextmanager
def build_lock(build_dir: Path):
    """Hold ``<build>/.lock`` for the whole build; a second build on the same folder is refused, naming the PID
    of the one that holds it (two builds writing one folder would mix their claims)."""
    from filelock import FileLock, Timeout

    build_dir.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(str(build_dir / ".lock")), build_dir / ".lock.pid"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = owner.read_text().strip() if owner.exists() else "unknown"
        raise BuildLocked(f"another build (PID {pid}) is using {build_dir}; wait for it to finish, or build into "
                          "another folder with MCLIB_BUILD_DIR=...") from None
    try:
        owner.write_text(f"{os.getpid()}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def write_meta(build_dir: Path, chapters: list[Path]) -> dict:
    """``_meta.json``: every chapter's run, and a build-wide preset/seed/device/threads only where all agree.

    A book assembled from several runs (``--only`` with another seed, say) must not claim one seed for
    all of them: a field on which the runs differ reads ``"mixed: ..."``, and ``mixed`` names the fields.
    """
    runs = {nb.stem: read_run_record(build_dir, nb) for nb in chapters}
    runs = {k: v for k, v in runs.items() if v}
    meta = {"torch": torch.__version__, "date": date.today().isoformat(), "runs": runs, "mixed": []}
    for key, name in (("preset", "preset"), ("seed", "seed"), ("device", "device"), ("torch_threads", "cpu_threads"),
                      ("source_hash", "source_hash")):
        values = sorted({str(r.get(key)) for r in runs.values()})
        if len(values) == 1:
            meta[name] = next(iter(runs.values())).get(key)
        elif values:
            meta[name] = "mixed: " + ", ".join(values)
            if key != "source_hash":  # each notebook has its own hash
                meta["mixed"].append(name)
    meta.pop("source_hash", None)
    path = claims.claims_dir() / "_meta.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _stage(root: Path, src: Path) -> None:
    """Copy the book's sources (config, toc, prose pages) next to the executed notebooks, with MathJax."""
    src.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, src / name)
    shutil.copytree(root / "book", src / "book", dirs_exist_ok=True)
    stage_mathjax(src / "_static" / "mathjax")
    from mclib import site  # the repository address for buttons and install cells; the claims JSON

    site.stage(root, src, claims.claims_dir())


def stage_mathjax(dest: Path) -> Path:
    """Copy a local MathJax 3 (``tex-mml-chtml.js`` and its woff fonts) to ``dest``.

    The files come from the ``django-static-mathjax`` wheel (MathJax 3.2.2 as plain static files, no
    Django needed), so the built book renders mathematics without any internet access.
    """
    import mathjax

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").exists():
        raise FileNotFoundError(f"MathJax not found at {es5}: reinstall the dependency django-static-mathjax")
    fonts = Path("output") / "chtml" / "fonts" / "woff-v2"
    (dest / fonts).mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    shutil.copytree(es5 / fonts, dest / fonts, dirs_exist_ok=True)
    return dest / "tex-mml-chtml.js"


def build_html(root: Path, build: Path) -> Path:
    """``jupyter-book build`` of the staged sources, strict (``-W -n --keep-going``); returns the html folder."""
    if build.name != "_build":
        raise ValueError(f"the build folder must be named _build (jupyter-book writes <path-output>/_build), got {build}")
    src = build / "src"
    _stage(root, src)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(src), "--path-output", str(build.parent),
           "-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see the warnings above")
    return build / "html"


def _run_sequential(todo: list[Path], root: Path, build_dir: Path, params: dict, progress: bool,
                    total: int) -> dict[str, float]:
    """Today's path: one chapter after another in this process's kernels; the first failure stops."""
    start, times = time.perf_counter(), {}
    for i, nb in enumerate(todo, 1):
        print(f"[{i}/{total}] {nb}  (preset {params['preset']}, elapsed {_fmt(time.perf_counter() - start)})", flush=True)
        times[str(nb)] = run_chapter(nb, root, build_dir, params, progress=progress)
        print(f"      done in {times[str(nb)]:.1f} s", flush=True)
    return times


def build(preset: str = "quick", device: str = "auto", seed: int = 0, data_root: str | None = None,
          cache_dir: str | None = None, only: list[str] | None = None, html: bool = True,
          root: str | os.PathLike | None = None, progress: bool = True, resume: bool = False,
          executor=None) -> dict:
    """Execute the notebooks of ``_toc.yml`` (all, or those named in ``only``) and build the HTML book.

    ``executor`` is a :class:`mclib.jobs.Options` (None: sequential, in this process). The chapters run
    first, the report notebook after all of them, the HTML once at the end. ``resume`` skips chapters
    whose executed copy and claims exist for the same preset, seed and source hash. With ``only`` and
    ``html``, every other chapter's copy must be publishable (see :func:`stale_reason`), else
    :class:`StaleChapters` names the chapters to rerun.

    Returns a dict with the executed notebooks and their run times, the chapters reused, the claims
    summary and the html path.
    """
    root = _root(root)
    build_dir = Path(os.environ.get("MCLIB_BUILD_DIR") or root / "_build")
    os.environ["MCLIB_BUILD_DIR"] = str(build_dir)  # the kernels inherit it: claims land here
    params = parameters(preset, device, seed, data_root, cache_dir)
    import uuid

    old_id = os.environ.get("MCLIB_BUILD_ID")
    with build_lock(build_dir):
        # one id for this build, inherited by every kernel and job: a chapter that reads other chapters' claims
        # accepts only records whose run finished in this build (mclib.claims.load_needed)
        os.environ["MCLIB_BUILD_ID"] = uuid.uuid4().hex
        try:
            return _build(root, build_dir, params, only, html, progress, resume, executor)
        finally:
            if old_id is None:
                os.environ.pop("MCLIB_BUILD_ID", None)
            else:
                os.environ["MCLIB_BUILD_ID"] = old_id


def _build(root: Path, build_dir: Path, params: dict, only, html: bool, progress: bool, resume: bool,
           executor) -> dict:
    preset, seed = params["preset"], params["seed"]
    kernel_environment()
    ensure_kernel()
    every = notebooks(root)
    chapters = [nb for nb in every if nb.stem != "report"]
    report = [nb for nb in every if nb.stem == "report"]  # summarises every claim: runs last, always
    needs = chapter_needs(chapters)
    set_aside_damaged(build_dir)  # a record that cannot be trusted is never read, published or reused
    if only:
        wanted = {Path(o).stem for o in only}
        unknown = wanted - {nb.stem for nb in every}
        if unknown:
            raise ValueError(f"--only names notebooks not in _toc.yml: {sorted(unknown)}; known: {[nb.stem for nb in every]}")
        todo = [nb for nb in chapters if nb.stem in wanted]
        # a chapter run alone still reads the claims it needs: those chapters must be current, whether or not
        # the HTML is built
        required = {d for nb in todo for d in needs[nb.stem]} - wanted
        check = [nb for nb in chapters if nb not in todo and (html or nb.stem in required)]
        stale = {nb.stem: why for nb in check if (why := stale_reason(root, build_dir, nb, params))}
        if stale:
            listing = "; ".join(f"{k} ({v})" for k, v in stale.items())
            raise StaleChapters(
                f"--only would {'publish' if html else 'read the claims of'} chapters not run with preset {preset}, "
                f"seed {seed} and this source: {listing}.\n  Rerun them too: python -m mclib.book build --only "
                f"{' '.join(nb.stem for nb in every if nb.stem in wanted | set(stale))} "
                f"--preset {preset} --seed {seed}   (or a full build, or --resume)")
        for nb in chapters:
            if nb not in todo and nb.stem in required:
                _adopt(build_dir, nb)
    else:
        # a full build keeps the last results until each chapter's new run replaces them (run_chapter), so an
        # interrupted build loses nothing that --resume could reuse
        todo = list(chapters)
    skipped = [nb for nb in todo if resume and stale_reason(root, build_dir, nb, params, claims_needed=True) is None]
    # a chapter that reads a chapter run again must run again too (in the same build, after it)
    changed = True
    while changed:
        rerun = {nb.stem for nb in todo if nb not in skipped}
        back = [nb for nb in skipped if needs[nb.stem] & rerun]
        skipped = [nb for nb in skipped if nb not in back]
        changed = bool(back)
    todo = order_chapters([nb for nb in todo if nb not in skipped], needs, last_seconds(build_dir, chapters))
    for nb in skipped:
        _adopt(build_dir, nb)
        print(f"       {nb}: reused (--resume: run with the same preset, seed and source)", flush=True)
    start = time.perf_counter()
    if executor is None or executor.executor == "sequential":
        times = _run_sequential(todo, root, build_dir, params, progress, len(todo) + len(report))
    else:
        times = jobs.run_chapters(todo, root, build_dir, params, executor, needs=needs)
    write_meta(build_dir, chapters)
    for nb in report:
        print(f"[report] {nb}", flush=True)
        times[str(nb)] = run_chapter(nb, root, build_dir, params, progress=progress)
    result = {"notebooks": times, "skipped": {str(nb): (read_run_record(build_dir, nb) or {}).get("seconds")
                                              for nb in skipped},
              "summary": claims.summary(), "seconds": time.perf_counter() - start}
    if html:
        result["html"] = str(build_html(root, build_dir) / "index.html")
    return result


def _seed_arg(text: str) -> int:
    try:
        return config.check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer in [0, 2**63), got {text!r}") from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def print_summary(result: dict, preset: str, out=None) -> None:
    """The closing lines: chapters executed and their times (where the time goes), claims, the book."""
    out = out or sys.stdout
    print(f"\nExecuted {len(result['notebooks'])} notebooks in {_fmt(result['seconds'])} (preset {preset})"
          + (f"; reused {len(result['skipped'])} (--resume)." if result.get("skipped") else "."), file=out)
    rows = [(Path(k).stem, _fmt(v), "") for k, v in result["notebooks"].items()]
    rows += [(Path(k).stem, _fmt(v) if v is not None else "?", "  (reused)") for k, v in result.get("skipped", {}).items()]
    width = max((len(r[0]) for r in rows), default=0)
    for name, t, note in rows:
        print(f"  {name:<{width}}  {t:>6}{note}", file=out)
    counts = ", ".join(f"{n} {k}" for k, n in result["summary"].items())
    print(f"Claims: {counts}.", file=out)
    if "html" in result:
        print(f"The book is at {result['html']}", file=out)


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m mclib.book build|run ...``); returns the exit code (1 on any failure)."""
    parser = argparse.ArgumentParser(prog="python -m mclib.book", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "run"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("notebook", help="path of one notebook, e.g. notebooks/a1_real_paths.ipynb")
            p.add_argument("--out", help="where to write the executed copy (default _build/src/<notebook>)")
        else:
            p.add_argument("--only", nargs="+", help="execute only these notebooks (stems), then build")
            p.add_argument("--no-html", action="store_true", help="execute the notebooks but skip jupyter-book")
            p.add_argument("--resume", action="store_true",
                           help="skip chapters whose executed copy and claims exist for this preset, seed and source")
            jobs.add_arguments(p)
        p.add_argument("--preset", default="quick", help=f"one of {', '.join(config.PRESET_NAMES)} (default quick)")
        p.add_argument("--device", default="auto", help=f"one of {', '.join(config.DEVICE_NAMES)} (default auto)")
        p.add_argument("--seed", type=_seed_arg, default=0, help="an integer >= 0 (default 0)")
        p.add_argument("--data-root", default=None, help="folder holding torchvision datasets (paper preset)")
        p.add_argument("--cache-dir", default=None, help="model cache (default $MCLIB_CACHE or .cache/)")
        p.add_argument("--root", default=None, help="repository root (default: the checkout mclib runs from)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            root = _root(args.root)
            nb = Path(args.notebook)
            nb = nb.resolve().relative_to(root.resolve()) if nb.is_absolute() else nb
            if not (root / nb).exists():
                raise FileNotFoundError(f"no notebook {nb} under {root}")
            params = parameters(args.preset, args.device, args.seed, args.data_root, args.cache_dir)
            ensure_kernel()
            build_dir = Path(os.environ.get("MCLIB_BUILD_DIR") or root / "_build")
            os.environ["MCLIB_BUILD_DIR"] = str(build_dir)
            if args.out:
                out = Path(args.out)
                seconds = execute(nb, out, params, root)
            else:  # into the build: leaves a run record, so a failed copy is never published
                out = build_dir / "src" / nb
                with build_lock(build_dir):
                    seconds = run_chapter(nb, root, build_dir, params)
            print(f"{nb} executed in {seconds:.1f} s -> {out}")
            return 0
        options = jobs.options_from_args(args)
        if options.dry_run:
            print(jobs.dry_run(options, args.root, args.preset))
            return 0
        result = build(args.preset, args.device, args.seed, args.data_root, args.cache_dir, args.only,
                       html=not args.no_html, root=args.root, resume=args.resume, executor=options)
    except (NotebookFailed, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"\nmclib.book: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"\nmclib.book: {err or 'interrupted'} (Ctrl-C)", file=sys.stderr)
        return 130
    print_summary(result, args.preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
