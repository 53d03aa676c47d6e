"""Decentralised AllReduce training (docs/timing_model.md): everyone trains the full model alone.

Time formula, with P the round's participants:
  τ_i = Ñ_i · t_ref / s_i (eq. (4) without offloading),
  round = max_{i∈P} τ_i + T_allreduce,
with T_allreduce the configured AllReduce over P (halving/doubling by default,
``system.allreduce``; on a non-complete topology priced on the routes, see
``system.timing``). Merge: the data-size-weighted average of every
participant's model (SPEC §4), which every agent starts the next round from.
"""

from __future__ import annotations

from comdml_jax.methods.base import GlobalModelMethod, register
from comdml_jax.system.plan import RoundPlan


@register("allreduce")
class AllReduce(GlobalModelMethod):
    name = "allreduce"
    exchange = "allreduce"

    def plan(self, ctx, mstate):
        del mstate
        return RoundPlan.alone(ctx.env.participants)

    def price(self, ctx, plan):
        return ctx.system.price(plan, ctx.env, ctx.num_batches, ctx.profile)
