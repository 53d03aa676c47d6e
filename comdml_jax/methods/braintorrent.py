"""BrainTorrent (Roy et al. 2019), docs/timing_model.md.

Every agent keeps its own model and a version counter, bumped each time it
trains; every agent also remembers, for each other agent, the version it last
merged from it.

Participants: every sampled agent with a link > 0, also when their graph
splits (docs/timing_model.md). Plan: each participant trains its own model one local epoch
(its version goes up by one). One participant a, drawn uniformly from
``rng_for(seed, Purpose.AGGREGATOR, round)``, is the aggregator. It pulls the
model of every participant it can reach this round (a route from a, which may
pass through agents that were not sampled; an agent that was not sampled is
offline and is never pulled) whose version is newer than the version a last
merged from it. Each pull is an edge (i, a) of ``plan.edges``.

Time formula, with b the model bytes, α the per-message latency, and for a
pull from i the route a..i used by the AllReduce pricing (hops H_ai, bottleneck
β_ai; on a complete topology H = 1 and β = min(bw_a, bw_i)):
  τ_i = Ñ_i t_ref / s_i,
  pull = Σ_{pulled i} (b · 8 / (β_ai · 1e6) + H_ai · α)   (serialised on a's link),
  round = max_{i∈P} τ_i + pull.

Merge: a replaces its model by the data-size-weighted average of its own and
the pulled models, and records the pulled versions; the others keep theirs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from comdml_jax.methods.base import every_candidate, register
from comdml_jax.methods.per_agent import (
    PerAgentMethod,
    current_models,
    mix_rows,
    place,
    stack_copies,
)
from comdml_jax.streams import Purpose
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.profiles import rng_for
from comdml_jax.system.routing import routes_from
from comdml_jax.system.timing import alone_s, phase_timing, transfer_s

PyTree = Any


class BrainTorrentHost(NamedTuple):
    """The host-side part of BrainTorrent's state: all its plan reads (no weights).

    Attributes:
      versions: int [K], how often each agent has trained.
      merged: int [K, K], ``merged[a, i]``: the version of i that a last merged.
    """

    versions: np.ndarray
    merged: np.ndarray


def advance_versions(host: BrainTorrentHost, plan: RoundPlan, trained) -> BrainTorrentHost:
    """The host state after a round: ``trained`` agents' versions +1, a's pulls recorded.

    The one update of the versions, used by :meth:`BrainTorrent.merge` (with the
    agents that trained) and by a price-only run (``comdml_jax.price_only``, with
    the participants), so that both plan the next round alike.
    """
    versions = np.asarray(host.versions).copy()
    versions[list(trained)] += 1
    merged = np.asarray(host.merged).copy()
    pulled = [i for i, _ in plan.transfers]
    if pulled:
        merged[pulled_by(plan), pulled] = versions[pulled]
    return BrainTorrentHost(versions, merged)


def draw_aggregator(seed: int, round_: int, participants) -> int:
    """The round's aggregator a: a participant drawn uniformly, −1 without participants."""
    cand = np.flatnonzero(np.asarray(participants, bool))
    if not cand.size:
        return -1
    return int(cand[rng_for(seed, Purpose.AGGREGATOR, round_).integers(cand.size)])


def pulled_by(plan: RoundPlan) -> int:
    """The aggregator that the plan's pulls go to (the one receiver of its edges), −1 if none."""
    receivers = np.unique(plan.edges[:, 1])
    if receivers.size > 1:
        raise ValueError(f"a BrainTorrent plan pulls into one aggregator, not {receivers}")
    return int(receivers[0]) if receivers.size else -1


class BrainTorrentState(NamedTuple):
    """Every agent's model, its version, and the versions it last merged.

    Attributes:
      params: [K, ...] every agent's params.
      batch_stats: [K, ...] every agent's BN statistics.
      aux: shared, unused aux heads.
      versions: int32 [K], how often each agent has trained.
      merged: int32 [K, K], ``merged[a, i]``: the version of i that a last merged.
    """

    params: PyTree
    batch_stats: PyTree
    aux: dict
    versions: Any
    merged: Any


