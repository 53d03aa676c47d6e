"""One training run, config to outputs: the library behind ``experiments/run.py``.

The data flows one way (STYLE.md): config -> system (profiles, topology) ->
method plan (scheduler) -> engine (train, aggregate) -> method price (timing)
-> report. Every round writes one line of ``metrics.jsonl``; the run state is
one pytree, checkpointed so that a stopped run resumes exactly.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from comdml_jax import rng
from comdml_jax.checkpoint import Checkpointer
from comdml_jax.config_check import validate_config
from comdml_jax.data.agents import make_epoch_batches
from comdml_jax.data.datasets import dataset_from_config
from comdml_jax.data.partition import (
    class_counts,
    label_skew,
    partition_for_run,
    plot_partition,
)
from comdml_jax.methods import get_method
from comdml_jax.models import split
from comdml_jax.models.resnet import build_model
from comdml_jax.report import plots, tables
from comdml_jax.report.writers import JsonlWriter, write_json
from comdml_jax.system.world import build_system
from comdml_jax.train import aggregate, steps
from comdml_jax.train import profile as profile_lib
from comdml_jax.train.engine import Engine, GlobalModel, TrainData, evaluate

PyTree = Any


class RunState(NamedTuple):
    """Everything a run carries from one round to the next (one checkpointable pytree).

    Attributes:
      round: the next round to run.
      model: the global model (params, BN statistics, aux heads).
      plateau: optax's reduce-on-plateau state (the learning-rate scale).
      sim_time_s: cumulative simulated seconds.
      best_accuracy: best test accuracy so far.
      time_to_target_s: simulated seconds when the target was first reached, -1 if not yet.
      wall_time_s: cumulative wall-clock seconds (reporting only).
    """

    round: np.ndarray
    model: GlobalModel
    plateau: PyTree
    sim_time_s: np.ndarray
    best_accuracy: np.ndarray
    time_to_target_s: np.ndarray
    wall_time_s: np.ndarray


def _to_tree(state: RunState) -> dict:
    return {
        "round": np.asarray(state.round, np.int64),
        "model": state.model._asdict(),
        "plateau": state.plateau._asdict(),
        "sim_time_s": np.asarray(state.sim_time_s, np.float64),
        "best_accuracy": np.asarray(state.best_accuracy, np.float64),
        "time_to_target_s": np.asarray(state.time_to_target_s, np.float64),
        "wall_time_s": np.asarray(state.wall_time_s, np.float64),
    }


def _from_tree(tree: dict, like: RunState) -> RunState:
    return RunState(
        round=tree["round"],
        model=GlobalModel(**tree["model"]),
        plateau=type(like.plateau)(**tree["plateau"]),
        sim_time_s=tree["sim_time_s"],
        best_accuracy=tree["best_accuracy"],
        time_to_target_s=tree["time_to_target_s"],
        wall_time_s=tree["wall_time_s"],
    )


def plateau_schedule(config: ml_collections.ConfigDict):
    """The paper's lr reduce-on-plateau (Sec. V-A), on 1 - test accuracy per round."""
    o = config.optim
    return optax.contrib.reduce_on_plateau(
        factor=o.plateau_factor,
        patience=o.plateau_patience,
        rtol=0.0,
        atol=1e-4,
        min_scale=o.min_lr / o.lr,
    )


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
    parts: list
    test_x: jax.Array
    test_y: jax.Array
    mean: tuple
    std: tuple


