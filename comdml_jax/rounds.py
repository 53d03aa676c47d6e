"""One round of any method, and the run state it advances (one checkpointable pytree).

The data flows one way (STYLE.md): config -> system (profiles, topology) ->
method plan (scheduler) -> engine (train) -> privacy -> method merge ->
evaluate -> method price (timing) -> report. :func:`run_round` serves every
method: a method owns its state and its merge (``comdml_jax.methods``); the
record is assembled in ``comdml_jax.report.record``. The run around the
rounds (build, loop, files, checkpoints) is ``comdml_jax.experiment``.

Names of the four kinds of state: :class:`RunState` (everything a run carries
between rounds, checkpointed), ``RoundEnv`` (one round's environment:
profiles, links, participants; ``system.world``), ``TrainState`` (one agent
side's params, BN statistics and optimiser state during a local epoch;
``train.steps``) and a method's state (``RunState.method``: its model or
models, ``methods``).

Simulated time charges each agent for the samples it holds: Ñ_i =
E · N_i / B batches (E local epochs, batch B), also when N_i is not a multiple
of B or smaller than one batch. The engine trains ⌈N_i / B⌉ full batches per
epoch, whose last one is filled up by wrapping around the agent's shuffled
samples, so a batch-mean gradient sees each sample about equally often; those
duplicates are not charged.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import serialization

from comdml_jax import rng, streams
from comdml_jax.catalog import added_field
from comdml_jax.data.agents import charged_batches, make_epoch_batches
from comdml_jax.methods import RoundContext
from comdml_jax.models import split
from comdml_jax.models.init import apply_init
from comdml_jax.privacy.accounting import Accountant, epsilon_metrics
from comdml_jax.privacy.rounds import RoundPrivacy
from comdml_jax.report.progress import round_label
from comdml_jax.report.record import RoundEval, round_record, skipped_record
from comdml_jax.system.world import sampled_at
from comdml_jax.train import layout
from comdml_jax.train.engine import Engine
from comdml_jax.train.evaluate import Evaluator
from comdml_jax.train.types import ModelVars

PyTree = Any


class RunState(NamedTuple):
    """Everything a run carries from one round to the next (one checkpointable pytree).

    Attributes:
      round: the next round to run.
      method: the method's state (its model, or every agent's model, ...).
      plateau: optax's reduce-on-plateau state (the learning-rate scale).
      sim_time_s: cumulative simulated seconds.
      best_accuracy: best test accuracy so far.
      time_to_target_s: simulated seconds when the target was first reached, -1 if not yet.
      dp_rounds: rounds that released privatised updates (the DP accountant's state).
      wall_time_s: cumulative wall-clock seconds of the run, every session's
        start-up included (reporting only).
      startup_s: the part of ``wall_time_s`` spent starting sessions up (imports,
        data, model, split profile: everything before a session's first round;
        the first round's compilation is in that round), summed over the
        sessions of a resumed run (reporting only).
    """

    round: np.ndarray
    method: PyTree
    plateau: PyTree
    sim_time_s: np.ndarray
    best_accuracy: np.ndarray
    time_to_target_s: np.ndarray
    dp_rounds: np.ndarray
    wall_time_s: np.ndarray
    startup_s: np.ndarray


def state_to_tree(state: RunState) -> dict:
    return serialization.to_state_dict(state)


def state_from_tree(tree: dict, like: RunState) -> RunState:
    return serialization.from_state_dict(like, tree)


def plateau_schedule(config: ml_collections.ConfigDict):
    """The paper's lr reduce-on-plateau (Sec. V-A), on 1 - test accuracy per round."""
    return _plateau(*_plateau_args(config))[0]


def plateau_update(config: ml_collections.ConfigDict) -> Callable[[Any, jax.Array], Any]:
    """``(plateau_state, value) -> plateau_state``: the schedule's update, jitted once.

    Eagerly, optax's update runs a few dozen tiny ops, 0.1 s a round on a 2-core
    CPU; jitted it is one call.
    """
    return _plateau(*_plateau_args(config))[1]


def round_lr(config: ml_collections.ConfigDict, r: int, plateau_scale) -> float:
    """Round r's learning rate: ``optim.lr`` × the plateau scale × the warm-up factor.

    With W = ``optim.warmup_rounds``, the factor is (r + 1) / (W + 1) for r < W
    and 1 after (gradual warm-up, Goyal et al. 2017, one step per round); the
    plateau schedule does not move during the warm-up (:func:`_advance`), so
    its scale is 1 there.
    """
    w = int(added_field(config, "optim.warmup_rounds"))
    ramp = (r + 1) / (w + 1) if r < w else 1.0
    return float(config.optim.lr * plateau_scale * ramp)


def _plateau_args(config: ml_collections.ConfigDict) -> tuple[float, int, float]:
    o = config.optim
    return float(o.plateau_factor), int(o.plateau_patience), float(o.min_lr / o.lr)


@functools.lru_cache(maxsize=16)
def _plateau(factor: float, patience: int, min_scale: float):
    tx = optax.contrib.reduce_on_plateau(
        factor=factor, patience=patience, rtol=0.0, atol=1e-4, min_scale=min_scale
    )
    return tx, jax.jit(lambda state, value: tx.update({}, state, value=value)[1])


@dataclasses.dataclass
class Experiment:
    """A built run: everything derived from the config, before any round runs."""

    config: ml_collections.ConfigDict
    workdir: Path
    system: Any
    method: Any
    model: Any
    profile: Any
    engine: Engine
    evaluator: Evaluator
    parts: list
    mesh: Any
    privacy: RoundPrivacy | None = None
    accountant: Accountant | None = None
    class_names: tuple[str, ...] = ()

    @property
    def num_samples(self) -> np.ndarray:
        """[K] N_i, the samples each agent holds."""
        return np.asarray([len(p) for p in self.parts], np.int64)

    @property
    def charged_batches(self) -> np.ndarray:
        """[K] Ñ_i = E · N_i / B, the batches the timing model charges (module docstring)."""
        t = self.config.train
        return charged_batches(self.num_samples, t.batch_size, t.local_epochs)


def initial_state(exp: Experiment) -> RunState:
    """The state before round 0: the seeded initial model, full learning rate, no time."""
    key = rng.stream(int(exp.config.seed), "init")
    params, stats = exp.model.init(key)
    aux = split.init_all_aux(exp.model, jax.random.fold_in(key, streams.AUX_HEADS))
    scheme_key = rng.stream(int(exp.config.seed), "init_scheme")
    params = apply_init(
        params, jax.random.fold_in(scheme_key, streams.INIT_SCHEME_MODEL), exp.config.model.init
    )
    aux = apply_init(
        aux, jax.random.fold_in(scheme_key, streams.INIT_SCHEME_AUX), exp.config.model.init
    )
    model = ModelVars(params, stats, aux)
    return RunState(
        round=np.asarray(0, np.int64),
        method=exp.method.init(model, int(exp.config.num_agents)),
        plateau=plateau_schedule(exp.config).init({}),
        sim_time_s=np.asarray(0.0),
        best_accuracy=np.asarray(0.0),
        time_to_target_s=np.asarray(-1.0),
        dp_rounds=np.asarray(0, np.int64),
        wall_time_s=np.asarray(0.0),
        startup_s=np.asarray(0.0),
    )


def round_context(exp: Experiment, round_: int) -> RoundContext:
    """What the method may read about round r (host side)."""
    cfg = exp.config
    central = None
    if exp.privacy is not None and exp.privacy.spec.placement == "central":
        central = functools.partial(exp.privacy.central_noise, round_=round_)
    return context_for(
        cfg,
        exp.system,
        exp.method,
        round_,
        exp.charged_batches,
        exp.num_samples,
        exp.profile,
        mesh=exp.mesh,
        central_noise=central,
    )


def context_for(
    config,
    system,
    method,
    round_: int,
    num_batches,
    num_samples,
    profile,
    *,
    mesh=None,
    central_noise=None,
) -> RoundContext:
    """The round context from its parts: what a training run and a price-only run share.

    :func:`round_context` builds it from a built :class:`Experiment`;
    ``comdml_jax.price_only`` from the system, batches and profile alone (no
    mesh, no model).
    """
    return RoundContext(
        round=round_,
        seed=int(config.seed),
        system=system,
        env=system.round_env(round_, method.take_part),
        num_batches=num_batches,
        num_samples=num_samples,
        profile=profile,
        mesh=mesh,
        aggregation=str(config.train.get("aggregation", "psum")),
        central_noise=central_noise,
        aux_front_weight=float(added_field(config, "train.aux_front_weight")),
    )


def plan_and_price(method, ctx: RoundContext, mstate) -> tuple[Any, Any, float]:
    """``(plan, timing, round_time_s)`` of one round: ``method.plan`` then ``method.price``.

    The one pricing path of a training run (:func:`run_round`) and a price-only
    run (``comdml_jax.price_only``). ``mstate`` may be the full method state or
    its host part (``method.host_of``). A round without participants is skipped
    and costs 0 s.
    """
    plan = method.plan(ctx, mstate)
    timing = method.price(ctx, plan)
    seconds = float(timing.round_time_s) if plan.participants.any() else 0.0
    return plan, timing, seconds


def run_round(
    exp: Experiment,
    state: RunState,
    progress: Callable[[int, int], Callable[[int], None] | None] | None = None,
) -> tuple[RunState, dict]:
    """One round of any method: plan → price → train → privacy → merge → evaluate → record.

    ``progress(round, batches)``, if given, is called once the round's batches
    are known and returns the callback the engine feeds with the batches it
    trains (:meth:`RunProgress.round_started
    <comdml_jax.report.progress.RunProgress.round_started>`), or None.

    A round in which nobody can take part (everyone sampled is disconnected,
    or cut off from the others) is recorded as skipped: ``skipped: true``, the
    reason, and ``round_time_s`` 0: the simulated clock does not advance,
    since nothing is trained or sent. The model, the learning rate and the
    plateau schedule are unchanged by it.
    """
    r, t0 = int(state.round), time.perf_counter()
    ctx = round_context(exp, r)
    plan, timing, seconds = plan_and_price(exp.method, ctx, state.method)  # host side
    if not plan.participants.any():
        return _skipped_round(exp, state, ctx, plan, t0)
    lr = round_lr(exp.config, r, state.plateau.scale)
    start = exp.method.start(state.method, plan)
    trained = _train(exp, plan, start, r, lr, progress)
    trained, dp_rounds = _privatize(exp, start, trained, r, int(state.dp_rounds))
    trained = layout.gather_agents(trained, plan, start, exp.mesh, exp.profile.num_cuts + 1)
    _check_finite(exp.config, r, trained)
    mix_key = jax.random.fold_in(rng.stream(ctx.seed, "mix"), r)
    mstate, merge_info = exp.method.merge(state.method, start, trained, plan, ctx, mix_key)
    ev = _evaluate(exp, mstate, ctx, r)
    new = _advance(exp.config, state, mstate, ev, seconds, dp_rounds, t0)
    record = round_record(
        exp.config,
        exp.method,
        ctx,
        plan,
        timing,
        trained,
        ev,
        new,
        seconds=seconds,
        lr=lr,
        sizes=exp.num_samples,
        merge_info=merge_info,
        privacy=epsilon_metrics(exp.accountant, dp_rounds),
    )
    return new, record


def _skipped_round(exp: Experiment, state: RunState, ctx, plan, t0: float):
    """A round nobody can take part in: the clock, the model and the schedule stay put."""
    cfg, r = exp.config, ctx.round
    reason = _skip_reason(ctx)
    logging.warning("%s skipped: %s", round_label(r, cfg.rounds), reason)
    wall = float(state.wall_time_s) + (time.perf_counter() - t0)
    record = skipped_record(cfg, plan, r, reason, float(state.sim_time_s), wall)
    new = state._replace(round=np.asarray(r + 1, np.int64), wall_time_s=np.asarray(wall))
    return new, record


def _train(exp: Experiment, plan, start, r: int, lr: float, progress):
    """Every participant's local epoch(s) (the engine), from the round's shuffled batches."""
    cfg = exp.config
    batches = make_epoch_batches(
        exp.parts,
        cfg.train.batch_size,
        rng.stream(int(cfg.seed), "shuffle"),
        r,
        cfg.train.local_epochs,
    )
    tick = progress(r, exp.engine.round_batches(plan, batches)) if progress else None
    return exp.engine.train_agents(start, plan, batches, r, lr, progress=tick)


def _privatize(exp: Experiment, start, trained, r: int, dp_rounds: int):
    """DP on the updates before they leave the agents (both placements clip here; ``local``
    also noises; ``central`` noises in the merge, ``RoundContext.central_noise``)."""
    if exp.privacy is None:
        return trained, dp_rounds
    return exp.privacy.release(start, trained, r), dp_rounds + 1


def _check_finite(cfg, r: int, trained) -> None:
    """The non-finite policy (``train.on_nonfinite``): stop, or skip the diverged groups."""
    if trained.skipped and cfg.train.get("on_nonfinite", "stop") == "stop":
        role, cut, agents, what = trained.skipped[0]
        raise NonFiniteRunError(
            f"method {cfg.method}, round {r}: the {role} group at cut {cut} "
            f"(agents {list(agents)}) produced a non-finite {what}; lower optim.lr, or set "
            f"--config.train.on_nonfinite=skip to drop such a group's update. {_KEPT}"
        )
    if trained.skipped and not trained.order:
        # on_nonfinite=skip, and every group of the round diverged: nothing is left to merge,
        # and a run that went on would skip every later round too and still exit 0.
        raise NonFiniteRunError(
            f"method {cfg.method}, round {r}: every group of the round produced a "
            f"non-finite loss or model (all {len(trained.skipped)} skipped, "
            "train.on_nonfinite=skip), so nothing is left to merge; lower optim.lr "
            f"(a run with another lr starts over: --fresh or another --workdir). {_KEPT}"
        )


def _evaluate(exp: Experiment, mstate, ctx, r: int) -> RoundEval:
    """The scheduled test evaluation of the merged model (and, every so often, each agent's).

    The plateau schedule only sees the scheduled evaluations: the extra one after a
    run's last round is for the report, so a run stopped early and resumed with more
    rounds trains exactly like an uninterrupted one.
    """
    cfg = exp.config
    scheduled = (r + 1) % cfg.eval_every == 0
    if not (scheduled or r + 1 == cfg.rounds):
        return RoundEval(False, False, float("nan"), float("nan"), {})
    consensus = exp.method.consensus(mstate, ctx)
    test_loss, test_acc = exp.evaluator(consensus.params, consensus.batch_stats)
    extra = {}
    every = int(cfg.get("eval_agents_every", 0))
    models = exp.method.agent_models(mstate)
    if models is not None and every > 0 and ((r + 1) % every == 0 or r + 1 == cfg.rounds):
        accs = exp.evaluator.each(*models, limit=int(cfg.get("eval_agents_subset", 0)))
        extra = {
            "agent_test_accuracy_mean": float(accs.mean()),
            "agent_test_accuracy_min": float(accs.min()),
            "agent_test_accuracy_max": float(accs.max()),
        }
    if not np.isfinite(test_loss):
        raise NonFiniteRunError(
            f"method {cfg.method}, round {r}: the merged model's test loss is not "
            f"finite; lower optim.lr. {_KEPT}"
        )
    return RoundEval(True, scheduled, test_loss, test_acc, extra)


def _advance(cfg, state: RunState, mstate, ev: RoundEval, seconds, dp_rounds, t0) -> RunState:
    """The run state after the round: clock, schedule, best accuracy, time to target."""
    r = int(state.round)
    plateau = state.plateau
    if ev.scheduled and r >= added_field(cfg, "optim.warmup_rounds"):
        plateau = plateau_update(cfg)(state.plateau, jnp.float32(1.0 - ev.test_accuracy))
    sim_time = float(state.sim_time_s) + seconds
    best = max(float(state.best_accuracy), ev.test_accuracy if ev.evaluated else 0.0)
    ttt = float(state.time_to_target_s)
    if ttt < 0 and ev.evaluated and ev.test_accuracy >= cfg.target_accuracy:
        ttt = sim_time
    wall = float(state.wall_time_s) + (time.perf_counter() - t0)
    return RunState(
        round=np.asarray(r + 1, np.int64),
        method=mstate,
        plateau=plateau,
        sim_time_s=np.asarray(sim_time),
        best_accuracy=np.asarray(best),
        time_to_target_s=np.asarray(ttt),
        dp_rounds=np.asarray(dp_rounds, np.int64),
        wall_time_s=np.asarray(wall),
        startup_s=state.startup_s,
    )


class NonFiniteRunError(FloatingPointError):
    """The run diverged: a loss or a merged model is not finite."""


_KEPT = "The run stopped; its last good checkpoint is kept and a rerun resumes from it."


def _skip_reason(ctx: RoundContext) -> str:
    """Why round r has no participant (from its environment)."""
    env, system = ctx.env, ctx.system
    sampled = sampled_at(system.seed, ctx.round, system.num_agents, system.participation)
    connected = sampled & (np.asarray(env.bandwidth_mbps) > 0)
    if not sampled.any():
        return "no agent was sampled"
    if not connected.any():
        return f"all {int(sampled.sum())} sampled agents are disconnected (0 Mbps) this round"
    return "no two sampled agents can reach each other and none can train alone"
