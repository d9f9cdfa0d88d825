"""Benchmark: batched FVO (mclib.synth.fvo) for 32 targets vs the same FVO run one target at a time.

Same work on both sides: the small CNN of the quick preset (1x28x28) and of the smoke preset (1x8x8),
untrained weights, eval mode, 32 targets, a fixed number of Adam iterations with the stopping threshold disabled (threshold=0, so no input
stops early), one CPU thread (so the ratio measures batching, not thread scheduling on a shared machine).
A third timing runs the paper's way -- ``torch.optim.Adam`` on one input at a time -- as an independent
reference. Run: ``.venv/bin/python benchmarks/bench_synth.py``.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from mclib import models, synth

N_TARGETS = 32
STEPS = 100
TARGET_RATIO = 5.0


def _adam_one_at_a_time(model, targets, x0, steps):
    for i in range(len(targets)):
        x = x0[i:i + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.05, weight_decay=1e-7)
        t = targets[i:i + 1]
        for _ in range(steps):
            loss = F.cross_entropy(model(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()


def _time_config(in_shape, steps, n_targets, reference):
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=in_shape, num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    targets = torch.arange(n_targets) % 10
    x0 = 0.01 * torch.randn(n_targets, *in_shape, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=steps, threshold=0.0, progress=False)
    synth.fvo(model, targets[:2], in_shape, init=x0[:2], **{**kw, "steps": 5})    # warm-up

    t0 = time.perf_counter()
    batched = synth.fvo(model, targets, in_shape, init=x0, **kw)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = [synth.fvo(model, targets[i:i + 1], in_shape, init=x0[i:i + 1], **kw) for i in range(n_targets)]
    t_single = time.perf_counter() - t0
    t_adam = float("nan")
    if reference:
        t0 = time.perf_counter()
        _adam_one_at_a_time(model, targets, x0, steps)
        t_adam = time.perf_counter() - t0
    assert int(batched.steps.min()) == steps, "threshold disabled: every input must run all steps"
    dloss = max(abs(s.loss.item() - batched.loss[i].item()) for i, s in enumerate(singles))
    shape = "x".join(map(str, in_shape))
    print(f"FVO {n_targets} targets x {steps} steps, CNN {shape}, CPU 1 thread: batched {t_batched:.2f} s, "
          f"one at a time {t_single:.2f} s" + (f", torch.optim.Adam one at a time {t_adam:.2f} s" if reference else "")
          + f"; final CE batched vs single differs by at most {dloss:.1e} (float32 rounding amplified by Adam)")
    return t_single / t_batched, t_adam / t_batched


def main(steps: int = STEPS, n_targets: int = N_TARGETS) -> dict:
    """Ratios (one-at-a-time time / batched time) for the quick preset's CNN (1x28x28) and the smoke one (1x8x8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r28, a28 = _time_config((1, 28, 28), steps, n_targets, reference=True)
        r8, a8 = _time_config((1, 8, 8), steps, n_targets, reference=True)
    finally:
        torch.set_num_threads(threads)
    out = {"fvo_batched_vs_single_cnn28": r28, "fvo_batched_vs_torch_adam_single_cnn28": a28,
           "fvo_batched_vs_single_cnn8": r8, "fvo_batched_vs_torch_adam_single_cnn8": a8}
    for k, v in out.items():
        print(f"RATIO {k}: {v:.2f}x (target >= {TARGET_RATIO:g}x)")
    return out


if __name__ == "__main__":
    main()
