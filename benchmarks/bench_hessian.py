"""Speed of mclib.hessian: the exact Gauss-Newton path against the batched Lanczos solver, and batching itself.

Run: ``.venv/bin/python benchmarks/bench_hessian.py``. Every ratio is a paired median of interleaved rounds at
one thread in process CPU time (``_timing.paired``); both sides run in this process on the same inputs.

1. ``hessian_exact_vs_batched_lanczos_cnn28``: per-example top input-Hessian eigenvalue of 256 inputs for the
   quick preset's CNN (ReLU, max-pool) on 1x28x28 inputs, briefly trained on synthetic data. Reference: today's
   batched solver before this change -- ``top_eigenvalue(method="lanczos", iters=32, tol=1e-5,
   precision="native")`` (block-diagonal double-backward HVPs, float32). Candidate: the default
   ``top_eigenvalue`` (``method="auto"``: detected piecewise linear, eigenvalues of the C x C Gauss-Newton
   matrix from the input Jacobian). Target 3x (an independent implementation of the exact form measured 3x).
2. ``hessian_exact_vs_batched_lanczos_resnet20``: the same for the CIFAR ResNet-20 (BatchNorm in eval mode,
   untrained) on 32 inputs of 3x32x32. Target 3x.
3. ``hessian_batched_vs_loop``: batched Lanczos on 256 inputs against a loop of one-input calls (the same
   solver, ``precision="native"``). Target 5x.

Agreement is printed too: the exact path and Lanczos against ``exact_hessian`` of the float64 model on a few
inputs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from _timing import paired, single_thread
from mclib import hessian, models

N = 256
LANCZOS = dict(method="lanczos", iters=32, tol=1e-5, precision="native")


def _trained_cnn():
    torch.manual_seed(0)
    model = models.build("cnn", in_shape=(1, 28, 28), num_classes=10)
    g = torch.Generator().manual_seed(1)
    X = torch.rand(512, 1, 28, 28, generator=g)
    y = (X.flatten(1)[:, ::79].sum(1) * 7).long() % 10  # a learnable synthetic labelling
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(0, 512, 128):  # a few steps: the Hessians of a slightly trained model, not of pure init
        opt.zero_grad()
        F.cross_entropy(model(X[i:i + 128]), y[i:i + 128]).backward()
        opt.step()
    return model.eval(), X[:N], y[:N]


def _resnet20():
    torch.manual_seed(0)
    net = models.build("resnet20", in_shape=(3, 32, 32), num_classes=10).eval()
    g = torch.Generator().manual_seed(2)
    X = torch.rand(32, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = net(X).argmax(1)
    return net, X, y


def _agreement(model, X, y, n=3):
    ref = hessian.exact_top_eigenvalue(copy.deepcopy(model).double(), X[:n].double(), y[:n])
    ex = hessian.top_eigenvalue(model, X[:n], y[:n]).double()
    lz = hessian.top_eigenvalue(model, X[:n], y[:n], generator=torch.Generator().manual_seed(0), **LANCZOS).double()
    rel = lambda a: ((a - ref).abs() / ref.abs()).max().item()  # noqa: E731
    return rel(ex), rel(lz)


def main(rounds: int = 5) -> dict:
    out = {}
    with single_thread():
        model, X, y = _trained_cnn()
        e_ex, e_lz = _agreement(model, X, y)
        print(f"cnn28: max rel. error vs float64 exact Hessian (3 inputs): exact path {e_ex:.1e}, float32 Lanczos {e_lz:.1e}")
        lanczos = lambda: hessian.top_eigenvalue(model, X, y, generator=torch.Generator().manual_seed(0), **LANCZOS)  # noqa: E731
        r = paired("hessian_exact_vs_batched_lanczos_cnn28", lanczos, lambda: hessian.top_eigenvalue(model, X, y),
                   rounds=rounds, target=3.0, note=f"{N} inputs, Lanczos iters<=32 tol 1e-5")
        out[r.name] = r

        net, Xr, yr = _resnet20()
        print(f"resnet20: detected piecewise linear: {hessian.is_piecewise_linear(net, Xr[:4])}")
        r = paired("hessian_exact_vs_batched_lanczos_resnet20",
                   lambda: hessian.top_eigenvalue(net, Xr, yr, generator=torch.Generator().manual_seed(0), **LANCZOS),
                   lambda: hessian.top_eigenvalue(net, Xr, yr), rounds=3, target=3.0,
                   note=f"{len(Xr)} inputs 3x32x32, Lanczos iters<=32 tol 1e-5")
        out[r.name] = r

        gen = torch.Generator().manual_seed(0)
        loop = lambda: [hessian.top_eigenvalue(model, X[i:i + 1], y[i:i + 1], generator=gen, **LANCZOS)  # noqa: E731
                        for i in range(N)]
        r = paired("hessian_batched_vs_loop", loop, lanczos, rounds=3, warmup=0, target=5.0,
                   note=f"{N} inputs, Lanczos, both sides the same solver")
        out[r.name] = r
    return out


if __name__ == "__main__":
    main()
