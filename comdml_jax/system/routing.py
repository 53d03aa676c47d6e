"""Routes between agents on one round's usable links (docs/timing_model.md, "Routes").

The model. Messages between two agents travel along a shortest path (fewest
hops) in the graph of usable links (c > 0); any connected agent can relay,
including agents that were not sampled this round. Among the shortest paths
the widest one is used: the one whose slowest link is the fastest. For
c_ij = min(bw_i, bw_j) that is the slowest agent on the route.

Public functions (all take a :class:`~comdml_jax.system.topology.Links`):

  - :func:`routes_from` ``(links, source) -> Routes(hops[K], bottleneck_mbps[K])``:
    the route from one agent to every other. ``hops[source] = 0`` and
    ``bottleneck_mbps[source] = inf``; unreachable agents get ``-1`` and ``0``.
    On a complete topology: 1 hop and min(bw_s, bw_j) to every connected j.
  - :func:`pair_routes` ``(links, src, dst) -> Routes``: the same for arrays of
    pairs (one :func:`routes_from` per distinct source).
  - :func:`components` ``(links, nodes)``: connected-component labels.

The AllReduce's route statistics over the participants (H and β) are in
:mod:`comdml_jax.system.route_stats`, on this model.

Caching. Results are stored on the ``Links`` object (``Links.cache``):
:func:`components` per participant set (keyed by a hash of the mask),
:func:`routes_from` per source (the last :data:`ROUTES_CACHE_SIZE` sources).
``topology.link_capacities`` returns the same ``Links`` for the same
bandwidth vector, so rounds between profile changes reuse them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse
from scipy.sparse import csgraph

from comdml_jax.system.cache import LRU, digest

if TYPE_CHECKING:
    from comdml_jax.system.topology import Links

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[...]
BoolArray = np.ndarray  # bool[K]

ROUTES_CACHE_SIZE = 64  # routes_from results kept per Links
STATS_CACHE_SIZE = 16  # route_stats / components results kept per Links


def _lru(links: Links, name: str, size: int) -> LRU:
    cache = links.cache
    if name not in cache:
        cache[name] = LRU(size)
    return cache[name]


# --- single-source searches ---


def _bfs(indptr, indices, caps, source: int) -> tuple[IntArray, FloatArray]:
    """Hop distances and widest-shortest-path bottlenecks from one source.

    Level-synchronous: the width of v at level d is the largest, over v's
    neighbours u at level d - 1, of min(width(u), c_uv).
    """
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


# --- public: routes from one source, and between pairs ---


class Routes(NamedTuple):
    """Routes from a source (or between pairs): hop counts and bottleneck Mbps.

    Attributes:
      hops: int64, -1 where unreachable, 0 at the source.
      bottleneck_mbps: float64, the widest shortest route's slowest link; 0
        where unreachable, inf at the source.
    """

    hops: IntArray
    bottleneck_mbps: FloatArray


def routes_from(links: Links, source: int) -> Routes:
    """Hops and bottleneck bandwidth of the route from ``source`` to every agent.

    The same rule as the AllReduce pricing (module docstring): fewest hops over
    usable links, then the widest. Cached per source on ``links``.

    Args:
      links: the round's links.
      source: the sending agent.

    Returns:
      [K] read-only arrays; see :class:`Routes`.
    """
    source = int(source)
    k = links.num_agents
    if not 0 <= source < k:
        raise ValueError(f"source {source} is not an agent of 0..{k - 1}")

    def make() -> Routes:
        if links.complete:
            bw = links.bandwidth_mbps
            width = np.minimum(bw[source], bw) if bw[source] > 0 else np.zeros(k)
            hops = np.where(width > 0, 1, -1).astype(np.int64)
        else:
            hops, width = _bfs(links.indptr, links.indices, links.caps, source)
        hops[source], width[source] = 0, np.inf
        hops.flags.writeable = False
        width.flags.writeable = False
        return Routes(hops, width)

    return _lru(links, "routes_from", ROUTES_CACHE_SIZE).get(source, make)


def pair_routes(links: Links, src, dst) -> Routes:
    """Hops and bottleneck Mbps of the routes between pairs (src[n], dst[n]).

    Args:
      links: the round's links.
      src: [n] sending agents.
      dst: [n] receiving agents.

    Returns:
      [n] arrays; see :class:`Routes`.
    """
    src = np.asarray(src, np.int64).reshape(-1)
    dst = np.asarray(dst, np.int64).reshape(-1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same length, got {src.shape}, {dst.shape}")
    hops = np.zeros(src.shape, np.int64)
    width = np.zeros(src.shape)
    for s in np.unique(src):
        at = src == s
        r = routes_from(links, int(s))
        hops[at], width[at] = r.hops[dst[at]], r.bottleneck_mbps[dst[at]]
    return Routes(hops, width)


# --- public: connected components ---


def components(links: Links, nodes: BoolArray) -> IntArray:
    """Connected-component labels of the routing graph (usable links only).

    Args:
      links: the round's links.
      nodes: [K] which agents to label (others get -1). Paths may still pass
        through agents outside ``nodes``.

    Returns:
      [K] int labels, each component named by its lowest member of ``nodes``;
      -1 outside ``nodes``. Cached per ``nodes`` on ``links``.
    """
    nodes = np.asarray(nodes, bool)
    k = links.num_agents

    def make() -> IntArray:
        labels = np.full(k, -1, np.int64)
        if links.complete:
            on = nodes & (links.bandwidth_mbps > 0)
            if on.any():
                labels[on] = int(np.flatnonzero(on)[0])
            off = np.flatnonzero(nodes & ~on)
            labels[off] = off
        else:
            graph = scipy.sparse.csr_matrix(
                (np.ones(len(links.indices), np.int8), links.indices, links.indptr), shape=(k, k)
            )
            # both directions are stored, so strong components are the components (and
            # scipy's undirected mode would first build the transpose)
            _, comp = csgraph.connected_components(graph, directed=True, connection="strong")
            idx = np.flatnonzero(nodes)
            names, first = np.unique(comp[idx], return_index=True)  # idx ascending: lowest
            lowest = np.zeros(int(comp.max(initial=0)) + 1, np.int64)
            lowest[names] = idx[first]
            labels[idx] = lowest[comp[idx]]
        labels.flags.writeable = False
        return labels

    return _lru(links, "components", STATS_CACHE_SIZE).get(digest(np.packbits(nodes)), make)
