"""A round's metrics record: assembled from the plan, the timing, the merge and the evaluation.

``comdml_jax.rounds.run_round`` calls :func:`round_record` last; every field of
``metrics.jsonl`` is named here (README, *What a run writes*). The exchange
phase is ``exchange_time_s`` for every method; ``allreduce_time_s`` repeats it
for the AllReduce-based methods and is None for the others.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class RoundEval(NamedTuple):
    """The round's test evaluation (NaN where the round was not evaluated).

    Attributes:
      evaluated: the merged model was evaluated this round.
      scheduled: it was one of the ``eval_every`` evaluations (the plateau sees those).
      test_loss, test_accuracy: of the merged (consensus) model.
      extra: per-agent accuracies (``agent_test_accuracy_*``), when evaluated.
    """

    evaluated: bool
    scheduled: bool
    test_loss: float
    test_accuracy: float
    extra: dict


def _base(config, plan, round_: int) -> dict:
    part = plan.participants
    return {
        "round": round_,
        "method": config.method,
        "num_participants": int(part.sum()),
        "participants": np.flatnonzero(part).tolist(),
    }


def skipped_record(
    config, plan, round_: int, reason: str, sim_time_s: float, wall_time_s: float
) -> dict:
    """The record of a round nobody could take part in."""
    return {
        **_base(config, plan, round_),
        "skipped": True,
        "reason": reason,
        "sim_time_s": sim_time_s,
        "round_time_s": 0.0,
        "wall_time_s": wall_time_s,
    }


def plan_record(plan, timing) -> dict:
    """What a round exchanged, so that its time can be re-derived from the record."""
    out = {
        "pairs": [list(p) for p in plan.pairs],
        "transfers": [list(t) for t in plan.transfers],
    }
    out.update(timing.detail)
    return out


def mean_train_loss(train_loss, participants, sizes) -> float:
    """The data-size-weighted mean local loss over the participants with a finite one."""
    sizes = np.asarray(sizes).astype(np.float64)
    ok = np.isfinite(train_loss) & participants
    if not ok.any():
        return float("nan")
    return float(np.sum(train_loss[ok] * sizes[ok]) / np.sum(sizes[ok]))


def priced_fields(config, method, ctx, plan, timing, seconds: float) -> dict:
    """The fields of a trained round's record that its plan and its pricing decide.

    Who took part, what was exchanged and how long each phase took: everything
    :func:`round_record` writes that does not come from training (and
    ``sim_time_s``, which sums the rounds' ``seconds``). A run that another
    method's trained run is repriced into (``comdml_jax.reprice``) takes
    exactly these fields from its own pricing.
    """
    part = plan.participants
    out = {
        **_base(config, plan, ctx.round),
        "round_time_s": seconds,
        "exchange_time_s": timing.exchange_time_s,
        "allreduce_time_s": timing.exchange_time_s if method.exchange == "allreduce" else None,
        "alone_round_time_s": timing.alone_round_time_s,
        **plan_record(plan, timing),
        "compute_s": timing.compute_s,
        "comm_s": timing.comm_s,
        "idle_s": timing.idle_s,
        "exchange_s": timing.exchange_s,
    }
    # sampled and connected, but left out by the method's rule (docs/timing_model.md)
    if ctx.env.sat_out.any():
        out["sat_out"] = np.flatnonzero(ctx.env.sat_out).tolist()
    if int(part.sum()) == 1:
        out["note"] = "one participant: it trained alone and nothing was exchanged"
    return out


def round_record(
    config,
    method,
    ctx,
    plan,
    timing,
    trained,
    ev: RoundEval,
    state,
    *,
    seconds: float,
    lr: float,
    sizes,
    merge_info: dict[str, Any],
    privacy: dict[str, Any],
) -> dict:
    """The metrics record of a trained round (``state``: the run state after it).

    The priced fields (:func:`priced_fields`) come first, then ``sim_time_s``,
    then what training, the merge and the evaluation gave.
    """
    record = {
        **priced_fields(config, method, ctx, plan, timing, seconds),
        "sim_time_s": float(state.sim_time_s),
        "test_accuracy": ev.test_accuracy,
        "test_loss": ev.test_loss,
        "train_loss": mean_train_loss(trained.train_loss, plan.participants, sizes),
        "lr": lr,
        **ev.extra,
        **merge_info,
        **privacy,
        "wall_time_s": float(state.wall_time_s),
    }
    if trained.skipped:
        record["skipped_groups"] = [
            {"role": g, "cut": c, "agents": list(a), "non_finite": w}
            for g, c, a, w in trained.skipped
        ]
    return record
