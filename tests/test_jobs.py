"""Chapters as submitit jobs: Slurm parameters rendered without a cluster, local parallel runs, resume."""
import json
from pathlib import Path

import pytest

from mclib import book, jobs
from test_book import ROOT, _notebook, record_a1_in_good, tiny_book  # noqa: F401 - the fixture is used by name


def test_slurm_script_carries_partition_gpus_time_and_extra_flags(tmp_path):
    opts = jobs.Options(executor="slurm", jobs=4, partition="gpu-a100", gpus_per_job=2, cpus_per_job=8,
                        time_min=jobs.parse_time("1-02:30"), slurm_args=("--account=abc", "--exclusive"))
    script = jobs.sbatch_script(opts, tmp_path / "%j")
    lines = set(script.splitlines())
    assert {"#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8",
            "#SBATCH --time=1590", "#SBATCH --account=abc", "#SBATCH --exclusive"} <= lines, script
    assert "-m submitit.core._submit" in script and script.startswith("#!/bin/bash")


def test_dry_run_prints_the_script_and_submits_nothing(capsys, tmp_path):
    code = book.main(["build", "--executor", "slurm", "--dry-run", "--preset", "paper", "--partition", "p",
                      "--time", "90", "--root", str(ROOT)])
    out = capsys.readouterr().out
    assert code == 0 and "#SBATCH --partition=p" in out and "#SBATCH --time=90" in out
    assert "#SBATCH --gpus-per-node=1" in out and "a1_real_paths" in out  # default: one GPU a chapter
    assert not (Path(book.os.environ["MCLIB_BUILD_DIR"]) / "runs").exists()


@pytest.mark.parametrize("text, minutes", [("90", 90), ("2:00", 120), ("1:00:30", 61), ("2-00:00", 2880)])
def test_parse_time(text, minutes):
    assert jobs.parse_time(text) == minutes


