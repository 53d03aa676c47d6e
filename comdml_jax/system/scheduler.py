"""The pairing scheduler: the paper's Algorithm 1 (docs/timing_model.md), host-side numpy.

Each round, with τ̂_i = Ñ_i · t_ref / s_i every participant's time alone:

1. Order the participants slowest first (decreasing τ̂, ties by lowest index)
   (Algorithm 1, line 3).
2. For each agent i in that order that is not yet in a pair (line 4):
   - candidates: participants j not yet in a pair, with a usable link
     (c_ij > 0) and strictly faster (τ̂_j < τ̂_i) (line 10);
   - for every candidate and cut m >= 1 (line 18):
       τ̂_ij^m = max(τ̂_i · T_s^m, τ̂_j + Ñ_i · (ν^m / c_ij + r_ij + T_f^m · step_j)),
     with r_ij = 0 on a direct link (the paper) and the relay latency of a
     route with ``system.pairing_links = routes`` (``pair_routes``);
   - take the smallest τ̂_ij^m; ties go to the lowest j, then the lowest m
     (lines 13, 20, 21);
   - pair (i -> j*, m*) only if that beats training alone: τ̂_ij* < τ̂_i.
   An agent is in at most one pair: a j taken as a fast partner is no longer a
   candidate, and an i that is already someone's partner does not look for one.

:func:`greedy_plan` is the vectorised implementation; :func:`greedy_plan_reference`
is a literal Python-loop transcription used as the oracle in tests and the
benchmark. They return identical plans (same float expressions, same ties).

Every scheduler (:data:`Scheduler`, registered in :data:`SCHEDULERS`) is
``plan = scheduler(inputs)``, with the round's
:class:`~comdml_jax.system.pairing_inputs.PairingInputs` (CPUs, links, Ñ,
participants, split profile, timing parameters, and the step and τ̂ derived
from them once).

Speed. For each i the vectorised version evaluates all candidates x cuts in
one numpy expression. On a complete topology it also collapses candidates that
are indistinguishable: agents with equal (Ñ_j, step_j, bw_j) have equal
τ̂_ij^m for every i and m, so only the lowest-index available one of each such
class can win (it wins every tie within its class). That is exactly
equivalent, and with the paper's profile sets it leaves a few dozen classes
instead of K candidates.

Disconnected and non-sampled agents are not participants; the caller (see
``world.System.participants_at``) decides that, and they never pair here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.timing import fast_side_s, pair_time_s, slow_side_s

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[K]
BoolArray = np.ndarray  # bool[K]
# ``plan = scheduler(inputs)``: one round's inputs to its plan (``system.scheduler``).
Scheduler = Callable[[PairingInputs], RoundPlan]


def _slowest_first(tau_hat: FloatArray, participants: BoolArray) -> IntArray:
    """Participants by decreasing τ̂, ties by increasing index (Algorithm 1, A)."""
    idx = np.flatnonzero(participants)
    return idx[np.lexsort((idx, -tau_hat[idx]))]


def _best_partner(tau_i, n_i, cand, c, tau_hat_c, step_c, terms, relay=0.0):
    """min over candidates x cuts m >= 1 of τ̂_ij^m: (value, j, m), ties lowest j then m.

    ``relay``: [C] relay seconds per transfer to each candidate (routes), or 0.0.
    """
    v = pair_time_s(tau_i, tau_hat_c, n_i, c, step_c, terms, relay)
    per_j = v.min(axis=1)
    best = per_j.min()
    rows = np.flatnonzero(per_j == best)
    row = rows[np.argmin(cand[rows])]
    m = int(np.argmax(v[row] == best)) + 1
    return float(best), int(cand[row]), m


def greedy_plan(inputs: PairingInputs) -> RoundPlan:
    """Algorithm 1, vectorised over candidates and cuts.

    Args:
      inputs: the round's CPUs, links, Ñ_i, participants, split profile and
        timing parameters.

    Returns:
      The round's plan.
    """
    links, k, part = inputs.links, inputs.num_agents, inputs.participants
    n, step, tau_hat, terms = inputs.num_batches, inputs.step, inputs.tau_hat, inputs.terms
    partner = np.full(k, -1, np.int64)
    cut = np.zeros(k, np.int64)
    avail = part.copy()
    order = _slowest_first(tau_hat, part)
    if inputs.profile.num_cuts < 2 or order.size < 2:
        return RoundPlan(part, partner, cut)

    pairing = _pair_complete if links.complete else _pair_rows
    pairing(order, avail, partner, cut, links, n, step, tau_hat, terms)
    return RoundPlan(part, partner, cut)


def _pair_complete(order, avail, partner, cut, links, n, step, tau_hat, terms):
    """Algorithm 1 on a complete topology, one candidate per class (module docstring).

    Agents of one class also look for a partner alike: their τ̂_ij^m over the
    candidate classes is one fixed [G, M-1] table. For a class of at least
    ``_TABLE_MIN_CLASS`` agents it is built and sorted once
    (:class:`_ClassTable`); each agent then walks its class's sorted
    table to the first entry whose class still has an available member, and
    breaks a tie of equal values by the lowest member index, then cut, as
    :func:`_best_partner` does. Classes only ever run out, so each walk resumes
    where the last one of its class stopped. Smaller classes evaluate their
    candidates directly, as :func:`_pair_rows` does.
    """
    bw = links.bandwidth_mbps
    idx = np.flatnonzero(avail & (bw > 0))
    if idx.size < 2:
        return
    keys = np.stack([n[idx], step[idx], bw[idx]], axis=1)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    members = idx[np.lexsort((idx, inv))]  # grouped by class, by index within
    sizes = np.bincount(inv)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ptr = np.zeros(len(sizes), np.int64)  # members[starts + ptr]: lowest available
    live = sizes > 0  # the class still has an available member
    cls = np.full(len(bw), -1, np.int64)
    cls[idx] = inv
    first = members[starts]
    cls_tau, cls_step, cls_bw = tau_hat[first], step[first], bw[first]
    # Sorted tables of the classes with the τ̂ being paired: equal τ̂ are adjacent in the
    # order, so only those are alive at a time (memory O(G·M) per such class, not O(G²·M)).
    tables: dict[int, _ClassTable] = {}
    tables_tau = None

    def advance(g):
        while ptr[g] < sizes[g] and not avail[members[starts[g] + ptr[g]]]:
            ptr[g] += 1
        live[g] = ptr[g] < sizes[g]

    for i in order:
        if not avail[i] or bw[i] <= 0:
            continue
        ci = int(cls[i])
        if tau_hat[i] != tables_tau:
            tables, tables_tau = {}, tau_hat[i]
        table = tables.get(ci)
        if table is None and sizes[ci] >= _TABLE_MIN_CLASS:
            table = tables[ci] = _ClassTable.of(
                tau_hat[i], n[i], bw[i], cls_tau, cls_step, cls_bw, terms
            )
        if table is not None:
            e = table.first_live(live)
            if e is None:
                continue
            v, j, m = table.pick(e, live, lambda g: members[starts[g] + ptr[g]])
        else:  # a small class: evaluate its candidates directly
            g = np.flatnonzero((cls_tau < tau_hat[i]) & live)
            if g.size == 0:
                continue
            cand = members[starts[g] + ptr[g]]
            c = np.minimum(bw[i], cls_bw[g])
            v, j, m = _best_partner(tau_hat[i], n[i], cand, c, cls_tau[g], cls_step[g], terms)
        if v < tau_hat[i]:
            partner[i], cut[i] = j, m
            avail[i] = avail[j] = False
            advance(cls[i])
            advance(cls[j])


# A class with at least this many agents gets a sorted table (cheaper than evaluating
# every candidate class for each of its agents); smaller ones are evaluated directly.
_TABLE_MIN_CLASS = 8


class _ClassTable:
    """τ̂_ij^m of one class of slow agents over every faster class g and cut m >= 1, sorted.

    ``value[e]``, ``group[e]``, ``cut[e]``: entry e, ascending by value (then
    class, then cut); ``pos``: entries before it belong to classes that have
    run out.
    """

    _CHUNK = 256

    def __init__(self, value, group, cut):
        self.value, self.group, self.cut = value, group, cut
        self.pos = 0

    @classmethod
    def of(cls, tau_i, n_i, bw_i, cls_tau, cls_step, cls_bw, terms):
        g = np.flatnonzero(cls_tau < tau_i)
        c = np.minimum(bw_i, cls_bw[g])
        v = pair_time_s(tau_i, cls_tau[g], n_i, c, cls_step[g], terms)
        cuts = v.shape[1]
        v = v.reshape(-1)
        group = np.repeat(g, cuts)
        cut = np.tile(np.arange(1, cuts + 1), g.size)
        o = np.argsort(v, kind="stable")  # (group, cut) are ascending already
        return cls(v[o], group[o], cut[o])

    def first_live(self, live):
        """The first entry at or after ``pos`` whose class is live (None: none left)."""
        e, total = self.pos, self.value.size
        while e < total:
            hit = np.flatnonzero(live[self.group[e : e + self._CHUNK]])
            if hit.size:
                e += int(hit[0])
                break
            e += self._CHUNK
        self.pos = min(e, total)
        return None if self.pos >= total else self.pos

    def pick(self, e, live, lowest):
        """(value, j, m) among the live entries equal to entry e: lowest j, then m.

        ``lowest(g)``: the lowest available member of the live classes ``g``.
        """
        best = self.value[e]
        end = int(np.searchsorted(self.value, best, side="right"))
        if end == e + 1:
            return float(best), int(lowest(self.group[e])), int(self.cut[e])
        g, m = self.group[e:end], self.cut[e:end]
        ok = live[g]
        g, m = g[ok], m[ok]
        j = lowest(g)
        k = np.lexsort((m, j))[0]
        return float(best), int(j[k]), int(m[k])


def _pair_rows(order, avail, partner, cut, links, n, step, tau_hat, terms):
    """Algorithm 1 on any topology, every candidate among i's usable links (O(deg i) each)."""
    for i in order:
        if not avail[i]:
            continue
        nbr, cap = links.neighbors(i)
        ok = avail[nbr] & (tau_hat[nbr] < tau_hat[i])
        cand, c = nbr[ok], cap[ok]
        if cand.size == 0:
            continue
        relay = links.relay_of(i)
        relay = relay if np.isscalar(relay) else relay[ok]
        v, j, m = _best_partner(tau_hat[i], n[i], cand, c, tau_hat[cand], step[cand], terms, relay)
        if v < tau_hat[i]:
            partner[i], cut[i] = j, m
            avail[i] = avail[j] = False


