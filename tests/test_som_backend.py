"""The default SOM backend (mclib's batch map) against MiniSom, the oracle, at its default settings."""
from __future__ import annotations

import inspect

import torch

from mclib import som as S


def _codes(n: int = 600, d: int = 32, seed: int = 0) -> torch.Tensor:
    """Channel-mean-like codes: ReLU of a 3-D latent mapped to d dimensions, plus noise."""
    g = torch.Generator().manual_seed(seed)
    Z, A = torch.randn(n, 3, generator=g), torch.randn(3, d, generator=g)
    return torch.relu(Z @ A + 0.3 * torch.randn(n, d, generator=g))


def test_default_backend_is_the_batch_map():
    assert inspect.signature(S.fit_som).parameters["backend"].default == "torch"
    som = S.fit_som(_codes(), 6, 6)
    assert som.backend == "torch" and som.info["iterations"] == 10


def test_default_reaches_minisoms_error():
    """At its defaults the batch map is at least as good as two MiniSom epochs: the bar bench_som.py times it at
    (quantisation error <= 1.05x MiniSom's, topographic error <= MiniSom's + 0.02)."""
    X = _codes()
    ref = S.fit_som(X, 8, 8, sigma=4.0, backend="minisom", iterations=2 * len(X))
    own = S.fit_som(X, 8, 8, sigma=4.0)
    Zr, Zo = S.standardise(ref, X), S.standardise(own, X)
    assert own.quantization_error(Zo) <= 1.05 * ref.quantization_error(Zr)
    assert own.topographic_error(Zo) <= ref.topographic_error(Zr) + 0.02
    # same BMU rule as the oracle on the same weights: argmin distance, lowest index on ties
    W = own.weights.reshape(-1, X.shape[1])
    assert torch.equal(own.bmu(Zo), torch.cdist(Zo.double(), W.double()).argmin(1))


def test_default_is_deterministic():
    X = _codes(300, 16, seed=1)
    assert torch.equal(S.fit_som(X, 5, 5, seed=2).weights, S.fit_som(X, 5, 5, seed=2).weights)
