"""``--executor slurm`` on a real (one-node, localhost) Slurm cluster: ``make cluster-test``.

Deselected from plain ``pytest`` (marker ``cluster``; ``addopts`` has ``-m "not cluster"``), and skipped
unless ``MCLIB_CLUSTER_TEST=1``; the cluster is the ``slurm_cluster`` fixture (conftest.py here).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_book import ROOT, _notebook  # noqa: E402

from mclib import book, claims, jobs  # noqa: E402

pytestmark = pytest.mark.cluster

# Three smoke chapters for the parity check: the whole smoke book through Slurm and sequentially takes
# ~12 minutes on the 2-core CI machine, over this target's budget; these three train their own models.
PARITY = ["a1_real_paths", "a4_interpolated_synthetic", "a7_barrier_evolution"]
SLURM = ["--executor", "slurm", "--jobs", "2", "--gpus-per-job", "0", "--cpus-per-job", "1", "--time", "30"]
RECORD_A1 = ("from mclib import claims\nclaims.record('A1', values={'runs': {'cnn': {'tolerance': 0.01, "
             "'barrier_fraction': {'estimate': 0.1, 'lo': 0.06, 'hi': 0.15, 'n': 200}}}}, measured='m', "
             "chapter='notebooks/first.ipynb')")


def _jobcomp(cluster) -> dict[str, dict[str, str]]:
    """Finished jobs from the ``jobcomp/filetxt`` log: ``{job id: {"JobState": ..., "Name": ...}}``."""
    path = cluster["jobcomp"]
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        out[fields["JobId"]] = fields
    return out


def _squeue(cluster) -> str:
    return subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=cluster["env"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _book(tmp: Path, chapters: dict[str, str]) -> Path:
    """A tiny book in ``tmp``: one notebook a chapter, its last cell ``chapters[name]``."""
    (tmp / "notebooks").mkdir(parents=True)
    (tmp / "book").mkdir()
    (tmp / "book" / "intro.md").write_text("# Intro\n")
    (tmp / "_config.yml").write_text((ROOT / "_config.yml").read_text())
    (tmp / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: P\n    chapters:\n"
                                  + "".join(f"      - file: notebooks/{name}\n" for name in chapters))
    for name, source in chapters.items():
        _notebook(tmp / "notebooks" / f"{name}.ipynb", source)
    return tmp


def _measured(recorded: dict[str, dict]) -> dict[str, dict]:
    """Claim records without their code provenance (``source_hash``, ``mclib_hash``: the same code gives the
    same hashes, but a checkout edited between the two builds would not)."""
    return {cid: {k: v for k, v in rec.items() if not k.endswith("_hash")} for cid, rec in recorded.items()}


def _records(build: Path, names) -> dict[str, dict]:
    return {n: book.read_run_record(build, Path(f"notebooks/{n}.ipynb")) for n in names}


def test_smoke_chapters_through_slurm_give_the_sequential_claims(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # trained weights depend on the thread count: 1 in both builds
    only = ["--only", *PARITY, "--preset", "smoke", "--device", "cpu", "--no-html", "--root", str(ROOT)]
    found = {}
    for name, flags in (("sequential", []), ("slurm", SLURM)):
        monkeypatch.setenv("MCLIB_BUILD_DIR", str(tmp_path / name / "_build"))
        monkeypatch.setenv("MCLIB_CACHE", str(tmp_path / name / "cache"))
        start = time.perf_counter()
        assert book.main(["build", *only, *flags]) == 0, capsys.readouterr().err
        found[name] = (claims.load_all(), time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n{len(PARITY)} smoke chapters: sequential {found['sequential'][1]:.0f} s, "
              f"slurm --jobs 2 {found['slurm'][1]:.0f} s")
    sequential, slurm = (_measured(found[k][0]) for k in ("sequential", "slurm"))
    assert sequential and set(slurm) == set(sequential)
    for cid, rec in sequential.items():
        assert slurm[cid] == rec, f"claim {cid} differs between the sequential build and the Slurm jobs"
    build = tmp_path / "slurm" / "_build"
    records, done = _records(build, PARITY), _jobcomp(slurm_cluster)
    for name, rec in records.items():  # every chapter ran as its own Slurm job, on one thread
        assert rec["status"] == "ok" and rec["torch_threads"] == 1, rec
        job = done[rec["slurm_job_id"]]
        assert job["JobState"] == "COMPLETED" and job["Name"] == f"mclib-{name}", job
        assert (build / "jobs" / rec["slurm_job_id"] / f"{rec['slurm_job_id']}_submission.sh").exists()
    assert len({rec["slurm_job_id"] for rec in records.values()}) == len(PARITY)
    assert all(rec.get("slurm_job_id") is None for rec in _records(tmp_path / "sequential" / "_build", PARITY).values())
    with capsys.disabled():
        print(next((build / "jobs").glob("*/*_submission.sh")).read_text())


def test_failing_notebook_is_named_with_its_cell_and_its_jobs_log(slurm_cluster, tmp_path, monkeypatch, capsys):
    root = _book(tmp_path / "book", {
        # the kernel gets the job's cores (--cpus-per-job 1), not the submitting shell's thread count
        "good": "import os\nassert os.environ['OMP_NUM_THREADS'] == '1', os.environ['OMP_NUM_THREADS']\n"
                "assert os.environ['SLURM_JOB_ID']",
        "bad": "raise ZeroDivisionError('planted failure')",
        "after": "pass"})
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    code = book.main(["build", "--preset", "smoke", "--no-html", "--root", str(root), *SLURM])
    err = capsys.readouterr().err
    assert code == 1
    assert "notebooks/bad.ipynb failed at cell 4 (counting from 1, `raise ZeroDivisionError" in err, err
    assert "ZeroDivisionError: planted failure" in err
    build = Path(os.environ["MCLIB_BUILD_DIR"])
    records = _records(build, ("good", "bad", "after"))
    assert {n: r["status"] for n, r in records.items()} == {"good": "ok", "bad": "failed", "after": "ok"}
    job = records["bad"]["slurm_job_id"]
    log = build / "jobs" / job / f"{job}_0_log.err"
    assert f"the job's log ({job}) is at {log}" in err and log.exists()
    assert records["good"]["torch_threads"] == 1


def test_a_job_killed_outside_its_notebook_is_reported_with_its_state_and_log(slurm_cluster, tmp_path, capsys):
    """scancel from outside (an admin, a time limit, a node failure): the chapter is reported as its job's
    state and log, not with a line of submitit's log; the build does not wait for a result that never comes."""
    root = _book(tmp_path / "book", {"victim": "import time\ntime.sleep(600)"})
    build = Path(os.environ["MCLIB_BUILD_DIR"])
    proc = subprocess.Popen([sys.executable, "-m", "mclib.book", "build", "--preset", "smoke", "--no-html",
                             "--root", str(root), *SLURM], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: " RUNNING" in _squeue(slurm_cluster) and list((build / "src").rglob("victim.ipynb")), 120, proc)
        job = _squeue(slurm_cluster).split()[0]
        subprocess.run(["scancel", job], env=slurm_cluster["env"], check=True)
        out, err = proc.communicate(timeout=120)
    finally:
        _kill(proc)
    assert proc.returncode == 1, err
    assert f"notebooks/victim.ipynb: its job {job} ended outside the notebook (Slurm state CANCELLED): *** JOB {job} ON {slurm_cluster['node']} CANCELLED AT" in err, err
    assert "submitit INFO" not in err and "Traceback" not in err
    assert f"the job's log is at {build / 'jobs' / job / f'{job}_0_log.err'}" in err


