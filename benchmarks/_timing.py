"""Timing harness for the benchmarks: paired medians of interleaved rounds, in process CPU time.

Why this shape (issue 17): on a shared machine, ratios timed once by wall clock swung by up to 16x between
runs. Here every ratio is measured as follows:

* **one thread** (:func:`single_thread`), so no OpenMP thread spins against other processes;
* **interleaved rounds**: round ``i`` runs the reference and the candidate back to back, alternating which
  goes first (ABBA), so a slow phase of the machine hits both sides of a round alike;
* **paired median**: each round gives one ratio ``t_reference / t_candidate``; the reported ratio is the
  median of those per-round ratios (robust to a round disturbed by another process);
* **process CPU time** (``time.process_time``: time this process spent on a CPU, not time it waited for one)
  as the main column, and wall time (``time.perf_counter``) as a second column for orientation; at one
  thread on an idle machine the two agree.

A ratio above 1 means the candidate is faster. For an *overhead* ratio (e.g. "curve step at most 1.05x a
plain step") pass the slower-by-design side as ``reference`` and use ``direction="<="``.

Usage in a benchmark module::

    from _timing import paired, single_thread
    with single_thread():
        r = paired("linear_paths_engine_vs_eager", lambda: old(), lambda: new(), rounds=5, target=4.0)
    return {r.name: r}          # run.py prints every Ratio in one table with the load average
"""
from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

__all__ = ["Ratio", "paired", "single_thread", "environment", "measure", "cpu_model", "gemm_reference",
           "forward_flops", "peak_fraction"]


