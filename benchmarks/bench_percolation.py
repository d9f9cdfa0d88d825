"""Cluster labelling speed: mclib.percolation's fast path against networkx, measured in one run.

Main case (the issue's target): site percolation at the 3-D threshold on a 100^3 lattice (10^6 sites).
The fast path (``label_sites``: ``scipy.ndimage.label``) labels the full lattice. networkx (lattice
``grid_graph`` -> open subgraph -> ``connected_components``, i.e. ``label_sites_nx``) runs on the same
lattice when a pilot on a smaller one predicts it finishes within ``NX_BUDGET_S``; otherwise on the
smaller lattice, and the comparison is per site. Two ratios: the whole networkx path (graph building
included, which is what a user of networkx pays) and networkx ``connected_components`` alone on a prebuilt
open-site graph. A second case times the sparse-graph path used for d >= 5 (6-D, 5^6 sites).

Run: ``.venv/bin/python benchmarks/bench_percolation.py``.
"""
from __future__ import annotations

import time

import networkx as nx
import numpy as np

from mclib import percolation as perc

TARGET = 50.0
NX_BUDGET_S = 20.0


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _nx_times(mask: np.ndarray) -> tuple[float, float, int]:
    """(seconds for the whole networkx path, best-of-3 seconds for connected_components alone, number of clusters)."""
    t = time.perf_counter()
    g = perc.site_graph(mask)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    n = sum(1 for _ in nx.connected_components(g))
    t_first = time.perf_counter() - t
    t_cc = min(t_first, _best(lambda: sum(1 for _ in nx.connected_components(g)), repeat=2))  # best of 3, like the fast path
    return t_build + t_first, t_cc, n


def bench_3d(L: int = 100, p: float = perc.LITERATURE_SITE_PC[3], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = rng.random((L,) * 3) < p
    t_fast = _best(lambda: perc.label_sites(mask))
    n_fast = perc.label_sites(mask)[1]
    # pilot on a smaller lattice to decide whether networkx can do the full one in the budget
    L_pilot = 20
    pilot = rng.random((L_pilot,) * 3) < p
    t_pilot, _, _ = _nx_times(pilot)
    predicted = t_pilot * mask.size / pilot.size
    if predicted <= NX_BUDGET_S:
        t_nx, t_cc, n_nx = _nx_times(mask)
        L_nx = L
        assert n_nx == n_fast, "networkx and the fast path disagree on the number of clusters"
    else:
        L_nx = max(L_pilot, int(round((NX_BUDGET_S / 3 / (t_pilot / pilot.size)) ** (1 / 3))))
        L_nx = min(L_nx, L)
        small = rng.random((L_nx,) * 3) < p
        t_nx, t_cc, n_nx = _nx_times(small)
        assert n_nx == perc.label_sites(small)[1], "networkx and the fast path disagree on the number of clusters"
    nx_sites = L_nx**3
    per_site_fast = t_fast / mask.size
    r_full = (t_nx / nx_sites) / per_site_fast
    r_cc = (t_cc / nx_sites) / per_site_fast
    return {"L": L, "sites": mask.size, "L_nx": L_nx, "fast_s": t_fast, "nx_s": t_nx, "nx_cc_s": t_cc,
            "ratio_full": r_full, "ratio_cc": r_cc}


def bench_6d(L: int = 5, p: float = perc.LITERATURE_SITE_PC[6], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    mask = rng.random((L,) * 6) < p
    t_fast = _best(lambda: perc.label_sites(mask))  # auto: sparse-graph path in d >= 5
    t_nx, t_cc, n_nx = _nx_times(mask)
    assert n_nx == perc.label_sites(mask)[1]
    return {"L": L, "sites": mask.size, "fast_s": t_fast, "nx_s": t_nx, "ratio_full": t_nx / t_fast,
            "ratio_cc": t_cc / t_fast}


def main() -> dict:
    r3 = bench_3d()
    print(f"3-D site percolation at p_c, fast path on {r3['L']}^3 = {r3['sites']:,} sites: {r3['fast_s']:.3f} s; "
          f"networkx on {r3['L_nx']}^3 sites: {r3['nx_s']:.2f} s (connected_components alone {r3['nx_cc_s']:.2f} s)"
          + ("" if r3["L_nx"] == r3["L"] else " -- compared per site"))
    print(f"RATIO label_3d_vs_networkx: {r3['ratio_full']:.2f}x (target >= {TARGET:g}x)")
    print(f"RATIO label_3d_vs_networkx_components_only: {r3['ratio_cc']:.2f}x (target >= {TARGET:g}x)")
    r6 = bench_6d()
    print(f"6-D site percolation at p_c, {r6['L']}^6 = {r6['sites']:,} sites: fast (sparse graph) {r6['fast_s']:.3f} s, "
          f"networkx {r6['nx_s']:.2f} s")
    print(f"RATIO label_6d_vs_networkx: {r6['ratio_full']:.2f}x (target >= {TARGET:g}x)")
    return {"label_3d_vs_networkx": r3["ratio_full"], "label_3d_vs_networkx_components_only": r3["ratio_cc"],
            "label_6d_vs_networkx": r6["ratio_full"]}


if __name__ == "__main__":
    main()
