"""Tests for mclib.percolation: the fast cluster labelling against networkx, known cases, and p_c(2)."""
import networkx as nx
import numpy as np
import pytest
import torch

from mclib import percolation as perc


def _partition(labels):
    """The clusters as a set of frozensets of site tuples (independent of label values)."""
    out = {}
    for site in zip(*np.nonzero(labels)):
        out.setdefault(labels[site], set()).add(tuple(int(i) for i in site))
    return {frozenset(s) for s in out.values()}


def _nx_partition_site(mask, periodic):
    """Independent reference: networkx grid graph, open subgraph, connected components as sets of tuples."""
    g = nx.grid_graph(dim=list(mask.shape)[::-1], periodic=periodic)
    if mask.ndim == 1:
        g = nx.relabel_nodes(g, {i: (i,) for i in range(mask.shape[0])})
    open_nodes = [n for n in g.nodes if mask[n]]
    return {frozenset(c) for c in nx.connected_components(g.subgraph(open_nodes))}


# ---------------------------------------------------------------------------------------------- known cases
@pytest.mark.parametrize("d, L", [(2, 6), (3, 4), (5, 3)])
@pytest.mark.parametrize("periodic", [False, True])
def test_p0_and_p1(d, L, periodic):
    shape = (L,) * d
    for method in ("ndimage", "graph"):
        lab0, n0 = perc.label_sites(perc.random_sites(shape, 0.0, rng=0), periodic=periodic, method=method)
        assert n0 == 0 and not lab0.any()
        lab1, n1 = perc.label_sites(perc.random_sites(shape, 1.0, rng=0), periodic=periodic, method=method)
        assert n1 == 1 and (lab1 == 1).all()
    assert not perc.spanning(lab0)
    assert perc.spanning(lab1)
    st0, st1 = perc.cluster_stats(lab0), perc.cluster_stats(lab1)
    assert np.isnan(st0["tau"]) and st0["largest"] == 0
    assert st1["tau"] == pytest.approx(1.0) and st1["largest"] == pytest.approx(1.0)
    # bond percolation: p=0 leaves every site alone, p=1 joins them all
    b0, nb0 = perc.label_bonds(perc.random_bonds(shape, 0.0, rng=0), periodic=periodic)
    b1, nb1 = perc.label_bonds(perc.random_bonds(shape, 1.0, rng=0), periodic=periodic)
    assert nb0 == L**d and len(np.unique(b0)) == L**d
    assert nb1 == 1


def test_hand_made_lattice():
    grid = np.array([
        [1, 1, 0, 0, 1],
        [0, 1, 0, 1, 1],
        [0, 0, 0, 0, 0],
        [1, 0, 1, 1, 1],
        [1, 0, 0, 0, 1],
    ], dtype=bool)
    expected = {
        frozenset({(0, 0), (0, 1), (1, 1)}),
        frozenset({(0, 4), (1, 3), (1, 4)}),
        frozenset({(3, 0), (4, 0)}),
        frozenset({(3, 2), (3, 3), (3, 4), (4, 4)}),
    }
    lab, n = perc.label_sites(grid)
    assert n == 4 and _partition(lab) == expected
    lab_nx, n_nx = perc.label_sites_nx(grid)
    assert n_nx == 4 and _partition(lab_nx) == expected
    # no cluster joins opposite faces; opening (3, 1) merges the two bottom clusters into one that
    # joins the left and right faces (axis 1) but not the top and bottom ones (axis 0)
    assert not perc.spanning(lab, axis=0) and not perc.spanning(lab, axis=1)
    grid2 = grid.copy()
    grid2[3, 1] = True
    lab2, n2 = perc.label_sites(grid2)
    assert n2 == 3 and perc.spanning(lab2, axis=1) and not perc.spanning(lab2, axis=0)
    # diagonal contact does not connect: (1, 3) touches (0, 4)'s cluster only through (1, 4)/(0, 4) edges
    assert lab[1, 1] != lab[0, 4]
    # periodic along axis 1 only: the left column wraps onto the right one, joining clusters pairwise
    exp_p = {
        frozenset({(0, 0), (0, 1), (1, 1), (0, 4), (1, 3), (1, 4)}),
        frozenset({(3, 0), (4, 0), (3, 2), (3, 3), (3, 4), (4, 4)}),
    }
    for method in ("ndimage", "graph"):
        lab_p, n_p = perc.label_sites(grid, periodic=(False, True), method=method)
        assert n_p == 2 and _partition(lab_p) == exp_p
        # both axes periodic: rows 0 and 4 wrap too, (0, 0)-(4, 0) and (0, 4)-(4, 4): one cluster
        lab_t, n_t = perc.label_sites(grid, periodic=True, method=method)
        assert n_t == 1 and (lab_t[grid] == lab_t[0, 0]).all()
    assert _partition(perc.label_sites_nx(grid, periodic=(False, True))[0]) == exp_p
    assert len(_partition(perc.label_sites_nx(grid, periodic=True)[0])) == 1
    # cluster statistics: sizes 3, 3, 2, 4 of 12 open sites
    st = perc.cluster_stats(lab)
    assert st["tau"] == pytest.approx((6 + 6 + 2 + 12) / (12 * 11))
    assert st["largest"] == pytest.approx(4 / 25) and st["largest_open"] == pytest.approx(4 / 12)


