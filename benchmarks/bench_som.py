"""SOM fit: mclib's batched PyTorch batch map against MiniSom's online training, at equal error.

Run: ``.venv/bin/python benchmarks/bench_som.py``. Protocol (fixed before measuring):

* data: synthetic codes with low-dimensional structure (ReLU of a random 3-D latent mapped to D dimensions
  plus noise, like channel means of a layer), z-scored as :func:`mclib.som.fit_som` does; two sizes:
  ``quick`` (1000 x 64 codes, 10 x 10 map, sigma 5: the quick preset's B chapter) and ``paper``
  (5000 x 256 codes, 20 x 20 map, sigma 10);
* reference: MiniSom's online training as the book ran it, two epochs (2 N single-sample updates), learning
  rate 0.5, PCA initialisation (``fit_som(backend="minisom")``);
* candidate: ``fit_som(backend="torch")``, trying (iterations, sigma_end) in order of cost and keeping the
  cheapest one at *equal error*: quantisation error <= 1.05 x MiniSom's and topographic error <= MiniSom's
  + 0.02 (the first candidate is the torch backend's default, 10 iterations to sigma 1.5);
* time: paired medians of interleaved rounds at one thread in process CPU time (``_timing.paired``).

``som_torch_vs_minisom_*`` = t_minisom / t_torch (> 1: the batch map is faster). The faster backend at equal
error is :func:`mclib.som.fit_som`'s default.
"""
from __future__ import annotations

import torch

from _timing import paired, single_thread
from mclib import som as S

SIZES = {"quick": (1000, 64, 10, 5.0), "paper": (5000, 256, 20, 10.0)}  # N, D, rows = cols, sigma
CANDIDATES = ((10, 1.5), (20, 1.5), (20, 1.0), (40, 1.0))
QE_TOL, TE_TOL = 1.05, 0.02


def data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Z, A = torch.randn(n, 3, generator=g), torch.randn(3, d, generator=g)
    return torch.relu(Z @ A + 0.3 * torch.randn(n, d, generator=g))


def errors(som: S.SOM, X: torch.Tensor) -> tuple[float, float]:
    Z = S.standardise(som, X)
    return som.quantization_error(Z), som.topographic_error(Z)


def main(rounds: int = 3) -> dict:
    out = {}
    with single_thread():
        for size, (n, d, side, sigma) in SIZES.items():
            X = data(n, d)
            kw = dict(rows=side, cols=side, sigma=sigma)
            mini = lambda: S.fit_som(X, backend="minisom", iterations=2 * n, learning_rate=0.5, **kw)  # noqa: E731
            qe_ref, te_ref = errors(mini(), X)
            print(f"{size} ({n} x {d}, {side} x {side}): MiniSom 2 epochs QE {qe_ref:.3f} TE {te_ref:.3f}")
            chosen = None
            for iters, s_end in CANDIDATES:
                qe, te = errors(S.fit_som(X, backend="torch", iterations=iters, sigma_end=s_end, **kw), X)
                equal = qe <= QE_TOL * qe_ref and te <= te_ref + TE_TOL
                print(f"  torch batch map {iters:3d} it, sigma_end {s_end}: QE {qe:.3f} TE {te:.3f} "
                      f"{'equal error' if equal else 'not equal'}")
                if equal:
                    chosen = (iters, s_end)
                    break
            if chosen is None:
                print(f"RATIO som_torch_vs_minisom_{size}: n/a (no torch setting reached MiniSom's error)")
                out[f"som_torch_vs_minisom_{size}"] = float("nan")
                continue
            iters, s_end = chosen
            r = paired(f"som_torch_vs_minisom_{size}", mini,
                       lambda: S.fit_som(X, backend="torch", iterations=iters, sigma_end=s_end, **kw),
                       rounds=rounds, target=1.0, note=f"torch {iters} iterations to sigma {s_end} at equal error")
            out[r.name] = r
    return out


if __name__ == "__main__":
    main()
