"""The train and optim sections of a run config, and the evaluation schedule: validation.

:func:`validate_train` checks, in this order:

  - ``optim.*``: lr, momentum, weight_decay, the reduce-on-plateau factor and
    patience, ``optim.min_lr`` <= ``optim.lr``, and ``optim.warmup_rounds`` < ``rounds``;
  - ``train.batch_size``, ``train.local_epochs``, ``train.backend``,
    ``train.aggregation`` (the collective), ``train.aux_front_weight`` and
    ``train.on_nonfinite``;
  - ``eval_agents_every``, ``eval_agents_subset``, ``eval_batch_size`` and
    ``eval_every``, and warns when ``eval_every`` > ``optim.plateau_patience``
    changes the lr schedule (:func:`_warn_eval_every`);
  - ``train.batch_size`` against the largest agent's data, from the data layer's
    :func:`comdml_jax.data.config.largest_agent_bound`.

Batches larger than an agent's data: refused when the batch is larger than
every agent's data (each agent's single batch would be its few samples
repeated, and B would mean nothing); warned when only some agents hold fewer
than B samples (their one batch wraps around, ``data.agents``). Before
partitioning the agent sizes are bounded (:func:`comdml_jax.data.config.largest_agent_bound`);
:func:`check_partition` checks the exact sizes once the partition exists.

The train layer may import the data layer, not the other way round. The names
checked here come from the JAX-free :mod:`comdml_jax.catalog`, so this module
imports no JAX and a bad config is refused before JAX loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from comdml_jax.catalog import AGGREGATIONS, BACKENDS, ON_NONFINITE, added_field
from comdml_jax.data.config import largest_agent_bound, num_train_samples
from comdml_jax.errors import is_int, is_num, require


def validate_train(config: ml_collections.ConfigDict) -> None:
    """Checks ``optim``, ``train`` and the evaluation fields; raises ``ConfigError``.

    Args:
      config: the run config, with ``rounds``, ``num_agents`` and ``data`` already
        checked (:func:`comdml_jax.data.config.validate_data`): the batch bound
        reads the agents' data sizes.
    """
    c = config
    _check_optim(c)
    t = c.train
    require(
        is_int(t.batch_size) and t.batch_size >= 1,
        "train.batch_size",
        t.batch_size,
        "use an integer >= 1",
    )
    require(
        is_int(t.local_epochs) and t.local_epochs >= 1,
        "train.local_epochs",
        t.local_epochs,
        "use an integer >= 1",
    )
    require(t.backend in BACKENDS, "train.backend", t.backend, f"choose one of {BACKENDS}")
    aggregation = t.get("aggregation", "psum")
    require(
        aggregation in AGGREGATIONS,
        "train.aggregation",
        aggregation,
        f"choose one of {tuple(AGGREGATIONS)} (the collective that sums the agents' models)",
    )
    front = added_field(c, "train.aux_front_weight")
    require(
        is_num(front) and 0.0 <= front <= 1.0,
        "train.aux_front_weight",
        front,
        "use a number in [0, 1] (the merge weight of a slow agent's head-trained front, as a "
        "fraction of its data size; 1.0 is the paper's average)",
    )
    on_nonfinite = t.get("on_nonfinite", "stop")
    require(
        on_nonfinite in ON_NONFINITE,
        "train.on_nonfinite",
        on_nonfinite,
        f"choose one of {ON_NONFINITE} (stop the run, or drop a diverged group's update)",
    )
    for f in ("eval_agents_every", "eval_agents_subset"):
        v = c.get(f, 0)
        require(is_int(v) and v >= 0, f, v, "use 0 (never / all) or a positive integer")
    require(
        is_int(c.eval_batch_size) and c.eval_batch_size >= 1,
        "eval_batch_size",
        c.eval_batch_size,
        "use >= 1",
    )
    require(
        is_int(c.eval_every) and c.eval_every >= 1,
        "eval_every",
        c.eval_every,
        "use an integer >= 1",
    )
    _warn_eval_every(c)
    _check_batch_bound(c)


def _check_optim(c: ml_collections.ConfigDict) -> None:
    o = c.optim
    require(
        is_num(o.lr) and o.lr > 0,
        "optim.lr",
        o.lr,
        "the learning rate must be a number > 0 (paper: 0.001)",
    )
    require(
        is_num(o.momentum) and 0.0 <= o.momentum < 1.0,
        "optim.momentum",
        o.momentum,
        "use a value in [0, 1) (paper: 0.9)",
    )
    require(
        is_num(o.weight_decay) and o.weight_decay >= 0,
        "optim.weight_decay",
        o.weight_decay,
        "use a value >= 0",
    )
    require(
        is_num(o.plateau_factor) and 0.0 < o.plateau_factor < 1.0,
        "optim.plateau_factor",
        o.plateau_factor,
        # optax's reduce_on_plateau refuses 1.0; a patience beyond the run keeps the lr.
        "use a factor in (0, 1) (paper: 0.2 for 10 agents, 0.5 for more); to keep the "
        "learning rate fixed, set optim.plateau_patience above the number of rounds",
    )
    require(
        is_int(o.plateau_patience) and o.plateau_patience >= 1,
        "optim.plateau_patience",
        o.plateau_patience,
        "use an integer number of rounds >= 1",
    )
    require(
        is_num(o.min_lr) and 0.0 < o.min_lr <= o.lr,
        "optim.min_lr",
        o.min_lr,
        f"use a value in (0, optim.lr={o.lr!r}]",
    )
    warmup = added_field(c, "optim.warmup_rounds")
    require(
        is_int(warmup) and 0 <= warmup < c.rounds,
        "optim.warmup_rounds",
        warmup,
        f"use an integer in [0, rounds={c.rounds!r}) (rounds whose lr ramps up to optim.lr; "
        "0: the paper's constant start)",
    )


def _warn_eval_every(c: ml_collections.ConfigDict) -> None:
    """Warns that ``eval_every`` > ``optim.plateau_patience`` changes the lr schedule.

    The reduce-on-plateau schedule reads the test accuracy of the scheduled
    evaluations (``comdml_jax.rounds.run_round``), so its patience counts evaluations:
    the lr is lowered only after patience · eval_every rounds without a better
    accuracy, and never in a run shorter than ``eval_every`` rounds. With
    ``eval_every`` <= patience the delay stays within what the patience allows
    anyway; beyond it, the schedule (and so the accuracy) is another one.
    """
    every, patience = int(c.eval_every), int(c.optim.plateau_patience)
    if every <= patience:
        return
    if int(c.rounds) < every:
        effect = (
            f"this run of {c.rounds} rounds has no scheduled evaluation, so the lr never changes"
        )
    else:
        effect = (
            f"the lr is lowered only after {patience * every} rounds without a better "
            f"accuracy instead of {patience}"
        )
    logging.warning(
        "eval_every=%d is larger than optim.plateau_patience=%d: the lr plateau schedule "
        "reads the test accuracy of the scheduled evaluations only, so %s; the lr schedule, "
        "and with it the accuracy, differ from a run with eval_every=1 (lower eval_every, "
        "or raise optim.plateau_patience to keep the schedule)",
        every,
        patience,
        effect,
    )


def _batch_fix(config, largest: int) -> str:
    return (
        f"every agent holds at most {largest} training samples "
        f"({num_train_samples(config)} samples over num_agents={config.num_agents}, "
        f"data.partition={config.data.partition!r}), so no agent has even one full batch; "
        f"use train.batch_size <= {largest}, fewer num_agents, or a larger data.train_subset"
    )


def _check_batch_bound(c: ml_collections.ConfigDict) -> None:
    b = int(c.train.batch_size)
    largest = largest_agent_bound(c)
    require(not largest or b <= largest, "train.batch_size", b, _batch_fix(c, largest))
    if c.data.partition == "iid" and largest:
        smallest = num_train_samples(c) // int(c.num_agents)
        if b > smallest:
            logging.warning(
                "train.batch_size=%d is larger than the %d samples of some agents: their one "
                "batch per epoch repeats samples (data.agents wraps around)",
                b,
                smallest,
            )


def check_partition(config: ml_collections.ConfigDict, parts: Sequence[np.ndarray]) -> None:
    """The exact batch-size check, once the partition exists (before any training).

    Refuses a ``train.batch_size`` larger than every agent's data; warns when
    only some agents hold fewer than B samples.

    Args:
      config: the run config.
      parts: the K index arrays of the partition.

    Raises:
      ConfigError: naming train.batch_size, num_agents and data.train_subset.
    """
    sizes = np.asarray([len(p) for p in parts], np.int64)
    b = int(config.train.batch_size)
    largest = int(sizes.max()) if sizes.size else 0
    require(b <= largest, "train.batch_size", b, _batch_fix(config, largest))
    small = np.flatnonzero(sizes < b)
    if small.size:
        logging.warning(
            "train.batch_size=%d is larger than the data of %d of %d agents (smallest: %d "
            "samples, agent %d): their one batch per epoch repeats samples",
            b,
            small.size,
            sizes.size,
            int(sizes.min()),
            int(np.argmin(sizes)),
        )
