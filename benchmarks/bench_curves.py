"""Speed of curve training: one curve step against one ordinary training step, same network and batch.

A curve step (mclib.curves.objective + backward + optimiser step on the bends) differs from an ordinary
step only by forming w(t) from the control points and by the weight-decay term, so it should cost at
most 1.5x an ordinary step. Both are measured in the same run, interleaved, median over repeats.
Also reports the wall time of one curve-training epoch (small CNN, mnist5k train split, batch 128)
next to one ordinary epoch.

Run: ``.venv/bin/python benchmarks/bench_curves.py``
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from mclib import curves, data, models, train

TARGET = 1.5


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_ratio(arch: str, X: torch.Tensor, y: torch.Tensor, batch_size: int = 128, rounds: int = 5,
               steps: int = 6) -> tuple[float, float, float]:
    """(ordinary step seconds, curve step seconds, ratio) for ``arch`` on one batch of ``X``."""
    torch.manual_seed(0)
    m0 = models.build(arch, dataset="mnist5k")
    torch.manual_seed(1)
    m1 = models.build(arch, dataset="mnist5k")
    model = models.build(arch, dataset="mnist5k").train()
    curve = curves.Curve([m0, m1], num_bends=1).train()
    xb, yb = X[:batch_size], y[:batch_size]
    opt_m = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_c = torch.optim.Adam(curve.bend_parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def ordinary():
        for _ in range(steps):
            loss = F.cross_entropy(model(xb), yb)
            opt_m.zero_grad(set_to_none=True)
            loss.backward()
            opt_m.step()

    def curve_step():
        for _ in range(steps):
            t = torch.rand(1, generator=g, dtype=torch.float64)[0]
            loss = curves.objective(curve, xb, yb, t, weight_decay=5e-4)
            opt_c.zero_grad(set_to_none=True)
            loss.backward()
            opt_c.step()

    ordinary(), curve_step()  # warm-up
    a, b = [], []
    for _ in range(rounds):  # interleaved so that load changes hit both alike
        a.append(_median_time(ordinary, 1) / steps)
        b.append(_median_time(curve_step, 1) / steps)
    ta, tb = statistics.median(a), statistics.median(b)
    return ta, tb, tb / ta


def epoch_times(X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(ordinary epoch seconds, curve epoch seconds) for the small CNN on all of ``X``, batch 128, Adam."""
    torch.manual_seed(0)
    m0, m1 = models.build("cnn", dataset="mnist5k"), models.build("cnn", dataset="mnist5k")
    model = models.build("cnn", dataset="mnist5k")
    curve = curves.Curve([m0, m1], num_bends=1)
    start = time.perf_counter()
    train.fit(model, X, y, epochs=1, batch_size=128, generator=torch.Generator().manual_seed(0), progress=False)
    t_fit = time.perf_counter() - start
    start = time.perf_counter()
    curves.train_curve(curve, X, y, epochs=1, batch_size=128, optimizer="adam", lr=1e-3,
                       generator=torch.Generator().manual_seed(0), progress=False)
    return t_fit, time.perf_counter() - start


def main() -> dict:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    X, y = data.load("mnist5k", "train")
    out = {}
    for arch in ("cnn", "vgg_bn"):
        ta, tb, r = step_ratio(arch, X, y)
        print(f"{arch}: ordinary step {ta * 1e3:.1f} ms, curve step {tb * 1e3:.1f} ms (batch 128)")
        print(f"RATIO curve_step_over_ordinary_{arch}: {r:.2f}x (target <= {TARGET}x)")
        out[f"curve_step_over_ordinary_{arch}"] = r
    t_fit, t_curve = epoch_times(X, y)
    print(f"cnn/mnist5k epoch ({len(X)} images, batch 128): ordinary {t_fit:.2f} s, curve {t_curve:.2f} s")
    print(f"RATIO curve_epoch_over_ordinary_cnn: {t_curve / t_fit:.2f}x (target <= {TARGET}x)")
    out["curve_epoch_over_ordinary_cnn"] = t_curve / t_fit
    out["curve_epoch_seconds_cnn"] = t_curve
    return out


if __name__ == "__main__":
    main()
