"""Decentralised AllReduce training (SPEC §7): everyone trains the full model alone.

Time formula: τ_i = Ñ_i t_ref / s_i (eq. (4) without offloading), round time
max_i τ_i + T_allreduce with the configured AllReduce (halving/doubling by
default).
"""

from __future__ import annotations

from comdml_jax.methods.base import register
from comdml_jax.system.plan import RoundPlan


@register("allreduce")
class AllReduce:
    name = "allreduce"

    def plan(self, system, state, num_batches, profile):
        del system, num_batches, profile
        return RoundPlan.alone(state.participants)

    def price(self, system, state, plan, num_batches, profile):
        return system.price(plan, state, num_batches, profile)
