"""Percolation on d-dimensional hypercubic lattices: the geometric explanation of input-space connectivity.

Vrabel et al. (ICLR 2025, Section 5, Conjecture 5.1) explain input-space mode connectivity as an effect of
high dimension: cut input space into cells and call a cell *low loss* for a class with probability ``p``;
as the dimension grows, the site-percolation threshold ``p_c(d)`` falls (roughly like ``1/(2d-1)``), so for
any fixed ``0 < p < 1`` two random low-loss cells are almost surely joined by a path of low-loss cells.
This module turns the argument into simulations (background: Stauffer & Aharony 1994).

Lattices and clusters
    *Site* percolation: each site of an ``L x ... x L`` lattice is open with probability ``p``; two open sites
    are in one cluster if a path of nearest-neighbour open sites joins them. *Bond* percolation: every site is
    present, each nearest-neighbour bond is open with probability ``p``. ``periodic`` wraps every axis
    (a torus); a tuple of booleans wraps only some axes.

    * Reference: :func:`lattice_graph` builds the lattice with :func:`networkx.grid_graph`,
      :func:`site_graph` / :func:`bond_graph` keep the open part, :func:`label_sites_nx` /
      :func:`label_bonds_nx` label it with :func:`networkx.connected_components`.
    * Fast path: :func:`label_sites` uses :func:`scipy.ndimage.label` with the nearest-neighbour structure
      ``generate_binary_structure(d, 1)`` (any ``d``), then merges labels across the wrap faces of periodic
      axes with a union of label pairs (:func:`scipy.sparse.csgraph.connected_components`). For ``d >= 5``
      the ``3**d`` neighbourhood scan of ``ndimage`` gets slow, and the default switches to a sparse-graph
      labelling of the open nearest-neighbour edges (same result). :func:`label_bonds` uses the sparse-graph
      path. Both label many independent lattices in one call (``batch=True``: axis 0 indexes samples).
      The tests check that every path gives the same partition of sites as networkx.

Estimators
    * Spanning (crossing) probability ``R_L(p)``: the probability that one cluster touches both faces
      ``x_0 = 0`` and ``x_0 = L-1``. With *coupled* samples (one uniform ``u`` per site, open iff
      ``u < p``) spanning is monotone in ``p``, so each sample has a threshold ``p*`` and ``R_L(p)`` is the
      empirical CDF of the ``p*`` (:func:`spanning_thresholds`, found by batched bisection).
    * ``p_c``: finite-size scaling ``R_L(p) = f((p - p_c) L^{1/nu})`` makes the curves for different ``L``
      cross near ``p_c``; :func:`estimate_pc` averages the pairwise crossings and states an uncertainty
      combining a bootstrap over samples with the spread of the pairwise crossings (finite-size drift).
    * Two-point connection probability ``tau = sum_c s_c (s_c - 1) / (n (n - 1))``: the probability that
      two distinct random open sites lie in one cluster (``s_c`` cluster sizes, ``n`` open sites), and the
      largest cluster's share of sites (:func:`cluster_stats`, :func:`connection_surface`).
    * The paper's random-labelling model (:func:`random_labelling`): each cell gets class ``k`` with
      probability ``p_k``; ``tau_k`` is the probability that two random cells of class ``k`` are connected
      through cells of class ``k`` -- site percolation at ``p = p_k`` for each class.

Bridge to real networks
    :func:`label_fractions` estimates ``p`` from a model's own input space: points drawn uniformly in small
    L-infinity boxes around real inputs are labelled with the class the model predicts (the random-labelling
    model's cells) or called low loss when the cross-entropy toward the input's class is below a threshold.
    :func:`pc_series` and :func:`threshold_dimension` place the measured ``p`` on the ``p_c(d)`` curve.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from torch import nn
from tqdm.auto import tqdm

from mclib import _check as check
from mclib.torchutil import device_of, eval_mode

#: Site-percolation thresholds of the hypercubic lattice, to four digits (2D Newman & Ziff 2000; 3D the
#: standard value, e.g. Stauffer & Aharony 1994; 4D-7D Grassberger 2003), as listed for claim A10.
LITERATURE_SITE_PC: dict[int, float] = {2: 0.5927, 3: 0.3116, 4: 0.1969, 5: 0.1408, 6: 0.1090, 7: 0.0889}
#: Bond-percolation thresholds of the hypercubic lattice (2D exactly 1/2; 3D-7D literature values to four digits).
LITERATURE_BOND_PC: dict[int, float] = {2: 0.5, 3: 0.2488, 4: 0.1601, 5: 0.1182, 6: 0.0942, 7: 0.0787}

KINDS = ("site", "bond")
METHODS = ("auto", "ndimage", "graph")


# ----------------------------------------------------------------------------------------------- helpers
def _periodic_axes(periodic: bool | Sequence[bool], d: int) -> tuple[bool, ...]:
    if isinstance(periodic, (bool, np.bool_)):
        return (bool(periodic),) * d
    periodic = tuple(bool(x) for x in periodic)
    if len(periodic) != d:
        raise ValueError(f"periodic has {len(periodic)} entries but the lattice has {d} axes")
    return periodic


def _check_mask(open_mask, batch: bool, name: str = "open_mask") -> np.ndarray:
    m = np.asarray(open_mask)
    if m.dtype != bool:
        raise TypeError(f"{name} must be a boolean array (True = open), got dtype {m.dtype}")
    if m.ndim < (2 if batch else 1):
        raise ValueError(f"{name} has shape {m.shape}; expected a lattice{' with a leading sample axis' if batch else ''}")
    return m


def _check_p(p, name: str = "p") -> None:
    """One clear error unless every probability in ``p`` lies in [0, 1]."""
    a = np.asarray(p, dtype=float)
    if a.size and not ((a >= 0) & (a <= 1)).all():
        raise ValueError(f"{name} must lie in [0, 1] (a probability), got {p}")


def _check_d(d, name: str = "d") -> None:
    """One clear error unless every dimension in ``d`` is an integer >= 1."""
    a = np.asarray(d)
    if a.size and (not np.issubdtype(a.dtype, np.integer) or (a < 1).any()):
        raise ValueError(f"{name} must be integer dimensions >= 1, got {d}")


def _check_sites(n_sites: float, bytes_per_site: float, what: str) -> None:
    """One clear error, before anything is allocated, if ``n_sites`` sites at ``bytes_per_site`` bytes each
    (the arrays a labelling holds at once) exceed the memory available (``mclib._check.fits_in_memory``)."""
    check.fits_in_memory(float(n_sites) * bytes_per_site, f"{what} ({float(n_sites):.3g} sites)")


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(rng.initial_seed()))
    return np.random.default_rng(rng)


def _renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map the non-negative labels in use to 1..n (in increasing order), keeping 0 as 0. O(size), no sort."""
    present = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    mapping = np.cumsum(present)
    return mapping[labels], int(mapping[-1])


