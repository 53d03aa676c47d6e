"""What a method is: it owns its state and its merge, and plans and prices its rounds.

One ``run_round`` (``comdml_jax.experiment``) serves every method (DESIGN.md)::

    plan    = method.plan(ctx, mstate)               # who trains what, who sends to whom
    timing  = method.price(ctx, plan)                # simulated seconds, from the same plan
    start   = method.start(mstate, plan)             # each participant's starting model
    trained = engine.train_agents(start, plan, ...)  # loop | vmap backends
    trained = privacy.local(start, trained, key)     # DP on the updates, if configured
    mstate, info = method.merge(mstate, start, trained, plan, ctx, key)
    model   = method.consensus(mstate, ctx)          # what the test accuracy is measured on

A method never branches in the engine or the experiment: a new method is a
new module here that registers itself. Methods that need one model
(:class:`GlobalModelMethod`) keep one; methods whose agents keep their own
models (:mod:`comdml_jax.methods.per_agent`) keep them stacked [K, ...].
Every random choice a method makes (gossip targets, the aggregator) comes
from its own host stream ``rng_for(seed, purpose, round[, agent])``.

Who takes part (docs/timing_model.md, "Participants") is the method's rule
too: ``take_part(links, candidates)`` keeps the round's participants among
its candidates (sampled, link > 0). The methods
that need one collective (AllReduce, ComDML) keep the largest connected
component (:func:`largest_component`); the others let every candidate train
(:func:`every_candidate`). ``on_split`` says in words what the method does with
agents a split leaves apart; :func:`split_warning` reports it at a run's start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.routing import components
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import RoundTiming
from comdml_jax.system.topology import Links, Topology, link_capacities
from comdml_jax.system.world import RoundEnv, System, main_component
from comdml_jax.train import aggregate
from comdml_jax.train.types import AgentModels, ModelVars, StartModels

PyTree = Any
MethodState = Any  # a NamedTuple pytree, checkpointed with the run state


@dataclasses.dataclass(frozen=True)
class RoundContext:
    """Everything a method may read about round r (host side, built once per round).

    Attributes:
      round: r.
      seed: the run seed.
      system: the simulated world.
      env: the round's profiles, links and participants.
      num_batches: [K] Ñ_i charged by the timing model (samples / B, see ``experiment``).
      num_samples: [K] N_i, the aggregation weights.
      profile: the split profile.
      mesh: the agent mesh that merges run over.
      aggregation: the collective that sums across the mesh (``train.aggregation``).
      central_noise: adds central DP noise to a merged model (None: no central DP):
        ``central_noise(base, merged, trained, num_samples) -> merged``.
      aux_front_weight: ComDML's merge weight of a slow agent's head-trained front,
        as a fraction of its N_i (``train.aux_front_weight``; 1.0: the paper).
    """

    round: int
    seed: int
    system: System
    env: RoundEnv
    num_batches: np.ndarray
    num_samples: np.ndarray
    profile: SplitProfile
    mesh: Any
    aggregation: str = "psum"
    central_noise: Callable | None = None
    aux_front_weight: float = 1.0


BoolArray = np.ndarray  # bool[K]


def largest_component(links: Links, candidates: BoolArray) -> BoolArray:
    """The rule of methods with one collective: the candidates in the largest component.

    The component holding most candidates (ties: the one with the lowest
    agent); the others sit out (``world.main_component``).
    """
    return main_component(links, candidates)


def every_candidate(links: Links, candidates: BoolArray) -> BoolArray:
    """The rule of methods without a collective: every candidate trains, split or not."""
    del links
    return np.array(candidates, bool)


class Method(Protocol):
    """A training method under the common timing model (docs/timing_model.md)."""

    name: str
    per_agent: bool  # whether agents keep their own models across rounds
    exchange: str  # what follows training: allreduce | server | gossip | pull
    on_split: str  # what the method does with agents a split topology leaves apart

    def take_part(self, links: Links, candidates: BoolArray) -> BoolArray:
        """[K] the round's participants among the candidates (sampled, link > 0)."""

    def init(self, model: ModelVars, num_agents: int) -> MethodState:
        """The state before round 0, from the seeded initial model."""

    def init_host(self, num_agents: int) -> Any:
        """The host-side part of the state before round 0 (None: the plan reads no state)."""

    def host_of(self, mstate: MethodState) -> Any:
        """The host-side part of a state: everything :meth:`plan` reads, no weights."""

    def advance_host(self, host: Any, plan: RoundPlan, trained: Sequence[int]) -> Any:
        """The host part after a round in which the agents ``trained`` trained.

        :meth:`merge` advances its host part with it, and a price-only run
        (``comdml_jax.price_only``) advances the host part alone, without weights.
        """

    def plan(self, ctx: RoundContext, mstate: MethodState) -> RoundPlan:
        """The round's plan: participants, pairs, cuts and model transfers.

        It reads only the host part of ``mstate`` (:meth:`host_of`), so it may be
        given the host part alone.
        """

    def price(self, ctx: RoundContext, plan: RoundPlan) -> RoundTiming:
        """The round's simulated times, from the plan alone."""

    def start(self, mstate: MethodState, plan: RoundPlan) -> StartModels:
        """Each participant's model at the start of its local epoch."""

    def merge(
        self,
        mstate: MethodState,
        start: StartModels,
        trained: AgentModels,
        plan: RoundPlan,
        ctx: RoundContext,
        key,
    ) -> tuple[MethodState, dict]:
        """The state after the round's exchange, and what to record about it."""

    def consensus(self, mstate: MethodState, ctx: RoundContext) -> ModelVars:
        """The model the round's test accuracy is measured on."""

    def agent_models(self, mstate: MethodState) -> tuple[PyTree, PyTree] | None:
        """Every agent's own (params, batch_stats), stacked [K, ...]; None for one model."""


