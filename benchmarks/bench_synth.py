"""Benchmark: batched FVO (mclib.synth.fvo) for 32 targets vs the same FVO run one target at a time.

Same work on both sides: the small CNN of the quick preset (1x28x28) and of the smoke preset (1x8x8),
untrained weights, eval mode, 32 targets, a fixed number of Adam iterations with the stopping threshold disabled (threshold=0, so no input
stops early), one CPU thread (so the ratio measures batching, not thread scheduling on a shared machine).
A third timing runs the paper's way -- ``torch.optim.Adam`` on one input at a time -- as an independent
reference. Every ratio is a paired median of interleaved rounds (``_timing.paired``). Run: ``.venv/bin/python benchmarks/bench_synth.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from _timing import paired, single_thread
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


def _ratios(in_shape, steps, n_targets, rounds):
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=in_shape, num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    targets = torch.arange(n_targets) % 10
    x0 = 0.01 * torch.randn(n_targets, *in_shape, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=steps, threshold=0.0, progress=False)
    batched = synth.fvo(model, targets, in_shape, init=x0, **kw)
    assert int(batched.steps.min()) == steps, "threshold disabled: every input must run all steps"
    shape = "x".join(map(str, in_shape))
    run_batched = lambda: synth.fvo(model, targets, in_shape, init=x0, **kw)          # noqa: E731
    single = paired(f"fvo_batched_vs_single_cnn{in_shape[-1]}",
                    lambda: [synth.fvo(model, targets[i:i + 1], in_shape, init=x0[i:i + 1], **kw)
                             for i in range(n_targets)], run_batched, rounds=rounds, target=TARGET_RATIO,
                    note=f"{n_targets} targets x {steps} steps, CNN {shape}")
    adam = paired(f"fvo_batched_vs_torch_adam_single_cnn{in_shape[-1]}",
                  lambda: _adam_one_at_a_time(model, targets, x0, steps), run_batched, rounds=rounds,
                  target=TARGET_RATIO, note="reference: torch.optim.Adam, one input at a time")
    return {single.name: single, adam.name: adam}


def main(steps: int = STEPS, n_targets: int = N_TARGETS, rounds: int = 3) -> dict:
    """Paired-median ratios (one-at-a-time time / batched time) for the quick preset's CNN (1x28x28) and the
    smoke one (1x8x8), at one thread in process CPU time."""
    with single_thread():
        return {**_ratios((1, 28, 28), steps, n_targets, rounds), **_ratios((1, 8, 8), steps, n_targets, rounds)}


if __name__ == "__main__":
    main()
