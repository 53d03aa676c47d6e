"""ComDML (paper Sec. IV): pair slow agents with faster ones, then AllReduce.

Plan: the configured scheduler, Algorithm 1's greedy pairing by default
(``system.scheduler``). Time formula (eq. (4), docs/timing_model.md), with P the round's
participants:
  alone:             τ_i = Ñ_i t_ref / s_i,
  slow i at cut m:   τ_i = Ñ_i T_s^m t_ref / s_i,
  its partner j:     τ_j = Ñ_j t_ref / s_j + Ñ_i ν^m / c_ij + Ñ_i T_f^m t_ref / s_j,
  round = max_{i∈P} τ_i + T_allreduce.
When the participants' graph splits, only its largest connected component
takes part, as the AllReduce needs (docs/timing_model.md).
Merge: as AllReduce, the data-size-weighted average; a slow agent's model is
its front joined with the back its partner trained for it; auxiliary heads are
averaged per cut over the agents that used that cut (SPEC §4).
Beyond the paper, ``train.aux_front_weight`` = w < 1 weighs a slow agent's
front (the stages before its cut's boundary, trained only against its
auxiliary head) by w N_i instead of N_i, stage by stage (:func:`front_weights`);
its back, trained end to end by its partner, keeps N_i.
"""

from __future__ import annotations

import numpy as np

from comdml_jax.methods.base import (
    GlobalModelMethod,
    GlobalState,
    average,
    largest_component,
    register,
)
from comdml_jax.models.resnet import stage_name
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.scheduler import get_scheduler
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.world import RoundEnv, System


def pairing_plan(
    system: System,
    env: RoundEnv,
    num_batches,
    profile: SplitProfile,
    scheduler: str | None = None,
) -> RoundPlan:
    """ComDML's plan of round r: who offloads to whom, at which cut.

    The configured scheduler (``system.scheduler``: Algorithm 1's ``greedy``,
    ``greedy_ls`` or ``exact``; ``scheduler`` overrides it) over the round's
    participants, pairing over the links ``system.pairing_links`` names
    (direct neighbours, or routes: :mod:`comdml_jax.system.pair_routes`).

    Args:
      system: the simulated world.
      env: the round's environment (profiles, links, participants).
      num_batches: [K] Ñ_i.
      profile: the split profile.
      scheduler: a registry name overriding the config's.

    Returns:
      The plan.
    """
    fn = get_scheduler(scheduler or system.scheduler)
    links = system.links_for_pairing(env)
    return fn(PairingInputs(env.cpu, links, num_batches, env.participants, profile, system.timing))


def front_weights(plan: RoundPlan, num_samples, num_stages: int, w: float) -> dict[str, np.ndarray]:
    """Stage name -> [K] merge weights: N_i, times ``w`` where stage s is slow agent i's front.

    A slow agent i at cut m trains stages 0 .. S − m − 1 (``models.split.boundary``)
    against its auxiliary head only; those stages get w N_i, every other
    (agent, stage) N_i.

    Args:
      plan: the round's plan (``cut[i]`` >= 1 exactly for slow agents).
      num_samples: [K] N_i.
      num_stages: S, the model's stages.
      w: ``train.aux_front_weight``.

    Returns:
      One [K] float64 array per stage.
    """
    sizes = np.asarray(num_samples, np.float64)
    cut = np.asarray(plan.cut, np.int64)
    slow = cut >= 1
    out = {}
    for s in range(num_stages):
        front = slow & (s < num_stages - cut)
        out[stage_name(s)] = np.where(front, w * sizes, sizes)
    return out


@register("comdml")
class ComDML(GlobalModelMethod):
    name = "comdml"
    exchange = "allreduce"
    on_split = (
        "it needs one collective, so each round only the largest connected component of the "
        "participants trains and merges; the sampled agents outside it sit out "
        "(docs/timing_model.md)"
    )
    take_part = staticmethod(largest_component)

    def plan(self, ctx, mstate):
        del mstate
        return pairing_plan(ctx.system, ctx.env, ctx.num_batches, ctx.profile)

    def price(self, ctx, plan):
        return ctx.system.price(plan, ctx.env, ctx.num_batches, ctx.profile)

    def merge(self, mstate, start, trained, plan, ctx, key):
        w = float(getattr(ctx, "aux_front_weight", 1.0))
        if w == 1.0 or not trained.order:  # the paper's merge
            return super().merge(mstate, start, trained, plan, ctx, key)
        weights = front_weights(plan, ctx.num_samples, len(trained.params), w)
        model, info = average(trained, mstate.model, ctx, stage_weights=weights)
        return GlobalState(model), info
