"""The simulated world of a run, built once from the config (docs/timing_model.md).

The engine's per-round use::

    system = build_system(config)
    for r in range(config.rounds):
        env = system.round_env(r)                   # profiles, links, participants
        plan = method.plan(ctx, mstate)             # ComDML: methods/comdml.pairing_plan
        timing = system.price(plan, env, num_batches, profile)  # eq. (4) + AllReduce

Participants of round r (:meth:`System.participants_at`):
  1. sampled: all agents when ``participation >= 1``, else
     ``max(1, round(participation * K))`` agents drawn without replacement
     from rng(seed, Purpose.PARTICIPATION, r);
  2. connected: bw_i > 0 this round; the sampled, connected agents are the
     round's candidates (P of docs/timing_model.md, ``RoundEnv.candidates``);
  3. who of them takes part is the method's rule (``take_part``, owned by each
     method in ``comdml_jax.methods``; docs/timing_model.md, "Participants").
     The default, :func:`main_component`, is the rule of the methods that
     need one collective (AllReduce, ComDML, and the
     scheduler behind ``methods.comdml.pairing_plan``): on a topology that is not
     complete, only the candidates in the routing component holding most of
     them (ties: the component with the lowest agent) take part, so the
     AllReduce can reach everyone. Agents that are connected but not sampled
     may relay messages.

Cost. Building the world is O(K + E). Per round, the links are O(K + E) and
cached on the topology by the bandwidth vector, and the components and route
statistics are cached on the links by the participant set
(``system/routing.py``), so rounds between profile changes (and, with full
participation, every such round) reuse them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from ml_collections import ConfigDict

from comdml_jax.catalog import added_field
from comdml_jax.system.pair_routes import PAIRING_LINKS, pairing_links
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.profiles import (
    ProfileSpec,
    Purpose,
    profile_spec_from_config,
    profiles_at,
    rng_for,
)
from comdml_jax.system.routing import components
from comdml_jax.system.scheduler import get_scheduler
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import RoundTiming, TimingParams, price_round
from comdml_jax.system.topology import (
    Links,
    Topology,
    link_capacities,
    topology_from_config,
)

FloatArray = np.ndarray  # float64[K]
BoolArray = np.ndarray  # bool[K]
TakePart = Callable[[Links, BoolArray], BoolArray]  # (links, candidates) -> participants


def sampled_at(seed: int, round_: int, num_agents: int, participation: float) -> BoolArray:
    """[K] the agents sampled in round r (module docstring, step 1)."""
    if participation >= 1.0:
        return np.ones(num_agents, bool)
    n = max(1, int(round(participation * num_agents)))
    idx = rng_for(seed, Purpose.PARTICIPATION, round_).choice(num_agents, n, replace=False)
    out = np.zeros(num_agents, bool)
    out[idx] = True
    return out


def main_component(links: Links, candidates: BoolArray) -> BoolArray:
    """[K] the candidates in the routing component that holds most of them.

    Ties go to the component with the lowest agent. On a complete topology
    every connected candidate is in one component.

    Args:
      links: the round's links.
      candidates: [K] sampled, connected agents.

    Returns:
      [K] bool, the participants (module docstring, step 3).
    """
    part = np.asarray(candidates, bool) & True
    if links.complete or not part.any():
        return part
    labels = components(links, part)
    counts = np.bincount(labels[part], minlength=links.num_agents)
    return part & (labels == int(np.argmax(counts)))


@dataclasses.dataclass(frozen=True, eq=False)
class RoundEnv:
    """Everything the scheduler and the timing model need about round r.

    Attributes:
      round: r.
      cpu: [K] CPUs.
      bandwidth_mbps: [K] Mbps (0 = disconnected).
      links: the round's c_ij.
      participants: [K] bool, the agents that take part: the candidates the
        method's rule keeps (module docstring, step 3).
      candidates: [K] bool, sampled and connected (P of docs/timing_model.md); None: the
        participants.
    """

    round: int
    cpu: FloatArray
    bandwidth_mbps: FloatArray
    links: Links
    participants: BoolArray
    candidates: BoolArray | None = None

    @property
    def sat_out(self) -> BoolArray:
        """[K] the candidates the method's rule left out this round."""
        if self.candidates is None:
            return np.zeros_like(np.asarray(self.participants, bool))
        return np.asarray(self.candidates, bool) & ~np.asarray(self.participants, bool)


