"""Speed of mclib.paths: the inference engine against eager forward passes, and batched bypass.

Run: ``.venv/bin/python benchmarks/bench_paths.py``. Every ratio is a paired median of interleaved rounds
at one thread in process CPU time (``_timing.paired``); both sides run in this process on the same inputs
and must give the same losses (to 1e-4) before they are timed.

1. ``linear_paths_engine_vs_eager_cnn28``: loss along 32 straight lines x 200 points (6,400 inputs) for the
   quick preset's CNN on 1x28x28 inputs. Reference: the implementation before the inference engine -- eager
   NCHW forward passes in chunks of ``2**16 / 784 = 83`` images (its default CPU chunk). Candidate:
   ``paths.linear_losses`` (prepared once per model: frozen channels-last graph, larger chunks). Target 4x.
2. ``linear_paths_engine_vs_eager_resnet32``: the same for a third-party-style CIFAR ResNet on 3x32x32
   inputs (16 pairs x 64 points) with the old default chunk of ``2**16 / 3072 = 21`` images (issue 20 item 6).
   ``linear_paths_engine_fraction_of_gemm_peak_cnn28``: the engine's rate in convolution/linear FLOPs per CPU
   second (``_timing.forward_flops``) over the rate of a 1024 x 1024 fp32 matrix product timed in the same
   rounds (``_timing.gemm_reference``): how close to the core's attainable peak the engine runs, whatever the
   CPU. Target 0.5. The ratio against eager code above depends on how efficient eager code is on the machine
   (its fraction of peak is printed next to it), this one does not.
3. ``bypass_batched_vs_single``: one bypass round (the same reduced number of Adam iterations on both sides)
   for 32 pairs; ``paths.bypass`` on all pairs at once against 32 calls on one pair each. Target 5x.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from _timing import forward_flops, paired, peak_fraction, single_thread
from mclib import models, paths


@torch.no_grad()
def eager_linear_losses(model, A, C, target, num_points, chunk):
    """The pre-engine ``linear_losses``: eager forward passes of ``chunk`` path points (NCHW, fp32)."""
    model.eval()
    a = paths.alphas(num_points)
    P, T = A.shape[0], num_points
    pair = torch.arange(P).repeat_interleave(T)
    w_all = a.repeat(P)
    D = C - A
    out = torch.empty(P * T)
    for s in range(0, P * T, chunk):
        idx = pair[s:s + chunk]
        x = torch.addcmul(A[idx], w_all[s:s + chunk].view(-1, 1, 1, 1), D[idx])
        out[s:s + chunk] = F.cross_entropy(model(x), target[idx], reduction="none")
    return out.view(P, T)


class _Block(nn.Module):
    """Basic residual block with an option-A (zero-padded, strided identity) shortcut, as in common CIFAR ResNets."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        sc = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + sc)


def cifar_resnet(n: int = 1, num_classes: int = 10) -> nn.Module:
    """A small CIFAR ResNet (6n+2 layers; n=1: ResNet-8): stem conv+BN, functional ReLU, option-A blocks, linear head."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            layers, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                for i in range(n):
                    layers.append(_Block(cin, cout, stride if i == 0 else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layers(out)
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
    return Net()


def _peak_fraction(name, model, shape, P, T, rounds, target):
    """The engine's FLOP rate on ``linear_losses`` over a same-run GEMM's (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    A, C = torch.rand(P, *shape, generator=g), torch.rand(P, *shape, generator=g)
    t = torch.randint(0, 10, (P,), generator=g)
    return peak_fraction(name, lambda: paths.linear_losses(model, A, C, t, T), forward_flops(model, A[:1]) * P * T,
                         rounds=rounds, target=target)


def _engine_ratio(name, model, shape, P, T, old_chunk, rounds, target=None):
    g = torch.Generator().manual_seed(0)
    A, C = torch.rand(P, *shape, generator=g), torch.rand(P, *shape, generator=g)
    t = torch.randint(0, 10, (P,), generator=g)
    fast = paths.linear_losses(model, A, C, t, T)           # also prepares the engine (not timed)
    ref = eager_linear_losses(model, A, C, t, T, old_chunk)
    err = float((fast - ref).abs().max())
    assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-4), f"engine and eager linear losses differ by {err:.1e}"
    return paired(name, lambda: eager_linear_losses(model, A, C, t, T, old_chunk),
                  lambda: paths.linear_losses(model, A, C, t, T), rounds=rounds, target=target,
                  note=f"{P}x{T} points, old chunk {old_chunk}, max |diff| {err:.1e}")


def main(iterations: int = 32, rounds: int = 5) -> dict:
    """Run the benchmarks at one thread; return ``{name: Ratio}``."""
    out = {}
    with single_thread():
        torch.manual_seed(0)
        cnn = models.build("cnn", in_shape=(1, 28, 28), num_classes=10).eval()
        r = _engine_ratio("linear_paths_engine_vs_eager_cnn28", cnn, (1, 28, 28), 32, 200, 2 ** 16 // 784, rounds, 4.0)
        out[r.name] = r
        peak = _peak_fraction("linear_paths_engine_fraction_of_gemm_peak_cnn28", cnn, (1, 28, 28), 32, 200, rounds, 0.5)
        out[peak.name] = peak
        print(f"    eager reference at {peak.cpu / r.cpu:.2f} of the GEMM peak, the engine at {peak.cpu:.2f}", flush=True)
        torch.manual_seed(0)
        net = cifar_resnet().eval()
        r = _engine_ratio("linear_paths_engine_vs_eager_resnet32", net, (3, 32, 32), 16, 64, 2 ** 16 // 3072, rounds)
        out[r.name] = r

        g = torch.Generator().manual_seed(1)
        P = 32
        A, C = torch.rand(P, 1, 28, 28, generator=g), torch.rand(P, 1, 28, 28, generator=g)
        t = torch.randint(0, 10, (P,), generator=g)
        kw = dict(iterations=iterations, max_rounds=1, num_points=32, tolerance=0.0, progress=False)  # bend every pair with any gap
        r = paired("bypass_batched_vs_single", lambda: [paths.bypass(cnn, A[i:i + 1], C[i:i + 1], t[i:i + 1], **kw)
                                                        for i in range(P)],
                   lambda: paths.bypass(cnn, A, C, t, **kw), rounds=3, warmup=0, target=5.0,
                   note=f"{P} pairs, 1 round of {iterations} Adam iterations")
        out[r.name] = r
    return out


if __name__ == "__main__":
    main()
