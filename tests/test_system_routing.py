"""Routing (system/routing.py, system/route_stats.py) against a networkx all-pairs reference.

Also the O(K + E) topology.
"""

import itertools

import networkx as nx
import numpy as np
import pytest

from comdml_jax.system.route_stats import route_stats, route_stats_reference
from comdml_jax.system.routing import components, pair_routes, routes_from
from comdml_jax.system.timing import TimingParams, allreduce_s, halving_doubling_s, ring_s
from comdml_jax.system.topology import link_capacities, make_topology
from comdml_jax.system.world import main_component

BANDWIDTHS = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def usable_graph(links) -> nx.Graph:
    """The usable links (c > 0) as a networkx graph with capacities."""
    g = nx.empty_graph(links.num_agents)
    c = links.dense()
    for i, j in zip(*np.nonzero(np.triu(c)), strict=True):
        g.add_edge(int(i), int(j), cap=float(c[i, j]))
    return g


def reference_routes(g: nx.Graph, s: int, t: int) -> tuple[int, float]:
    """(hops, bottleneck) by brute force: the widest of all shortest s-t paths."""
    widths = [
        min(g.edges[a, b]["cap"] for a, b in itertools.pairwise(path))
        for path in nx.all_shortest_paths(g, s, t)
    ]
    return len(nx.shortest_path(g, s, t)) - 1, max(widths)


def reference_stats(links, part) -> tuple[int, float]:
    g = usable_graph(links)
    idx = np.flatnonzero(part)
    dist = dict(nx.all_pairs_shortest_path_length(g))
    hops = max(dist[int(s)][int(t)] for s in idx for t in idx)
    beta = min(reference_routes(g, int(s), int(t))[1] for s, t in itertools.combinations(idx, 2))
    return hops, beta