@register("braintorrent")
class BrainTorrent(PerAgentMethod):
    name = "braintorrent"
    exchange = "pull"
    on_split = (
        "every sampled, connected agent trains its own model; the aggregator pulls only from "
        "participants it can reach, so the other groups' models are not merged that round "
        "(docs/timing_model.md)"
    )
    take_part = staticmethod(every_candidate)

    def init(self, model, num_agents: int) -> BrainTorrentState:
        params, stats = stack_copies((model.params, model.batch_stats), num_agents)
        versions = jnp.zeros(num_agents, jnp.int32)
        merged = jnp.zeros((num_agents, num_agents), jnp.int32)
        return BrainTorrentState(params, stats, model.aux, versions, merged)

    def init_host(self, num_agents: int) -> BrainTorrentHost:
        return BrainTorrentHost(
            np.zeros(num_agents, np.int32), np.zeros((num_agents, num_agents), np.int32)
        )

    def host_of(self, mstate) -> BrainTorrentHost:
        """The host part of a full state (or of a host state itself)."""
        return BrainTorrentHost(np.asarray(mstate.versions), np.asarray(mstate.merged))

    def advance_host(self, host, plan, trained):
        return advance_versions(host, plan, trained)

    def plan(self, ctx, mstate):
        """Plans from the host part alone: ``mstate`` may be a full or a host state."""
        host = self.host_of(mstate)
        env = ctx.env
        part = np.asarray(env.participants, bool)
        k = part.shape[0]
        none = np.full(k, -1)
        a = draw_aggregator(ctx.seed, ctx.round, part)
        if a < 0:
            return RoundPlan(part, none, np.zeros(k, np.int64))
        versions = host.versions + part  # after this round's training
        hops, _ = routes_from(env.links, a)
        pulled = np.flatnonzero(part & (hops > 0) & (versions > host.merged[a]))
        edges = np.stack([pulled, np.full_like(pulled, a)], axis=1)
        return RoundPlan(part, none, np.zeros(k, np.int64), edges=edges)

    def price(self, ctx, plan):
        env, timing = ctx.env, ctx.system.timing
        tau = alone_s(env.cpu, ctx.num_batches, ctx.profile, timing)
        exchange = np.zeros(plan.num_agents)
        pulled = [i for i, _ in plan.transfers]
        secs = []
        if pulled:
            a = pulled_by(plan)
            hops, width = routes_from(env.links, a)
            secs = transfer_s(ctx.profile.model_bytes, width[pulled]) + hops[pulled] * (
                timing.latency_s
            )
            exchange[a] = float(np.sum(secs))
        detail = {"pull_s": [float(t) for t in secs]}
        return phase_timing(plan.participants, tau, np.zeros_like(tau), exchange, detail=detail)

    def merge(self, mstate, start, trained, plan, ctx, key):
        del start, key
        models = current_models(mstate.params, mstate.batch_stats, trained, ctx.mesh)
        host = advance_versions(self.host_of(mstate), plan, trained.order)
        a = draw_aggregator(ctx.seed, ctx.round, plan.participants)
        pulled = [i for i, _ in plan.transfers]
        if pulled:
            members = [a, *pulled]
            sizes = np.asarray(ctx.num_samples, np.float64)
            w = np.zeros((1, plan.num_agents))
            w[0, members] = sizes[members] / sizes[members].sum()
            models = mix_rows(models, [a], w, ctx.mesh, ctx.aggregation)
        params, stats = place(models, ctx.mesh)
        state = BrainTorrentState(
            params, stats, mstate.aux, jnp.asarray(host.versions), jnp.asarray(host.merged)
        )
        return state, {"aggregator": a, "pulled": pulled}
