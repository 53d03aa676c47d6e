"""Gossip Learning (Ormándi et al.; Hegedűs et al. 2019), docs/timing_model.md.

Every agent keeps its own model across rounds.

Participants: every sampled agent with a link > 0, also when their graph
splits (docs/timing_model.md). Plan: each participant i trains its own model
for one local epoch, then sends it to one neighbour j drawn uniformly among
its connected participants (the
participants with a usable direct link, c_ij > 0), from
``rng_for(seed, Purpose.GOSSIP, round)`` seeded further by the agent. An agent
with no connected participant sends nothing. Each send is an edge (i, target) of ``plan.edges``.

Time formula, with b the model bytes, α the per-message latency and
xfer(b, c) = b · 8 / (c · 1e6) + α:
  τ_i = Ñ_i t_ref / s_i,
  exchange_j = Σ_{i→j} xfer(b, c_ij)      (a receiver's incoming transfers are
                                          serialised on its link),
  round = max_{i∈P} τ_i + max_j exchange_j.
Gossip sends only to direct neighbours, so every transfer is one hop.

Merge: a receiver replaces its model by the equal-weight average of its own
(trained) model and every model it received this round; everyone else keeps
its own.
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
from comdml_jax.streams import Purpose
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.timing import alone_s, phase_timing, serialised_sends_s


def gossip_targets(seed: int, round_: int, participants, links) -> np.ndarray:
    """[K] each participant's uniformly drawn connected participant, −1 if none.

    Agent i's draw uses ``SeedSequence([seed, Purpose.GOSSIP, round, i])``, so
    it depends only on (seed, round, agent) and the round's links.
    """
    part = np.asarray(participants, bool)
    out = np.full(part.shape[0], -1, np.int64)
    for i in np.flatnonzero(part):
        nbrs, _ = links.neighbors(int(i))  # j ascending, c_ij > 0: O(deg i)
        cand = nbrs[part[nbrs]]
        if cand.size:
            rng = np.random.default_rng(
                np.random.SeedSequence([int(seed), int(Purpose.GOSSIP), int(round_), int(i)])
            )
            out[i] = int(cand[rng.integers(cand.size)])
    return out


@register("gossip")
class Gossip(PerAgentMethod):
    name = "gossip"
    exchange = "gossip"
    on_split = (
        "every sampled, connected agent trains its own model; models go only to direct "
        "neighbours among the participants, so an agent without one keeps its own "
        "(docs/timing_model.md)"
    )
    take_part = staticmethod(every_candidate)

    def plan(self, ctx, mstate):
        del mstate
        part = ctx.env.participants
        k = part.shape[0]
        targets = gossip_targets(ctx.seed, ctx.round, part, ctx.env.links)
        senders = np.flatnonzero(targets >= 0)
        edges = np.stack([senders, targets[senders]], axis=1)
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
        pairs = plan.transfers
        receivers = sorted({j for _, j in pairs})
        w = np.zeros((len(receivers), plan.num_agents))
        for r, j in enumerate(receivers):
            members = [i for i, t in pairs if t == j] + [j]
            w[r, members] = 1.0 / len(members)
        params, stats = mix_rows(models, receivers, w, ctx.mesh, ctx.aggregation)
        params, stats = place((params, stats), ctx.mesh)
        return mstate._replace(params=params, batch_stats=stats), {"receivers": receivers}
