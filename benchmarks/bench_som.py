"""SOM fit on 5000 x 256 codes, 20 x 20 map: mclib's batched PyTorch batch-SOM vs MiniSom's own training.

Protocol (fixed before measuring):

* data: 5000 x 256 synthetic codes with low-dimensional structure (ReLU of a random 3-D latent
  mapped to 256-D plus noise, like channel means of a layer), z-scored as :func:`mclib.som.fit_som` does;
* reference: MiniSom's online training, one epoch (5000 single-sample updates), sigma 10, learning rate 0.5,
  PCA initialisation (``fit_som(backend="minisom")``);
* candidate: ``fit_som(backend="torch")``, trying (iterations, sigma_end) in order of cost and keeping the
  cheapest one at *equal error*: quantisation error <= 1.05 x MiniSom's and topographic error <= MiniSom's + 0.02;
* time: the best of two runs of each, in this process.

``RATIO som_torch_vs_minisom`` is MiniSom's time over the torch time. mclib keeps its own SOM as the
default only if this is >= 10x (the project's rule); otherwise MiniSom is the default backend.
"""
from __future__ import annotations

import time

import torch

from mclib import som as S

ROWS = COLS = 20
N, D = 5000, 256
CANDIDATES = ((5, 1.5), (10, 1.5), (10, 2.0), (20, 1.5), (20, 2.0))
QE_TOL, TE_TOL = 1.05, 0.02


def data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Z, A = torch.randn(N, 3, generator=g), torch.randn(3, D, generator=g)
    return torch.relu(Z @ A + 0.3 * torch.randn(N, D, generator=g))


def timed(fn, repeats: int = 2):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def errors(som: S.SOM, X: torch.Tensor) -> tuple[float, float]:
    Z = S.standardise(som, X)
    return som.quantization_error(Z), som.topographic_error(Z)


def main() -> dict:
    X = data()
    t_ref, ref = timed(lambda: S.fit_som(X, ROWS, COLS, backend="minisom", iterations=N))
    qe_ref, te_ref = errors(ref, X)
    print(f"MiniSom 1 epoch: {t_ref:.2f}s  QE {qe_ref:.3f}  TE {te_ref:.3f}")
    chosen = None
    for iters, s_end in CANDIDATES:
        t, som = timed(lambda: S.fit_som(X, ROWS, COLS, backend="torch", iterations=iters, sigma_end=s_end))
        qe, te = errors(som, X)
        equal = qe <= QE_TOL * qe_ref and te <= te_ref + TE_TOL
        print(f"torch batch SOM {iters:3d} it, sigma_end {s_end}: {t:.2f}s  QE {qe:.3f}  TE {te:.3f}  "
              f"{'equal error' if equal else 'not equal'}")
        if equal:
            chosen = (iters, s_end, t, qe, te)
            break
    if chosen is None:
        print("RATIO som_torch_vs_minisom: n/a (no torch setting reached MiniSom's error)")
        return {"som_torch_vs_minisom": float("nan")}
    ratio = t_ref / chosen[2]
    print(f"RATIO som_torch_vs_minisom: {ratio:.2f}x (target >= 10x to replace MiniSom; "
          f"default backend: {'torch' if ratio >= 10 else 'minisom'})")
    return {"som_torch_vs_minisom": ratio}


if __name__ == "__main__":
    main()