def greedy_plan_reference(inputs: PairingInputs) -> RoundPlan:
    """Algorithm 1 as plain Python loops: the test oracle for :func:`greedy_plan`.

    Same argument and result as :func:`greedy_plan`. It reads only the inputs'
    arrays and their ``step`` (τ̂ it computes itself, in Python floats).
    """
    links, k = inputs.links, inputs.num_agents
    part = [bool(p) for p in inputs.participants]
    n = [float(x) for x in inputs.num_batches]
    step = [float(x) for x in inputs.step]
    tau_hat = [n[i] * step[i] for i in range(k)]
    terms = inputs.terms
    ts, tf, mb = terms.slow.tolist(), terms.fast.tolist(), terms.megabits.tolist()
    num_cuts = inputs.profile.num_cuts
    order = sorted((i for i in range(k) if part[i]), key=lambda i: (-tau_hat[i], i))
    paired = [False] * k
    partner = [-1] * k
    cut = [0] * k
    for i in order:  # line 3
        if paired[i]:  # line 4
            continue
        row = links.row(i).tolist()
        relay = [0.0] * k
        if links.relay_s is not None:
            nbr = links.neighbors(i)[0].tolist()
            for j, r in zip(nbr, links.relay_of(i).tolist(), strict=True):
                relay[j] = r
        best, best_j, best_m = float("inf"), -1, -1
        for j in range(k):  # line 10
            if j == i or not part[j] or paired[j] or row[j] <= 0:
                continue
            if not tau_hat[j] < tau_hat[i]:
                continue
            for m in range(1, num_cuts):  # lines 16-19
                v = max(
                    slow_side_s(tau_hat[i], ts[m]),
                    fast_side_s(tau_hat[j], n[i], mb[m], row[j], tf[m], step[j], relay[j]),
                )
                if v < best:  # lines 13, 20-21 (first minimum: lowest j, then m)
                    best, best_j, best_m = v, j, m
        if best_j >= 0 and best < tau_hat[i]:
            partner[i], cut[i] = best_j, best_m
            paired[i] = paired[best_j] = True
    return RoundPlan(np.asarray(part), np.asarray(partner), np.asarray(cut))


def no_offload_plan(inputs: PairingInputs) -> RoundPlan:
    """Nobody pairs (the baselines). Same argument as :func:`greedy_plan`."""
    return RoundPlan.alone(inputs.participants)


# ``exact`` (CP-SAT, system/exact.py) registers itself here when ``comdml_jax.system``
# is imported, so this module does not import the exact solver.
SCHEDULERS: dict[str, Scheduler] = {
    "greedy": greedy_plan,
    "none": no_offload_plan,
}


def get_scheduler(name: str) -> Scheduler:
    """The scheduler registered as ``name`` (``system.scheduler``)."""
    if name not in SCHEDULERS:
        raise ValueError(
            f"system.scheduler = {name!r} is unknown; choose one of {sorted(SCHEDULERS)}"
        )
    return SCHEDULERS[name]
