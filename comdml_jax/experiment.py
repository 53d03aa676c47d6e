"""One training run, config to outputs: the library behind ``experiments/run.py``.

The data flows one way (STYLE.md): config -> system (profiles, topology) ->
method plan (scheduler) -> engine (train) -> method merge -> method price
(timing) -> report. One :func:`run_round` serves every method: a method owns
its state and its merge (``comdml_jax.methods``). Every round writes one line
of ``metrics.jsonl``; the run state is one pytree, checkpointed so that a
stopped run resumes exactly.

Names of the four kinds of state: :class:`RunState` (everything a run carries
between rounds, checkpointed), ``RoundState`` (one round's environment:
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
import os
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

from comdml_jax import distributed, rng, run_dir, streams
from comdml_jax.checkpoint import Checkpointer
from comdml_jax.config_check import check_partition, validate_config
from comdml_jax.data.agents import charged_batches, make_epoch_batches
from comdml_jax.data.datasets import Dataset, dataset_from_config
from comdml_jax.data.partition import (
    class_counts,
    label_skew,
    partition_for_run,
    plot_partition,
)
from comdml_jax.methods import RoundContext, get_method
from comdml_jax.methods.base import split_warning
from comdml_jax.models import split
from comdml_jax.models.init import apply_init
from comdml_jax.models.resnet import build_model
from comdml_jax.privacy.accounting import Accountant, accountant_from_config, epsilon_metrics
from comdml_jax.privacy.config import PrivacySpec
from comdml_jax.privacy.rounds import RoundPrivacy
from comdml_jax.report import plots, tables
from comdml_jax.report.progress import RunProgress, progress_enabled, round_label
from comdml_jax.report.record import RoundEval, round_record, skipped_record
from comdml_jax.report.writers import MetricWriters, write_json
from comdml_jax.run_inputs import aux_head_of
from comdml_jax.system.world import sampled_at
from comdml_jax.train import aggregate, layout, steps
from comdml_jax.train import profile as profile_lib
from comdml_jax.train.engine import Engine, TrainData
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


def _to_tree(state: RunState) -> dict:
    return serialization.to_state_dict(state)


def _from_tree(tree: dict, like: RunState) -> RunState:
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


def build(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    dataset: Dataset | None = None,
    system=None,
) -> Experiment:
    """Validates the config, then loads data and builds the system, model and engine.

    Args:
      config: the run config.
      workdir: the run's output folder (not touched here).
      dataset: the data set to use instead of loading ``config.data`` (benchmarks
        pass synthetic data).
      system: the ``System`` that ``validate_config(config)`` returned, where the
        caller validated already (``run_dir.prepare``); None validates here.

    Returns:
      The built experiment.
    """
    if system is None:
        system = validate_config(config)  # the System it checked, built once
    method = get_method(config.method)
    seed = int(config.seed)
    if dataset is None:
        dataset = dataset_from_config(config.data, seed)
    parts = partition_for_run(config, dataset.y_train)
    check_partition(config, parts)  # every agent's data against the batch, before any work
    model = build_model(
        config.model.name,
        num_classes=dataset.num_classes,
        conv_impl=config.model.conv_impl,
        bn_impl=config.model.bn_impl,
        aux_head=aux_head_of(config),
    )
    profile = profile_lib.split_profile(
        config.model.name, config.train.batch_size, dataset.num_classes, aux_head_of(config)
    )
    tx = steps.make_optimizer(config.optim.lr, config.optim.momentum, config.optim.weight_decay)
    mean, std = tuple(float(v) for v in dataset.mean), tuple(float(v) for v in dataset.std)
    data = TrainData(
        x=jnp.asarray(dataset.x_train),
        y=jnp.asarray(dataset.y_train, jnp.int32),
        mean=mean,
        std=std,
        crop=bool(config.data.augment),
        flip=bool(config.data.augment),
        cutout=int(config.data.cutout),
    )
    mesh = aggregate.make_mesh()  # every process's devices: methods merge over it
    multi = jax.process_count() > 1
    engine = Engine(
        model,
        tx,
        data,
        config.train.backend,
        aggregate.make_mesh(jax.local_devices()) if multi else mesh,
        seed,
        privacy=PrivacySpec.from_config(config),
        owned=distributed.owned_agents(config.num_agents, mesh) if multi else None,
    )
    evaluator = Evaluator(
        model,
        dataset.x_test,
        dataset.y_test,
        mean,
        std,
        config.eval_batch_size,
        xla_options=engine.steps.xla_options,
    )
    return Experiment(
        config=config,
        workdir=Path(workdir),
        system=system,
        method=method,
        model=model,
        profile=profile,
        engine=engine,
        evaluator=evaluator,
        parts=parts,
        mesh=mesh,
        privacy=RoundPrivacy.from_config(config),
        accountant=accountant_from_config(config),
        class_names=tuple(dataset.class_names),
    )


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
        env=system.round_state(round_, method.take_part),
        num_batches=num_batches,
        num_samples=num_samples,
        profile=profile,
        mesh=mesh,
        aggregation=str(config.train.get("aggregation", "psum")),
        central_noise=central_noise,
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
    lr = float(exp.config.optim.lr * state.plateau.scale)
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
    if ev.scheduled:
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


def save_state(ckpt: Checkpointer, state: RunState) -> None:
    """Checkpoints ``state`` as step ``state.round`` (the number of rounds done)."""
    ckpt.save(int(state.round), _to_tree(state))


# RunState fields added after runs were checkpointed without them (reporting only).
_ADDED_FIELDS = ("startup_s",)


def restore_state(exp: Experiment, ckpt: Checkpointer | None = None) -> RunState | None:
    """The run state of the latest checkpoint in ``exp.workdir``, or None if there is none.

    Args:
      exp: the built run.
      ckpt: an open checkpointer of ``exp.workdir``; default: open (and close) one.

    Returns:
      The restored :class:`RunState` (``round`` is the next round to run), or None.
    """
    own = ckpt is None
    if own:
        if not (exp.workdir / "checkpoints").is_dir():
            return None
        ckpt = Checkpointer(exp.workdir)
    try:
        step = ckpt.latest_step()
        if step is None:
            return None
        like = initial_state(exp)
        target = _to_tree(like)
        try:
            tree = ckpt.restore(step, target)
        except ValueError:  # written before the fields of _ADDED_FIELDS: they start at 0
            tree = ckpt.restore(step, {k: v for k, v in target.items() if k not in _ADDED_FIELDS})
            tree = {**{k: target[k] for k in _ADDED_FIELDS}, **tree}
        return _from_tree(tree, like)
    finally:
        if own:
            ckpt.close()


def summarize(config, records: list[dict], startup_s: float | None = None) -> dict:
    """``summary.json`` from the metrics records (and the ε spent, with DP).

    Args:
      config: the run config.
      records: the run's metrics records.
      startup_s: the run's start-up seconds (:attr:`RunState.startup_s`), part of
        ``wall_time_s``; None leaves the field out.
    """
    out = {
        "method": config.method,
        **tables.run_summary(records, config.target_accuracy),
        "target_accuracy": config.target_accuracy,
        "wall_time_s": records[-1]["wall_time_s"] if records else 0.0,
    }
    if startup_s is not None:
        out["startup_s"] = float(startup_s)
    spent = [r for r in records if "dp_epsilon" in r]
    if spent:
        out["dp_epsilon"] = spent[-1]["dp_epsilon"]
        out["dp_delta"] = spent[-1]["dp_delta"]
    return out


def write_plots(exp: Experiment, records: list[dict]) -> None:
    wd = exp.workdir
    plots.plot_accuracy_vs_time(
        {exp.config.method: records}, wd / "accuracy_vs_time.png", exp.config.target_accuracy
    )
    trained = [r for r in records if not r.get("skipped")]
    if trained:
        plots.plot_round_timeline(
            trained[-1], wd / "timeline_last_round.png", total_rounds=exp.config.rounds
        )


def _log_round(config, record: dict) -> None:
    if record.get("skipped"):
        return
    logging.info(
        "%s  %d agents  acc %.4f  loss %.4f  sim %.1f s  pairs %d  wall %.1f s",
        round_label(record["round"], config.rounds),
        record["num_participants"],
        record["test_accuracy"],
        record["train_loss"],
        record["sim_time_s"],
        len(record["pairs"]),
        record["wall_time_s"],
    )


def run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    fresh: bool = False,
    progress: str = "auto",
    started: float | None = None,
    system=None,
) -> dict:
    """Runs (or resumes) an experiment and writes its outputs to ``workdir``.

    Outputs: ``config.json``, ``metrics.jsonl`` (one record per round),
    ``summary.json``, ``partition.json`` and plots (``accuracy_vs_time.png``,
    ``timeline_last_round.png``, ``partition.png``), and ``checkpoints/``.

    Args:
      config: the run config (validated before any work starts).
      workdir: output folder; an existing run there is resumed from its last
        checkpoint (records of later rounds are dropped from ``metrics.jsonl``),
        and continues exactly as an uninterrupted run would, also when resumed
        with a larger ``rounds``. Only a record of the earlier run's last round
        keeps the extra test evaluation that a run's last round gets. A run is
        resumed only with a config equal to the recorded one (run_dir.prepare).
      fresh: discard a previous run in ``workdir`` and start over.
      progress: progress bars on stderr (process 0 only): ``auto`` (when stderr
        is a terminal), ``on`` or ``off`` (:mod:`comdml_jax.report.progress`).
      started: ``time.perf_counter()`` when the session started (the CLI passes
        its process's start, so the imports count); default: this call. The
        seconds from then to the first round are this session's start-up, added
        to ``wall_time_s`` and to ``startup_s`` of the run state (so a resumed
        run counts every session's) and reported in ``summary.json``.
      system: the ``System`` the CLI's check already built from ``config``
        (``launch.check_run``), so the config is validated once; None: here.

    Returns:
      The summary dict.
    """
    started = time.perf_counter() if started is None else started
    show = progress_enabled(progress)  # a bad mode fails before any work
    workdir = Path(workdir)
    main = distributed.is_main()  # under jax.distributed only process 0 writes files
    if main:
        # Validate the config and the workdir, and check that a previous run there may be
        # resumed (or remove it with fresh), before any work or write.
        system = run_dir.prepare(config, workdir, fresh=fresh, system=system).system
    exp = build(config, workdir, system=system)
    if main:
        warning = split_warning(exp.system.topology, exp.method)
        if warning:
            logging.warning("%s", warning)
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(workdir / "config.json", config.to_dict())
        counts = class_counts(exp.parts, np.asarray(exp.engine.data.y), exp.model.num_classes)
        write_json(
            workdir / "partition.json", {"class_counts": counts, "label_skew": label_skew(counts)}
        )
        if config.plots:
            plot_partition(counts, workdir / "partition.png", class_names=exp.class_names)

    ckpt = Checkpointer(workdir) if config.checkpoint_every > 0 and main else None
    # metrics.jsonl and TensorBoard event files (process 0); the others keep their records.
    writer = MetricWriters.for_workdir(workdir) if main else None
    state = restore_state(exp, ckpt) if ckpt is not None else None
    if jax.process_count() > 1 and config.checkpoint_every > 0:
        state = _share_restored(exp, state)
    if state is None:
        state = initial_state(exp)
    else:
        logging.info("resumed from the checkpoint of round %d in %s", int(state.round), workdir)
    if writer is not None:
        writer.truncate(int(state.round))

    startup = time.perf_counter() - started
    if int(state.round) < config.rounds:  # a session that runs rounds: its start-up counts
        state = state._replace(
            wall_time_s=np.asarray(float(state.wall_time_s) + startup),
            startup_s=np.asarray(float(state.startup_s) + startup),
        )
        if main:
            logging.info(
                "start-up %.1f s (imports, data, model, split profile); %s next",
                startup,
                round_label(int(state.round), config.rounds),
            )
    bars = RunProgress(config.rounds, int(state.round), show and main)
    records = []
    try:
        while int(state.round) < config.rounds:
            state, record = run_round(exp, state, progress=bars.round_started)
            records.append(record)
            if writer is not None:
                writer.write(record)
                bars.round_done(record)
                with bars.suspended():
                    _log_round(config, record)
            r = record["round"]
            if ckpt is not None and (
                (r + 1) % config.checkpoint_every == 0 or r + 1 == config.rounds
            ):
                save_state(ckpt, state)
    finally:
        bars.close()

    if writer is None:  # another process: what it ran this session
        return summarize(config, records, float(state.startup_s))
    records = writer.read()
    summary = summarize(config, records, float(state.startup_s))
    write_json(workdir / "summary.json", summary)
    if config.plots:
        write_plots(exp, records)
    writer.close()
    if ckpt is not None:
        ckpt.close()
    return summary


def _share_restored(exp: Experiment, state: RunState | None) -> RunState | None:
    """Process 0's restored run state (or None) on every process, bit-exact."""
    found = distributed.broadcast_tree(np.asarray(state is not None), np.asarray(False))
    if not bool(found):
        return None
    like = initial_state(exp)
    tree = distributed.broadcast_tree(
        _to_tree(state) if state is not None else None, _to_tree(like)
    )
    return _from_tree(tree, like)