@dataclass
class Ratio:
    """One measured ratio ``t_reference / t_candidate`` (paired median over ``rounds`` interleaved rounds).

    ``cpu``/``wall``: the paired medians in process CPU time and wall time; ``cpu_rounds``/``wall_rounds``:
    the per-round ratios; ``reference_s``/``candidate_s``: median CPU seconds of each side; ``target`` and
    ``direction`` (``">="``: the ratio should be at least the target; ``"<="``: at most).
    """

    name: str
    cpu: float
    wall: float
    reference_s: float
    candidate_s: float
    rounds: int
    target: float | None = None
    direction: str = ">="
    note: str = ""
    cpu_rounds: list = field(default_factory=list)
    wall_rounds: list = field(default_factory=list)

    def meets(self) -> bool | None:
        """Whether the CPU-time ratio meets its target (None without a target)."""
        if self.target is None:
            return None
        return self.cpu >= self.target if self.direction == ">=" else self.cpu <= self.target

    def target_text(self) -> str:
        return "no target" if self.target is None else f"{self.direction} {self.target:g}x"

    def line(self) -> str:
        met = {None: "", True: "  met", False: "  NOT met"}[self.meets()]
        spread = f"[{min(self.cpu_rounds):.2f}-{max(self.cpu_rounds):.2f}]" if self.cpu_rounds else ""
        return (f"RATIO {self.name}: {self.cpu:.2f}x cpu {spread} (wall {self.wall:.2f}x), target {self.target_text()}"
                f"{met}; median {self.reference_s:.3f} s vs {self.candidate_s:.3f} s cpu, {self.rounds} rounds"
                + (f"; {self.note}" if self.note else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    """``(cpu_seconds, wall_seconds)`` of one call of ``fn`` (garbage collected before, not during)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        return time.process_time() - c0, time.perf_counter() - w0
    finally:
        if was:
            gc.enable()


def paired(name: str, reference: Callable[[], object], candidate: Callable[[], object], *, rounds: int = 5,
           warmup: int = 1, target: float | None = None, direction: str = ">=", note: str = "",
           reference_scale: float = 1.0, verbose: bool = True) -> Ratio:
    """Time ``reference`` and ``candidate`` in ``rounds`` interleaved rounds and return their :class:`Ratio`.

    ``warmup`` untimed calls of each side come first (first-call costs: allocation, kernel selection, the
    inference engine's preparation when it is not what is measured). Round ``i`` runs reference then
    candidate when ``i`` is even and the other order when odd. The ratio of a round is
    ``t_reference / t_candidate``; the result is the median over rounds, in CPU and in wall time.
    ``reference_scale`` multiplies the reference's times, for a reference timed on a fraction of the work
    (say so in ``note``).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if direction not in (">=", "<="):
        raise ValueError(f"direction must be '>=' or '<=', got {direction!r}")
    for _ in range(int(warmup)):
        reference()
        candidate()
    ref_c, ref_w, cand_c, cand_w = [], [], [], []
    for i in range(int(rounds)):
        order = ((reference, ref_c, ref_w), (candidate, cand_c, cand_w))
        for fn, cs, ws in (order if i % 2 == 0 else order[::-1]):
            c, w = measure(fn)
            cs.append(max(c, 1e-9))
            ws.append(max(w, 1e-9))
    ref_c, ref_w = [reference_scale * t for t in ref_c], [reference_scale * t for t in ref_w]
    cpu_r = [a / b for a, b in zip(ref_c, cand_c)]
    wall_r = [a / b for a, b in zip(ref_w, cand_w)]
    r = Ratio(name=name, cpu=statistics.median(cpu_r), wall=statistics.median(wall_r),
              reference_s=statistics.median(ref_c), candidate_s=statistics.median(cand_c), rounds=int(rounds),
              target=target, direction=direction, note=note, cpu_rounds=cpu_r, wall_rounds=wall_r)
    if verbose:
        print(r.line(), flush=True)
    return r


@contextlib.contextmanager
def single_thread(threads: int = 1):
    """torch (intra-op) threads set to ``threads`` for the block, restored afterwards."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def environment() -> dict:
    """What the ratios depend on: load average, CPU count, thread settings, torch version."""
    import torch
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"load_average_1_5_15min": [round(x, 2) for x in load], "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__, "cpu": cpu_model()}


def cpu_model() -> str:
    """The CPU's model name and its widest vector extensions (what a ratio against eager code depends on).

    Ratios against an eager or per-example reference move with the hardware: on one machine a reference can
    run at a third of the core's peak, on another at half, so the same candidate shows 4x there and 2.7x
    here. Every run therefore prints the CPU next to its ratios (and :func:`gemm_reference` gives the
    core's peak in the same run).
    """
    import platform
    name, flags = platform.machine(), set()
    try:
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in
                                                      Path("/proc/cpuinfo").read_text().splitlines())}
        name, flags = info.get("model name", name), set(info.get("flags", "").split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(isa) if isa else 'no AVX2'})"


def gemm_reference(n: int = 1024) -> tuple[Callable[[], object], float]:
    """``(fn, flops)``: an ``n x n`` fp32 matrix product and its ``2 n^3`` floating-point operations.

    What one core can do, measured in the same run: a dense matrix product is the best case of the CPU's
    vector units (oneDNN/MKL keep the FMA pipes full), so ``flops / time`` of a candidate over that of this
    reference is the fraction of the core's attainable peak the candidate reaches.
    """
    import torch
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return (lambda: torch.mm(a, b)), 2.0 * n ** 3


def forward_flops(model, x) -> float:
    """Floating-point operations (2 per multiply-add) of the convolutions and linear layers of ``model(x)``.

    Counted with forward hooks on ``nn.Conv*d`` and ``nn.Linear``: ``out.numel() * (in_channels / groups *
    prod(kernel))`` and ``out.numel() * in_features`` multiply-adds. Pooling, activations and
    normalisation are left out (they are not FMA work), so the fraction of peak computed from this count
    is a lower bound on how busy the core is.
    """
    import math

    import torch
    from torch import nn
    macs = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Linear):
            macs[0] += out.numel() * mod.in_features
        else:
            macs[0] += out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return 2.0 * macs[0]


def peak_fraction(name: str, candidate: Callable[[], object], flops: float, *, rounds: int, target: float,
                  note: str = "") -> Ratio:
    """The fraction of the core's attainable peak ``candidate`` reaches: its rate in ``flops`` per CPU second
    over that of :func:`gemm_reference`, timed in the same interleaved rounds (:func:`paired`, with the
    GEMM's times scaled to ``flops``)."""
    gemm, gemm_flops = gemm_reference()
    return paired(name, gemm, candidate, rounds=rounds, target=target, reference_scale=flops / gemm_flops,
                  note=f"{flops / 1e9:.1f} GFLOP per call; GEMM 1024^3 scaled to the same FLOPs"
                       + (f"; {note}" if note else ""))
