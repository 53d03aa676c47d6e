"""D-PSGD (Lian et al. 2017), the standard decentralised baseline: SPEC §7, docs/timing_model.md.

Not in the paper. Every agent keeps its own model across rounds.

Participants: every sampled agent with a link > 0, also when their graph
splits (docs/timing_model.md). Plan: each participant i trains its own model
one local epoch, then sends it to every neighbour that is a participant,
N_i = {j ∈ P : c_ij > 0}. Every send is an edge (i, j) of ``plan.edges``, so
the edges are symmetric.

Time formula, with b the model bytes, α the per-message latency and
xfer(b, c) = b · 8 / (c · 1e6) + α:
  τ_i = Ñ_i t_ref / s_i,
  exchange_j = Σ_{i∈N_j} xfer(b, c_ij)    (a receiver's incoming transfers are
                                          serialised on its link),
  round = max_{i∈P} τ_i + max_j exchange_j.
D-PSGD sends only to direct neighbours, so every transfer is one hop.

Merge: Metropolis–Hastings weights over the participants' graph, with d_i
the degree of i in it: W_ij = 1 / (1 + max(d_i, d_j)) for each edge and
W_ii = 1 − Σ_{j≠i} W_ij, so x_i ← Σ_j W_ij x_j (:func:`metropolis_weights`).
W is symmetric and doubly stochastic, so the mix keeps the agents' plain mean.
A participant without neighbours, and every agent that was not sampled,
keeps its own model.
"""

from __future__ import annotations

import numpy as np

from comdml_jax.methods.base import every_candidate, register
from comdml_jax.methods.per_agent import (
    PerAgentMethod,
    current_models,
    mix_rows,
    place,
)
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.timing import alone_s, phase_timing, serialised_sends_s


def neighbour_edges(participants, links) -> np.ndarray:
    """[E, 2] (i, j) for every participant i and each participant j it links to (c_ij > 0)."""
    part = np.asarray(participants, bool)
    rows = []
    for i in np.flatnonzero(part):
        nbrs, _ = links.neighbors(int(i))  # j ascending, c_ij > 0: O(deg i)
        nbrs = nbrs[part[nbrs] & (nbrs != i)]
        rows.append(np.stack([np.full_like(nbrs, i), nbrs], axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)


def metropolis_weights(edges: np.ndarray, num_agents: int) -> np.ndarray:
    """[K, K] the Metropolis–Hastings mixing matrix of a symmetric edge list (module docstring).

    Agents without an edge get the identity row.
    """
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    deg = np.bincount(edges[:, 0], minlength=num_agents)
    w = np.zeros((num_agents, num_agents))
    i, j = edges[:, 0], edges[:, 1]
    w[i, j] = 1.0 / (1.0 + np.maximum(deg[i], deg[j]))
    w[np.arange(num_agents), np.arange(num_agents)] = 1.0 - w.sum(axis=1)
    return w


@register("dpsgd")
class DPSGD(PerAgentMethod):
    name = "dpsgd"
    exchange = "mix"
    on_split = (
        "every sampled, connected agent trains its own model and mixes only with the "
        "participants it links to directly, so each group mixes apart that round "
        "(docs/timing_model.md)"
    )
    take_part = staticmethod(every_candidate)

    def plan(self, ctx, mstate):
        del mstate
        part = ctx.env.participants
        k = part.shape[0]
        edges = neighbour_edges(part, ctx.env.links)
        return RoundPlan(part, np.full(k, -1), np.zeros(k, np.int64), edges=edges)

    def price(self, ctx, plan):
        env, timing = ctx.env, ctx.system.timing
        tau = alone_s(env.cpu, ctx.num_batches, ctx.profile, timing)
        exchange, secs = serialised_sends_s(
            plan.edges, env.links, ctx.profile.model_bytes, timing.latency_s
        )
        detail = {"transfer_s": [float(t) for t in secs]}
        return phase_timing(plan.participants, tau, np.zeros_like(tau), exchange, detail=detail)

    def merge(self, mstate, start, trained, plan, ctx, key):
        del start, key
        # A group dropped by train.on_nonfinite='skip' keeps (and sends) its old models.
        models = current_models(mstate.params, mstate.batch_stats, trained, ctx.mesh)
        receivers = np.unique(plan.edges[:, 1]).tolist()
        w = metropolis_weights(plan.edges, plan.num_agents)
        params, stats = mix_rows(models, receivers, w[receivers], ctx.mesh, ctx.aggregation)
        params, stats = place((params, stats), ctx.mesh)
        return mstate._replace(params=params, batch_stats=stats), {"receivers": receivers}