def bethe_estimate(d: int | np.ndarray) -> float | np.ndarray:
    """``1 / (2d - 1)``: the site threshold of the tree with the lattice's coordination number ``2d``.

    It is the leading term of the large-``d`` expansion of the hypercubic threshold (see :func:`pc_series`),
    the "roughly 1/(2d-1)" of the paper's percolation argument (Vrabel et al., Section 5).
    """
    _check_d(d)
    return 1.0 / (2 * np.asarray(d, dtype=float) - 1)


def pc_series(d: int | np.ndarray, kind: str = "site") -> float | np.ndarray:
    """Large-``d`` series for the hypercubic threshold in ``sigma = 2d - 1`` (Gaunt, Ruskin & Sykes 1976).

    site: ``1/sigma + 3/2 sigma^-2 + 15/4 sigma^-3 + 83/4 sigma^-4``;
    bond: ``1/sigma + 5/2 sigma^-3 + 15/2 sigma^-4``. Within about 2% of the literature for d >= 5 (site),
    used to read off ``p_c`` at dimensions no simulation reaches (e.g. d = 784 for MNIST).
    """
    _check_d(d)
    s = 2 * np.asarray(d, dtype=float) - 1
    if kind == "site":
        return 1 / s + 1.5 / s**2 + 3.75 / s**3 + 20.75 / s**4
    if kind == "bond":
        return 1 / s + 2.5 / s**3 + 7.5 / s**4
    raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")


def threshold_dimension(p: float, kind: str = "site", d_max: int = 100_000) -> int | None:
    """The smallest dimension ``d >= 2`` with ``p_c(d) < p`` (literature for d <= 7, :func:`pc_series` above).

    In the percolation picture of Vrabel et al. (Section 5) a low-loss fraction ``p`` percolates -- two
    random low-loss cells are connected with positive probability -- from this dimension on. ``None`` if
    ``p`` does not exceed the threshold for any ``d <= d_max`` (e.g. ``p = 0``).
    """
    lit = LITERATURE_SITE_PC if kind == "site" else LITERATURE_BOND_PC
    _check_p(p)
    for d in range(2, 8):
        if lit[d] < p:
            return d
    if p <= 0:
        return None
    ds = np.arange(8, d_max + 1)
    ok = np.nonzero(pc_series(ds, kind) < p)[0]
    return int(ds[ok[0]]) if ok.size else None


# --------------------------------------------------------------------------------------- networkx reference
def lattice_graph(shape: int | Sequence[int], d: int | None = None,
                  periodic: bool | Sequence[bool] = False) -> nx.Graph:
    """The hypercubic lattice as a networkx graph (:func:`networkx.grid_graph`); nodes are index tuples.

    ``lattice_graph(L, d)`` is the ``L^d`` lattice; ``lattice_graph((L0, L1, ...))`` any box. A node
    ``(i0, i1, ...)`` is the array element ``a[i0, i1, ...]``. ``periodic`` wraps every axis (a tuple of
    booleans: only some axes).
    """
    if isinstance(shape, (int, np.integer)):
        if d is None:
            raise ValueError("give the dimension d with an integer side length, e.g. lattice_graph(8, 3)")
        shape = (int(shape),) * int(d)
    shape = tuple(int(s) for s in shape)
    if d is not None and len(shape) != d:
        raise ValueError(f"shape {shape} does not have d={d} axes")
    if any(s < 1 for s in shape):
        raise ValueError(f"every side must be >= 1, got {shape}")
    per = _periodic_axes(periodic, len(shape))
    g = nx.grid_graph(dim=list(shape)[::-1], periodic=per[::-1])  # grid_graph lists axes last-first
    if len(shape) == 1:  # grid_graph(dim=[L]) uses integer nodes
        g = nx.relabel_nodes(g, {i: (i,) for i in range(shape[0])})
    return g


def site_graph(open_mask: np.ndarray, periodic: bool | Sequence[bool] = False) -> nx.Graph:
    """Site percolation as a networkx graph: the lattice's subgraph induced by the open sites."""
    m = _check_mask(open_mask, batch=False)
    g = lattice_graph(m.shape, periodic=periodic)
    return g.subgraph(map(tuple, np.argwhere(m).tolist())).copy()


