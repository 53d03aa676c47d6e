"""Decentralised AllReduce training (docs/timing_model.md): everyone trains the full model alone.

Time formula, with P the round's participants:
  τ_i = Ñ_i · t_ref / s_i (eq. (4) without offloading),
  round = max_{i∈P} τ_i + T_allreduce,
with T_allreduce the configured AllReduce over P (halving/doubling by default,
``system.allreduce``; on a non-complete topology priced on the routes, see
``system.timing``). When the participants' graph splits, only its largest
connected component takes part (docs/timing_model.md). Merge: the
data-size-weighted average of every participant's model (SPEC §4), which
every agent starts the next round from.
"""

from __future__ import annotations

from comdml_jax.methods.base import GlobalModelMethod, largest_component, register
from comdml_jax.system.plan import RoundPlan


@register("allreduce")
class AllReduce(GlobalModelMethod):
    name = "allreduce"
    exchange = "allreduce"
    on_split = (
        "it needs one collective, so each round only the largest connected component of the "
        "participants trains and merges; the sampled agents outside it sit out "
        "(docs/timing_model.md)"
    )
    take_part = staticmethod(largest_component)

    def plan(self, ctx, mstate):
        del mstate
        return RoundPlan.alone(ctx.env.participants)

    def price(self, ctx, plan):
        return ctx.system.price(plan, ctx.env, ctx.num_batches, ctx.profile)