@pytest.mark.parametrize("d, L", [(2, 9), (3, 5), (4, 4)])
@pytest.mark.parametrize("periodic", [False, True])
def test_fast_path_matches_networkx(d, L, periodic):
    rng = np.random.default_rng(100 * d + periodic)
    for p in (0.2, 0.4, 0.6):
        for _ in range(3):
            mask = rng.random((L,) * d) < p
            ref = _nx_partition_site(mask, periodic)
            for method in ("ndimage", "graph"):
                lab, n = perc.label_sites(mask, periodic=periodic, method=method)
                assert _partition(lab) == ref, (d, L, p, periodic, method)
                assert n == len(ref)
            assert _partition(perc.label_sites_nx(mask, periodic)[0]) == ref


@pytest.mark.parametrize("d, L", [(2, 8), (3, 5), (4, 3)])
def test_batched_labelling_matches_per_sample(d, L):
    rng = np.random.default_rng(d)
    masks = rng.random((5,) + (L,) * d) < 0.5
    for periodic in (False, True):
        for method in ("ndimage", "graph"):
            lab, n = perc.label_sites(masks, periodic=periodic, batch=True, method=method)
            # labels are unique across the batch
            seen = [set(np.unique(lab[i][lab[i] > 0])) for i in range(5)]
            assert sum(len(s) for s in seen) == len(set().union(*seen)) == n
            for i in range(5):
                assert _partition(lab[i]) == _nx_partition_site(masks[i], periodic)


@pytest.mark.parametrize("d, L", [(2, 6), (3, 4)])
@pytest.mark.parametrize("periodic", [False, True])
def test_bond_labels_match_networkx(d, L, periodic):
    rng = np.random.default_rng(7 * d)
    for p in (0.3, 0.6):
        bonds = rng.random((d,) + (L,) * d) < p
        lab, n = perc.label_bonds(bonds, periodic=periodic)
        # independent reference: grid graph, drop the closed bonds by their lower end point and axis
        g = nx.grid_graph(dim=[L] * d, periodic=periodic)
        keep = nx.Graph()
        keep.add_nodes_from(g.nodes)
        for u, v in g.edges:
            a = [i for i in range(d) if u[i] != v[i]][0]
            lo = u if (v[a] - u[a]) % L == 1 else v
            if bonds[(a,) + lo]:
                keep.add_edge(u, v)
        ref = {frozenset(c) for c in nx.connected_components(keep)}
        assert _partition(lab) == ref and n == len(ref)
        assert _partition(perc.label_bonds_nx(bonds, periodic)[0]) == ref