def bond_graph(bond_open: np.ndarray, periodic: bool = False) -> nx.Graph:
    """Bond percolation as a networkx graph: all sites, and the lattice edges whose bond is open.

    ``bond_open[a][x]`` is the bond between site ``x`` and ``x + e_a`` (wrapping when periodic; ignored at
    the last layer otherwise). Periodic axes need side >= 3 (with side 2 the two bonds would be one edge).
    """
    b = _check_mask(bond_open, batch=True, name="bond_open")
    d, shape = b.shape[0], b.shape[1:]
    if d != len(shape):
        raise ValueError(f"bond_open must have shape (d, L0, ..., L(d-1)); got {b.shape}")
    if periodic and min(shape) < 3:
        raise ValueError("periodic bond lattices need every side >= 3 for the networkx reference")
    g = lattice_graph(shape, periodic=periodic)
    keep = []
    for u, v in g.edges():
        a = next(i for i in range(d) if u[i] != v[i])
        base = u if (v[a] - u[a]) % shape[a] == 1 else v
        if b[(a,) + tuple(base)]:
            keep.append((u, v))
    out = nx.Graph()
    out.add_nodes_from(g.nodes())
    out.add_edges_from(keep)
    return out


def labels_from_graph(g: nx.Graph, shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """Cluster labels (0 = no node, 1..n) of a graph whose nodes are index tuples, via networkx components."""
    labels = np.zeros(tuple(shape), dtype=np.int64)
    n = 0
    for n, comp in enumerate(nx.connected_components(g), start=1):
        idx = np.array(list(comp)).T
        labels[tuple(idx)] = n
    return labels, n


def label_sites_nx(open_mask: np.ndarray, periodic: bool | Sequence[bool] = False) -> tuple[np.ndarray, int]:
    """Reference site-cluster labels: :func:`site_graph` + :func:`networkx.connected_components`."""
    m = _check_mask(open_mask, batch=False)
    return labels_from_graph(site_graph(m, periodic), m.shape)


def label_bonds_nx(bond_open: np.ndarray, periodic: bool = False) -> tuple[np.ndarray, int]:
    """Reference bond-cluster labels (every site labelled): :func:`bond_graph` + networkx components."""
    b = _check_mask(bond_open, batch=True, name="bond_open")
    return labels_from_graph(bond_graph(b, periodic), b.shape[1:])


# ------------------------------------------------------------------------------------------------ fast path
def _graph_labels(site_open: np.ndarray, bonds: Sequence[np.ndarray] | None, periodic: tuple[bool, ...],
                  batch: bool) -> tuple[np.ndarray, int]:
    """Union of open nearest-neighbour edges with scipy's sparse connected components (any d, periodic)."""
    shape = site_open.shape
    lat_axes = range(1 if batch else 0, len(shape))
    n_open = int(site_open.sum())
    # node id of each open site (closed sites never appear in an edge)
    idx = (np.cumsum(site_open.ravel(), dtype=np.int64) - 1).reshape(shape)
    rows, cols = [], []
    for j, ax in enumerate(lat_axes):
        if periodic[j]:
            both = site_open & np.roll(site_open, -1, ax)
            if bonds is not None:
                both &= bonds[j]
            ia, ib = idx, np.roll(idx, -1, ax)
        else:
            lo = [slice(None)] * len(shape)
            hi = list(lo)
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            lo, hi = tuple(lo), tuple(hi)
            both = site_open[lo] & site_open[hi]
            if bonds is not None:
                both &= bonds[j][lo]
            ia, ib = idx[lo], idx[hi]
        rows.append(ia[both])
        cols.append(ib[both])
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = sparse.csr_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n_open, n_open))
    n, comp = csgraph.connected_components(g, directed=False)
    labels = np.zeros(shape, dtype=np.int64)
    labels[site_open] = comp + 1
    return labels, int(n)


def _merge_wrap(labels: np.ndarray, n: int, periodic: tuple[bool, ...], batch: bool) -> tuple[np.ndarray, int]:
    """Join labels that touch across the wrap faces of the periodic axes (union of label pairs)."""
    off = 1 if batch else 0
    a_all, b_all = [], []
    for j, per in enumerate(periodic):
        if not per:
            continue
        ax = j + off
        first = np.take(labels, 0, axis=ax)
        last = np.take(labels, labels.shape[ax] - 1, axis=ax)
        both = (first > 0) & (last > 0)
        a_all.append(first[both])
        b_all.append(last[both])
    if not a_all:
        return labels, n
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    g = sparse.csr_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n + 1, n + 1))
    _, comp = csgraph.connected_components(g, directed=False)
    # renumber the merged components so that the background (label 0) stays 0
    order = np.full(comp.max() + 1, -1, dtype=np.int64)
    used = comp[1:]
    uniq = np.unique(used)
    order[uniq] = np.arange(1, uniq.size + 1)
    mapping = np.concatenate([[0], order[used]])
    return mapping[labels], int(uniq.size)


def label_sites(open_mask: np.ndarray, periodic: bool | Sequence[bool] = False, batch: bool = False,
                method: str = "auto") -> tuple[np.ndarray, int]:
    """Site-percolation clusters: labels (0 = closed site, 1..n) and the number of clusters ``n``.

    Two open sites share a label iff a path of nearest-neighbour open sites joins them (wrapping across
    periodic axes). ``batch=True`` labels independent lattices stacked on axis 0 in one call (labels are
    unique across the batch). ``method``: ``"ndimage"`` (:func:`scipy.ndimage.label` with
    ``generate_binary_structure(d, 1)``, wrap faces merged afterwards), ``"graph"`` (sparse connected
    components of the open edges) or ``"auto"`` (ndimage for d <= 4, graph above, where ndimage's
    ``3**d`` neighbourhood scan is slower). Every method gives the same partition.
    """
    m = _check_mask(open_mask, batch)
    d = m.ndim - (1 if batch else 0)
    per = _periodic_axes(periodic, d)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if method == "auto":
        method = "ndimage" if d <= 4 else "graph"
    if method == "graph":
        return _graph_labels(m, None, per, batch)
    structure = ndimage.generate_binary_structure(d, 1)
    if not batch:
        labels, n = ndimage.label(m, structure=structure)
        return _merge_wrap(labels, int(n), per, batch)
    # one call per sample (faster than one (d+1)-dimensional call, whose structure scan is 3**(d+1)),
    # labels offset so that they stay unique across the batch
    labels = np.empty(m.shape, dtype=np.int64)
    n = 0
    for i in range(m.shape[0]):
        lab, k = ndimage.label(m[i], structure=structure)
        labels[i] = np.where(lab > 0, lab + n, 0)
        n += int(k)
    return _merge_wrap(labels, n, per, batch)