METHODS: dict[str, Callable[[], Method]] = {}


def topology_components(topology: Topology) -> list[list[int]]:
    """The agents' groups that the topology's edges connect, by lowest member (O(K + E))."""
    k = topology.num_agents
    if topology.complete:
        return [list(range(k))]
    labels = components(link_capacities(topology, np.ones(k)), np.ones(k, bool))
    order = np.argsort(labels, kind="stable")  # each group's agents ascending
    starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    return [g.tolist() for g in np.split(order, starts[1:])]


def _few(agents: list[int], limit: int = 40) -> str:
    """A list of agents, or its first ``limit`` and how many more."""
    if len(agents) <= limit:
        return str(agents)
    return f"{agents[:limit]} and {len(agents) - limit} more"


def split_warning(topology: Topology, method: Method) -> str | None:
    """What the method does with the agents a split topology leaves apart; None if none.

    The topology's own groups (every agent connected); with every agent
    sampled and connected, the method's rule names the agents that sit out
    (docs/timing_model.md). Long lists are cut short, so the line stays readable at K = 10,000.

    Args:
      topology: the run's topology.
      method: the run's method.

    Returns:
      The warning, or None when the topology connects everyone.
    """
    groups = topology_components(topology)
    if len(groups) <= 1:
        return None
    k = topology.num_agents
    links = link_capacities(topology, np.ones(k))
    out = np.flatnonzero(~method.take_part(links, np.ones(k, bool))).tolist()
    alone = [g[0] for g in groups if len(g) == 1]
    shown = ", ".join(
        str(g) if len(g) <= 12 else f"[{len(g)} agents from {g[0]}]" for g in groups[:20]
    )
    more = f" and {len(groups) - 20} more" if len(groups) > 20 else ""
    text = (
        f"the {topology.kind} topology splits the {k} agents into {len(groups)} groups that "
        f"cannot reach each other: [{shown}]{more}"
    )
    if alone:
        text += f"; isolated agents (no link): {_few(alone)}"
    text += f". {method.name}: {method.on_split}. "
    if out:
        text += f"With every agent sampled and connected, these sit out: {_few(out)}."
    else:
        text += "No agent sits out."
    return text