def build(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> Experiment:
    """Validates the config, then loads data and builds the system, model and engine."""
    validate_config(config)
    system = build_system(config)
    method = get_method(config.method)
    seed = int(config.seed)
    dataset = dataset_from_config(config.data, seed)
    parts = partition_for_run(config, dataset.y_train)
    model = build_model(
        config.model.name,
        num_classes=dataset.num_classes,
        conv_impl=config.model.conv_impl,
        bn_impl=config.model.bn_impl,
    )
    profile = profile_lib.split_profile(
        config.model.name, config.train.batch_size, dataset.num_classes
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
    engine = Engine(model, tx, data, config.train.backend, aggregate.make_mesh(), seed)
    return Experiment(
        config=config,
        workdir=Path(workdir),
        system=system,
        method=method,
        model=model,
        profile=profile,
        engine=engine,
        parts=parts,
        test_x=jnp.asarray(dataset.x_test),
        test_y=jnp.asarray(dataset.y_test, jnp.int32),
        mean=mean,
        std=std,
    )


def initial_state(exp: Experiment) -> RunState:
    """The state before round 0: the seeded initial model, full learning rate, no time."""
    key = rng.stream(int(exp.config.seed), "init")
    params, stats = exp.model.init(key)
    aux = split.init_all_aux(exp.model, jax.random.fold_in(key, 1 << 20))
    return RunState(
        round=np.asarray(0, np.int64),
        model=GlobalModel(params, stats, aux),
        plateau=plateau_schedule(exp.config).init({}),
        sim_time_s=np.asarray(0.0),
        best_accuracy=np.asarray(0.0),
        time_to_target_s=np.asarray(-1.0),
        wall_time_s=np.asarray(0.0),
    )


def run_round(exp: Experiment, state: RunState) -> tuple[RunState, dict]:
    """Plans, trains, aggregates, evaluates and prices one round."""
    cfg = exp.config
    r = int(state.round)
    t0 = time.perf_counter()
    rs = exp.system.round_state(r)
    batches = make_epoch_batches(
        exp.parts,
        cfg.train.batch_size,
        rng.stream(int(cfg.seed), "shuffle"),
        r,
        cfg.train.local_epochs,
    )
    num_batches = np.asarray(batches.num_batches)
    plan = exp.method.plan(exp.system, rs, num_batches, exp.profile)
    timing = exp.method.price(exp.system, rs, plan, num_batches, exp.profile)
    lr = float(cfg.optim.lr * state.plateau.scale)
    result = exp.engine.train_round(state.model, plan, batches, r, lr)
    # The plateau schedule only sees the scheduled evaluations: the extra one after a
    # run's last round is for the report, so a run stopped early and resumed with more
    # rounds trains exactly like an uninterrupted one.
    scheduled = (r + 1) % cfg.eval_every == 0
    evaluated = scheduled or r + 1 == cfg.rounds
    if evaluated:
        test_loss, test_acc = evaluate(
            exp.model, result.model, exp.test_x, exp.test_y, exp.mean, exp.std, cfg.eval_batch_size
        )
    else:
        test_loss = test_acc = float("nan")
    plateau = state.plateau
    if scheduled:
        _, plateau = plateau_schedule(cfg).update(
            {}, state.plateau, value=jnp.float32(1.0 - test_acc)
        )
    sim_time = float(state.sim_time_s) + timing.round_time_s
    best = max(float(state.best_accuracy), test_acc if evaluated else 0.0)
    ttt = float(state.time_to_target_s)
    if ttt < 0 and evaluated and test_acc >= cfg.target_accuracy:
        ttt = sim_time
    part = plan.participants
    sizes = np.asarray(batches.num_samples, np.float64)
    train_loss = float(np.sum(result.train_loss[part] * sizes[part]) / np.sum(sizes[part]))
    wall = float(state.wall_time_s) + (time.perf_counter() - t0)
    record = {
        "round": r,
        "method": cfg.method,
        "sim_time_s": sim_time,
        "round_time_s": timing.round_time_s,
        "allreduce_time_s": timing.allreduce_s,
        "alone_round_time_s": timing.alone_round_time_s,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_loss": train_loss,
        "lr": lr,
        "num_participants": int(part.sum()),
        "pairs": [list(p) for p in plan.pairs],
        "compute_s": timing.compute_s,
        "comm_s": timing.comm_s,
        "idle_s": timing.idle_s,
        "wall_time_s": wall,
    }
    new = RunState(
        round=np.asarray(r + 1, np.int64),
        model=result.model,
        plateau=plateau,
        sim_time_s=np.asarray(sim_time),
        best_accuracy=np.asarray(best),
        time_to_target_s=np.asarray(ttt),
        wall_time_s=np.asarray(wall),
    )
    return new, record


def save_state(ckpt: Checkpointer, state: RunState) -> None:
    """Checkpoints ``state`` as step ``state.round`` (the number of rounds done)."""
    ckpt.save(int(state.round), _to_tree(state))


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
        return _from_tree(ckpt.restore(step, _to_tree(like)), like)
    finally:
        if own:
            ckpt.close()


def summarize(config, records: list[dict]) -> dict:
    """``summary.json`` from the metrics records."""
    return {
        "method": config.method,
        **tables.run_summary(records, config.target_accuracy),
        "target_accuracy": config.target_accuracy,
        "wall_time_s": records[-1]["wall_time_s"] if records else 0.0,
    }


def write_plots(exp: Experiment, records: list[dict]) -> None:
    wd = exp.workdir
    plots.plot_accuracy_vs_time(
        {exp.config.method: records}, wd / "accuracy_vs_time.png", exp.config.target_accuracy
    )
    if records:
        plots.plot_round_timeline(records[-1], wd / "timeline_last_round.png")


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> dict:
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
        keeps the extra test evaluation that a run's last round gets.

    Returns:
      The summary dict.
    """
    workdir = Path(workdir)
    exp = build(config, workdir)  # validates the config first: nothing is written before
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config.to_dict())
    counts = class_counts(exp.parts, np.asarray(exp.engine.data.y), exp.model.num_classes)
    write_json(
        workdir / "partition.json", {"class_counts": counts, "label_skew": label_skew(counts)}
    )
    if config.plots:
        plot_partition(counts, workdir / "partition.png")

    ckpt = Checkpointer(workdir) if config.checkpoint_every > 0 else None
    writer = JsonlWriter(workdir / "metrics.jsonl")
    state = restore_state(exp, ckpt) if ckpt is not None else None
    if state is None:
        state = initial_state(exp)
    else:
        logging.info("resumed from the checkpoint of round %d in %s", int(state.round), workdir)
    writer.truncate(int(state.round))

    while int(state.round) < config.rounds:
        state, record = run_round(exp, state)
        writer.write(record)
        r = record["round"]
        logging.info(
            "round %d/%d  acc %.4f  loss %.4f  sim %.1f s  pairs %d  wall %.1f s",
            r + 1,
            config.rounds,
            record["test_accuracy"],
            record["train_loss"],
            record["sim_time_s"],
            len(record["pairs"]),
            record["wall_time_s"],
        )
        if ckpt is not None and ((r + 1) % config.checkpoint_every == 0 or r + 1 == config.rounds):
            save_state(ckpt, state)

    records = writer.read()
    summary = summarize(config, records)
    write_json(workdir / "summary.json", summary)
    if config.plots:
        write_plots(exp, records)
    if ckpt is not None:
        ckpt.close()
    return summary
