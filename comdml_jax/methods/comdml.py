"""ComDML (paper Sec. IV): pair slow agents with faster ones, then AllReduce.

Plan: the configured scheduler, Algorithm 1's greedy pairing by default
(``system.scheduler``). Price: eq. (4) per agent, round time
max_i τ_i + T_allreduce (SPEC §5).
"""

from __future__ import annotations

from comdml_jax.methods.base import register


@register("comdml")
class ComDML:
    name = "comdml"

    def plan(self, system, state, num_batches, profile):
        return system.plan(state, num_batches, profile)

    def price(self, system, state, plan, num_batches, profile):
        return system.price(plan, state, num_batches, profile)
