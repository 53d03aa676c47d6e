"""The simulated system: profiles, topology, timing model and pairing scheduler.

Host-side numpy only (no JAX import). See ``world.py`` for the per-round entry
points the engine uses.
"""

from comdml_jax.system.exact import brute_force_plan, exact_plan
from comdml_jax.system.gap import GapReport, greedy_gap
from comdml_jax.system.local_search import greedy_ls_plan
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.profiles import ProfileSpec, profile_spec_from_config, profiles_at
from comdml_jax.system.scheduler import (
    SCHEDULERS,
    get_scheduler,
    greedy_plan,
    greedy_plan_reference,
    no_offload_plan,
)
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import (
    ALLREDUCE,
    RoundTiming,
    TimingParams,
    allreduce_s,
    calibrate_cpu_flops,
    price_round,
    reference_step_s,
)
from comdml_jax.system.topology import (
    TOPOLOGIES,
    Links,
    Topology,
    as_links,
    link_capacities,
    make_topology,
    topology_from_config,
)
from comdml_jax.system.world import RoundEnv, System, build_system, main_component, sampled_at

__all__ = [
    "ALLREDUCE",
    "GapReport",
    "SCHEDULERS",
    "TOPOLOGIES",
    "Links",
    "PairingInputs",
    "ProfileSpec",
    "RoundPlan",
    "RoundEnv",
    "RoundTiming",
    "SplitProfile",
    "System",
    "TimingParams",
    "Topology",
    "allreduce_s",
    "as_links",
    "brute_force_plan",
    "build_system",
    "calibrate_cpu_flops",
    "exact_plan",
    "get_scheduler",
    "greedy_gap",
    "greedy_ls_plan",
    "greedy_plan",
    "greedy_plan_reference",
    "link_capacities",
    "main_component",
    "make_topology",
    "no_offload_plan",
    "price_round",
    "profile_spec_from_config",
    "profiles_at",
    "reference_step_s",
    "sampled_at",
    "topology_from_config",
]