def label_bonds(bond_open: np.ndarray, periodic: bool | Sequence[bool] = False, batch: bool = False
                ) -> tuple[np.ndarray, int]:
    """Bond-percolation clusters: every site gets a label 1..n; sites joined by open bonds share one.

    ``bond_open`` has shape ``(d, L0, ..., L(d-1))`` (``(B, d, ...)`` with ``batch=True``); entry
    ``[a][x]`` is the bond from ``x`` to ``x + e_a`` (see :func:`bond_graph`).
    """
    b = _check_mask(bond_open, batch=True, name="bond_open")
    bonds = np.moveaxis(b, 1, 0) if batch else b
    shape = bonds.shape[1:]
    d = len(shape) - (1 if batch else 0)
    if bonds.shape[0] != d:
        raise ValueError(f"bond_open must have one bond array per lattice axis: got {bonds.shape[0]} for d={d}")
    return _graph_labels(np.ones(shape, dtype=bool), list(bonds), _periodic_axes(periodic, d), batch)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label arrays describe the same clusters: the same closed (0) sites and a one-to-one
    correspondence between the labels of the open sites (label values themselves may differ)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    m = a > 0
    if not m.any():
        return True
    pairs = np.unique(np.stack([a[m], b[m]]), axis=1)
    return pairs.shape[1] == np.unique(pairs[0]).size == np.unique(pairs[1]).size


def random_sites(shape: Sequence[int], p: float, rng=None) -> np.ndarray:
    """A site-percolation configuration: each site open independently with probability ``p``."""
    _check_p(p)
    shape = tuple(check.positive_int(n, "shape entries") for n in shape)
    _check_sites(math.prod(shape), 9, "random_sites")
    return _rng(rng).random(shape) < p


def random_bonds(shape: Sequence[int], p: float, rng=None) -> np.ndarray:
    """A bond-percolation configuration ``(d, *shape)``: each bond open independently with probability ``p``."""
    _check_p(p)
    shape = tuple(check.positive_int(n, "shape entries") for n in shape)
    _check_sites(len(shape) * math.prod(shape), 9, "random_bonds")
    return _rng(rng).random((len(shape),) + shape) < p


# ------------------------------------------------------------------------------------------------ estimators
def spanning(labels: np.ndarray, axis: int = 0, batch: bool = False) -> np.ndarray | bool:
    """Whether one cluster touches both faces ``x_axis = 0`` and ``x_axis = L-1`` (per sample with ``batch``).

    Labels must be unique across the batch (as :func:`label_sites` returns them).
    """
    labels = np.asarray(labels)
    ax = axis + (1 if batch else 0)
    first = np.take(labels, 0, axis=ax)
    last = np.take(labels, labels.shape[ax] - 1, axis=ax)
    common = np.intersect1d(first[first > 0], last[last > 0])
    hit = np.isin(first, common) & (first > 0)
    if not batch:
        return bool(hit.any())
    return hit.reshape(hit.shape[0], -1).any(axis=1)


def _label_kind(u: np.ndarray, p: np.ndarray, kind: str, periodic, method: str) -> np.ndarray:
    """Labels of coupled samples ``u`` (batch on axis 0) opened at per-sample ``p``."""
    pb = p.reshape((-1,) + (1,) * (u.ndim - 1))
    if kind == "site":
        return label_sites(u < pb, periodic=periodic, batch=True, method=method)[0]
    return label_bonds(u < pb, periodic=periodic, batch=True)[0]


