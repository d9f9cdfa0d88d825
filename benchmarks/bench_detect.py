"""Benchmark: batched barrier-feature extraction vs a per-input loop (mclib.detect).

Feature extraction for 512 inputs x K references x 64 path points: :func:`mclib.detect.extract` on the
whole batch (all 512 * K * 64 path points through the inference engine in a few large forward passes)
against a loop that calls it on one input at a time (each input's K * 64 points in one pass, plus its own
logits pass), as a user without batching would write it. Both run in this process on the quick preset's
model (the book's cached CNN on mnist5k, trained on first use) and must give the same features. The loop
is timed on the first ``LOOP_N`` inputs and scaled to 512 (``reference_scale``). Paired median of
interleaved rounds at one thread, process CPU time (``_timing.paired``).

``extract_batched_fraction_of_gemm_peak`` puts the batched side against the core's attainable peak instead:
its convolution/linear FLOPs (``_timing.forward_flops`` times the path points) per CPU second over those of a
1024 x 1024 matrix product timed in the same rounds (target 0.5). The loop's own fraction is printed too: a
batched-vs-loop ratio can be no larger than the batched side's fraction over the loop's.

    .venv/bin/python benchmarks/bench_detect.py
"""
from __future__ import annotations

import torch

from _timing import forward_flops, paired, peak_fraction, single_thread

N, K, T, LOOP_N, TARGET = 512, 2, 64, 32, 5.0


def main(rounds: int = 3) -> dict:
    from mclib import config, data, detect, train
    with single_thread():
        ctx = config.setup("quick", "cpu", 0, None, None)
        model = train.train(train.recipe_for(ctx), device="cpu", progress=False).model
        Xp, yp = data.load("mnist5k", "train")
        Xt, _ = data.load("mnist5k", "test")
        refs = detect.select_references(model, Xp, yp, K)
        x = Xt[:N]
        fast = detect.extract(model, x, refs, T)
        loop = [detect.extract(model, x[i:i + 1], refs, T) for i in range(LOOP_N)]
        if not torch.allclose(torch.cat([f.curves for f in loop]), fast.curves[:LOOP_N], atol=1e-4, rtol=1e-4):
            raise AssertionError("batched and per-input features differ")
        r = paired("extract_batched_vs_per_input_loop",
                   lambda: [detect.extract(model, x[i:i + 1], refs, T) for i in range(LOOP_N)],
                   lambda: detect.extract(model, x, refs, T), rounds=rounds, warmup=0, target=TARGET,
                   reference_scale=N / LOOP_N,
                   note=f"{N} inputs x {K} refs x {T} points; loop timed on {LOOP_N} inputs, scaled")
        flops = forward_flops(model, x[:1]) * N * K * T   # the path points; the logits pass adds N more (0.8%)
        peak = peak_fraction("extract_batched_fraction_of_gemm_peak", lambda: detect.extract(model, x, refs, T),
                             flops, rounds=rounds, target=0.5, note="FLOPs of the path points")
        print(f"    per-input loop at {peak.cpu / r.cpu:.2f} of the GEMM peak, batched at {peak.cpu:.2f}", flush=True)
    return {r.name: r, peak.name: peak}


if __name__ == "__main__":
    main()
