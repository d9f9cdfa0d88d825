"""Chapters as jobs: every notebook of ``_toc.yml`` runs in its own job, through submitit.

``python -m mclib.book build --executor local --jobs 4`` runs four chapters at a time on this host
(submitit's ``LocalExecutor``: one process per job, each starting its own kernel with papermill);
``--executor slurm`` submits them to a Slurm cluster (submitit's ``SlurmExecutor``, ``sbatch``). The
runner here only keeps at most ``--jobs`` chapters in flight, shows their state and collects the
results; the report notebook and the HTML build run afterwards on the submitting machine
(:func:`mclib.book.build`).

Resources per job: on one host, a GPU each (``CUDA_VISIBLE_DEVICES``, round-robin over the visible
GPUs) when there are GPUs, otherwise the CPU cores divided between the jobs (``OMP_NUM_THREADS =
cores // jobs``); on Slurm, ``--gpus-per-job`` GPUs and ``--cpus-per-job`` cores (``OMP_NUM_THREADS``
follows ``SLURM_CPUS_PER_TASK``). Every job writes its run record (:func:`mclib.runner.run_chapter`),
so a failed chapter is never published, and ``--resume`` can skip finished ones.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mclib import _optional

_optional.require_book("mclib.jobs (the chapter runner)")

from mclib import config, runner  # noqa: E402 - one chapter's run, shared with mclib.book

EXECUTORS = ("sequential", "local", "slurm")


@dataclass(frozen=True)
class Options:
    """How the chapters run (the ``--executor ...`` flags of ``python -m mclib.book build``)."""

    executor: str = "sequential"
    jobs: int = 1
    partition: str | None = None
    gpus_per_job: int | None = None   # None: 1 on Slurm; on one host 1 if it has GPUs, else 0
    cpus_per_job: int | None = None   # Slurm only (cpus-per-task)
    time_min: int = 24 * 60           # per job
    slurm_args: tuple[str, ...] = ()  # extra sbatch flags, e.g. ("--account=abc", "--qos=high")
    fail_fast: bool = False
    dry_run: bool = False
    poll_s: float | None = None       # seconds between looks at the jobs; None: 0.25 local (a free slot is
                                      # refilled at once), 2 on Slurm (each look asks the scheduler)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; valid executors: {', '.join(EXECUTORS)}")
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, got {self.jobs!r}")
        if self.gpus_per_job is not None and (not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0):
            raise ValueError(f"gpus_per_job must be an integer >= 0, got {self.gpus_per_job!r}")
        if not isinstance(self.time_min, int) or self.time_min < 1:
            raise ValueError(f"time must be at least 1 minute, got {self.time_min!r}")
        if self.dry_run and self.executor != "slurm":
            raise ValueError("--dry-run prints the Slurm job script: use it with --executor slurm")
        slurm_args(self.slurm_args)  # parsed once here so a malformed flag fails before any work


def parse_time(text: str) -> int:
    """Minutes from ``MM``, ``H:MM`` / ``H:MM:SS`` or ``D-HH:MM[:SS]`` (Slurm's forms), rounded up."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"time must be minutes or [D-]H:MM[:SS], got {text!r}")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if b is None and d is None:  # plain minutes
        return a
    h, mins, secs = a, b or 0, c or 0
    return (d or 0) * 1440 + h * 60 + mins + (1 if secs else 0)


def slurm_args(args: tuple[str, ...] | list[str]) -> dict[str, str | bool]:
    """``("--account=abc", "--exclusive")`` -> ``{"account": "abc", "exclusive": True}`` for submitit."""
    out: dict[str, str | bool] = {}
    for arg in args:
        m = re.fullmatch(r"--([A-Za-z][\w-]*)(?:=(.*))?", arg)
        if not m:
            raise ValueError(f"--slurm-args takes sbatch long options like --account=abc, got {arg!r}")
        out[m.group(1)] = True if m.group(2) is None else m.group(2)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The executor flags of ``build``."""
    p.add_argument("--executor", default="sequential", choices=EXECUTORS,
                   help="sequential (default, in this process), local (parallel jobs on this host) or slurm")
    p.add_argument("--jobs", default="1", help="chapters in flight at once (default 1)")
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--gpus-per-job", default=None, help="GPUs per chapter (Slurm default 1)")
    p.add_argument("--cpus-per-job", default=None, help="CPU cores per chapter on Slurm (cpus-per-task)")
    p.add_argument("--time", default="1-00:00", help="time limit per chapter, minutes or [D-]H:MM[:SS] (default 1 day)")
    p.add_argument("--slurm-args", default="", help='extra sbatch flags, quoted: "--account=abc --qos=high"')
    p.add_argument("--fail-fast", action="store_true", help="cancel the other chapters at the first failure")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script a Slurm job would get, submit nothing")


def _int_or_none(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not str(text).isdigit():
        raise ValueError(f"{name} must be an integer >= 0, got {text!r}")
    return int(text)


def options_from_args(args: argparse.Namespace) -> Options:
    jobs = _int_or_none("--jobs", args.jobs)
    return Options(executor=args.executor, jobs=jobs if jobs is not None else 1, partition=args.partition,
                   gpus_per_job=_int_or_none("--gpus-per-job", args.gpus_per_job),
                   cpus_per_job=_int_or_none("--cpus-per-job", args.cpus_per_job),
                   time_min=parse_time(args.time), slurm_args=tuple(shlex.split(args.slurm_args)),
                   fail_fast=args.fail_fast, dry_run=args.dry_run)


# --- the executors -------------------------------------------------------------------------------

def _visible_gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def make_executor(options: Options, folder: Path, script_only: bool = False):
    """The submitit executor for ``options``; nothing is submitted.

    ``script_only``: a Slurm executor that can render its sbatch script where no Slurm is installed
    (submitit refuses to build one without ``srun``; rendering needs none).
    """
    import submitit

    if options.executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        # Each job's controller process writes to this terminal's stderr: on Ctrl-C (which reaches every
        # process of the terminal's group) each printed its KeyboardInterrupt tracebacks under the runner's
        # one line. Its stderr goes to a log next to the jobs' own logs instead.
        log = Path(folder).parent / "controllers.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        ex.update_parameters(timeout_min=options.time_min, setup=[f"exec 2>>{shlex.quote(str(log))}"])
        return ex
    if options.executor != "slurm":
        raise ValueError(f"no submitit executor for {options.executor!r}")
    if script_only:
        class _ScriptOnly(submitit.SlurmExecutor):
            @classmethod
            def affinity(cls) -> int:
                return 2  # what SlurmExecutor reports where srun exists

        ex = _ScriptOnly(folder=folder)
    else:
        ex = _slurm_executor_class()(folder=folder)
    params = {"time": options.time_min, "gpus_per_node": 1 if options.gpus_per_job is None else options.gpus_per_job,
              "job_name": "mclib", "ntasks_per_node": 1}
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_job:
        params["cpus_per_task"] = options.cpus_per_job
    extra = slurm_args(options.slurm_args)
    if extra:
        params["additional_parameters"] = extra
    ex.update_parameters(**params)
    return ex


def _slurm_executor_class():
    """submitit's ``SlurmExecutor`` whose jobs ask :class:`SlurmWatcher` for their state."""
    import submitit
    from submitit.slurm import slurm

    class SlurmWatcher(slurm.SlurmInfoWatcher):
        """Job states from ``sacct`` where the cluster keeps accounting, else from ``squeue --states=all``.

        submitit asks only ``sacct``; on a cluster without an accounting database (``AccountingStorageType=
        accounting_storage/none``) every call fails ("Slurm accounting storage is disabled"), submitit logs a
        warning each time and every job stays UNKNOWN, so a job killed outside its notebook (scancel, time
        limit, node failure) was never seen to end. ``squeue`` knows each job until ``MinJobAge`` (300 s by
        default) after it ended, far longer than the runner's poll. States are asked at most every 10 s
        (submitit's own watcher waits up to 10 minutes between calls once jobs run long).
        """

        use_sacct = True

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            out = None
            if self.use_sacct:
                proc = subprocess.run(command, capture_output=True)
                if proc.returncode == 0:
                    out = proc.stdout
                else:
                    self.use_sacct = False
            if out is None:
                ids = ",".join(command[i + 1] for i, arg in enumerate(command) if arg == "-j")
                proc = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", f"--jobs={ids}"],
                                      capture_output=True)
                out = b"JobID|State|NodeList\n" + proc.stdout if proc.returncode == 0 else None
            if out is not None:
                self._info_dict.update(self.read_info(out))
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    class Job(slurm.SlurmJob):
        watcher = SlurmWatcher(delay_s=10)

    class Executor(submitit.SlurmExecutor):
        job_class = Job

        def _submit_command(self, command: str):
            try:
                return super()._submit_command(command)
            except submitit.core.utils.FailedJobError as err:  # sbatch refused: one line, not a traceback
                hint = (" (this cluster has no GPUs? --gpus-per-job 0)" if "gres" in str(err).lower() else "")
                raise RuntimeError(f"sbatch refused the job{hint}: {str(err).strip()}; "
                                   "--dry-run prints the script") from None

    return Executor