def spanning_thresholds(L: int, d: int, n_samples: int, rng=None, kind: str = "site", steps: int = 14,
                        transverse_periodic: bool = False, max_sites: int = 2_000_000, method: str = "auto",
                        progress: bool = False) -> np.ndarray:
    """Per-sample spanning thresholds ``p*`` on the ``L^d`` lattice (spanning along axis 0).

    Each sample draws one uniform ``u`` per site (per bond for ``kind="bond"``) and is open where
    ``u < p``; spanning is then monotone in ``p``, and ``p*`` (to ``2**-steps``) is found by bisection,
    batched over samples. The spanning probability is ``R_L(p) = mean(p* <= p)``
    (:func:`crossing_probability`). ``transverse_periodic`` wraps the axes other than the spanning one.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    L, d = check.positive_int(L, "L"), check.positive_int(d, "d")
    n_samples, steps = check.positive_int(n_samples, "n_samples"), check.positive_int(steps, "steps")
    max_sites = check.positive_int(max_sites, "max_sites")
    if L < 2:
        raise ValueError(f"L must be >= 2 (a lattice with two faces), got {L}")
    per_sample = L**d * (d if kind == "bond" else 1)
    _check_sites(min(n_samples, max(1, max_sites // per_sample)) * per_sample, 24, f"spanning_thresholds L={L}, d={d}")
    gen = _rng(rng)
    periodic = (False,) + (bool(transverse_periodic),) * (d - 1)
    chunk = max(1, min(n_samples, max_sites // per_sample))
    out = np.empty(n_samples)
    for start in tqdm(range(0, n_samples, chunk), disable=not progress, desc=f"span L={L} d={d}", leave=False):
        b = min(chunk, n_samples - start)
        shape = (b,) + ((d,) if kind == "bond" else ()) + (L,) * d
        u = gen.random(shape, dtype=np.float32)  # bond: (b, d, L..), as label_bonds(batch=True) expects
        lo, hi = np.zeros(b), np.ones(b)
        for _ in range(steps):
            mid = (lo + hi) / 2
            s = spanning(_label_kind(u, mid, kind, periodic, method), axis=0, batch=True)
            hi = np.where(s, mid, hi)
            lo = np.where(s, lo, mid)
        out[start:start + b] = hi
    return out


def crossing_probability(thresholds: np.ndarray, p: np.ndarray | float) -> np.ndarray:
    """``R_L(p)``: the fraction of samples whose spanning threshold is ``<= p`` (empirical CDF).

    ``thresholds`` must be a non-empty 1-D array of finite thresholds and ``p`` finite: an empty sample
    has no fraction (it would be ``0/0 = nan``) and a NaN threshold would sort as above every ``p``.
    """
    t = check.finite(thresholds, "thresholds", "finite spanning thresholds (spanning_thresholds)")
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array (one spanning threshold per sample), "
                         f"got shape {t.shape}")
    p = check.finite(p, "p", "finite occupation probabilities")
    return np.searchsorted(np.sort(t), p, side="right") / t.size


def _smooth_cdf(t: np.ndarray, grid: np.ndarray, h: float) -> np.ndarray:
    from scipy.special import ndtr
    return ndtr((grid[:, None] - t[None, :]) / h).mean(axis=1)


def curve_crossing(t_small: np.ndarray, t_large: np.ndarray, n_grid: int = 400) -> float:
    """Where the spanning curves of a smaller and a larger lattice cross.

    Below ``p_c`` the smaller lattice spans more often, above it less often. The empirical CDFs are
    smoothed with a narrow Gaussian kernel (a quarter of the smaller spread), their difference is scanned on
    a grid between the pooled 1% and 99% quantiles, and the median of its + to - sign changes is returned
    (``nan`` if the curves do not cross there).
    """
    t_small, t_large = np.asarray(t_small, float), np.asarray(t_large, float)
    pooled = np.concatenate([t_small, t_large])
    lo, hi = np.quantile(pooled, [0.01, 0.99])
    if not hi > lo:
        return float("nan")
    grid = np.linspace(lo, hi, n_grid)
    h = 0.25 * max(min(t_small.std(), t_large.std()), 1e-6)
    diff = _smooth_cdf(t_small, grid, h) - _smooth_cdf(t_large, grid, h)
    sign = diff > 0
    idx = np.nonzero(sign[:-1] & ~sign[1:])[0]
    if idx.size == 0:
        return float("nan")
    x0, x1, y0, y1 = grid[idx], grid[idx + 1], diff[idx], diff[idx + 1]
    roots = x0 - y0 * (x1 - x0) / (y1 - y0)
    return float(np.median(roots))


def estimate_pc(thresholds: Mapping[int, np.ndarray], n_boot: int = 100, rng=None) -> dict:
    """``p_c`` from the crossings of the spanning curves of several side lengths, with an uncertainty.

    ``thresholds`` maps side length ``L`` to per-sample spanning thresholds (:func:`spanning_thresholds`).
    Returns ``pc`` (mean of the pairwise crossings over all pairs of sizes), ``crossings`` (``{(L1, L2): p}``),
    ``se_boot`` (bootstrap standard error of ``pc``, resampling each size's samples), ``spread`` (standard
    deviation of the pairwise crossings: the finite-size drift; 0 with two sizes) and ``sigma`` =
    ``sqrt(se_boot**2 + spread**2)``, the stated uncertainty.
    """
    sizes = sorted(thresholds)
    if len(sizes) < 2:
        raise ValueError("estimate_pc needs spanning thresholds for at least two side lengths")
    pairs = [(a, b) for i, a in enumerate(sizes) for b in sizes[i + 1:]]
    cross = {pr: curve_crossing(thresholds[pr[0]], thresholds[pr[1]]) for pr in pairs}
    vals = np.array([v for v in cross.values() if np.isfinite(v)])
    pc = float(vals.mean()) if vals.size else float("nan")
    spread = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    gen = _rng(rng)
    boots = []
    for _ in range(n_boot):
        res = {L: gen.choice(np.asarray(thresholds[L]), size=len(thresholds[L])) for L in sizes}
        v = np.array([curve_crossing(res[a], res[b]) for a, b in pairs])
        v = v[np.isfinite(v)]
        if v.size:
            boots.append(v.mean())
    se = float(np.std(boots, ddof=1)) if len(boots) > 1 else float("nan")
    return {"pc": pc, "crossings": cross, "se_boot": se, "spread": spread,
            "sigma": float(math.sqrt(se**2 + spread**2)) if np.isfinite(se) else float("nan")}


def cluster_stats(labels: np.ndarray, batch: bool = False) -> dict[str, np.ndarray | float]:
    """Per-lattice cluster statistics from site labels (0 = closed): the two-point connection probability.

    ``tau = sum_c s_c (s_c - 1) / (n (n - 1))`` is the probability that two distinct random open sites are
    in one cluster (``nan`` with fewer than two open sites); ``largest`` is the largest cluster's share of
    all sites (the finite-lattice percolation strength), ``largest_open`` its share of the open sites;
    ``n_open`` the number of open sites. Arrays over samples with ``batch``.
    """
    labels = np.asarray(labels)
    lab2 = labels.reshape(labels.shape[0] if batch else 1, -1)
    n_sites = lab2.shape[1]
    flat = lab2.ravel()
    sizes = np.bincount(flat)
    sizes[0] = 0
    owner = np.zeros(sizes.size, dtype=np.int64)
    rows = np.repeat(np.arange(lab2.shape[0]), n_sites)
    owner[flat] = rows
    open_counts = (lab2 > 0).sum(axis=1).astype(float)
    pair = np.bincount(owner, weights=sizes.astype(float) * (sizes - 1), minlength=lab2.shape[0])
    big = np.zeros(lab2.shape[0])
    np.maximum.at(big, owner, sizes.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(open_counts > 1, pair / (open_counts * (open_counts - 1)), np.nan)
        largest_open = np.where(open_counts > 0, big / open_counts, np.nan)
    out = {"tau": tau, "largest": big / n_sites, "largest_open": largest_open, "n_open": open_counts}
    return out if batch else {k: float(v[0]) for k, v in out.items()}


def side_for(d: int, n_sites: int) -> int:
    """Side length ``L = round(n_sites ** (1/d))`` (at least 3) of a ``d``-dimensional lattice of about ``n_sites``."""
    _check_d(d)
    n_sites = check.positive_int(n_sites, "n_sites")
    return max(3, int(round(n_sites ** (1.0 / d))))


def connection_surface(ps: Sequence[float], ds: Sequence[int], n_sites: int, n_samples: int, rng=None,
                       periodic: bool = True, max_sites: int = 4_000_000, progress: bool = False) -> dict:
    """Two-point connection probability ``tau(p, d)`` and largest-cluster share on periodic ``L^d`` lattices.

    For each ``d`` the side is :func:`side_for` ``(d, n_sites)`` so every dimension gets about the same
    number of cells; samples are coupled across ``p`` (one ``u`` per site, open iff ``u < p``). Returns
    ``tau`` and ``tau_se`` (mean and standard error over samples, shape ``(len(ds), len(ps))``),
    ``largest`` (largest cluster's share of sites), ``L`` (sides) and the inputs.
    """
    _check_p(check.finite(ps, "ps", "probabilities in [0, 1]"), "ps")
    _check_d(ds, "ds")
    n_sites, n_samples = check.positive_int(n_sites, "n_sites"), check.positive_int(n_samples, "n_samples")
    max_sites = check.positive_int(max_sites, "max_sites")
    for d in ds:
        sites = side_for(d, n_sites) ** int(d)
        _check_sites(sites, 4 + 16 * min(len(ps), max(1, max_sites // sites)), f"connection_surface d={int(d)}")
    gen = _rng(rng)
    ps, ds = np.asarray(ps, dtype=float), [int(d) for d in ds]
    tau = np.full((len(ds), len(ps)), np.nan)
    tau_se, largest = tau.copy(), tau.copy()
    sides = []
    for i, d in enumerate(tqdm(ds, disable=not progress, desc="tau(p, d)", leave=False)):
        L = side_for(d, n_sites)
        sides.append(L)
        taus, bigs = [], []
        per_call = max(1, max_sites // (L**d))
        for s in range(n_samples):
            u = gen.random((L,) * d, dtype=np.float32)
            for j0 in range(0, len(ps), per_call):
                pp = ps[j0:j0 + per_call]
                masks = u[None] < pp.reshape((-1,) + (1,) * d).astype(np.float32)
                st = cluster_stats(label_sites(masks, periodic=periodic, batch=True)[0], batch=True)
                taus.append((s, j0, st["tau"]))
                bigs.append((s, j0, st["largest"]))
        T = np.full((n_samples, len(ps)), np.nan)
        B = T.copy()
        for (s, j0, v), (_, _, w) in zip(taus, bigs):
            T[s, j0:j0 + len(v)] = v
            B[s, j0:j0 + len(w)] = w
        tau[i] = np.nanmean(T, axis=0)
        tau_se[i] = np.nanstd(T, axis=0, ddof=1) / np.sqrt(n_samples) if n_samples > 1 else np.nan
        largest[i] = B.mean(axis=0)
    return {"p": ps, "d": np.array(ds), "L": np.array(sides), "tau": tau, "tau_se": tau_se, "largest": largest}


def random_labelling(probs: Sequence[float], ds: Sequence[int], n_sites: int, n_samples: int, rng=None,
                     periodic: bool = True, progress: bool = False) -> dict:
    """The paper's random-labelling model (Vrabel et al., Section 5) on periodic ``L^d`` lattices.

    Every cell gets class ``k`` with probability ``probs[k]`` (independently); for each class the cells
    of that class form a site-percolation configuration at ``p = probs[k]``. Returns ``tau`` of shape
    ``(len(ds), K)``: the probability that two random cells of class ``k`` are connected through cells of
    class ``k`` (mean over samples), its standard error ``tau_se``, and the sides ``L``.
    """
    probs = check.finite(probs, "probs", "a probability vector summing to 1")
    if probs.ndim != 1 or (probs < 0).any() or abs(probs.sum() - 1) > 1e-6:
        raise ValueError(f"probs must be a probability vector summing to 1, got {probs}")
    _check_d(ds, "ds")
    n_sites, n_samples = check.positive_int(n_sites, "n_sites"), check.positive_int(n_samples, "n_samples")
    for d in ds:
        _check_sites(side_for(d, n_sites) ** int(d), 16 + 17 * probs.size, f"random_labelling d={int(d)}")
    gen = _rng(rng)
    edges = np.cumsum(probs)[:-1]
    K = probs.size
    tau = np.full((len(ds), K), np.nan)
    tau_se, sides = tau.copy(), []
    for i, d in enumerate(tqdm([int(x) for x in ds], disable=not progress, desc="labelling", leave=False)):
        L = side_for(d, n_sites)
        sides.append(L)
        T = np.full((n_samples, K), np.nan)
        for s in range(n_samples):
            cls = np.searchsorted(edges, gen.random((L,) * d), side="right")
            masks = cls[None] == np.arange(K).reshape((-1,) + (1,) * d)
            T[s] = cluster_stats(label_sites(masks, periodic=periodic, batch=True)[0], batch=True)["tau"]
        tau[i] = np.nanmean(T, axis=0)
        tau_se[i] = np.nanstd(T, axis=0, ddof=1) / np.sqrt(n_samples) if n_samples > 1 else np.nan
    return {"probs": probs, "d": np.array([int(x) for x in ds]), "L": np.array(sides), "tau": tau, "tau_se": tau_se}


def pc_study(spec: Mapping, steps: int = 12, n_boot: int = 100, rng=None, kind: str = "site",
             progress: bool = True) -> dict[int, dict]:
    """Spanning curves and ``p_c`` estimates for several dimensions.

    ``spec`` maps ``d`` (int or str) to ``{"sizes": [L1, L2, ...], "samples": n}``. Returns, per ``d``,
    ``{"thresholds": {L: p*}, **estimate_pc(...)}`` plus ``literature`` and ``bethe`` (``1/(2d-1)``).
    Every ``(d, L)`` draws from its own stream seeded from ``rng``, so adding a dimension does not change
    the others.
    """
    base = int(_rng(rng).integers(2**31))
    lit = LITERATURE_SITE_PC if kind == "site" else LITERATURE_BOND_PC
    out = {}
    items = sorted((int(d), v) for d, v in spec.items())
    for d, v in tqdm(items, disable=not progress, desc="p_c(d)"):
        th = {int(L): spanning_thresholds(int(L), d, int(v["samples"]), np.random.default_rng([base, d, int(L)]),
                                          kind=kind, steps=steps)
              for L in v["sizes"]}
        est = estimate_pc(th, n_boot=n_boot, rng=np.random.default_rng([base, d, 0]))
        out[d] = {"thresholds": th, **est, "literature": lit.get(d, float("nan")), "bethe": float(bethe_estimate(d))}
    return out


# ------------------------------------------------------------------------------------------- real networks
@torch.no_grad()
def label_fractions(model: nn.Module, X: torch.Tensor, y: torch.Tensor, radii: Iterable[float], n_points: int = 32,
                    generator: torch.Generator | None = None, threshold: float | None = None,
                    batch_size: int = 2048, clamp: bool = True) -> dict:
    """The low-loss fraction ``p`` of a real network, measured in its own input space.

    For each input ``x`` (class ``y``) and radius ``r``, ``n_points`` points are drawn uniformly in the
    L-infinity box ``x + [-r, r]^D`` (clamped to the pixel range [0, 1] unless ``clamp=False``). Each point
    is a *cell* of the random-labelling model labelled with the class the model predicts. Returns

    * ``p_own`` (len(radii),): fraction of points labelled with their input's class -- the ``p`` of the
      percolation picture for that class (with ``threshold``: fraction with cross-entropy toward ``y``
      below ``threshold`` instead, i.e. *low loss*);
    * ``p_own_per_class`` (len(radii), K): the same per class; ``p_own_se``: standard error over inputs;
    * ``class_fractions`` (len(radii), K): the share of all sampled points labelled ``k`` (the ``p_k``);
    * ``radii``, ``input_dim`` (D).
    """
    check.pixels(X, "X")
    if X.ndim < 2:
        raise ValueError(f"X must be a batch of inputs (N, ...), got shape {tuple(X.shape)}")
    y = check.labels(y, "y", n=len(X))
    radii = [check.non_negative_float(r, "radii entries") for r in radii]
    n_points, batch_size = check.positive_int(n_points, "n_points"), check.positive_int(batch_size, "batch_size")
    if threshold is not None:
        threshold = check.positive_float(threshold, "threshold")
    device = device_of(model)
    n, D = len(X), int(np.prod(X.shape[1:]))
    yy = y.repeat_interleave(n_points)
    K = None
    own, own_cls, fracs, own_se = [], [], [], []
    with eval_mode(model):
        for r in radii:
            base = X.repeat_interleave(n_points, 0)
            noise = (torch.rand(base.shape, generator=generator) * 2 - 1) * r
            pts = base + noise
            if clamp:
                pts = pts.clamp(0, 1)
            preds, hits = [], []
            for i in range(0, len(pts), batch_size):
                xb = pts[i:i + batch_size].to(device)
                out = (check.model_call(model, xb, "X") if i == 0 else model(xb)).float().cpu()
                if i == 0 and K is None:
                    check.labels(y, "y", num_classes=out.shape[1])
                preds.append(out.argmax(1))
                if threshold is not None:
                    hits.append(F.cross_entropy(out, yy[i:i + batch_size], reduction="none") < threshold)
            pred = torch.cat(preds)
            K = K or out.shape[1]
            hit = torch.cat(hits) if threshold is not None else pred == yy
            per_input = hit.float().view(n, n_points).mean(1)
            own.append(per_input.mean().item())
            own_se.append((per_input.std() / math.sqrt(n)).item() if n > 1 else float("nan"))
            cls = torch.full((K,), float("nan"))
            for k in range(K):
                sel = y == k
                if sel.any():
                    cls[k] = per_input[sel].mean()
            own_cls.append(cls.numpy())
            fracs.append(torch.bincount(pred, minlength=K).float().div(len(pred)).numpy())
    return {"radii": np.array(radii), "p_own": np.array(own), "p_own_se": np.array(own_se),
            "p_own_per_class": np.stack(own_cls), "class_fractions": np.stack(fracs), "input_dim": D}


def balanced_indices(y: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of about ``n`` examples spread evenly over the classes of ``y`` (random within each class).

    Some splits are sorted by class (``mnist5k``'s test split is), so ``X[:n]`` would be one class only.
    """
    classes = torch.unique(y)
    per = max(1, n // len(classes))
    out = []
    for k in classes:
        idx = torch.nonzero(y == k).flatten()
        out.append(idx[torch.randperm(len(idx), generator=generator)[:per]])
    return torch.sort(torch.cat(out)).values


# --- plots
def plot_crossing(ax, thresholds: Mapping[int, np.ndarray], pc: float | None = None, lit: float | None = None,
                  n_grid: int = 200, title: str | None = None):
    """Spanning probability ``R_L(p)`` for each side length, with the estimated and literature ``p_c``."""
    pooled = np.concatenate([np.asarray(v) for v in thresholds.values()])
    lo, hi = np.quantile(pooled, [0.002, 0.998])
    pad = 0.15 * (hi - lo)
    grid = np.linspace(max(0, lo - pad), min(1, hi + pad), n_grid)
    for L in sorted(thresholds):
        ax.plot(grid, crossing_probability(thresholds[L], grid), label=f"L={L}")
    if lit is not None:
        ax.axvline(lit, color="k", ls="--", lw=1, label=f"literature {lit:.4f}")
    if pc is not None and np.isfinite(pc):
        ax.axvline(pc, color="C3", ls=":", lw=1.5, label=f"estimate {pc:.4f}")
    ax.set_xlabel("p")
    ax.set_ylabel("spanning probability $R_L(p)$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def plot_pc(ax, study: Mapping[int, Mapping], d_max: int | None = None, kind: str = "site"):
    """Estimated ``p_c(d)`` (error bars: 2 sigma) against the literature, ``1/(2d-1)`` and :func:`pc_series`."""
    ds = np.array(sorted(study))
    pc = np.array([study[d]["pc"] for d in ds])
    sig = np.array([study[d]["sigma"] for d in ds])
    lit = LITERATURE_SITE_PC if kind == "site" else LITERATURE_BOND_PC
    dl = np.array(sorted(lit))
    dd = np.arange(2, (d_max or ds.max()) + 1)
    ax.plot(dl, [lit[d] for d in dl], "k--o", ms=4, lw=1, label="literature")
    ax.plot(dd, bethe_estimate(dd), ":", color="C2", label="1/(2d-1)")
    ax.errorbar(ds, pc, yerr=2 * sig, fmt="s", color="C1", capsize=3, label="this book (±2σ)")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("$p_c(d)$")
    ax.legend(fontsize="small")
    return ax


def plot_surface(axes, surf: Mapping, p_marks: Sequence[float] = ()):
    """Two panels: the ``tau(p, d)`` surface as a heat map and ``tau`` against ``d`` for every ``p``."""
    ax0, ax1 = axes
    p, ds, tau = surf["p"], surf["d"], surf["tau"]
    im = ax0.pcolormesh(np.arange(len(p) + 1), np.arange(len(ds) + 1), tau, vmin=0, vmax=1, cmap="viridis")
    ax0.set_xticks(np.arange(len(p)) + 0.5, [f"{x:g}" for x in p], rotation=90, fontsize="small")
    ax0.set_yticks(np.arange(len(ds)) + 0.5, [str(d) for d in ds])
    ax0.set_xlabel("p (fraction of open cells)")
    ax0.set_ylabel("dimension d")
    ax0.grid(False)
    ax0.figure.colorbar(im, ax=ax0, label="τ: P(two open cells connected)")
    for i, d in enumerate(ds):
        if d in LITERATURE_SITE_PC:
            ax0.plot(np.interp(LITERATURE_SITE_PC[d], p, np.arange(len(p))) + 0.5, i + 0.5, "w|", ms=12, mew=2)
    cmap = _colours(len(p))
    for j, pp in enumerate(p):
        ax1.errorbar(ds, tau[:, j], yerr=surf["tau_se"][:, j], color=cmap[j], marker="o", ms=3, lw=1,
                     label=f"p={pp:g}" + (" (ref)" if pp in p_marks else ""))
    ax1.set_xlabel("dimension d")
    ax1.set_ylabel("τ")
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(fontsize="small", ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return axes


def _colours(n: int) -> list:
    """``n`` colours from a sequential colour map (for families of curves)."""
    import matplotlib.pyplot as plt
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0, 0.9, max(n, 1))]


def plot_on_pc_curve(ax, measured: Mapping[str, float], input_dim: int, kind: str = "site"):
    """``p_c(d)`` from d = 2 up to the input dimension (literature, then :func:`pc_series`), log-log, with
    each measured low-loss fraction ``p`` as a horizontal line: where the line lies above the curve, the
    random-labelling picture says cells of that class percolate."""
    lit = LITERATURE_SITE_PC if kind == "site" else LITERATURE_BOND_PC
    dd = np.unique(np.round(np.logspace(np.log10(2), np.log10(max(input_dim, 8)) + 0.05, 200)).astype(int))
    curve = np.array([lit[d] if d in lit else float(pc_series(d, kind)) for d in dd])
    ax.plot(dd, curve, "k-", lw=1.5, label="$p_c(d)$ (literature, then series)")
    ax.plot(dd, bethe_estimate(dd), ":", color="gray", label="1/(2d-1)")
    ax.axvline(input_dim, color="gray", lw=1, ls="--")
    ax.text(input_dim, 0.6, f" D={input_dim}", fontsize="small", va="top", ha="right")
    for i, (name, p) in enumerate(measured.items()):
        if p > 0:
            ax.axhline(p, color=f"C{i + 1}", lw=1.2, label=f"{name}: p={p:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("p")
    ax.legend(fontsize="small", loc="lower left")
    return ax
