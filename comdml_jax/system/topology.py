"""Who can talk to whom, and how fast (docs/timing_model.md, "Topology").

A :class:`Topology` is fixed for a run (built once from ``system.topology``);
a :class:`Links` is one round's link capacities on it:

    c_ij = min(bw_i, bw_j) if (i, j) is an edge and i != j, else 0,

so an agent with bw = 0 (disconnected this round) has no usable link.

Topologies, by ``system.topology.kind`` (:data:`TOPOLOGIES`):
  - ``full``: every pair is an edge. Stored without a graph (a complete graph
    on 10,000 agents would hold 50M edges); ``Topology.to_networkx()`` builds
    it on demand.
  - ``random``: each pair is an edge with probability ``system.topology.p``
    (Erdős–Rényi G(K, p)). The edges are drawn in O(K + E) by geometric
    skipping over the K(K-1)/2 pairs in row-major order (the gap to the next
    edge is Geometric(p), as in Batagelj & Brandes 2005 and networkx's
    ``fast_gnp_random_graph``), from the numpy stream rng(seed,
    Purpose.TOPOLOGY), so the graph is a pure function of (K, p, seed).
  - ``ring``: i -- (i + 1) mod K.
  - ``edges``: the explicit list ``system.topology.edges`` of (i, j) pairs.

A topology is stored as CSR arrays (``indptr``, ``indices``: both directions
of every edge, sorted within each row), which is what routing and pricing
use; ``Topology.graph`` builds a ``networkx.Graph`` from them on first use.

Routing (the model the AllReduce pricing uses, computed in
:mod:`comdml_jax.system.routing` and :mod:`comdml_jax.system.route_stats`).
Messages between two participants travel along a shortest path (fewest hops)
in the graph of usable links (c > 0); any connected agent can relay,
including agents that were not sampled this round. Among the shortest paths
the widest one is used (the one whose slowest link is the fastest). Over the
participants:
  - hops H = the largest hop count between two participants (their diameter
    in the routing graph);
  - β = the smallest bottleneck bandwidth over those routes (for c_ij =
    min(bw_i, bw_j): the slowest agent on any route used).
A complete topology gives H = 1 and β = the slowest participant's link.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
import scipy.sparse
from ml_collections import ConfigDict

from comdml_jax.streams import Purpose
from comdml_jax.system.cache import LRU, digest
from comdml_jax.system.profiles import rng_for

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[...]
BoolArray = np.ndarray  # bool[K]
EdgeList = tuple[IntArray, IntArray]  # (u, v), u < v, each edge once, sorted by (u, v)

LINKS_CACHE_SIZE = 2  # Links kept per topology, keyed by the bandwidth vector


@dataclasses.dataclass(frozen=True, eq=False)
class Topology:
    """The run's communication graph.

    Attributes:
      kind: the registry name it was built with.
      num_agents: K.
      indptr: [K+1] CSR row pointers of the adjacency (None when complete).
      indices: [2E] CSR column indices, sorted within each row (both
        directions of every edge; None when complete).
    """

    kind: str
    num_agents: int
    indptr: IntArray | None = None
    indices: IntArray | None = None
    cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        return self.indptr is None

    @property
    def num_edges(self) -> int:
        """E, the undirected edges."""
        k = self.num_agents
        return k * (k - 1) // 2 if self.complete else len(self.indices) // 2

    @functools.cached_property
    def graph(self) -> nx.Graph | None:
        """The ``networkx.Graph`` on nodes 0..K-1 (built on first use), None when complete."""
        if self.complete:
            return None
        g = nx.empty_graph(self.num_agents)
        rows = np.repeat(np.arange(self.num_agents), np.diff(self.indptr))
        upper = rows < self.indices
        g.add_edges_from(zip(rows[upper].tolist(), self.indices[upper].tolist(), strict=True))
        return g

    def to_networkx(self) -> nx.Graph:
        """The graph itself (built on demand for ``full``)."""
        return nx.complete_graph(self.num_agents) if self.complete else self.graph


def _csr(k: int, u: IntArray, v: IntArray) -> tuple[IntArray, IntArray]:
    """CSR of the undirected edges (u < v, unique, sorted by (u, v)) in O(K + E).

    Row i lists its lower neighbours (the u of edges (u, i), from the transpose,
    a counting sort in scipy) and then its upper ones (the v of edges (i, v)),
    so it comes out sorted.
    """
    e = len(u)
    up = np.bincount(u, minlength=k)
    up_indptr = np.concatenate([[0], np.cumsum(up)]).astype(np.int64)
    upper = scipy.sparse.csr_matrix((np.ones(e, np.int8), v, up_indptr), shape=(k, k))
    lower = upper.tocsc()  # column i: the u < i of edges (u, i), ascending
    low = np.diff(lower.indptr)
    indptr = np.concatenate([[0], np.cumsum(low + up)]).astype(np.int64)
    indices = np.empty(2 * e, np.int64)
    at = np.arange(e, dtype=np.int64)
    indices[np.repeat(indptr[:-1] + low - up_indptr[:-1], up) + at] = v
    indices[np.repeat(indptr[:-1] - lower.indptr[:-1], low) + at] = lower.indices
    return indptr, indices


def _unique_pairs(k: int, a: IntArray, b: IntArray) -> EdgeList:
    """(min, max) of each pair, self-loops dropped, deduplicated, sorted."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    u, v = np.minimum(a, b), np.maximum(a, b)
    keys = np.unique(u[u != v] * k + v[u != v])
    return keys // k, keys % k


