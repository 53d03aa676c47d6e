"""Who can talk to whom, and how fast (SPEC §5 "Topology").

A :class:`Topology` is fixed for a run (built once from ``system.topology``);
a :class:`Links` is one round's link capacities on it:

    c_ij = min(bw_i, bw_j) if (i, j) is an edge and i != j, else 0,

so an agent with bw = 0 (disconnected this round) has no usable link.

Topologies, by ``system.topology.kind`` (:data:`TOPOLOGIES`):
  - ``full``: every pair is an edge. Stored without a graph (a complete graph
    on 10,000 agents would hold 50M edges); ``Topology.to_networkx()`` builds
    it on demand.
  - ``random``: each pair is an edge with probability ``system.topology.p``
    (Erdős–Rényi via ``networkx.gnp_random_graph``, seeded from
    (seed, Purpose.TOPOLOGY)).
  - ``ring``: i -- (i + 1) mod K.
  - ``edges``: the explicit list ``system.topology.edges`` of (i, j) pairs.

Routing (:func:`route_stats`, used to price the AllReduce on a topology that
is not complete). Messages between two participants travel along a shortest
path (fewest hops) in the graph of usable links (c > 0); any connected agent
can relay, including agents that were not sampled this round. Among the
shortest paths the widest one is used (the one whose slowest link is the
fastest). Over the participants:
  - hops H = the largest hop count between two participants (their diameter
    in the routing graph);
  - β = the smallest bottleneck bandwidth over those routes (for c_ij =
    min(bw_i, bw_j): the slowest agent on any route used).
A complete topology gives H = 1 and β = the slowest participant's link.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
from ml_collections import ConfigDict

from comdml_jax.system.profiles import Purpose, rng_for

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[...]
BoolArray = np.ndarray  # bool[K]


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """The run's communication graph.

    Attributes:
      kind: the registry name it was built with.
      num_agents: K.
      graph: the ``networkx.Graph`` on nodes 0..K-1, or None when complete.
      indptr: [K+1] CSR row pointers of the adjacency (None when complete).
      indices: [E2] CSR column indices, sorted within each row (both
        directions of every edge).
    """

    kind: str
    num_agents: int
    graph: nx.Graph | None
    indptr: IntArray | None = None
    indices: IntArray | None = None

    @property
    def complete(self) -> bool:
        return self.graph is None

    def to_networkx(self) -> nx.Graph:
        """The graph itself (built on demand for ``full``)."""
        return nx.complete_graph(self.num_agents) if self.graph is None else self.graph


def _graph_csr(graph: nx.Graph, k: int) -> tuple[IntArray, IntArray]:
    e = np.asarray(list(graph.edges()), np.int64).reshape(-1, 2)
    e = e[e[:, 0] != e[:, 1]]
    src = np.concatenate([e[:, 0], e[:, 1]])
    dst = np.concatenate([e[:, 1], e[:, 0]])
    keys = np.unique(src * k + dst)
    indptr = np.searchsorted(keys // k, np.arange(k + 1)).astype(np.int64)
    return indptr, keys % k


def _full(k: int, params: ConfigDict, seed: int) -> nx.Graph | None:
    del k, params, seed
    return None


def _random(k: int, params: ConfigDict, seed: int) -> nx.Graph:
    p = params.p
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"system.topology.p = {p!r} must be a probability in [0, 1]")
    nx_seed = int(rng_for(seed, Purpose.TOPOLOGY).integers(2**31 - 1))
    return nx.gnp_random_graph(k, float(p), seed=nx_seed)


def _ring(k: int, params: ConfigDict, seed: int) -> nx.Graph:
    del params, seed
    g = nx.empty_graph(k)
    if k > 1:
        g.add_edges_from((i, (i + 1) % k) for i in range(k))
    return g


def _edges(k: int, params: ConfigDict, seed: int) -> nx.Graph:
    del seed
    g = nx.empty_graph(k)
    for n, e in enumerate(params.edges):
        if len(e) != 2 or not all(isinstance(v, (int, np.integer)) for v in e):
            raise ValueError(f"system.topology.edges[{n}] = {e!r} must be a pair (i, j) of ints")
        i, j = int(e[0]), int(e[1])
        if not (0 <= i < k and 0 <= j < k):
            raise ValueError(
                f"system.topology.edges[{n}] = {e!r} names an agent outside 0..{k - 1} "
                f"(num_agents = {k})"
            )
        if i == j:
            raise ValueError(f"system.topology.edges[{n}] = {e!r} is a self-loop")
        g.add_edge(i, j)
    return g


TopologyBuilder = Callable[[int, ConfigDict, int], "nx.Graph | None"]
TOPOLOGIES: dict[str, TopologyBuilder] = {
    "full": _full,
    "random": _random,
    "ring": _ring,
    "edges": _edges,
}


def make_topology(
    kind: str,
    num_agents: int,
    *,
    p: float = 0.2,
    edges: Sequence[tuple[int, int]] = (),
    seed: int = 0,
) -> Topology:
    """Builds a topology by registry name.

    Args:
      kind: one of :data:`TOPOLOGIES`.
      num_agents: K.
      p: link probability (``random``).
      edges: explicit edge list (``edges``).
      seed: the run seed (``random``).

    Returns:
      The topology.
    """
    if kind not in TOPOLOGIES:
        raise ValueError(
            f"system.topology.kind = {kind!r} is unknown; choose one of {sorted(TOPOLOGIES)}"
        )
    params = ConfigDict({"p": p, "edges": tuple(tuple(e) for e in edges)})
    graph = TOPOLOGIES[kind](num_agents, params, seed)
    if graph is None:
        return Topology(kind, num_agents, None)
    indptr, indices = _graph_csr(graph, num_agents)
    return Topology(kind, num_agents, graph, indptr, indices)


def topology_from_config(config: ConfigDict) -> Topology:
    """The topology of ``system.topology`` for ``num_agents`` and ``seed``.

    Args:
      config: a run config.

    Returns:
      The topology.
    """
    t = config.system.topology
    return make_topology(t.kind, config.num_agents, p=t.p, edges=tuple(t.edges), seed=config.seed)


@dataclasses.dataclass(frozen=True, eq=False)
class Links:
    """One round's link capacities c_ij in Mbps, without a K x K matrix when complete.

    Two forms: ``complete`` (c_ij = min(bw_i, bw_j), i != j) from the bandwidth
    vector alone, or sparse CSR over the usable links (c > 0) only.

    Attributes:
      num_agents: K.
      complete: whether every pair of connected agents has a link.
      bandwidth_mbps: [K] per-agent Mbps (complete form; None for a matrix).
      indptr, indices, caps: CSR of the usable links (sparse form), caps > 0.
    """

    num_agents: int
    complete: bool
    bandwidth_mbps: FloatArray | None = None
    indptr: IntArray | None = None
    indices: IntArray | None = None
    caps: FloatArray | None = None

    def row(self, i: int) -> FloatArray:
        """[K] c_ij for all j (0 where there is no usable link and at j = i)."""
        if self.complete:
            r = np.minimum(self.bandwidth_mbps[i], self.bandwidth_mbps)
            r[i] = 0.0
            return r
        r = np.zeros(self.num_agents)
        s, e = self.indptr[i], self.indptr[i + 1]
        r[self.indices[s:e]] = self.caps[s:e]
        return r

    def capacity(self, u, v) -> FloatArray:
        """c_uv for arrays of agent pairs (vectorised)."""
        u = np.asarray(u, np.int64)
        v = np.asarray(v, np.int64)
        if self.complete:
            bw = self.bandwidth_mbps
            return np.where(u != v, np.minimum(bw[u], bw[v]), 0.0)
        k = self.num_agents
        rows = np.repeat(np.arange(k, dtype=np.int64), np.diff(self.indptr))
        keys = rows * k + self.indices
        q = u * k + v
        if len(keys) == 0:
            return np.zeros(q.shape)
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[pos] == q, self.caps[pos], 0.0)

    def dense(self) -> np.ndarray:
        """[K, K] c matrix (only for small K)."""
        k = self.num_agents
        if self.complete:
            c = np.minimum.outer(self.bandwidth_mbps, self.bandwidth_mbps)
            np.fill_diagonal(c, 0.0)
            return c
        c = np.zeros((k, k))
        rows = np.repeat(np.arange(k), np.diff(self.indptr))
        c[rows, self.indices] = self.caps
        return c

    def csr(self) -> tuple[IntArray, IntArray, FloatArray]:
        """(indptr, indices, caps) of the usable links, built for the complete form too."""
        if not self.complete:
            return self.indptr, self.indices, self.caps
        return _sparse_from_matrix(self.dense())


def _sparse_from_matrix(c: np.ndarray) -> tuple[IntArray, IntArray, FloatArray]:
    k = c.shape[0]
    rows, cols = np.nonzero(c > 0)
    indptr = np.searchsorted(rows, np.arange(k + 1)).astype(np.int64)
    return indptr, cols.astype(np.int64), c[rows, cols].astype(np.float64)


def link_capacities(topology: Topology, bandwidth_mbps: FloatArray) -> Links:
    """One round's c_ij on a topology (SPEC §5: c_ij = min(bw_i, bw_j) on edges).

    Args:
      topology: the run's topology.
      bandwidth_mbps: [K] this round's link speeds.

    Returns:
      The links.
    """
    bw = np.asarray(bandwidth_mbps, np.float64)
    if bw.shape != (topology.num_agents,):
        raise ValueError(f"bandwidth has shape {bw.shape}, expected ({topology.num_agents},)")
    if topology.complete:
        return Links(topology.num_agents, True, bandwidth_mbps=bw)
    k = topology.num_agents
    rows = np.repeat(np.arange(k), np.diff(topology.indptr))
    caps = np.minimum(bw[rows], bw[topology.indices])
    keep = caps > 0
    rows, cols, caps = rows[keep], topology.indices[keep], caps[keep]
    indptr = np.searchsorted(rows, np.arange(k + 1)).astype(np.int64)
    return Links(k, False, indptr=indptr, indices=cols, caps=caps)


def as_links(x) -> Links:
    """Accepts :class:`Links`, a [K] bandwidth vector (complete topology) or a [K, K] c matrix.

    Args:
      x: the link description.

    Returns:
      The links.
    """
    if isinstance(x, Links):
        return x
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        if np.any(a < 0):
            raise ValueError("bandwidths must be >= 0 Mbps")
        return Links(a.shape[0], True, bandwidth_mbps=a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a c matrix must be square [K, K], got shape {a.shape}")
    if np.any(a < 0) or not np.allclose(a, a.T):
        raise ValueError("a c matrix must be symmetric with entries >= 0 Mbps")
    a = a.copy()
    np.fill_diagonal(a, 0.0)
    indptr, indices, caps = _sparse_from_matrix(a)
    return Links(a.shape[0], False, indptr=indptr, indices=indices, caps=caps)


def _bfs(indptr, indices, caps, source: int) -> tuple[IntArray, FloatArray]:
    """Hop distances and widest-shortest-path bottlenecks from one source."""
    k = len(indptr) - 1
    deg = np.diff(indptr)
    dist = np.full(k, -1, np.int64)
    width = np.zeros(k)
    dist[source], width[source] = 0, np.inf
    frontier = np.array([source], np.int64)
    d = 0
    while frontier.size:
        starts, counts = indptr[frontier], deg[frontier]
        total = int(counts.sum())
        if total == 0:
            break
        src = np.repeat(frontier, counts)
        offs = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        nbr, cap = indices[offs], caps[offs]
        new = dist[nbr] < 0
        nbr, w = nbr[new], np.minimum(width[src[new]], cap[new])
        d += 1
        dist[nbr] = d
        np.maximum.at(width, nbr, w)
        frontier = np.unique(nbr)
    return dist, width


def components(links: Links, nodes: BoolArray) -> IntArray:
    """Connected-component labels of the routing graph (usable links only).

    Args:
      links: the round's links.
      nodes: [K] which agents to label (others get -1). Paths may still pass
        through agents outside ``nodes``.

    Returns:
      [K] int labels, numbered by their lowest member; -1 outside ``nodes``.
    """
    k = links.num_agents
    labels = np.full(k, -1, np.int64)
    if links.complete:
        on = nodes & (links.bandwidth_mbps > 0)
        if on.any():
            labels[on] = int(np.flatnonzero(on)[0])
        for i in np.flatnonzero(nodes & ~on):
            labels[i] = i
        return labels
    indptr, indices, caps = links.csr()
    seen = np.zeros(k, bool)
    for s in np.flatnonzero(nodes):
        if seen[s]:
            continue
        dist, _ = _bfs(indptr, indices, caps, int(s))
        reach = dist >= 0
        seen |= reach
        labels[reach & nodes] = s
    return labels


@dataclasses.dataclass(frozen=True)
class RouteStats:
    """What the AllReduce sees of the routing graph (module docstring, "Routing").

    Attributes:
      hops: H, the most hops between two participants (0 for fewer than two).
      bottleneck_mbps: β, the slowest link on the routes used (inf for fewer
        than two participants).
    """

    hops: int
    bottleneck_mbps: float


def route_stats(links: Links, participants: BoolArray) -> RouteStats:
    """Hops and bottleneck bandwidth of the routes between participants.

    Args:
      links: the round's links.
      participants: [K] the agents that take part in the AllReduce.

    Returns:
      The route statistics.

    Raises:
      ValueError: when two participants cannot reach each other.
    """
    idx = np.flatnonzero(participants)
    if idx.size < 2:
        return RouteStats(0, float("inf"))
    if links.complete:
        bw = links.bandwidth_mbps[idx]
        if np.any(bw <= 0):
            raise ValueError(f"participant {int(idx[np.argmin(bw)])} is disconnected (bw = 0)")
        return RouteStats(1, float(bw.min()))
    indptr, indices, caps = links.csr()
    hops, beta = 0, float("inf")
    for s in idx:
        dist, width = _bfs(indptr, indices, caps, int(s))
        d = dist[idx]
        if np.any(d < 0):
            bad = int(idx[np.flatnonzero(d < 0)[0]])
            raise ValueError(
                f"participants {int(s)} and {bad} are not connected; the AllReduce needs one "
                "connected group (System.participants_at keeps only the main component)"
            )
        hops = max(hops, int(d.max()))
        beta = min(beta, float(width[idx[idx != s]].min()))
    return RouteStats(hops, beta)
