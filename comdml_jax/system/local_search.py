"""``system.scheduler = "greedy_ls"``: Algorithm 1 followed by a local search on problem (5).

Problem (5) (docs/timing_model.md): minimise the makespan max_i τ_i over
pairings (slow i offloads to a strictly faster participant j, τ̂_j < τ̂_i, with
c_ij > 0; every agent in at most one pair) and cuts m >= 1. A pair (i, j) at
cut m gives τ_i = τ̂_i · T_s^m and τ_j = τ̂_j + Ñ_i · (ν^m / c_ij + T_f^m · step_j);
an agent not in a pair has τ = τ̂. Every cut choice takes the pair's best cut,
min_m max(τ_i, τ_j), lowest m on ties, as Algorithm 1 does.

The search starts from :func:`scheduler.greedy_plan` and keeps every agent's τ.
Each step looks at the critical agent a (argmax τ, ties lowest index) and its
pair's slow agent e (a itself when a is a slow agent or unpaired; a's slow
agent when a is a fast partner), with e's partner f0 (if any). It tries these
move kinds in order and applies the best move of the first kind that has an
improving one:

1. re-pair: e takes the free faster partner that gives the lowest time (or
   keeps f0 at its best cut), or the pair (e, f0) is dissolved;
2. swap: the critical pair (e, f0) and another pair (s2, f2) exchange partners,
   (e, f2) and (s2, f0);
3. steal: e takes another pair's fast partner f2, its slow agent s2 trains alone;
4. steal-and-rehome: as 3, but s2 pairs with one of its candidate free
   partners (see below);
5. an ejection chain: e takes f2 from s2, s2 takes f3 from s3, ..., and the
   last one robbed trains alone, takes a free partner, or takes as its partner
   the slow agent y of a pair outside the chain (y's partner then trains
   alone; e itself may close this way too); found by breadth-first search over
   at most :data:`CHAIN_EXPANSIONS` expanded agents, each with its
   :data:`REHOME` best thefts.

A move is improving when the largest new τ of the agents it touches is
strictly below the makespan T. The critical agent is always touched, so either
the makespan or the number of agents at it strictly decreases
(lexicographic descent): the search terminates; it also stops after
:data:`MAX_MOVES` moves or when the critical agent has no improving move.
Ties between moves of a kind go to the lowest new maximum, then the lowest
agent indices; there is no randomness, and the result does not depend on dict
or set order.

Candidates. A re-pair evaluates every free faster agent whose τ̂ is below
min(T, τ̂_e) (a pair's time is at least its fast agent's τ̂) and that passes
a lower bound of the pair time without the link term: on a sparse topology
among e's neighbours (``links.neighbors``), on a complete one as a prefix of
the participants sorted by τ̂. Swaps and thefts evaluate the fast partners
of the other pairs under the same bounds (again e's neighbours on a sparse
topology), vectorised; on a complete topology thefts keep one pair per
(class of the slow agent, class of the fast one), where a class is the
agents with equal (Ñ, step, bandwidth), which are interchangeable. A robbed
or ejected agent x re-homes with free candidates: its free neighbours on a
sparse topology; on a complete topology the :data:`REHOME` free participants
with the smallest τ̂ (the fastest alone, ties lowest index); plus f0, which
the move frees. Only cuts whose slow side can beat T are evaluated. So a
step costs O(K) numpy work at most, not O(K²).

Every pair time goes through one function, :meth:`_Search._pair_times`,
which evaluates ``timing.slow_side_s`` and ``timing.fast_side_s`` with
c = ``links.capacity`` (and a route's relay, ``links.relay``) exactly as
``timing.price_round`` does, so the τ the
search tracks is the τ the plan is priced at, to the bit.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.scheduler import SCHEDULERS, greedy_plan
from comdml_jax.system.timing import fast_side_s, slow_side_s

MAX_MOVES = 1024  # moves applied at most
REHOME = 8  # free candidates of a re-homed agent (complete topology); thefts per chain node
CHAIN_EXPANSIONS = 32  # agents the ejection-chain search expands at most

_EMPTY = np.zeros(0, np.int64)


class _Move:
    """A candidate move: dissolve the pairs of ``unpair`` (slow agents), then form ``pairs``.

    ``pairs``: [(slow, fast, cut, τ_slow, τ_fast), ...]; ``new_max``: the largest
    new τ of the agents it touches.
    """

    __slots__ = ("new_max", "unpair", "pairs")

    def __init__(self, new_max, unpair, pairs):
        self.new_max, self.unpair, self.pairs = float(new_max), tuple(unpair), tuple(pairs)


class _Search:
    """The local search's state: the pairing, the cuts and every agent's τ."""

    def __init__(self, inputs: PairingInputs, start: RoundPlan):
        self.links = inputs.links
        self.k = inputs.num_agents
        self.part = inputs.participants
        self.n = inputs.num_batches
        self.step = inputs.step
        self.tau_hat = inputs.tau_hat
        terms = inputs.terms
        self.t_slow, self.t_fast, self.mb = terms.slow[1:], terms.fast[1:], terms.megabits[1:]
        self.cut_ids = np.arange(self.t_slow.size)
        self.min_slow = float(self.t_slow.min()) if self.t_slow.size else 1.0  # bounds only
        self.partner = np.array(start.partner, np.int64)
        self.cut = np.array(start.cut, np.int64)
        self.slow_of = np.full(self.k, -1, np.int64)
        self.tau = np.where(self.part, self.tau_hat, -np.inf)
        s = np.flatnonzero(self.partner >= 0)
        if s.size:
            f = self.partner[s]
            self.slow_of[f] = s
            _, m, ts, tf = self._pair_times(s, f)  # the greedy's pairs at their best cut
            self.cut[s] = m
            self.tau[s], self.tau[f] = ts, tf
        self.free = self.part & (self.partner < 0) & (self.slow_of < 0)
        idx = np.flatnonzero(self.part)
        self.asc = idx[np.lexsort((idx, self.tau_hat[idx]))]  # by τ̂, ties lowest index
        self.asc_tau = self.tau_hat[self.asc]
        self.moves = 0
        self._near_cache: dict = {}
        self._cls = None  # class of each agent, computed when first needed (_distinct_pairs)

    # --- the one place a pair's time is computed ---

    def _pair_times(self, s, f, bound=np.inf):
        """Each pair (s[p], f[p]) at its best cut: (time, cut, τ_slow, τ_fast), [P] each.

        time is inf for a pair problem (5) does not allow (not both participants,
        f not strictly faster, or c_sf = 0). Ties between cuts go to the lowest m.

        With a finite ``bound`` only the cuts at which some slow agent's side is
        below it are evaluated: every other cut's time is >= bound for every row.
        A time below ``bound`` is then exact (same cut, same τ); a time at or
        above it only says so (callers accept a pair only below their bound).
        """
        s, f = np.asarray(s, np.int64), np.asarray(f, np.int64)
        size = max(s.size, f.size)
        th_s, th_f = self.tau_hat[s], self.tau_hat[f]
        cols = self.cut_ids
        if np.isfinite(bound) and size:
            cols = cols[slow_side_s(th_s.min(), self.t_slow) < bound]
            if cols.size == 0:
                inf = np.full(size, np.inf)
                return inf, np.ones(size, np.int64), inf, inf
        c = self.links.capacity(s, f)
        ok = (c > 0) & (th_f < th_s) & self.part[s] & self.part[f]
        c = np.where(ok, c, np.inf)  # a pair not allowed: no division by 0 (its time is inf)
        relay = self.links.relay(s, f)  # routes' per-transfer relay latency; 0.0 when direct
        relay = relay if np.isscalar(relay) else np.broadcast_to(relay, (size,))[:, None]

        def per_row(x):  # one slow (fast) agent broadcasts as a scalar
            return x[:, None] if x.ndim else x

        a = slow_side_s(per_row(th_s), self.t_slow[cols])
        b = fast_side_s(
            per_row(th_f),
            per_row(self.n[s]),
            self.mb[cols],
            c[:, None],
            self.t_fast[cols],
            per_row(self.step[f]),
            relay,
        )
        v = np.maximum(a, b)
        m = np.argmin(v, axis=1)
        r = np.arange(size)
        ts = a[r, m] if a.ndim == 2 else a[m]
        return np.where(ok, v[r, m], np.inf), cols[m] + 1, ts, b[r, m]

    # --- candidates ---

    def _faster_than(self, bound):
        """Participants with τ̂ < bound, by τ̂ (complete topology)."""
        return self.asc[: int(np.searchsorted(self.asc_tau, bound, side="left"))]

    def _near(self, x, bound):
        """Agents that could be x's partner below ``bound``: faster, τ̂ < bound, linked.

        Also drops those whose pair with x is at least ``bound`` by a lower bound
        of :meth:`_pair_times` that ignores the link term: a cut m can only beat
        ``bound`` if τ̂_x · T_s^m < bound, and then τ_j >= τ̂_j + Ñ_x · T_f^m · step_j.
        """
        key = (x, bound)
        if key in self._near_cache:
            return self._near_cache[key]
        self._near_cache[key] = out = self._near_uncached(x, bound)
        return out

    def _near_uncached(self, x, bound):
        b = min(bound, self.tau_hat[x])
        if self.links.complete:
            cand = self._faster_than(b)
        else:
            nbr, _ = self.links.neighbors(x)
            cand = nbr[self.part[nbr] & (self.tau_hat[nbr] < b)]
        allowed = slow_side_s(self.tau_hat[x], self.t_slow) < bound
        if not allowed.any():
            return _EMPTY
        rel = float(self.t_fast[allowed].min())
        lb = self.tau_hat[cand] + self.n[x] * (rel * self.step[cand])
        return cand[lb < bound]

    def _pool(self, x, freed, exclude=()):
        """x's free re-home candidates (module docstring), plus ``freed``, minus ``exclude``."""
        if self.links.complete:
            cand = self.asc[self.free[self.asc]][:REHOME]
        else:
            nbr, _ = self.links.neighbors(x)
            cand = nbr[self.free[nbr]]
        if freed >= 0:
            cand = np.append(cand, freed)
        if exclude:
            cand = cand[~np.isin(cand, np.asarray(exclude, np.int64))]
        return cand

    def _others(self, e, f0, bound):
        """Fast partners f2 of the pairs other than e's that could be e's partner below bound."""
        f2 = self._near(e, bound)
        f2 = f2[self.slow_of[f2] >= 0]
        return f2[f2 != f0]

    # --- the move kinds ---

    def _repair(self, e, f0, t):
        cand = self._near(e, t)
        cand = cand[self.free[cand]]
        if f0 >= 0:
            cand = np.append(cand, f0)
        moves = []
        if cand.size:
            v, m, ts, tf = self._pair_times(e, cand, t)
            left = self.tau_hat[f0] if f0 >= 0 else -np.inf
            nm = np.where(cand == f0, v, np.maximum(v, left))
            r = _best(nm, cand)
            if nm[r] < t:
                j = int(cand[r])
                moves.append(_Move(nm[r], [e] if f0 >= 0 else [], [(e, j, m[r], ts[r], tf[r])]))
        if f0 >= 0:
            nm = max(self.tau_hat[e], self.tau_hat[f0])
            if nm < t:
                moves.append(_Move(nm, [e], []))
        return min(moves, key=lambda mv: mv.new_max) if moves else None

    def _swap(self, e, f0, t):
        if f0 < 0:
            return None
        f2 = self._others(e, f0, t)
        if f2.size == 0:
            return None
        v1, m1, ts1, tf1 = self._pair_times(e, f2, t)
        ok = v1 < t  # (e, f2) must beat t before (s2, f0) is worth evaluating
        s2 = self.slow_of[f2]
        ok &= self.tau_hat[s2] > self.tau_hat[f0]
        ok &= slow_side_s(self.tau_hat[s2], self.min_slow) < t
        if not ok.any():
            return None
        f2, s2, v1, m1, ts1, tf1 = f2[ok], s2[ok], v1[ok], m1[ok], ts1[ok], tf1[ok]
        v2, m2, ts2, tf2 = self._pair_times(s2, f0, t)
        nm = np.maximum(v1, v2)
        r = _best(nm, s2)
        if not nm[r] < t:
            return None
        return _Move(
            nm[r],
            [e, int(s2[r])],
            [(e, int(f2[r]), m1[r], ts1[r], tf1[r]), (int(s2[r]), f0, m2[r], ts2[r], tf2[r])],
        )

    def _distinct_pairs(self, f2):
        """Fast partners f2, one per (class of its slow agent, its class): the lowest slow index.

        On a complete topology agents with equal (Ñ, step, bandwidth) are
        interchangeable (equal τ̂ and c with everyone), so a theft's outcome depends
        on the two classes only, and ties go to the lowest slow index. Order kept.
        """
        if not self.links.complete or f2.size < 2:
            return f2
        if self._cls is None:
            keys = np.stack([self.n, self.step, self.links.bandwidth_mbps], axis=1)
            self._cls = np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
        s2 = self.slow_of[f2]
        key = self._cls[s2] * self.k + self._cls[f2]
        o = np.lexsort((s2, key))
        first = np.ones(o.size, bool)
        first[1:] = key[o][1:] != key[o][:-1]
        return f2[np.sort(o[first])]

    def _thefts(self, e, f0, t):
        """(f2, s2, time, cut, τ_e, τ_f2) of every theft by e below t, best first."""
        f2 = self._distinct_pairs(self._others(e, f0, t))
        if f2.size == 0:
            return None
        v, m, ts, tf = self._pair_times(e, f2, t)
        ok = v < t
        if not ok.any():
            return None
        f2, v, m, ts, tf = f2[ok], v[ok], m[ok], ts[ok], tf[ok]
        o = np.lexsort((f2, v))
        return f2[o], self.slow_of[f2[o]], v[o], m[o], ts[o], tf[o]

    def _steal(self, e, f0, t, thefts):
        if thefts is None:
            return None
        f2, s2, v, m, ts, tf = thefts
        left = self.tau_hat[f0] if f0 >= 0 else -np.inf
        nm = np.maximum(np.maximum(v, self.tau_hat[s2]), left)
        r = _best(nm, s2)
        if not nm[r] < t:
            return None
        unpair = ([e] if f0 >= 0 else []) + [int(s2[r])]
        return _Move(nm[r], unpair, [(e, int(f2[r]), m[r], ts[r], tf[r])])

    def _rehome(self, e, f0, t, thefts):
        if thefts is None:
            return None
        f2, s2, v, m, ts, tf = thefts
        if self.links.complete:  # one pool for every robbed agent
            pool = self._pool(e, f0, exclude=(e,))
            rows, homes = np.repeat(np.arange(f2.size), pool.size), np.tile(pool, f2.size)
        else:  # each robbed agent's free neighbours (its _pool), all at once from the CSR rows
            lo, size = self.links.indptr[s2], np.diff(self.links.indptr)[s2]
            rows = np.repeat(np.arange(f2.size), size)
            pos = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size - lo, size)
            homes = self.links.indices[pos]
            keep = self.free[homes] & (homes != e)
            rows, homes = rows[keep], homes[keep]
            if f0 >= 0:
                rows = np.concatenate([rows, np.arange(f2.size)])
                homes = np.concatenate([homes, np.full(f2.size, f0)])
        if homes.size == 0:
            return None
        hv, hm, hts, htf = self._pair_times(s2[rows], homes, t)
        left = np.where(homes == f0, -np.inf, self.tau_hat[f0] if f0 >= 0 else -np.inf)
        nm = np.maximum(np.maximum(v[rows], hv), left)
        b = _best(nm, s2[rows], homes)
        if not nm[b] < t:
            return None
        r, h = rows[b], int(homes[b])
        unpair = ([e] if f0 >= 0 else []) + [int(s2[r])]
        pairs = [(e, int(f2[r]), m[r], ts[r], tf[r]), (int(s2[r]), h, hm[b], hts[b], htf[b])]
        return _Move(nm[b], unpair, pairs)

    def _chain(self, e, f0, t):
        """Breadth-first ejection chains (module docstring); the first that closes below t."""
        if f0 >= 0 and not self.tau_hat[f0] < t:
            return None
        start = [e] if f0 >= 0 else []
        queue = deque([(e, (), (e,) if f0 < 0 else (e, f0))])
        expansions = 0
        while queue and expansions < CHAIN_EXPANSIONS:
            x, pairs, used = queue.popleft()
            expansions += 1
            robbed = [p[0] for p in pairs]
            # close: x trains alone, takes a free partner, or takes the slow agent y of a
            # pair outside the chain as its partner (y's partner then trains alone)
            options = []  # (the closing step's new max, rank, new pair or None, unpair)
            if x != e:
                if self.tau_hat[x] < t:
                    options.append((self.tau_hat[x], 0, None, ()))
                taken = tuple(p[1] for p in pairs)
                cand = self._pool(x, f0, exclude=taken + (e,))
                if cand.size:
                    v, m, ts, tf = self._pair_times(x, cand, t)
                    r = _best(v, cand)
                    if v[r] < t:
                        options.append((v[r], 1, (x, int(cand[r]), m[r], ts[r], tf[r]), ()))
            ys = self._near(x, t)
            ys = ys[(self.partner[ys] >= 0) & ~np.isin(ys, np.asarray(used, np.int64))]
            if ys.size:
                v, m, ts, tf = self._pair_times(x, ys, t)
                nm = np.maximum(v, self.tau_hat[self.partner[ys]])
                r = _best(nm, ys)
                if nm[r] < t:
                    y = int(ys[r])
                    options.append((nm[r], 2, (x, y, m[r], ts[r], tf[r]), (y,)))
            if options:
                val, _, pair, extra = min(options, key=lambda o: (o[0], o[1]))
                new = list(pairs) + ([pair] if pair is not None else [])
                nm = max([val] + [max(p[3], p[4]) for p in pairs])
                if f0 >= 0 and not any(p[1] == f0 for p in new):
                    nm = max(nm, self.tau_hat[f0])
                unpair = start + robbed[1:] + ([x] if x != e else []) + list(extra)
                return _Move(nm, unpair, new)
            # expand: x takes the fast partner of a pair not in the chain
            f2 = self._near(x, t)
            f2 = f2[(self.slow_of[f2] >= 0) & ~np.isin(f2, np.asarray(used, np.int64))]
            f2 = self._distinct_pairs(f2)
            if f2.size == 0:
                continue
            v, m, ts, tf = self._pair_times(x, f2, t)
            ok = v < t
            f2, v, m, ts, tf = f2[ok], v[ok], m[ok], ts[ok], tf[ok]
            for r in np.lexsort((f2, v))[:REHOME]:
                j = int(f2[r])
                s2 = int(self.slow_of[j])
                queue.append((s2, pairs + ((x, j, m[r], ts[r], tf[r]),), used + (s2, j)))
        return None

    # --- the search ---

    def apply(self, move: _Move):
        for s in move.unpair:
            f = self.partner[s]
            self.partner[s], self.cut[s], self.slow_of[f] = -1, 0, -1
            self.tau[s], self.tau[f] = self.tau_hat[s], self.tau_hat[f]
            self.free[s] = self.free[f] = True
        for s, f, m, ts, tf in move.pairs:
            self.partner[s], self.cut[s], self.slow_of[f] = f, m, s
            self.tau[s], self.tau[f] = ts, tf
            self.free[s] = self.free[f] = False
        self.moves += 1

    def improve(self) -> bool:
        """One move on the critical agent; False when it has no improving move."""
        a = int(np.argmax(self.tau))
        t = float(self.tau[a])
        self._near_cache = {}  # _near depends on (x, bound) only: the same within a step
        e = int(self.slow_of[a]) if self.slow_of[a] >= 0 else a
        f0 = int(self.partner[e])
        move = self._repair(e, f0, t) or self._swap(e, f0, t)
        if move is None:
            thefts = self._thefts(e, f0, t)
            move = self._steal(e, f0, t, thefts) or self._rehome(e, f0, t, thefts)
        move = move or self._chain(e, f0, t)
        if move is None:
            return False
        self.apply(move)
        return True

    def run(self):
        if not self.part.any():
            return
        while self.moves < MAX_MOVES and self.improve():
            pass

    def plan(self) -> RoundPlan:
        return RoundPlan(self.part, self.partner, self.cut)


def _best(values, *keys):
    """Index of the smallest value, ties by the lowest keys (in the order given)."""
    rows = np.flatnonzero(values == values.min())
    if rows.size == 1:
        return int(rows[0])
    return int(rows[np.lexsort(tuple(k[rows] for k in reversed(keys)))[0]])


def _search(inputs: PairingInputs) -> _Search:
    s = _Search(inputs, greedy_plan(inputs))
    if inputs.profile.num_cuts >= 2:
        s.run()
    return s


def greedy_ls_plan(inputs: PairingInputs) -> RoundPlan:
    """Algorithm 1, then a local search on the critical agent (local_search.py docstring).

    Args:
      inputs: the round's scheduler inputs, as for ``scheduler.greedy_plan``.

    Returns:
      A plan whose makespan is at most the greedy's.
    """
    return _search(inputs).plan()


SCHEDULERS["greedy_ls"] = greedy_ls_plan