def _full(k: int, params: ConfigDict, seed: int) -> EdgeList | None:
    del k, params, seed
    return None


def _random(k: int, params: ConfigDict, seed: int) -> EdgeList:
    p = params.p
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"system.topology.p = {p!r} must be a probability in [0, 1]")
    p = float(p)
    pairs = k * (k - 1) // 2
    empty = np.zeros(0, np.int64)
    if p == 0.0 or pairs == 0:
        return empty, empty
    if p == 1.0:
        lin = np.arange(pairs, dtype=np.int64)
    else:
        # Positions of the edges among the pairs: partial sums of Geometric(p) gaps.
        rng = rng_for(seed, Purpose.TOPOLOGY)
        mean = pairs * p
        chunk = int(mean + 6 * math.sqrt(mean * (1 - p)) + 16)
        found, last = [], -1
        while last < pairs:
            pos = last + np.cumsum(rng.geometric(p, chunk))
            found.append(pos[pos < pairs])
            last = int(pos[-1])
            chunk = max(16, chunk // 8)
        lin = np.concatenate(found)
    # Pair (i, j), i < j, has row-major position off(i) + j - i - 1; lin is ascending.
    rows = np.arange(k, dtype=np.int64)
    off = rows * (2 * k - rows - 1) // 2
    u = np.repeat(rows, np.diff(np.searchsorted(lin, np.append(off, pairs))))
    return u, lin - off[u] + u + 1


def _ring(k: int, params: ConfigDict, seed: int) -> EdgeList:
    del params, seed
    if k < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    i = np.arange(k, dtype=np.int64)
    return _unique_pairs(k, i, (i + 1) % k)


def _edges(k: int, params: ConfigDict, seed: int) -> EdgeList:
    del seed
    pairs = []
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
        pairs.append((i, j))
    a = np.asarray(pairs, np.int64).reshape(-1, 2)
    return _unique_pairs(k, a[:, 0], a[:, 1])


TopologyBuilder = Callable[[int, ConfigDict, int], "EdgeList | None"]
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
    """Builds a topology by registry name, in O(K + E).

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
    pairs = TOPOLOGIES[kind](num_agents, params, seed)
    if pairs is None:
        return Topology(kind, num_agents)
    indptr, indices = _csr(num_agents, *pairs)
    return Topology(kind, num_agents, indptr, indices)


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
      relay_s: aligned with ``caps``, seconds of relay latency one transfer
        over that link pays beyond a direct link's (``system.pairing_links =
        routes``: a link that stands for a multi-hop route,
        :mod:`comdml_jax.system.pair_routes`); None: every link is direct (0 s).
      cache: results derived from these links (routes, components; see
        :mod:`comdml_jax.system.routing`). Treat the arrays as read-only.
    """

    num_agents: int
    complete: bool
    bandwidth_mbps: FloatArray | None = None
    indptr: IntArray | None = None
    indices: IntArray | None = None
    caps: FloatArray | None = None
    relay_s: FloatArray | None = None
    cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

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

    def neighbors(self, i: int) -> tuple[IntArray, FloatArray]:
        """(j, c_ij) over i's usable links, j ascending: O(deg i) on the sparse form."""
        if self.complete:
            r = self.row(i)
            j = np.flatnonzero(r > 0)
            return j, r[j]
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.caps[s:e]

    def relay_of(self, i: int) -> FloatArray | float:
        """Relay seconds per transfer over i's links, as :meth:`neighbors` orders them.

        0.0 where every link is direct.
        """
        if self.relay_s is None:
            return 0.0
        return self.relay_s[self.indptr[i] : self.indptr[i + 1]]

    def _lookup(self, u, v, values) -> FloatArray:
        u = np.asarray(u, np.int64)
        v = np.asarray(v, np.int64)
        k = self.num_agents
        if "keys" not in self.cache:
            rows = np.repeat(np.arange(k, dtype=np.int64), np.diff(self.indptr))
            self.cache["keys"] = rows * k + self.indices
        keys = self.cache["keys"]
        q = u * k + v
        if len(keys) == 0:
            return np.zeros(q.shape)
        pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[pos] == q, values[pos], 0.0)

    def capacity(self, u, v) -> FloatArray:
        """c_uv for arrays of agent pairs (vectorised)."""
        if self.complete:
            u = np.asarray(u, np.int64)
            v = np.asarray(v, np.int64)
            bw = self.bandwidth_mbps
            return np.where(u != v, np.minimum(bw[u], bw[v]), 0.0)
        return self._lookup(u, v, self.caps)

    def relay(self, u, v) -> FloatArray | float:
        """Relay seconds per transfer between arrays of agent pairs (0.0: all links direct)."""
        if self.relay_s is None:
            return 0.0
        return self._lookup(u, v, self.relay_s)

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

    def relay_dense(self) -> np.ndarray | float:
        """[K, K] relay seconds per transfer (only for small K); 0.0: all links direct."""
        if self.relay_s is None:
            return 0.0
        k = self.num_agents
        r = np.zeros((k, k))
        rows = np.repeat(np.arange(k), np.diff(self.indptr))
        r[rows, self.indices] = self.relay_s
        return r

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
    """One round's c_ij on a topology (c_ij = min(bw_i, bw_j) on edges).

    O(K + E). The result is cached on the topology by the bandwidth vector
    (the last :data:`LINKS_CACHE_SIZE` vectors), so rounds with unchanged
    profiles share one ``Links`` and the routes cached on it.

    Args:
      topology: the run's topology.
      bandwidth_mbps: [K] this round's link speeds.

    Returns:
      The links.
    """
    bw = np.array(bandwidth_mbps, np.float64)  # a copy: the cached Links keeps it
    if bw.shape != (topology.num_agents,):
        raise ValueError(f"bandwidth has shape {bw.shape}, expected ({topology.num_agents},)")
    if "links" not in topology.cache:
        topology.cache["links"] = LRU(LINKS_CACHE_SIZE)
    return topology.cache["links"].get(digest(bw), lambda: _link_capacities(topology, bw))


def _link_capacities(topology: Topology, bw: FloatArray) -> Links:
    bw.flags.writeable = False
    if topology.complete:
        return Links(topology.num_agents, True, bandwidth_mbps=bw)
    k, indptr = topology.num_agents, topology.indptr
    on = bw > 0  # c_ij = min(bw_i, bw_j) > 0 iff both are connected
    keep = np.repeat(on, np.diff(indptr)) & on[topology.indices]
    cols = topology.indices[keep]
    kept = np.concatenate([[0], np.cumsum(keep)])[indptr].astype(np.int64)
    caps = np.minimum(np.repeat(bw, np.diff(kept)), bw[cols])
    return Links(k, False, indptr=kept, indices=cols, caps=caps)


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
