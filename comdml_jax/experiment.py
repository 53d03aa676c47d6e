"""One training run, config to outputs: the library behind ``experiments/run.py``.

:func:`build` validates the config once and builds everything a run needs
(data, system, model, engine) into a :class:`~comdml_jax.rounds.Experiment`;
:func:`run` loops :func:`comdml_jax.rounds.run_round` over the rounds, writes
one line of ``metrics.jsonl`` per round, and checkpoints the run state
(:class:`~comdml_jax.rounds.RunState`, one pytree) so that a stopped run
resumes exactly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from comdml_jax import distributed, run_dir
from comdml_jax.checkpoint import Checkpointer
from comdml_jax.config_check import validate_config
from comdml_jax.data.datasets import Dataset, dataset_from_config
from comdml_jax.data.partition import (
    class_counts,
    label_skew,
    partition_for_run,
    plot_partition,
)
from comdml_jax.methods import get_method
from comdml_jax.methods.base import split_warning
from comdml_jax.models.resnet import build_model
from comdml_jax.privacy.accounting import accountant_from_config
from comdml_jax.privacy.config import PrivacySpec
from comdml_jax.privacy.rounds import RoundPrivacy
from comdml_jax.report import plots, tables
from comdml_jax.report.progress import RunProgress, progress_enabled, round_label
from comdml_jax.report.writers import MetricWriters, write_json
from comdml_jax.rounds import (
    Experiment,
    RunState,
    initial_state,
    run_round,
    state_from_tree,
    state_to_tree,
)
from comdml_jax.run_inputs import aux_head_of
from comdml_jax.train import aggregate, steps
from comdml_jax.train import profile as profile_lib
from comdml_jax.train.config import check_partition
from comdml_jax.train.engine import Engine, TrainData
from comdml_jax.train.evaluate import Evaluator

PyTree = Any


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


def save_state(ckpt: Checkpointer, state: RunState) -> None:
    """Checkpoints ``state`` as step ``state.round`` (the number of rounds done)."""
    ckpt.save(int(state.round), state_to_tree(state))


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
        target = state_to_tree(like)
        try:
            tree = ckpt.restore(step, target)
        except ValueError:  # written before the fields of _ADDED_FIELDS: they start at 0
            tree = ckpt.restore(step, {k: v for k, v in target.items() if k not in _ADDED_FIELDS})
            tree = {**{k: target[k] for k in _ADDED_FIELDS}, **tree}
        return state_from_tree(tree, like)
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
        state_to_tree(state) if state is not None else None, state_to_tree(like)
    )
    return state_from_tree(tree, like)