def instance(seed: int):
    """A small random, ring or edge-list topology, bandwidths with zeros, partial sampling.

    Redrawn (from the same stream) until at least two agents take part.
    """
    rng = np.random.default_rng(seed)
    while True:
        k = int(rng.integers(6, 26))
        kind = ("random", "random", "ring", "edges")[seed % 4]
        if kind == "edges":  # a cycle with chords: not a tree, not a plain ring
            chords = [tuple(int(v) for v in rng.choice(k, 2, replace=False)) for _ in range(k // 3)]
            topo = make_topology("edges", k, edges=[(i, (i + 1) % k) for i in range(k)] + chords)
        else:
            topo = make_topology(kind, k, p=float(rng.choice([0.15, 0.3, 0.6])), seed=seed)
        bw = rng.choice(BANDWIDTHS, k, p=[0.15, 0.15, 0.2, 0.2, 0.15, 0.15])
        links = link_capacities(topo, bw)
        sampled = rng.random(k) < rng.choice([0.3, 0.6, 1.0])
        part = main_component(links, sampled & (bw > 0))
        if part.sum() >= 2:
            return links, part


@pytest.mark.parametrize("seed", range(40))
def test_route_stats_equal_the_networkx_all_pairs_reference(seed):
    links, part = instance(seed)
    hops, beta = reference_stats(links, part)
    got = route_stats(links, part)
    assert (got.hops, got.bottleneck_mbps, got.exact) == (hops, beta, True)
    old = route_stats_reference(links, part)
    assert (old.hops, old.bottleneck_mbps) == (hops, beta)
    # the AllReduce times built on them are the same numbers
    k = int(part.sum())
    for name, fn in (("halving_doubling", halving_doubling_s), ("ring", ring_s)):
        params = TimingParams(latency_s=0.01, allreduce=name)
        assert allreduce_s(part, links, 2.4e6, params) == fn(k, 2.4e6, beta, hops * 0.01)


def test_slow_relays_lower_the_bottleneck_as_the_reference_says():
    # distinct bandwidths and a few sampled agents: often every shortest route between two
    # participants passes a relay slower than all of them (beta < the slowest participant)
    forced = 0
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        k = int(rng.integers(8, 30))
        topo = make_topology("random", k, p=float(rng.choice([2.5 / k, 4.0 / k, 0.2])), seed=seed)
        bw = np.round(rng.uniform(1.0, 100.0, k), 1) * (rng.random(k) > 0.1)
        links = link_capacities(topo, bw)
        part = main_component(links, (rng.random(k) < 0.4) & (bw > 0))
        if part.sum() < 2:
            continue
        hops, beta = reference_stats(links, part)
        got = route_stats(links, part)
        assert (got.hops, got.bottleneck_mbps, got.exact) == (hops, beta, True)
        forced += beta < bw[part].min()
    assert forced >= 10


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_routes_from_every_source_equal_the_reference(seed):
    links, _ = instance(seed)
    g = usable_graph(links)
    for s in range(links.num_agents):
        r = routes_from(links, s)
        for t in range(links.num_agents):
            if t == s:
                assert (r.hops[t], r.bottleneck_mbps[t]) == (0, np.inf)
            elif nx.has_path(g, s, t):
                assert (r.hops[t], r.bottleneck_mbps[t]) == reference_routes(g, s, t)
            else:
                assert (r.hops[t], r.bottleneck_mbps[t]) == (-1, 0.0)
    src = np.array([0, 0, 1, links.num_agents - 1])
    dst = np.array([1, 2, 0, 0])
    pr = pair_routes(links, src, dst)
    for n, (s, t) in enumerate(zip(src, dst, strict=True)):
        r = routes_from(links, int(s))
        assert (pr.hops[n], pr.bottleneck_mbps[n]) == (r.hops[t], r.bottleneck_mbps[t])


def test_routes_on_a_complete_topology_are_direct():
    bw = np.array([10.0, 0.0, 50.0, 100.0])
    links = link_capacities(make_topology("full", 4), bw)
    r = routes_from(links, 2)
    assert r.hops.tolist() == [1, -1, 0, 1]
    assert r.bottleneck_mbps.tolist() == [10.0, 0.0, np.inf, 50.0]
    assert routes_from(links, 1).hops.tolist() == [-1, 0, -1, -1]


def test_a_slow_relay_sets_the_bottleneck_by_hand():
    # 0 - 1 - 2 and 0 - 3 - 4 - 2: the only 2-hop route between 0 and 2 passes 1 (5 Mbps)
    topo = make_topology("edges", 5, edges=[(0, 1), (1, 2), (0, 3), (3, 4), (4, 2)])
    links = link_capacities(topo, np.array([100.0, 5.0, 100.0, 100.0, 100.0]))
    part = np.array([True, False, True, False, False])
    assert route_stats(links, part) == route_stats_reference(links, part)
    r = route_stats(links, part)
    assert (r.hops, r.bottleneck_mbps, r.exact) == (2, 5.0, True)
    # with 4 sampled too, 0 -> 4 and 2 -> 0 still need the slow relay or 3 hops
    part[4] = True
    assert (route_stats(links, part).hops, route_stats(links, part).bottleneck_mbps) == (2, 5.0)


@pytest.mark.parametrize("k", [7, 50, 801])
def test_rings_by_hand(k):
    ring = make_topology("ring", k)
    links = link_capacities(ring, np.full(k, 10.0))
    # a full ring: the farthest pair is k // 2 hops apart
    r = route_stats(links, np.ones(k, bool))
    assert (r.hops, r.bottleneck_mbps, r.exact) == (k // 2, 10.0, True)
    # one agent down: a path of k - 1 agents
    bw = np.full(k, 10.0)
    bw[0] = 0.0
    r = route_stats(link_capacities(ring, bw), bw > 0)
    assert (r.hops, r.exact) == (k - 2, True)
    # two participants on a ring, one relay at 5 Mbps on the shorter side
    bw = np.full(k, 20.0)
    bw[1] = 5.0
    part = np.zeros(k, bool)
    part[[0, 2]] = True
    r = route_stats(link_capacities(ring, bw), part)
    assert (r.hops, r.bottleneck_mbps) == (2, 5.0)


def test_larger_random_graphs_equal_the_old_per_participant_search():
    for seed, (k, p, frac) in enumerate([(400, 0.02, 1.0), (600, 0.006, 0.5), (500, 0.05, 0.1)]):
        rng = np.random.default_rng(seed)
        bw = rng.choice(BANDWIDTHS, k)
        links = link_capacities(make_topology("random", k, p=p, seed=seed), bw)
        part = main_component(links, (rng.random(k) < frac) & (bw > 0))
        new, old = route_stats(links, part), route_stats_reference(links, part)
        assert (new.hops, new.bottleneck_mbps, new.exact) == (old.hops, old.bottleneck_mbps, True)


def test_a_grid_with_holes_needs_the_eccentricity_certificates():
    # A 19 x 19 grid with a quarter of its links removed (seeded). The sweeps from the
    # best-connected agent (64 farthest, then 64 farthest from the most eccentric) find
    # 36 hops; only certifying every participant finds the 37-hop pair.
    rng = np.random.default_rng(99)
    m = int(rng.integers(12, 20))
    grid = nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, m))
    grid.remove_edges_from([e for e in grid.edges() if rng.random() < 0.25])
    k = grid.number_of_nodes()
    links = link_capacities(make_topology("edges", k, edges=list(grid.edges())), np.full(k, 10.0))
    part = main_component(links, np.ones(k, bool))
    hops = nx.diameter(usable_graph(links).subgraph(np.flatnonzero(part).tolist()))
    got = route_stats(links, part)
    assert (m, got.hops, got.exact) == (19, hops, True) and hops == 37


@pytest.mark.parametrize("seed", range(0, 40, 2))
def test_the_work_limit_gives_bounds_on_the_safe_side(seed):
    links, part = instance(seed)
    hops, beta = reference_stats(links, part)
    bound = route_stats(links, part, max_work=0)
    assert bound.hops >= hops and bound.bottleneck_mbps <= beta
    if (bound.hops, bound.bottleneck_mbps) != (hops, beta):
        assert not bound.exact


def test_components_equal_networkx():
    for seed in range(12):
        links, _ = instance(seed)
        rng = np.random.default_rng(seed)
        nodes = rng.random(links.num_agents) < 0.7
        labels = components(links, nodes)
        for comp in nx.connected_components(usable_graph(links)):
            members = sorted(v for v in comp if nodes[v])
            assert all(labels[v] == members[0] for v in members)
        assert np.all(labels[~nodes] == -1)


def test_unreachable_participants_are_an_error():
    topo = make_topology("edges", 4, edges=[(0, 1), (2, 3)])
    links = link_capacities(topo, np.full(4, 10.0))
    with pytest.raises(ValueError, match="participants 0 and 2 are not connected"):
        route_stats(links, np.array([True, False, True, False]))


def test_results_are_cached_per_bandwidth_and_participants():
    topo = make_topology("random", 60, p=0.1, seed=4)
    bw = np.full(60, 10.0)
    links = link_capacities(topo, bw)
    assert link_capacities(topo, bw.copy()) is links  # same bandwidths: the same Links
    bw2 = bw.copy()
    bw2[3] = 20.0
    assert link_capacities(topo, bw2) is not links
    part = main_component(links, np.ones(60, bool))
    assert route_stats(links, part) is route_stats(links, part.copy())
    assert routes_from(links, 5) is routes_from(links, 5)
    fewer = part.copy()
    fewer[np.flatnonzero(part)[0]] = False
    assert route_stats(links, fewer) is not route_stats(links, part)


# --- the topology builder ---


def test_random_topology_is_a_pure_function_of_the_seed():
    a, b = (
        make_topology("random", 300, p=0.05, seed=7),
        make_topology("random", 300, p=0.05, seed=7),
    )
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    c = make_topology("random", 300, p=0.05, seed=8)
    assert not np.array_equal(a.indices, c.indices)


def test_random_topology_csr_is_symmetric_sorted_and_matches_its_graph():
    topo = make_topology("random", 200, p=0.07, seed=1)
    rows = np.repeat(np.arange(200), np.diff(topo.indptr))
    pairs = set(zip(rows.tolist(), topo.indices.tolist(), strict=True))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    for i in range(200):
        row = topo.indices[topo.indptr[i] : topo.indptr[i + 1]]
        assert np.all(np.diff(row) > 0)
    assert {tuple(sorted(e)) for e in topo.graph.edges()} == {(i, j) for i, j in pairs if i < j}
    assert topo.num_edges == topo.graph.number_of_edges()


def test_random_topology_has_the_gnp_statistics():
    k, p = 3000, 0.004
    pairs = k * (k - 1) // 2
    topo = make_topology("random", k, p=p, seed=0)
    mean, sd = pairs * p, np.sqrt(pairs * p * (1 - p))
    assert abs(topo.num_edges - mean) < 5 * sd
    # edges spread evenly over the pairs: as many among the first half of the agents as
    # expected (k/2 choose 2 pairs of the k choose 2)
    rows = np.repeat(np.arange(k), np.diff(topo.indptr))
    low = np.sum((rows < topo.indices) & (topo.indices < k // 2))
    share = (k // 2) * (k // 2 - 1) / 2 * p
    assert abs(low - share) < 5 * np.sqrt(share)
    assert make_topology("random", 40, p=0.0).num_edges == 0
    assert make_topology("random", 40, p=1.0).num_edges == 40 * 39 // 2
