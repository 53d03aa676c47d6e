"""The AllReduce's route statistics over the participants (docs/timing_model.md, "Routes").

The routes are those of :mod:`comdml_jax.system.routing` (the model in its
module docstring: fewest hops over usable links, then the widest); this
module computes what the AllReduce pricing needs of them (the model
unchanged, only computed faster).

Public functions (all take a :class:`~comdml_jax.system.topology.Links`):

  - :func:`route_stats` ``(links, participants) -> RouteStats``: what the
    AllReduce pricing needs over the participants P,
      H = max_{s,t in P} hops(s, t),
      β = min_{s != t in P} bottleneck(s, t).
  - :func:`route_stats_reference`: the same, one search per participant (the
    tests' oracle and the benchmark's baseline).

How :func:`route_stats` computes H and β without one search per participant
(the previous code, kept as the reference in tests and the benchmark, ran a
breadth-first search (BFS) from every participant: O(|P| · E)).

  - Only the participants' component matters; it is cut out first, and an
    unreachable participant is an error.
  - β. Every route from s starts on a link of s, so β <= U, the smallest over
    participants of their fastest link. If no link of the component is slower
    than U, every route's bottleneck is >= U and β = U (one pass over the
    links). This is the common case: with a profile draw, U is the slowest
    participant's bandwidth and no relay is slower unless the sampling left
    the slowest profile out. Otherwise β is the largest link speed θ <= U for
    which dropping the links slower than θ leaves every participant pair's hop
    count unchanged (then, and only then, each pair has a shortest route of
    bottleneck >= θ); a binary search over the distinct link speeds, each test
    a bit-parallel BFS from all participants on both graphs.
  - H. A tree (a ring with an agent down) is exact with two BFS sweeps; a
    cycle (the full ring) from the agents' positions along it. Otherwise
    eccentricity certificates: e(w) = max_{t in P} hops(w, t) is computed
    exactly for batches of participants (a bit-parallel BFS: one bit per
    source, 64 sources per uint64 word, up to 4 words per gather), and
    e(v) <= e(w) + hops(v, w) certifies every participant v within
    lb - e(w) hops of such a w, where lb, the largest e(w) found so far, is a
    lower bound on H. The first batches are the 64 participants farthest from
    the best-connected one and the 64 farthest from the most eccentric of
    those (to raise lb early), then the uncertified participants with most
    links. When none is left uncertified, H = lb exactly. In the worst case
    (every e(w) = H, as in dense random graphs) this is one bit-parallel BFS
    from every participant: (|P| / 64) · H · (K + 2E) word operations.
  - Work limit. The searches count those word operations. Before a batch
    would exceed ``max_work`` (default :data:`MAX_ROUTE_WORK` = 2e9, a few
    seconds of numpy on one core), route_stats stops and returns bounds
    instead, with ``RouteStats.exact = False``: for H the upper bound
    H_ub = max_{v in P} min_w (e(w) + hops(v, w)) over the searched w (so
    H <= H_ub <= 2 · e(best-connected participant)), and for β the largest
    link speed proven to keep the hop counts (at least the slowest link of
    the component), a lower bound. Both err towards a slower AllReduce (more
    latency, less bandwidth). Graphs whose worst case is below the limit are
    always exact: K = 10,000 at p = 0.01 (about 4e8), K = 100,000 at p = 10/K
    (certificates finish early), any ring. K = 100,000 at p = 0.01 (50M edges,
    about 4e11) gets the bounds: H_ub = 5 where H = 3 almost surely (mean
    degree 800), i.e. 2 more hops on each of the 2 · log2(p) + 2 steps of
    the AllReduce, 0.07 s at α = 1 ms (benchmarks/scheduler_scale.py --huge
    prints the flag).

Caching. :func:`route_stats` results are stored on the ``Links`` object
(``Links.cache``) per participant set (keyed by a hash of the mask), like
:func:`~comdml_jax.system.routing.components` (routing's module docstring,
"Caching"). ``topology.link_capacities`` returns the same ``Links`` for the
same bandwidth vector, so rounds between profile changes reuse them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse
from scipy.sparse import csgraph

from comdml_jax.system.cache import digest
from comdml_jax.system.routing import STATS_CACHE_SIZE, _bfs, _lru

if TYPE_CHECKING:
    from comdml_jax.system.topology import Links

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[...]
BoolArray = np.ndarray  # bool[K]

MAX_ROUTE_WORK = 2_000_000_000  # word operations before route_stats falls back to bounds
_BATCH_WORDS = 4  # 64-participant words per eccentricity batch after the first sweeps
_GROUP_WORDS = 4  # words moved by one gather of the bit-parallel BFS
_HEAVY = 32  # nodes with more links than columns of at least this many nodes: reduceat
_WORD = 64
_ONE = np.uint64(1)


# --- single-source searches ---


def _edges_of(indptr, indices, nodes) -> tuple[IntArray, IntArray]:
    """(tail, head) of every link out of ``nodes`` (CSR gather)."""
    counts = indptr[nodes + 1] - indptr[nodes]
    total = int(counts.sum())
    offs = np.repeat(indptr[nodes] - np.cumsum(counts) + counts, counts) + np.arange(total)
    return np.repeat(nodes, counts), indices[offs]


def _hops_from(indptr, indices, source: int) -> IntArray:
    """[n] hop distances from one source (-1: unreachable): BFS in C, then depths.

    For CSR with sorted rows (scipy sorts unsorted ones first); see :func:`_levels`.
    """
    n = len(indptr) - 1
    graph = scipy.sparse.csr_matrix((np.ones(len(indices), np.int8), indices, indptr), shape=(n, n))
    order, pred = csgraph.breadth_first_order(
        graph,
        int(source),
        directed=True,
        return_predecessors=True,  # both directions stored
    )
    return _depths(order, pred, int(source), n)


def _distinct(nodes: IntArray, n: int) -> IntArray:
    """The distinct values of ``nodes`` (in 0..n-1), ascending: a mask when many, else a sort."""
    if nodes.size > n // 8:
        mark = np.zeros(n, bool)
        mark[nodes] = True
        return np.flatnonzero(mark)
    return np.unique(nodes)


def _levels(g: _Graph, source: int) -> IntArray:
    """[n] hop distances from one source (-1: unreachable), level by level in numpy.

    Any row order (scipy's BFS would sort the rows first).
    """
    n = g.n
    dist = np.full(n, -1, np.int64)
    dist[source] = 0
    frontier = np.array([source], np.int64)
    d = 0
    while frontier.size:
        _, nbr = g.edges_of(frontier)
        frontier = _distinct(nbr[dist[nbr] < 0], n)
        d += 1
        dist[frontier] = d
    return dist


def _depths(order: IntArray, pred: IntArray, source: int, n: int) -> IntArray:
    """Depths in a BFS tree from its predecessors, by pointer jumping (O(n log depth))."""
    up = np.arange(n)
    length = np.zeros(n, np.int64)  # hops from v to up[v]
    below = order[order != source]
    up[below], length[below] = pred[below], 1
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        length = length + length[up]
        up = nxt
    dist = np.full(n, -1, np.int64)
    dist[order] = length[order]
    return dist


# --- public: the AllReduce's route statistics ---


@dataclasses.dataclass(frozen=True)
class RouteStats:
    """What the AllReduce sees of the routing graph (module docstring).

    Attributes:
      hops: H, the most hops between two participants (0 for fewer than two).
      bottleneck_mbps: β, the slowest link on the routes used (inf for fewer
        than two participants).
      exact: False when the work limit was reached and ``hops`` is an upper
        and ``bottleneck_mbps`` a lower bound (module docstring, "Work limit").
    """

    hops: int
    bottleneck_mbps: float
    exact: bool = True


def route_stats(
    links: Links, participants: BoolArray, *, max_work: int = MAX_ROUTE_WORK
) -> RouteStats:
    """Hops and bottleneck bandwidth of the routes between participants.

    Args:
      links: the round's links.
      participants: [K] the agents that take part in the AllReduce.
      max_work: word operations allowed for the exact searches (module
        docstring, "Work limit").

    Returns:
      The route statistics (cached per participant set on ``links``).

    Raises:
      ValueError: when two participants cannot reach each other.
    """
    part = np.asarray(participants, bool)
    idx = np.flatnonzero(part)
    if idx.size < 2:
        return RouteStats(0, float("inf"))
    if links.complete:
        bw = links.bandwidth_mbps[idx]
        if np.any(bw <= 0):
            raise ValueError(f"participant {int(idx[np.argmin(bw)])} is disconnected (bw = 0)")
        return RouteStats(1, float(bw.min()))
    key = (digest(np.packbits(part)), int(max_work))
    return _lru(links, "route_stats", STATS_CACHE_SIZE).get(
        key, lambda: _sparse_route_stats(links, part, idx, int(max_work))
    )


@dataclasses.dataclass
class _Budget:
    left: int

    def take(self, amount: int) -> bool:
        if amount > self.left:
            return False
        self.left -= amount
        return True


@dataclasses.dataclass(frozen=True)
class _Graph:
    """One connected component, relabelled 0..n-1 by decreasing degree (ties: old order).

    Besides the CSR (``indptr``, ``indices``, ``caps``) it holds the layout of
    the bit-parallel BFS step: column c of ``cols`` lists the c-th neighbour
    of each of the ``len(cols[c])`` nodes with more than c links (a prefix,
    thanks to the order), so one step is a handful of contiguous gathers and
    ORs. The few nodes with more links than there are columns (the first
    ``heavy`` ones) keep the rest of their neighbours in ``tail`` (reduced
    with ``tail_starts``). A column entry that equals its own node is a no-op
    (used by :meth:`restricted`).
    """

    indptr: IntArray
    indices: IntArray
    caps: FloatArray
    cols: tuple[IntArray, ...]
    heavy: int
    tail: IntArray
    tail_starts: IntArray

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    @functools.cached_property
    def rows(self) -> IntArray:
        """[2E] the tail of each CSR entry."""
        return np.repeat(np.arange(self.n), np.diff(self.indptr))

    def edges_of(self, nodes: IntArray) -> tuple[IntArray, IntArray]:
        """(tail, head) of every link out of ``nodes`` (distinct): a gather, or a mask when many."""
        if nodes.size > self.n // 8:
            mark = np.zeros(self.n, bool)
            mark[nodes] = True
            sel = mark[self.rows]
            return self.rows[sel], self.indices[sel]
        return _edges_of(self.indptr, self.indices, nodes)

    @property
    def step_cost(self) -> int:
        """Word operations of one BFS level for one 64-source word."""
        return self.n + len(self.indices)

    @classmethod
    def of(cls, indptr, indices, caps) -> _Graph:
        deg = np.diff(indptr)  # non-increasing
        n = len(deg)
        cols = []
        c = 0
        while c < (deg[0] if n else 0):
            n_c = int(np.searchsorted(-deg, -c, side="left"))  # nodes with deg > c
            if n_c < _HEAVY and c:
                break
            cols.append(indices[indptr[:n_c] + c])
            c += 1
        heavy = int(np.searchsorted(-deg, -len(cols), side="left"))
        starts = indptr[:heavy] + len(cols)
        counts = deg[:heavy] - len(cols)
        tail = indices[
            np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        ]
        tail_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(indptr, indices, caps, tuple(cols), heavy, tail, tail_starts)

    def restricted(self, keep_edges: BoolArray) -> _Graph:
        """The same nodes and layout with only the links in ``keep_edges`` (CSR-aligned)."""
        cols = []
        for c, col in enumerate(self.cols):
            n_c = len(col)
            cols.append(np.where(keep_edges[self.indptr[:n_c] + c], col, np.arange(n_c)))
        k = len(self.cols)
        counts = np.diff(self.indptr)[: self.heavy] - k
        starts = self.indptr[: self.heavy] + k
        pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        owner = np.repeat(np.arange(self.heavy), counts)
        tail = np.where(keep_edges[pos], self.tail, owner)
        return dataclasses.replace(self, cols=tuple(cols), tail=tail)


def _component(indptr, indices, caps, keep: BoolArray) -> tuple[_Graph, IntArray]:
    """The subgraph on ``keep`` (a union of components) and [K] the new label of each agent."""
    deg = np.diff(indptr)
    nodes = np.flatnonzero(keep)
    order = nodes[np.argsort(-deg[nodes], kind="stable")]
    new_id = np.full(len(deg), -1, np.int64)
    new_id[order] = np.arange(len(order))
    sub_deg = deg[order]
    sub_indptr = np.concatenate([[0], np.cumsum(sub_deg)]).astype(np.int64)
    starts = indptr[order]
    pos = np.repeat(starts - sub_indptr[:-1], sub_deg) + np.arange(sub_indptr[-1])
    return _Graph.of(sub_indptr, new_id[indices[pos]], caps[pos]), new_id


def _sparse_route_stats(links: Links, part: BoolArray, idx: IntArray, max_work: int) -> RouteStats:
    indptr, indices, caps = links.csr()
    s0 = int(idx[0])
    dist0 = _hops_from(indptr, indices, s0)
    d = dist0[idx]
    if np.any(d < 0):
        bad = int(idx[np.flatnonzero(d < 0)[0]])
        raise ValueError(
            f"participants {s0} and {bad} are not connected; the AllReduce needs one "
            "connected group (world.main_component, the AllReduce methods' rule, keeps "
            "the largest)"
        )
    g, new_id = _component(indptr, indices, caps, dist0 >= 0)
    p = np.zeros(g.n, bool)
    p[new_id[idx]] = True
    budget = _Budget(max_work)
    hops, exact_h = _participant_diameter(g, p, budget)
    beta, exact_b = _participant_bottleneck(g, p, hops, budget)
    return RouteStats(int(hops), float(beta), bool(exact_h and exact_b))


# --- H: the participants' diameter ---


def _participant_diameter(g: _Graph, p: BoolArray, budget: _Budget) -> tuple[int, bool]:
    n, m = g.n, len(g.indices)
    P = np.flatnonzero(p)
    if m == 2 * (n - 1):
        return _tree_diameter(g, P), True
    if m == 2 * n and np.all(np.diff(g.indptr) == 2):
        return _cycle_diameter(g, P), True
    return _certified_diameter(g, P, budget)


def _tree_diameter(g: _Graph, P: IntArray) -> int:
    """Two sweeps: in a tree the farthest participant from any node ends a P-diameter."""
    d = _levels(g, int(P[0]))
    u = int(P[np.argmax(d[P])])
    return int(_levels(g, u)[P].max())


def _cycle_diameter(g: _Graph, P: IntArray) -> int:
    """On a cycle of n: hops(a, b) = min(|x_a - x_b|, n - |x_a - x_b|) by position x."""
    n = g.n
    pos = np.empty(n, np.int64)
    prev, cur = -1, 0
    for x in range(n):
        pos[cur] = x
        a, b = g.indices[g.indptr[cur]], g.indices[g.indptr[cur] + 1]
        prev, cur = cur, (b if a == prev else a)
    q = np.sort(pos[P])
    ext = np.concatenate([q, q + n])
    j = np.searchsorted(ext, q + n // 2)
    best = 0
    for cand in (j - 1, j):
        delta = np.abs(ext[np.clip(cand, 0, len(ext) - 1)] - q) % n
        best = max(best, int(np.minimum(delta, n - delta).max()))
    return best


def _groups(sources: IntArray) -> list[IntArray]:
    """Sources in groups of up to _GROUP_WORDS 64-bit words."""
    size = _GROUP_WORDS * _WORD
    return [sources[i : i + size] for i in range(0, len(sources), size)]


def _seed(n: int, sources: IntArray) -> np.ndarray:
    """[n, w] uint64 rows: bit i of source i set at its own node."""
    m = len(sources)
    row = np.zeros((n, -(-m // _WORD)), np.uint64)
    i = np.arange(m)
    np.bitwise_or.at(row, (sources, i // _WORD), _ONE << (i % _WORD).astype(np.uint64))
    return row


def _full(m: int) -> np.ndarray:
    """[w] the words of m set bits."""
    full = np.full(-(-m // _WORD), ~np.uint64(0))
    if m % _WORD:
        full[-1] = np.uint64((1 << (m % _WORD)) - 1)
    return full


def _bits(words: np.ndarray, m: int) -> BoolArray:
    """[m] bit i of the words (little-endian within each word)."""
    i = np.arange(m)
    return ((words[i // _WORD] >> (i % _WORD).astype(np.uint64)) & _ONE).astype(bool)


def _and_rows(rows: np.ndarray) -> np.ndarray:
    """[w] AND over the rows of [n, w] words, pairwise (numpy's reduce over axis 0 is slow)."""
    while len(rows) > 1:
        half = len(rows) // 2
        out = rows[:half] & rows[half : 2 * half]
        if len(rows) % 2:
            out[0] &= rows[-1]
        rows = out
    return rows[0]


def _step(g: _Graph, row: np.ndarray) -> np.ndarray:
    """One BFS level for up to 64 · w sources: OR over each node's closed neighbourhood."""
    n, w = row.shape
    packed = row.view(f"V{8 * w}").reshape(n)  # one gather moves a node's w words
    out = row.copy()
    buf = np.empty(n, packed.dtype)
    for col in g.cols:
        n_c = len(col)
        np.take(packed, col, out=buf[:n_c], mode="clip")  # mode="raise" would buffer `out`
        np.bitwise_or(out[:n_c], buf[:n_c].view(np.uint64).reshape(n_c, w), out=out[:n_c])
    if g.heavy:
        got = np.take(packed, g.tail).view(np.uint64).reshape(-1, w)
        out[: g.heavy] |= np.bitwise_or.reduceat(got, g.tail_starts, axis=0)
    return out


def _push_first_step(g: _Graph, row: np.ndarray, sources: IntArray) -> np.ndarray:
    """:func:`_step` from rows that hold only the sources' own bits: O(their links)."""
    tail, head = g.edges_of(sources)
    bit = np.empty(g.n, np.int64)
    bit[sources] = np.arange(len(sources))
    i = bit[tail]
    out = row.copy()
    np.bitwise_or.at(out, (head, i // _WORD), _ONE << (i % _WORD).astype(np.uint64))
    return out


def _eccentricities(g: _Graph, sources: IntArray, P: IntArray, all_p: bool) -> IntArray:
    """e(w) = max_{t in P} hops(w, t) for each source, 64 per word of a bit-parallel BFS."""
    out = []
    for group in _groups(sources):
        m = len(group)
        row, full = _seed(g.n, group), _full(m)
        ecc = np.full(m, -1, np.int64)
        level = 0
        while True:
            reached = _and_rows(row if all_p else row[P])
            ecc[(ecc < 0) & _bits(reached, m)] = level
            if np.array_equal(reached, full):
                break
            # level 0 -> 1 touches only the sources' links
            row = _push_first_step(g, row, group) if level == 0 else _step(g, row)
            level += 1
        out.append(ecc)
    return np.concatenate(out)


def _spread_max(g: _Graph, best: IntArray, seeds: IntArray, values: IntArray) -> None:
    """best[v] = max(best[v], max_w values_w - hops(v, w)) for values >= 0, in place."""
    up = values > best[seeds]
    np.maximum.at(best, seeds[up], values[up])
    frontier = _distinct(seeds[up], g.n)
    while frontier.size:
        frontier = frontier[best[frontier] > 0]
        if not frontier.size:
            break
        tail, head = g.edges_of(frontier)
        val = best[tail] - 1
        better = val > best[head]
        np.maximum.at(best, head[better], val[better])
        frontier = _distinct(head[better], g.n)


def _spread_min(g: _Graph, seeds: IntArray, values: IntArray) -> IntArray:
    """[n] min_w values_w + hops(v, w) over the seeds (a multi-source BFS with offsets)."""
    best = np.full(g.n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, seeds, values)
    frontier = _distinct(seeds, g.n)
    while frontier.size:
        tail, head = g.edges_of(frontier)
        val = best[tail] + 1
        better = val < best[head]
        np.minimum.at(best, head[better], val[better])
        frontier = _distinct(head[better], g.n)
    return best


def _certified_diameter(g: _Graph, P: IntArray, budget: _Budget) -> tuple[int, bool]:
    """Exact max_{s,t in P} hops(s, t) by eccentricity certificates (module docstring)."""
    n, all_p = g.n, len(P) == g.n
    deg = np.diff(g.indptr)
    level_cost = g.step_cost
    centre = int(P[np.lexsort((P, -deg[P]))][0])
    d_centre = _levels(g, centre)
    src, ecc = [np.array([centre])], [np.array([int(d_centre[P].max())])]
    lb = int(ecc[0][0])
    exact = True

    def batch(sources) -> bool:
        nonlocal lb
        words = -(-len(sources) // _WORD)
        if not budget.take(words * (lb + 2) * level_cost):
            return False
        e = _eccentricities(g, sources, P, all_p)
        src.append(sources)
        ecc.append(e)
        lb = max(lb, int(e.max()))
        return True

    # Two sweeps, 64 at a time: the participants farthest from the centre, then
    # those farthest from the most eccentric one found.
    far = P[np.lexsort((P, deg[P], -d_centre[P]))][:_WORD]
    if batch(far):
        u = int(far[np.argmax(ecc[-1])])
        d_u = _levels(g, u)
        exact = batch(P[np.lexsort((P, deg[P], -d_u[P]))][:_WORD])
    else:
        exact = False

    certified_lb = -1
    cover = np.full(n, -1, np.int64)  # max_w (lb - e(w)) - hops(v, w): >= 0 is certified
    done = 0
    while exact:
        if lb != certified_lb:  # lb rose: every radius grows, start over
            cover[:] = -1
            done, certified_lb = 0, lb
        s, e = np.concatenate(src[done:]), np.concatenate(ecc[done:])
        _spread_max(g, cover, s, lb - e)
        done = len(src)
        open_ = P[cover[P] < 0]
        if open_.size == 0:
            return lb, True
        pick = open_[np.lexsort((open_, -deg[open_]))][: _BATCH_WORDS * _WORD]
        if not batch(pick):
            exact = False
    s, e = np.concatenate(src), np.concatenate(ecc)
    ub = int(_spread_min(g, s, e)[P].max())
    return max(ub, lb), ub <= lb


# --- β: the slowest link on the routes used ---


def _participant_bottleneck(
    g: _Graph, p: BoolArray, hops: int, budget: _Budget
) -> tuple[float, bool]:
    P = np.flatnonzero(p)
    fastest = np.maximum.reduceat(g.caps, g.indptr[:-1])
    upper = float(fastest[P].min())
    if g.caps.min() >= upper:
        return upper, True
    speeds = np.unique(g.caps[g.caps <= upper])  # ascending; speeds[0] keeps every link
    lo, hi = 0, len(speeds) - 1  # speeds[lo] keeps the hop counts; speeds[hi + 1:] do not
    cost = 2 * -(-len(P) // _WORD) * (hops + 1) * g.step_cost
    mid = hi  # the upper bound first: it usually holds
    while lo < hi:
        if not budget.take(cost):
            return float(speeds[lo]), False
        if _keeps_hops(g, P, g.caps >= speeds[mid]):
            lo = mid
        else:
            hi = mid - 1
        mid = (lo + hi + 1) // 2
    return float(speeds[lo]), True


def _keeps_hops(g: _Graph, P: IntArray, keep_edges: BoolArray) -> bool:
    """Whether dropping the other links leaves every participant pair's hop count as it was."""
    h = g.restricted(keep_edges)
    for group in _groups(P):
        full = _full(len(group))
        row_g = _seed(g.n, group)
        row_h = row_g.copy()
        while not np.array_equal(_and_rows(row_g[P]), full):
            row_g, row_h = _step(g, row_g), _step(h, row_h)
            if not np.array_equal(row_g[P], row_h[P]):
                return False
    return True


# --- the reference: one search per participant ---


def route_stats_reference(links: Links, participants: BoolArray) -> RouteStats:
    """The previous :func:`route_stats`, one BFS per participant: O(|P| · E).

    Kept as the oracle of the tests and the benchmark's baseline. Same
    arguments, result and errors as :func:`route_stats` (always exact).
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
                "connected group (world.main_component, the AllReduce methods' rule, keeps "
                "the largest)"
            )
        hops = max(hops, int(d.max()))
        beta = min(beta, float(width[idx[idx != s]].min()))
    return RouteStats(hops, beta)
