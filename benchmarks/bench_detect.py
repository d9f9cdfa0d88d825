"""Benchmark: batched barrier-feature extraction vs a per-input loop (mclib.detect).

Feature extraction for 512 inputs x K references x 64 path points: :func:`mclib.detect.extract` on the
whole batch (all 512 * K * 64 path points in a few large forward passes) against a loop that calls it on
one input at a time (each input's K * 64 points in one pass, plus its own logits pass), as a user without
batching would write it. Both run in this process on the quick preset's model (the book's cached CNN on
mnist5k, trained on first use), and must give the same features. The loop is timed on the first
``LOOP_N`` inputs and its per-input time scaled to 512 (stated in the output), to keep the run short.

    .venv/bin/python benchmarks/bench_detect.py
"""
from __future__ import annotations

import time

import torch

N, K, T, LOOP_N, POINT_N, TARGET = 512, 2, 64, 32, 2, 5.0


def main() -> dict:
    from mclib import config, data, detect, train
    ctx = config.setup("quick", "cpu", 0, None, None)
    model = train.train(train.recipe_for(ctx), device="cpu", progress=False)
    Xp, yp = data.load("mnist5k", "train")
    Xt, _ = data.load("mnist5k", "test")
    refs = detect.select_references(model, Xp, yp, K)
    x = Xt[:N]
    detect.extract(model, x[:8], refs, T)                      # warm-up
    t0 = time.perf_counter()
    fast = detect.extract(model, x, refs, T)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = [detect.extract(model, x[i:i + 1], refs, T) for i in range(LOOP_N)]
    t_loop = (time.perf_counter() - t0) * N / LOOP_N
    same = torch.allclose(torch.cat([f.curves for f in loop]), fast.curves[:LOOP_N], atol=1e-4, rtol=1e-4)
    if not same:
        raise AssertionError("batched and per-input features differ")
    # a fully unbatched reference: one forward pass per path point (timed on POINT_N inputs, scaled)
    import torch.nn.functional as F
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(POINT_N):
            c = int(fast.pred[i])
            for j in range(K):
                for a in torch.linspace(0, 1, T).tolist():
                    F.cross_entropy(model(((1 - a) * refs.images[c, j] + a * x[i])[None]), torch.tensor([c]))
    t_point = (time.perf_counter() - t0) * N / POINT_N
    ratio = t_loop / t_batched
    print(f"feature extraction, {N} inputs x {K} references x {T} points ({N * K * T} path points):")
    print(f"  batched {t_batched:.2f} s; per-input loop {t_loop:.2f} s (timed on {LOOP_N} inputs, scaled to {N}); "
          f"per-point loop {t_point:.2f} s (timed on {POINT_N} inputs, scaled)")
    print(f"RATIO extract_batched_vs_per_input_loop: {ratio:.2f}x (target >= {TARGET:g}x)")
    print(f"RATIO extract_batched_vs_per_point_loop: {t_point / t_batched:.2f}x (no target; context)")
    return {"extract_batched_vs_per_input_loop": float(ratio),
            "extract_batched_vs_per_point_loop": float(t_point / t_batched)}


if __name__ == "__main__":
    main()