@pytest.mark.parametrize("kwargs, message", [
    ({"executor": "mpi"}, "unknown executor 'mpi'; valid executors: sequential, local, slurm"),
    ({"executor": "local", "jobs": 0}, "jobs must be an integer >= 1, got 0"),
    ({"executor": "slurm", "gpus_per_job": -1}, "gpus_per_job must be an integer >= 0, got -1"),
    ({"executor": "slurm", "slurm_args": ("account=abc",)}, "sbatch long options like --account=abc, got 'account=abc'"),
    ({"executor": "local", "dry_run": True}, "use it with --executor slurm"),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs.Options(**kwargs)
    with pytest.raises(ValueError, match="time must be minutes or"):
        jobs.parse_time("soon")


def test_local_jobs_share_the_cores_or_get_one_gpu_each(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    local2 = jobs.Options(executor="local", jobs=2)
    assert jobs.job_environment(local2, 0, [], 8) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # a shared host: the user's choice is passed on
    assert jobs.job_environment(local2, 0, [], 8)["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert jobs.job_environment(jobs.Options(executor="local", jobs=3), 1, [], 2)["OMP_NUM_THREADS"] == "1"
    assert jobs.job_environment(local2, 3, [0, 1], 8)["CUDA_VISIBLE_DEVICES"] == "1"
    assert "OMP_NUM_THREADS" not in jobs.job_environment(jobs.Options(executor="slurm"), 0, [], 8)


def test_failing_chapter_under_two_local_jobs_names_chapter_and_cell(tiny_book):  # noqa: F811
    opts = jobs.Options(executor="local", jobs=2, poll_s=0.5)
    with pytest.raises(book.NotebookFailed) as failed:
        book.build("smoke", html=False, root=tiny_book, progress=False, executor=opts)
    message = str(failed.value)
    assert "notebooks/bad.ipynb failed at cell 4 (counting from 1, `raise ZeroDivisionError" in message
    assert "ZeroDivisionError: planted failure" in message
    build = Path(book.os.environ["MCLIB_BUILD_DIR"])
    assert "planted failure" in (build / "src" / "notebooks" / "bad.ipynb").read_text()  # kept for reading
    for name, status in (("good", "ok"), ("bad", "failed"), ("after", "ok")):  # the others finished
        assert book.read_run_record(build, Path(f"notebooks/{name}.ipynb"))["status"] == status
    assert book.read_run_record(build, Path("notebooks/good.ipynb"))["torch_threads"] >= 1


def test_resume_skips_chapters_run_with_the_same_settings(tiny_book):  # noqa: F811
    record_a1_in_good(tiny_book)
    book.build("smoke", html=False, root=tiny_book, progress=False)
    build = Path(book.os.environ["MCLIB_BUILD_DIR"])
    assert book.read_run_record(build, Path("notebooks/good.ipynb"))["claims"] == ["A1"]
    again = book.build("smoke", html=False, root=tiny_book, progress=False, resume=True)
    assert set(again["skipped"]) == {"notebooks/good.ipynb"}  # bad and after record no claim: rerun
    assert set(again["notebooks"]) == {"notebooks/bad.ipynb", "notebooks/after.ipynb"}
    (build / "claims" / "A1.json").unlink()  # a lost claim: rerun
    assert "notebooks/good.ipynb" in book.build("smoke", html=False, root=tiny_book, progress=False, resume=True)["notebooks"]
    other_seed = book.build("smoke", seed=2, html=False, root=tiny_book, progress=False, resume=True)
    assert other_seed["skipped"] == {} and json.loads((build / "claims" / "A1.json").read_text())["id"] == "A1"


@pytest.mark.slow
def test_smoke_book_with_two_local_jobs_gives_the_sequential_claims(smoke_build, tmp_path, monkeypatch):
    """The smoke book as two local submitit jobs gives the claims of the sequential smoke build (the session's
    ``smoke_build``, one thread per kernel like each of two jobs on two cores; fresh build folder and cache)."""
    import time

    from mclib import claims

    monkeypatch.setenv("MCLIB_BUILD_DIR", str(tmp_path / "local" / "_build"))
    monkeypatch.setenv("MCLIB_CACHE", str(tmp_path / "local" / "cache"))
    start = time.perf_counter()
    book.build("smoke", device="cpu", html=False, root=ROOT, progress=False,
               executor=jobs.Options(executor="local", jobs=2))
    local = claims.load_all()
    print(f"sequential: {smoke_build['seconds']:.0f} s, local --jobs 2: {time.perf_counter() - start:.0f} s")
    assert smoke_build["claims"] and set(local) == set(smoke_build["claims"])
    for cid, rec in smoke_build["claims"].items():
        assert local[cid] == rec, f"claim {cid} differs between the sequential build and two local jobs"


def test_ctrl_c_under_local_jobs_prints_one_line(tiny_book):  # noqa: F811
    """Ctrl-C reaches every process of the terminal's foreground group: the runner cancels the jobs and says
    so in one line; the jobs' controller processes no longer print their tracebacks under it (issue 32)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    build = Path(os.environ["MCLIB_BUILD_DIR"])
    for name in ("good", "bad"):
        _notebook(tiny_book / "notebooks" / f"{name}.ipynb",
                  f"import os, time\nopen(os.path.join(os.environ['MCLIB_BUILD_DIR'], 'started-{name}'), 'w').close()\n"
                  "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-m", "mclib.book", "build", "--preset", "smoke", "--no-html", "--root",
                             str(tiny_book), "--executor", "local", "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # a terminal's Ctrl-C reaches the build even when this runs in the background,
                            # where a shell starts commands with SIGINT ignored (and Python keeps it so)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not all((build / f"started-{n}").exists() for n in ("good", "bad")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["mclib.book: interrupted; cancelled the running chapters ['bad', 'good']; chapters "
                                        "that had finished before keep their results (--resume reuses them) (Ctrl-C)"], err
    assert "KeyboardInterrupt" in (build / "jobs" / "controllers.log").read_text()  # kept, not shown


def test_a_job_killed_outside_its_notebook_is_reported_with_its_state_and_log(tiny_book):  # noqa: F811
    """The job's own process dies (killed, out of memory): the chapter is named with how its job ended and
    where its log is, not with the last line of submitit's log (an INFO line, issue 32)."""
    _notebook(tiny_book / "notebooks" / "bad.ipynb", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    with pytest.raises(book.NotebookFailed) as failed:
        book.build("smoke", html=False, root=tiny_book, progress=False,
                   executor=jobs.Options(executor="local", jobs=2, poll_s=0.5))
    message = str(failed.value)
    assert "notebooks/bad.ipynb: its job " in message and "ended outside the notebook (its process" in message, message
    assert "submitit INFO" not in message and "the job's log is at " in message
    log = Path(message.split("the job's log is at ")[1].split()[0])
    assert log.exists() and log.name.endswith("_log.err")
    assert book.read_run_record(Path(book.os.environ["MCLIB_BUILD_DIR"]), Path("notebooks/good.ipynb"))["status"] == "ok"


class _SlurmJob:
    """A finished Slurm job as submitit shows it: its result, its id, its log and the scheduler's state."""

    def __init__(self, result, state, log: Path):
        self._value, self.job_id = result, "7"
        self.paths = type("Paths", (), {"stderr": log})()
        self.watcher = type("Watcher", (), {"get_state": lambda _self, job_id, mode: state})()

    def result(self):
        return self._value


@pytest.mark.parametrize("state, outside", [("CANCELLED by 0", True), ("TIMEOUT", True), ("COMPLETED", False)])
def test_a_kernel_killed_by_the_scheduler_is_reported_as_the_jobs_state(tmp_path, state, outside):
    """scancel signals every process of the job: the kernel may die first and the job return an ordinary
    "kernel died" result. The scheduler's state decides which report the reader gets."""
    log = tmp_path / "7_0_log.err"
    log.write_text("slurmstepd: error: *** JOB 7 ON vm CANCELLED AT 2026-12-07T09:40:36 ***\n" if outside else "")
    died = {"status": "failed", "message": "notebooks/victim.ipynb: the kernel died at cell 2"}
    message = jobs._result(_SlurmJob(died, state, log), Path("notebooks/victim.ipynb"))["message"]
    if outside:
        assert message.startswith(f"notebooks/victim.ipynb: its job 7 ended outside the notebook (Slurm state {state})"
                                  ": *** JOB 7 ON vm CANCELLED AT"), message
        assert "the kernel died at cell 2" in message  # the notebook's own report is kept
    else:
        assert message.startswith("notebooks/victim.ipynb: the kernel died at cell 2"), message
        assert "ended outside" not in message


def test_a_chapter_job_records_its_run_without_importing_torch(tmp_path):
    """Issue 31: the job process only drives papermill and writes the run record and the summary box; importing
    torch there (through the runner's imports) cost 2 s of every chapter. The runner resolves the device once and
    hands it to local jobs (runner.DEVICE_ENV)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        os.environ.update(OMP_NUM_THREADS="1", MCLIB_JOB_DEVICE="cpu", MCLIB_BUILD_DIR={str(tmp_path)!r})
        import nbformat
        from mclib import jobs, runner, cards
        params = {{"preset": "quick", "device": "auto", "seed": 0, "data_root": None, "cache_dir": None}}
        nb = Path("notebooks/a1_real_paths.ipynb")
        rec = runner._write_run_record(Path({str(tmp_path)!r}), nb, params, Path.cwd(), 1.0, "ok")
        executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\\n\\nText.")])
        cards.add_summary(executed, nb, params)
        print(json.dumps({{"torch": "torch" in sys.modules, "device": rec["device"], "threads": rec["torch_threads"],
                          "cells": len(executed.cells)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"torch": False, "device": "cpu", "threads": 1, "cells": 3}