@dataclasses.dataclass(frozen=True, eq=False)
class System:
    """The run's agents, topology and timing parameters.

    Attributes:
      num_agents: K.
      seed: the run seed.
      participation: the fraction of agents sampled per round.
      profiles: the profile spec (``profiles.profiles_at`` evaluates it).
      topology: the communication graph.
      timing: the timing-model parameters.
      scheduler: the scheduler's registry name (``system.scheduler``).
      pairing_links: who a slow agent may pair with (``system.pairing_links``):
        ``direct`` neighbours or ``routes`` (:mod:`comdml_jax.system.pair_routes`).
    """

    num_agents: int
    seed: int
    participation: float
    profiles: ProfileSpec
    topology: Topology
    timing: TimingParams
    scheduler: str = "greedy"
    pairing_links: str = "direct"

    def profiles_at(self, round_: int) -> tuple[FloatArray, FloatArray]:
        """(cpu, bandwidth_mbps) of round r."""
        return profiles_at(self.profiles, round_)

    def participants_at(self, round_: int, take_part: TakePart | None = None) -> BoolArray:
        """[K] who takes part in round r (module docstring)."""
        return self.round_env(round_, take_part).participants

    def round_env(self, round_: int, take_part: TakePart | None = None) -> RoundEnv:
        """Profiles, links and participants of round r (pure in (config, r)).

        Args:
          round_: r.
          take_part: the method's rule ``(links, candidates) -> participants``
            (module docstring, step 3); default :func:`main_component`.

        Returns:
          The round's state.
        """
        cpu, bw = self.profiles_at(round_)
        links = link_capacities(self.topology, bw)
        cand = sampled_at(self.seed, round_, self.num_agents, self.participation) & (bw > 0)
        cand.flags.writeable = False
        part = (take_part or main_component)(links, cand)
        return RoundEnv(round_, cpu, bw, links, part, cand)

    def links_for_pairing(self, state: RoundEnv) -> Links:
        """The c_ij (and relay latencies) the round's pairs send over (``system.pairing_links``)."""
        return pairing_links(
            state.links, state.participants, self.pairing_links, self.timing.latency_s
        )

    def price(
        self, plan: RoundPlan, state: RoundEnv, num_batches, profile: SplitProfile
    ) -> RoundTiming:
        """Prices a plan of round r (``timing.price_round``; the AllReduce on the real links)."""
        pairs = self.links_for_pairing(state) if np.any(plan.partner >= 0) else None
        return price_round(
            plan, state.cpu, state.links, num_batches, profile, self.timing, pair_links=pairs
        )


def build_system(config: ConfigDict) -> System:
    """Validates the config's system fields and builds the world once.

    Reads ``seed``, ``num_agents``, ``participation`` and ``system.*``.

    Args:
      config: a run config.

    Returns:
      The system.
    """
    spec = profile_spec_from_config(config)
    frac = config.participation
    if not isinstance(frac, (int, float)) or not 0.0 < frac <= 1.0:
        raise ValueError(f"participation = {frac!r} must be in (0, 1]")
    name = config.system.scheduler
    get_scheduler(name)
    pairing = added_field(config, "system.pairing_links")
    if pairing not in PAIRING_LINKS:
        raise ValueError(
            f"system.pairing_links = {pairing!r} is unknown; choose one of {PAIRING_LINKS}"
        )
    return System(
        num_agents=config.num_agents,
        seed=config.seed,
        participation=float(frac),
        profiles=spec,
        topology=topology_from_config(config),
        timing=TimingParams.from_config(config),
        scheduler=name,
        pairing_links=pairing,
    )