def test_same_partition_helper():
    a = np.array([[1, 1, 0], [0, 2, 2]])
    assert perc.same_partition(a, np.array([[5, 5, 0], [0, 3, 3]]))
    assert not perc.same_partition(a, np.array([[5, 5, 0], [0, 5, 5]]))
    assert not perc.same_partition(a, np.array([[5, 5, 1], [0, 3, 3]]))


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="boolean"):
        perc.label_sites(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="method"):
        perc.label_sites(np.zeros((3, 3), bool), method="magic")
    with pytest.raises(ValueError, match="probability vector"):
        perc.random_labelling([0.5, 0.6], [2], 100, 1)


# ------------------------------------------------------------------------------------------------ estimators
def test_spanning_thresholds_are_exact_bisection():
    rng = np.random.default_rng(3)
    th = perc.spanning_thresholds(12, 2, 20, rng=np.random.default_rng(3), steps=12)
    u = np.random.default_rng(3).random((20, 12, 12), dtype=np.float32)
    for i in range(20):
        assert perc.spanning(perc.label_sites(u[i] < th[i])[0])
        assert not perc.spanning(perc.label_sites(u[i] < th[i] - 2**-12)[0])
    assert perc.crossing_probability(th, 1.0) == 1.0 and perc.crossing_probability(th, 0.0) == 0.0
    del rng


def test_pc_2d_within_002_of_literature():
    study = perc.pc_study({2: {"sizes": [16, 32, 64], "samples": 200}}, steps=11, n_boot=20, rng=0, progress=False)
    est = study[2]
    assert abs(est["pc"] - 0.5927) < 0.02, est
    assert 0 < est["sigma"] < 0.05


def test_bond_2d_threshold_near_one_half():
    th = {L: perc.spanning_thresholds(L, 2, 150, rng=L, kind="bond", steps=10) for L in (12, 24)}
    assert abs(perc.estimate_pc(th, n_boot=5, rng=0)["pc"] - 0.5) < 0.03


def test_connection_probability_rises_with_dimension():
    surf = perc.connection_surface([0.25], [2, 3, 4, 5], n_sites=3000, n_samples=2, rng=0)
    tau = surf["tau"][:, 0]
    assert np.all(np.diff(tau) > 0), tau
    lab = perc.random_labelling([0.7, 0.3], [2, 4], n_sites=2000, n_samples=2, rng=0)
    assert lab["tau"].shape == (2, 2)
    assert lab["tau"][0, 0] > lab["tau"][0, 1]  # the frequent class is better connected
    assert lab["tau"][1, 1] > lab["tau"][0, 1]  # the rare class connects in higher dimension


def test_series_and_threshold_dimension():
    for d in (5, 6, 7):
        assert perc.pc_series(d) == pytest.approx(perc.LITERATURE_SITE_PC[d], rel=0.03)
    assert perc.threshold_dimension(0.6) == 2
    assert perc.threshold_dimension(0.25) == 4
    assert perc.threshold_dimension(0.05) > 7
    assert perc.threshold_dimension(0.0) is None
    assert perc.bethe_estimate(2) == pytest.approx(1 / 3)


def test_label_fractions_on_a_constant_model():
    class Const(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            out = torch.zeros(len(x), 3)
            out[:, 1] = 5.0 + 0 * self.w
            return out

    X = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    r = perc.label_fractions(Const(), X, y, [0.1, 0.5], n_points=4, generator=torch.Generator().manual_seed(0))
    assert r["p_own"] == pytest.approx([1 / 3, 1 / 3])
    assert r["class_fractions"][:, 1] == pytest.approx([1.0, 1.0])
    assert r["p_own_per_class"][0] == pytest.approx([0.0, 1.0, 0.0])
    assert r["input_dim"] == 16
    idx = perc.balanced_indices(torch.tensor([0] * 10 + [1] * 10), 6, generator=torch.Generator().manual_seed(0))
    assert (torch.tensor([0] * 10 + [1] * 10)[idx].bincount() == 3).all()
