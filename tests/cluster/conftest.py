"""A one-node Slurm cluster on this machine, up for the duration of the cluster tests (``make cluster-test``).

``munged``, ``slurmctld`` and ``slurmd`` run in the foreground as children of this process, with every
key, socket, state, spool, pid and log file in a temporary folder and ``SLURM_CONF`` pointing at its own
``slurm.conf``; they are stopped by their own process ids when the session ends, also when a test fails.

The configuration needs no cgroups and no systemd (``proctrack/linuxproc``, ``task/none``), and no
accounting database: ``slurmdbd`` would need a MariaDB server (another install, another daemon, a schema)
for one thing, ``sacct``, that a chapter's state can also come from. Without it the runner asks ``squeue``
(:class:`mclib.jobs.SlurmWatcher`), finished jobs are written by ``jobcomp/filetxt`` to ``jobcomp.txt``
(id, name, state, exit code, node), and each chapter's run record carries its ``SLURM_JOB_ID``.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return kb // 1024 * 9 // 10  # leave slurmd's own count some room (it drains a node that has less)


def slurm_conf(tmp: Path, host: str, cpus: int, mem_mb: int, munge_socket: Path) -> str:
    """A minimal one-node ``slurm.conf``: this host, its cores and memory, everything under ``tmp``."""
    return f"""\
ClusterName=mclibtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={tmp}/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _wait(what: str, check, timeout: float, logs: list[Path], procs: dict) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n" + _tails(logs))
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n" + _tails(logs))


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                     for p in logs if p.exists())


def _sinfo_idle(env: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "idle"


def _stop(procs: dict, env: dict) -> None:
    """Cancel what is left in the queue, then stop the daemons by their own pids (slurmd, slurmctld, munged)."""
    if "slurmctld" in procs and procs["slurmctld"].poll() is None:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            q = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
            if q.returncode != 0 or not q.stdout.strip():
                break
            time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _job_table(env: dict) -> str:
    """Every job this cluster ran, from its job completion log (``sacct --completion``: no accounting database)."""
    out = subprocess.run(["sacct", "--completion", "-o", "JobID,JobName%32,State,Start,End,NodeList"],
                         env=env, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else out.stderr


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, pytestconfig):
    """A running one-node cluster: yields a dict with ``conf``, ``env`` (with ``SLURM_CONF``), ``folder``,
    ``jobcomp`` and ``node``; ``SLURM_CONF`` is also set in this process for the tests' builds."""
    if os.environ.get("MCLIB_CLUSTER_TEST") != "1":
        pytest.skip("the Slurm cluster test runs under `make cluster-test` (MCLIB_CLUSTER_TEST=1)")
    missing = [d for d in (*DAEMONS, "sbatch", "sinfo", "squeue", "scancel") if shutil.which(d) is None]
    if missing:
        pytest.fail(f"not installed: {missing}; `make cluster-test` installs Debian's slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.fail("the one-node cluster runs slurmd as root: run `make cluster-test` as root or with sudo")
    tmp = Path(tmp_path_factory.mktemp("slurm"))
    tmp.chmod(0o700)
    for sub in ("state", "spool", "munge"):
        (tmp / sub).mkdir(mode=0o700)
    key = tmp / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    sock = tmp / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = tmp / "slurm.conf"
    conf.write_text(slurm_conf(tmp, host, len(os.sched_getaffinity(0)), _mem_mb(), sock))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    logs = [tmp / "munged.log", tmp / "slurmctld.log", tmp / "slurmd.log"]
    procs: dict[str, subprocess.Popen] = {}
    old_conf = os.environ.get("SLURM_CONF")
    try:
        procs["munged"] = subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={tmp}/munged.pid", f"--log-file={tmp}/munged.log", f"--seed-file={tmp}/munge/seed"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait("the munge socket", sock.exists, 30, logs, procs)
        procs["slurmctld"] = subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs["slurmd"] = subprocess.Popen(["slurmd", "-D", "-f", str(conf), "-N", host], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait("sinfo to show the node idle", lambda: _sinfo_idle(env), 90, logs, procs)
        os.environ["SLURM_CONF"] = str(conf)
        yield {"conf": conf, "env": env, "folder": tmp, "jobcomp": tmp / "jobcomp.txt", "node": host,
               "pids": {k: p.pid for k, p in procs.items()}}
    finally:
        if conf.exists() and pytestconfig is not None:
            with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                print(f"\nThe jobs of the one-node cluster ({conf}):\n{_job_table(env)}", flush=True)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        _stop(procs, env)
