"""Exact solution of problem (5) for small K, and the greedy's gap to it (docs/timing_model.md).

Problem (5): minimise max_i τ_i (eq. (4)) over pairings γ_ij and cuts m. The
feasible pairings are those the paper's setting allows: slow agent i may
offload to a participant j with a usable link (c_ij > 0) that is strictly
faster (τ̂_j < τ̂_i), at any cut m >= 1, and every agent is in at most one
pair. Non-participants sit out.

Two facts make it small:
  - pairs do not interact, so each allowed pair (i, j) takes its best cut:
    w_ij = min_m max(τ̂_i T_s^m, τ̂_j + Ñ_i (ν^m / c_ij + r_ij + T_f^m step_j)),
    lowest m on ties;
  - the objective is a max of values from the finite set {τ̂_i} ∪ {w_ij}, so
    replacing every value by its rank in that sorted set is an exactly
    equivalent integer problem. CP-SAT then optimises without any time
    scaling or rounding, and the float makespan of its plan is the true
    optimum (re-priced with ``timing.price_round`` in the tests).

CP-SAT model (:func:`exact_plan`): a boolean x_p per allowed pair p = (i, j),
an integer T (a rank), and
  - each agent in at most one pair:   Σ_{p ∋ a} x_p <= 1;
  - an agent that does not offload:   T >= rank(τ̂_i) · (1 − Σ_{p: slow(p)=i} x_p);
  - a chosen pair:                    T >= rank(w_p) · x_p;
minimise T. (A fast partner's time is at most w_p and at least its τ̂.)

:func:`brute_force_plan` enumerates every matching (K <= 10) for the tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.scheduler import SCHEDULERS
from comdml_jax.system.timing import pair_time_s

FloatArray = np.ndarray  # float64[K]
BoolArray = np.ndarray  # bool[K]


@dataclasses.dataclass(frozen=True)
class PairTable:
    """Every allowed pair with its best cut.

    Attributes:
      slow: [P] slow agent i.
      fast: [P] fast partner j.
      cut: [P] best cut m >= 1 (lowest on ties).
      time_s: [P] w_ij, the pair's finishing time max(τ_i, τ_j) at that cut.
      tau_hat: [K] τ̂, each agent's time alone.
    """

    slow: np.ndarray
    fast: np.ndarray
    cut: np.ndarray
    time_s: FloatArray
    tau_hat: FloatArray


def pair_table(inputs: PairingInputs) -> PairTable:
    """All pairs problem (5) allows, each at its best cut (module docstring).

    Args:
      inputs: the round's scheduler inputs.

    Returns:
      The table.
    """
    links, part, n = inputs.links, inputs.participants, inputs.num_batches
    step, tau_hat, terms = inputs.step, inputs.tau_hat, inputs.terms
    c = links.dense()
    relay = links.relay_dense()
    ok = part[:, None] & part[None, :] & (c > 0) & (tau_hat[None, :] < tau_hat[:, None])
    si, fj = np.nonzero(ok)
    if si.size == 0 or inputs.profile.num_cuts < 2:
        e = np.zeros(0, np.int64)
        return PairTable(e, e, e, np.zeros(0), tau_hat)
    r = relay if np.isscalar(relay) else relay[si, fj]
    v = pair_time_s(tau_hat[si], tau_hat[fj], n[si], c[si, fj], step[fj], terms, r)
    m = np.argmin(v, axis=1)
    return PairTable(si, fj, m + 1, v[np.arange(len(m)), m], tau_hat)


def _plan_from_pairs(participants: BoolArray, table: PairTable, chosen) -> RoundPlan:
    k = len(participants)
    partner = np.full(k, -1, np.int64)
    cut = np.zeros(k, np.int64)
    for p in chosen:
        partner[table.slow[p]] = table.fast[p]
        cut[table.slow[p]] = table.cut[p]
    return RoundPlan(participants, partner, cut)


def exact_plan(inputs: PairingInputs, *, time_limit_s: float = 60.0) -> RoundPlan:
    """An optimal plan for problem (5), by CP-SAT (module docstring).

    Args:
      inputs: the round's scheduler inputs, as for ``scheduler.greedy_plan``.
      time_limit_s: CP-SAT's time limit.

    Returns:
      A plan minimising max_i τ_i.

    Raises:
      RuntimeError: when CP-SAT does not prove optimality in time.
    """
    from ortools.sat.python import cp_model

    part = inputs.participants
    table = pair_table(inputs)
    idx = np.flatnonzero(part)
    if idx.size == 0 or table.slow.size == 0:
        return RoundPlan.alone(part)
    values = np.unique(np.concatenate([table.tau_hat[idx], table.time_s]))
    rank_alone = np.searchsorted(values, table.tau_hat)
    rank_pair = np.searchsorted(values, table.time_s)

    model = cp_model.CpModel()
    t = model.new_int_var(0, len(values) - 1, "T")
    x = [model.new_bool_var(f"x{p}") for p in range(table.slow.size)]
    touches: dict[int, list] = {int(a): [] for a in idx}
    offloads: dict[int, list] = {int(a): [] for a in idx}
    for p, (i, j) in enumerate(zip(table.slow, table.fast, strict=True)):
        touches[int(i)].append(x[p])
        touches[int(j)].append(x[p])
        offloads[int(i)].append(x[p])
        model.add(t >= int(rank_pair[p]) * x[p])
    for a in idx:
        a = int(a)
        if len(touches[a]) > 1:
            model.add_at_most_one(touches[a])
        r = int(rank_alone[a])
        model.add(t + r * sum(offloads[a]) >= r)
    model.minimize(t)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    status = solver.solve(model)
    if status != cp_model.OPTIMAL:
        raise RuntimeError(f"CP-SAT did not prove optimality: {solver.status_name(status)}")
    chosen = [p for p in range(len(x)) if solver.boolean_value(x[p])]
    return _plan_from_pairs(part, table, chosen)


def brute_force_plan(inputs: PairingInputs) -> RoundPlan:
    """An optimal plan by enumerating every matching (at most 10 participants).

    Same argument and result as :func:`exact_plan`.
    """
    part = inputs.participants
    idx = [int(a) for a in np.flatnonzero(part)]
    if len(idx) > 10:
        raise ValueError(f"brute force is for at most 10 participants, got {len(idx)}")
    table = pair_table(inputs)
    tau = table.tau_hat
    pair_of = {
        (int(i), int(j)): p for p, (i, j) in enumerate(zip(table.slow, table.fast, strict=True))
    }
    best = [float("inf"), []]

    def walk(rest: list[int], current: float, chosen: list[int]):
        if current >= best[0]:
            return
        if not rest:
            best[0], best[1] = current, list(chosen)
            return
        a, tail = rest[0], rest[1:]
        walk(tail, max(current, float(tau[a])), chosen)  # a trains alone
        for b in tail:
            p = pair_of.get((a, b), pair_of.get((b, a)))
            if p is not None:
                walk(
                    [x for x in tail if x != b], max(current, float(table.time_s[p])), chosen + [p]
                )

    walk(idx, 0.0, [])
    return _plan_from_pairs(part, table, best[1])


SCHEDULERS["exact"] = exact_plan
