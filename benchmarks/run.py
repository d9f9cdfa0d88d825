"""Run every benchmark (benchmarks/bench_*.py) in one process and print each ratio next to its target.

    .venv/bin/python benchmarks/run.py [NAME ...] [--threads N] [--json PATH]

Each benchmark measures its candidate and its reference in the same run, as paired medians of interleaved
rounds in process CPU time (``_timing.paired``), so a ratio compares like with like on whatever machine this
runs on. The threads are fixed before torch is imported (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` default to
1, ``--threads``); the closing table shows the thread setting and the load average at the start and the end,
since a loaded machine still shifts CPU-time ratios a little (shared caches, frequency).

``NAME`` selects benchmarks by file stem (``bench_paths``) or short name (``paths``). A benchmark returns
``{name: Ratio}``; a bare float (older benchmarks) is shown as such, without a target.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def _row(name, r):
    if isinstance(r, (int, float)):
        return f"  {name:<52} {float(r):>8.2f}x {'':>9}  {'(single timing, no target)':<14}"
    met = {None: "", True: "met", False: "NOT MET"}[r.meets()]
    return f"  {name:<52} {r.cpu:>8.2f}x {r.wall:>8.2f}x  {r.target_text():<10} {met}"


def main(argv=None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    # before torch is imported anywhere: the OpenMP pool is sized at its first use
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(a.threads))
    sys.path.insert(0, str(HERE))
    import torch
    from _timing import Ratio, environment
    torch.set_num_threads(a.threads)
    env_start = environment()
    print(f"threads: torch {env_start['torch_threads']}, OMP_NUM_THREADS={env_start['OMP_NUM_THREADS']}, "
          f"OMP_WAIT_POLICY={env_start['OMP_WAIT_POLICY']}; load average {env_start['load_average_1_5_15min']} "
          f"on {env_start['cpu_count']} CPUs\ncpu: {env_start['cpu']}", flush=True)
    results, failed = {}, []
    t0 = time.perf_counter()
    for path in sorted(HERE.glob("bench_*.py")):
        if a.names and path.stem not in a.names and path.stem[6:] not in a.names:
            continue
        print(f"== {path.stem}", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
            out = mod.main() or {}
        except Exception as exc:       # one broken benchmark must not hide the others' ratios
            print(f"!! {path.stem} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(path.stem)
            continue
        results[path.stem] = {k: v for k, v in out.items() if isinstance(v, (Ratio, int, float))}
        torch.set_num_threads(a.threads)   # a benchmark may have changed it
    env_end = environment()
    print(f"\n== summary ({time.perf_counter() - t0:.0f} s): ratio = reference time / candidate time, paired median "
          f"of interleaved rounds; torch threads {env_end['torch_threads']}, OMP_NUM_THREADS="
          f"{env_end['OMP_NUM_THREADS']}, OMP_WAIT_POLICY={env_end['OMP_WAIT_POLICY']}; load average "
          f"{env_start['load_average_1_5_15min']} at start, {env_end['load_average_1_5_15min']} at end; "
          f"cpu {env_end['cpu']}")
    print(f"  {'ratio':<52} {'cpu':>9} {'wall':>9}  target")
    for stem, rs in results.items():
        for name, r in rs.items():
            print(_row(name, r))
    if failed:
        print(f"  failed benchmarks: {', '.join(failed)}")
    if a.json:
        payload = {"environment_start": env_start, "environment_end": env_end, "failed": failed,
                   "results": {s: {k: (v.to_dict() if isinstance(v, Ratio) else v) for k, v in rs.items()}
                               for s, rs in results.items()}}
        a.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