def _until(check, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the build ended early ({proc.returncode}): {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_interrupted_build_leaves_no_job_and_resume_resubmits_only_what_is_missing(slurm_cluster, tmp_path):
    root = _book(tmp_path / "book", {
        "first": RECORD_A1,
        "slow": "import os, time\ntime.sleep(float(os.environ.get('MCLIB_TEST_SLEEP', '0')))"})
    build = Path(os.environ["MCLIB_BUILD_DIR"])
    cmd = [sys.executable, "-m", "mclib.book", "build", "--preset", "smoke", "--no-html", "--root", str(root), *SLURM,
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "MCLIB_TEST_SLEEP": "600"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # Ctrl-C must reach the build even when the tests run in the background, where a
                            # shell starts commands with SIGINT ignored (and Python keeps it so)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _until(lambda: "mclib-slow RUNNING" in _squeue(slurm_cluster), 180, proc)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=60)
    finally:
        _kill(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["mclib.book: interrupted; cancelled the running chapters ['slow']; chapters that "
                                        "had finished before keep their results (--resume reuses them) (Ctrl-C)"], err
    deadline = time.monotonic() + 30
    while _squeue(slurm_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _squeue(slurm_cluster) == "", "jobs left in the queue after Ctrl-C"
    first = book.read_run_record(build, Path("notebooks/first.ipynb"))
    assert first["status"] == "ok" and book.read_run_record(build, Path("notebooks/slow.ipynb")) is None
    slow_job = max(_jobcomp(slurm_cluster), key=int)
    assert _jobcomp(slurm_cluster)[slow_job]["JobState"] == "CANCELLED"

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "notebooks/first.ipynb: reused" in resumed.stdout and "1 chapters as slurm jobs" in resumed.stdout
    records = _records(build, ("first", "slow"))
    assert records["first"]["slurm_job_id"] == first["slurm_job_id"]  # not resubmitted
    assert records["slow"]["status"] == "ok" and int(records["slow"]["slurm_job_id"]) > int(slow_job)
    assert _jobcomp(slurm_cluster)[records["slow"]["slurm_job_id"]]["JobState"] == "COMPLETED"


def test_a_job_sbatch_refuses_is_one_clear_error(slurm_cluster, tmp_path, capsys):
    """The default of one GPU a chapter on a cluster without GPUs: sbatch's refusal, named, not a traceback."""
    root = _book(tmp_path / "book", {"only": "pass"})
    code = book.main(["build", "--preset", "smoke", "--no-html", "--root", str(root), "--executor", "slurm"])
    err = capsys.readouterr().err
    assert code == 1
    assert "mclib.book: sbatch refused the job (this cluster has no GPUs? --gpus-per-job 0): " in err, err
    assert "Invalid generic resource (gres) specification" in err and "Traceback" not in err
    assert _squeue(slurm_cluster) == ""