def sbatch_script(options: Options, folder: Path) -> str:
    """The sbatch script submitit writes for each chapter's job under ``options`` (its own renderer)."""
    ex = make_executor(options, folder, script_only=True)
    return ex._make_submission_file_text(ex._submitit_command_str, "<job>")  # submitit's renderer, no sbatch call


def dry_run(options: Options, root=None, preset: str = "quick") -> str:
    """What ``--executor slurm`` would submit: the chapters, then the job script (one per chapter)."""
    root = runner._root(root)
    build_dir = Path(os.environ.get("MCLIB_BUILD_DIR") or root / "_build")
    chapters = [nb.stem for nb in runner.notebooks(root) if nb.stem != "report"]
    head = (f"# dry run: {len(chapters)} chapter jobs (preset {preset}), at most {options.jobs} in flight: "
            f"{', '.join(chapters)}\n# then the report notebook and the HTML build on this machine.\n"
            "# Each job runs this script (the pickled call is mclib.jobs.chapter_job(<chapter>)):\n")
    return head + sbatch_script(options, build_dir / "jobs" / "%j")


# --- what each job runs ---------------------------------------------------------------------------

def job_environment(options: Options, slot: int, gpus: list[int], cores: int) -> dict[str, str]:
    """Environment for the job in ``slot``: its GPU, its share of the cores (so jobs never oversubscribe the
    host), and the user's OpenMP wait policy if one is set (see :func:`mclib.runner.kernel_environment`)."""
    env = {"OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]} if os.environ.get("OMP_WAIT_POLICY") else {}
    if os.environ.get("MCLIB_BUILD_ID"):  # the build this job belongs to (see mclib.claims.load_needed)
        env["MCLIB_BUILD_ID"] = os.environ["MCLIB_BUILD_ID"]
    if options.executor == "local":
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
        threads = os.environ.get("OMP_NUM_THREADS") if options.jobs == 1 else None
        env["OMP_NUM_THREADS"] = threads or str(max(1, cores // options.jobs))
        env["MKL_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    return env


def chapter_job(nb: str, root: str, build_dir: str, params: dict, env: dict[str, str]) -> dict:
    """Run inside a job: execute one chapter (its own kernel, via papermill) and write its run record.

    Returns ``{"status": "ok", "seconds": s}`` or ``{"status": "failed", "message": ...}`` where the
    message names the chapter and cell exactly as the sequential runner does.
    """
    os.environ.update(env)
    if "SLURM_CPUS_PER_TASK" in os.environ and "OMP_NUM_THREADS" not in env:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = os.environ["SLURM_CPUS_PER_TASK"]
    os.environ["MCLIB_BUILD_DIR"] = build_dir
    try:
        seconds = runner.run_chapter(Path(nb), Path(root), Path(build_dir), params, progress=False)
    except runner.NotebookFailed as err:
        return {"status": "failed", "message": str(err)}
    finally:
        _note_slurm_job(Path(build_dir), Path(nb))
    return {"status": "ok", "seconds": seconds}


def _note_slurm_job(build_dir: Path, nb: Path) -> None:
    """Add the Slurm job id (``SLURM_JOB_ID``) to the chapter's run record, when it ran in a Slurm job."""
    rec = runner.read_run_record(build_dir, nb)
    if rec is not None and os.environ.get("SLURM_JOB_ID"):
        rec["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        runner.run_record_path(build_dir, nb).write_text(json.dumps(rec, indent=2) + "\n")


# --- progress and collection ----------------------------------------------------------------------

class Progress:
    """One line per chapter (queued / running / done / failed, elapsed); redrawn in place on a terminal,
    else one line per change (logs stay readable)."""

    def __init__(self, names: list[str], out=None):
        self.out = out or sys.stdout
        self.names, self.width = names, max((len(n) for n in names), default=0)
        self.state = {n: "queued" for n in names}
        self.since: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.drawn = 0

    def set(self, name: str, state: str, seconds: float | None = None) -> None:
        if self.state[name] == state:
            return
        self.state[name] = state
        if state == "running":
            self.since[name] = time.perf_counter()
        if seconds is not None or state in ("done", "failed", "cancelled"):
            self.took[name] = seconds if seconds is not None else time.perf_counter() - self.since.get(name, time.perf_counter())
        if not self.tty:
            print(self._line(name), file=self.out, flush=True)

    def _line(self, name: str) -> str:

        state = self.state[name]
        t = self.took.get(name) if state != "running" else time.perf_counter() - self.since[name]
        return f"  {name:<{self.width}}  {state:<9} {runner._fmt(t) if t is not None else ''}".rstrip()

    def draw(self) -> None:
        if not self.tty:
            return
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        for name in self.names:
            self.out.write("\x1b[2K" + self._line(name) + "\n")
        self.out.flush()
        self.drawn = len(self.names)


def _slot_free(slots: dict[int, str | None]) -> int:
    return next(i for i, v in slots.items() if v is None)


def run_chapters(todo: list[Path], root: Path, build_dir: Path, params: dict, options: Options,
                 out=None, needs: dict[str, set[str]] | None = None) -> dict[str, float]:
    """Run each chapter of ``todo`` as one job, at most ``options.jobs`` at a time; return their seconds.

    Chapters start in the order of ``todo`` (see :func:`mclib.book.order_chapters`), but a chapter whose
    ``needs`` (chapter stems, see :func:`mclib.book.chapter_needs`) are in ``todo`` starts only after they all
    finished; if one of them failed it is not started and is reported with the chapter it waited for.
    Every other chapter runs even when one fails (unless ``fail_fast``: the others are then cancelled and
    the rest not started); afterwards a :class:`mclib.runner.NotebookFailed` names every failed chapter
    and its cell, exactly as the sequential runner does, and the failed executed copies are kept.
    """
    folder = build_dir / "jobs" / "%j"
    ex = make_executor(options, folder)
    gpus = _visible_gpus() if options.executor == "local" else []
    if options.executor == "local" and options.gpus_per_job:
        gpus = gpus[: max(options.jobs, 1)]
    cores = os.cpu_count() or 1
    # a Slurm job resolves ``--device auto`` on its own node; a local job runs here
    device = str(config.get_device(params.get("device"))) if options.executor == "local" else None
    progress = Progress([nb.stem for nb in todo], out)
    pending, running, failures, times = list(todo), {}, {}, {}
    in_build = {nb.stem for nb in todo}
    waits = {nb.stem: (needs or {}).get(nb.stem, set()) & in_build for nb in todo}
    slots: dict[int, str | None] = {i: None for i in range(options.jobs)}
    print(f"{len(todo)} chapters as {options.executor} jobs, {options.jobs} at a time "
          f"({'GPUs ' + ','.join(map(str, gpus)) if gpus else 'CPU'}):", file=progress.out, flush=True)
    try:
        while pending or running:
            for nb in [nb for nb in pending if waits[nb.stem] & set(failures)]:  # what it reads failed
                pending.remove(nb)
                failures[nb.stem] = (f"{nb}: not run, since it reads the claims of "
                                     f"{', '.join(sorted(waits[nb.stem] & set(failures)))}, which failed")
                progress.set(nb.stem, "failed")
            while len(running) < options.jobs and not (failures and options.fail_fast):
                ready = [nb for nb in pending if waits[nb.stem] <= {Path(k).stem for k in times}]
                if not ready:
                    break
                nb, slot = ready[0], _slot_free(slots)
                pending.remove(nb)
                env = job_environment(options, slot, gpus, cores)
                if options.executor == "local":     # this machine's device, so the job need not import torch
                    env[runner.DEVICE_ENV] = device
                if options.executor == "slurm":
                    ex.update_parameters(job_name=f"mclib-{nb.stem}")
                try:
                    job = ex.submit(chapter_job, str(nb), str(root), str(build_dir), params, env)
                except Exception:  # a refused submission (sbatch) leaves none of this build's jobs in the queue
                    for other, _ in running.values():
                        other.cancel(check=False)
                    raise
                running[nb], slots[slot] = (job, slot), nb.stem
                progress.set(nb.stem, "running" if options.executor == "local" else "queued")
            for nb, (job, slot) in list(running.items()):
                if not job.done():
                    if job.state in ("RUNNING", "COMPLETING"):
                        progress.set(nb.stem, "running")
                    continue
                del running[nb]
                slots[slot] = None
                result = _result(job, nb)
                if result["status"] == "ok":
                    times[str(nb)] = result["seconds"]
                    progress.set(nb.stem, "done", result["seconds"])
                else:
                    failures[nb.stem] = result["message"]
                    progress.set(nb.stem, "failed")
            if failures and options.fail_fast:
                for nb, (job, _) in running.items():
                    job.cancel(check=False)
                    progress.set(nb.stem, "cancelled")
                running.clear()
                pending.clear()
            progress.draw()
            if pending or running:
                time.sleep(options.poll_s if options.poll_s is not None
                           else 0.25 if options.executor == "local" else 2.0)
    except KeyboardInterrupt:
        for job, _ in running.values():
            job.cancel(check=False)
        deadline = time.monotonic() + 30
        while any(not job.done() for job, _ in running.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for nb in running:  # their last finished results come back (see mclib.runner.run_chapter)
            runner._restore(build_dir, nb)
        raise runner.Interrupted(f"interrupted; cancelled the running chapters {sorted(nb.stem for nb in running)}; "
                               "chapters that had finished before keep their results (--resume reuses them)") from None
    if failures:
        raise runner.NotebookFailed("\n".join(failures.values())
                                  + (f"\n  (--fail-fast: the other chapters were cancelled)" if options.fail_fast else ""))
    return times


def _result(job, nb: Path) -> dict:
    """A finished job's result; a failed chapter's message gets its job's log, and a job that died outside the
    notebook (cancelled, out of time or memory, its process killed) is reported with its state and log."""
    try:
        result = job.result()
    except Exception as err:  # noqa: BLE001 - submitit wraps whatever killed the job
        state = _job_state(job)
        return {"status": "failed", "message": f"{nb}: its job {job.job_id} ended outside the notebook ({state})"
                                               f"{_reason(str(err), job.paths.stderr)}\n  the job's log is at {job.paths.stderr}"}
    if result.get("status") == "failed":
        ended = _ended_outside(job)
        if ended:  # the scheduler killed the kernel first; the notebook's own report comes after its state
            return {"status": "failed", "message": f"{nb}: its job {job.job_id} ended outside the notebook ({ended})"
                                                   f"{_reason('', job.paths.stderr)}\n  {result['message']}"
                                                   f"\n  the job's log is at {job.paths.stderr}"}
        result = {**result, "message": f"{result['message']}\n  the job's log ({job.job_id}) is at {job.paths.stderr}"}
    return result


# Slurm states of a job stopped by the scheduler or the machine, not by its own code
_KILLED = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "DEADLINE", "BOOT_FAIL")


def _ended_outside(job) -> str:
    """``"Slurm state CANCELLED"`` (or the like) when a Slurm job whose notebook failed was in fact stopped from
    outside, else ``""``.

    Why: ``scancel`` (or a time limit) signals every process of the job at once. The kernel may die before the
    job's own Python process, which submitit keeps alive through SIGTERM, so the job returns an ordinary
    "kernel died" result; only the scheduler knows it was cancelled.
    """
    if hasattr(job, "_process"):  # a local job has no scheduler to ask
        return ""
    state = _job_state(job)
    words = state.removeprefix("Slurm state ").split()
    return state if words and words[0] in _KILLED else ""


_UNSETTLED = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "UNKNOWN", "")


def _job_state(job, wait_s: float = 30.0) -> str:
    """How a finished job ended, in the scheduler's words (``CANCELLED``, ``TIMEOUT``, ``OUT_OF_MEMORY``, ...).

    A cancelled Slurm job shows as ``COMPLETING`` until its processes are gone (``KillWait``): asked again for
    up to ``wait_s``. A local job's controller process either was killed by a signal or exited without a result.
    """
    if hasattr(job, "_process"):  # submitit's LocalJob
        return {"INTERRUPTED": "its process was killed by a signal",
                "FINISHED": "its process exited without a result"}.get(job.state, job.state)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            state = job.watcher.get_state(job.job_id, mode="force")
        except Exception:  # noqa: BLE001 - no state is no reason to lose the report
            state = "UNKNOWN"
        if state.split()[0] not in _UNSETTLED or time.monotonic() > deadline:
            return f"Slurm state {state}"
        time.sleep(1.0)


def _reason(text: str, log: Path) -> str:
    """Why a job ended, as ``": <line>"`` (empty if nothing says): the scheduler's own line in the job's log
    (``*** JOB 4 ON node CANCELLED AT ... ***``, ``DUE TO TIME LIMIT``), else the last exception line of the
    error submitit reports, else its last line that is not submitit's own log (INFO/WARNING lines say what
    submitit was doing, not why the job ended) nor its pointers to the log files."""
    try:
        logged = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        logged = []
    slurm = [m.group(0) for line in logged if (m := re.search(r"\*\*\* JOB \S+ ON .*\*\*\*", line))]
    if slurm:
        return f": {slurm[-1]}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*", line)]
    other = [line for line in lines if not re.match(r"submitit (INFO|DEBUG|WARNING) \(|-+$|- /|You can check|Job \S+ \(task"
                                                    r"|has not produced|Error stream produced|No error stream|No output/error", line)]
    reason = (raised or other or [""])[-1]
    return f": {reason}" if reason else ""