def register(name: str):
    def deco(cls):
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> Method:
    """Builds a registered method by name."""
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; choose one of {sorted(METHODS)}")
    return METHODS[name]()


# --- Methods with one model ---


class GlobalState(NamedTuple):
    """The state of a method with one model: the model every agent starts from."""

    model: ModelVars


def average(
    trained: AgentModels,
    base: ModelVars,
    ctx: RoundContext,
    stage_weights: dict[str, np.ndarray] | None = None,
) -> tuple[ModelVars, dict]:
    """The data-size-weighted average of the trained agents (SPEC §4), as one model.

    Σ N_i w_i / Σ N_i over the agents in ``trained`` (BN statistics included);
    each auxiliary head is averaged over the slow agents of its cut, and heads
    of cuts nobody used this round are kept from ``base``. With central DP the
    noise is added to the averaged update (``ctx.central_noise``).

    Args:
      trained: the round's trained agents.
      base: the round's starting model (unused aux heads, and the base of central noise).
      ctx: the round context (weights, mesh, collective, central noise).
      stage_weights: stage name -> [K] per-agent weights replacing N_i for that
        stage's params and statistics (None: N_i for every stage). Stages with
        equal weights are averaged in one collective.

    Returns:
      (the new model, {"merged": agents averaged}).
    """
    sizes = np.asarray(ctx.num_samples, np.float64)
    algo = ctx.aggregation
    if stage_weights is None:
        params, stats = aggregate.weighted_average(
            (trained.params, trained.batch_stats), trained.weights(sizes), ctx.mesh, algorithm=algo
        )
    else:
        groups: dict[tuple, list[str]] = {}
        for name in trained.params:
            w = tuple(np.asarray(stage_weights.get(name, sizes), np.float64).tolist())
            groups.setdefault(w, []).append(name)
        params, stats = {}, {}
        for w, names in groups.items():
            p, st = aggregate.weighted_average(
                (
                    {n: trained.params[n] for n in names},
                    {n: trained.batch_stats[n] for n in names if n in trained.batch_stats},
                ),
                trained.weights(np.asarray(w)),
                ctx.mesh,
                algorithm=algo,
            )
            params.update(p)
            stats.update(st)
    aux = dict(base.aux)
    for m, (heads, _) in trained.aux.items():
        w = trained.aux_weights(m, sizes)
        aux[f"m{m}"] = aggregate.weighted_average(heads, w, ctx.mesh, algorithm=algo)
    new = ModelVars(params, stats, aux)
    if ctx.central_noise is not None:
        new = ctx.central_noise(base, new, trained, sizes)
    return new, {"merged": list(trained.order)}


class StatelessPlan:
    """Host-state hooks of a method whose plan reads no state (every method but BrainTorrent)."""

    def init_host(self, num_agents: int) -> None:
        del num_agents

    def host_of(self, mstate) -> None:
        del mstate

    def advance_host(self, host, plan, trained) -> None:
        del host, plan, trained


class GlobalModelMethod(StatelessPlan):
    """Shared behaviour of methods that keep one model and average everyone into it.

    Subclasses give ``name``, ``on_split``, :meth:`take_part`, :meth:`plan` and
    :meth:`price`.
    """

    name = ""
    per_agent = False

    def init(self, model: ModelVars, num_agents: int) -> GlobalState:
        del num_agents
        return GlobalState(model)

    def start(self, mstate: GlobalState, plan: RoundPlan) -> StartModels:
        del plan
        return StartModels(mstate.model)

    def merge(self, mstate, start, trained, plan, ctx, key):
        del start, plan, key
        if not trained.order:  # every group was dropped (train.on_nonfinite='skip')
            return mstate, {"merged": []}
        model, info = average(trained, mstate.model, ctx)
        return GlobalState(model), info

    def consensus(self, mstate: GlobalState, ctx: RoundContext) -> ModelVars:
        del ctx
        return mstate.model

    def agent_models(self, mstate: GlobalState):
        del mstate
        return None
