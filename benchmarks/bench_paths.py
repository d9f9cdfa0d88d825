"""Speed of mclib.paths: batched linear paths and batched bypass against pair-by-pair references.

Run: ``.venv/bin/python benchmarks/bench_paths.py``. Both sides of every ratio run in this process, on
the CPU, with the same number of torch threads (1 by default: on a shared machine extra threads spin);
times are CPU seconds of this process (``time.process_time``), the best of a few runs.

1. ``linear_paths``: loss along 64 straight lines x 200 points for the book's small CNN on 1x28x28 inputs;
   ``paths.linear_losses`` (all 12,800 inputs in a few large chunks) against the official code's way, pair
   by pair with one forward pass per 64-point chunk.
2. ``bypass``: one bypass round (the same reduced number of Adam iterations on both sides) for 32 pairs;
   ``paths.bypass`` on all pairs at once against 32 calls on one pair each.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from mclib import models, paths


def _best(fn, repeat: int) -> float:
    """Best of ``repeat`` runs, in CPU seconds of this process (robust on a shared machine; with one
    thread it equals wall time on an idle one)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


@torch.no_grad()
def _linear_reference(model, A, C, target, num_points, chunk=64):
    """Pair by pair, one forward pass per chunk of 64 path points (as in the paper's code)."""
    a = paths.alphas(num_points)
    out = torch.empty(A.shape[0], num_points)
    for p in range(A.shape[0]):
        for s in range(0, num_points, chunk):
            w = a[s:s + chunk].view(-1, 1, 1, 1)
            x = (1 - w) * A[p] + w * C[p]
            out[p, s:s + chunk] = F.cross_entropy(model(x), target[p].expand(len(w)), reduction="none")
    return out


def main(threads: int = 1, iterations: int = 128) -> dict:
    """Run both benchmarks; print and return ``{name: ratio}``."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = models.build("cnn", in_shape=(1, 28, 28), num_classes=10).eval()
        g = torch.Generator().manual_seed(0)
        A, C = torch.rand(64, 1, 28, 28, generator=g), torch.rand(64, 1, 28, 28, generator=g)
        t = torch.randint(0, 10, (64,), generator=g)
        fast = paths.linear_losses(model, A, C, t, 200)
        ref = _linear_reference(model, A, C, t, 200)
        assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-4), "batched and reference linear losses differ"
        t_fast = _best(lambda: paths.linear_losses(model, A, C, t, 200), 3)
        t_ref = _best(lambda: _linear_reference(model, A, C, t, 200), 3)
        ratios = {"linear_paths": t_ref / t_fast}
        print(f"linear paths 64 pairs x 200 points: batched {t_fast:.3f} s, pair by pair {t_ref:.3f} s")

        P = 32
        kw = dict(iterations=iterations, max_rounds=1, num_points=32, tolerance=-1.0, progress=False)  # bend every pair
        t_fast = _best(lambda: paths.bypass(model, A[:P], C[:P], t[:P], **kw), 1)
        t_ref = _best(lambda: [paths.bypass(model, A[i:i + 1], C[i:i + 1], t[i:i + 1], **kw) for i in range(P)], 1)
        ratios["bypass"] = t_ref / t_fast
        print(f"bypass {P} pairs, 1 round of {iterations} iterations: batched {t_fast:.3f} s, one at a time {t_ref:.3f} s")
        for name, target in (("linear_paths", 5.0), ("bypass", 5.0)):
            print(f"RATIO {name}: {ratios[name]:.2f}x (target >= {target:g}x)")
        return ratios
    finally:
        torch.set_num_threads(old)


if __name__ == "__main__":
    main()
