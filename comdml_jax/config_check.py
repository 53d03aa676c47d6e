"""Config validation, run before any work starts.

Every check names the config field, the bad value and how to fix it, so a bad
``--config.x=y`` fails in a second instead of after the data has loaded and
the model has compiled. Nothing here loads data or touches the file system
beyond reading ``system.trace`` (the workdir and cache paths are checked by
:mod:`comdml_jax.run_dir`).

Checks that need no data:
  - every field's type and range (the ``system.*`` fields are checked by
    :func:`comdml_jax.system.world.build_system`, which this module calls);
  - ``data.train_subset`` / ``data.test_subset`` against the split sizes in the
    data set's registry entry (:class:`comdml_jax.data.sources.DatasetSpec`);
  - ``train.batch_size`` against the largest agent's data: for IID the agent
    sizes are floor(N/K) and ceil(N/K); for Dirichlet, every agent holds at
    least ``data.min_samples_per_agent``, so the largest holds at most
    N - (K - 1) * min_samples. :func:`check_partition` checks the exact sizes
    once the partition exists;
  - aggregation (:func:`check_aggregation`), by the rule below.

Aggregation rule. A round aggregates when at least two participants (sampled,
bw > 0, in one routing component: the rule of the AllReduce methods,
``world.main_component``; FedAvg, Gossip and BrainTorrent train every sampled,
connected agent, docs/timing_model.md) take part. The
profiles, and so the links, only change at round 0, at the dynamics rounds
and at the trace's rounds; between two such rounds every round has the same
agents with bw > 0 and the same routing components, and only the
participation draw differs. A config is **refused** when no round of the run
can ever aggregate, whatever the draw:
  - ``num_agents`` < 2;
  - the participation draw has fewer than two agents
    (``max(1, round(participation * K))`` < 2);
  - in every profile segment of rounds 0..rounds-1 at most one agent has bw > 0
    (the bandwidth field is named), or no routing component holds two agents
    with bw > 0 (the topology field is named: e.g. a random topology with
    p = 0, or an edge list without an edge between two connected agents),
    except for FedAvg, whose agents reach the server whatever the peer
    topology (docs/timing_model.md, *Participants*).
A config where only some segments cannot aggregate (say, rounds before a
dynamics redraw) is **warned** about: those rounds are empty, which the round
loop handles and records at run time, like rounds whose participation draw
happens to fall on agents that cannot reach each other.

Batches larger than an agent's data: refused when the batch is larger than
every agent's data (each agent's single batch would be its few samples
repeated, and B would mean nothing); warned when only some agents hold fewer
than B samples (their one batch wraps around, ``data.agents``).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from comdml_jax.errors import ConfigError, is_bool, is_int, is_num, require

# The leaf module's names under the short private names this module has always used.
_require, _is_int, _is_num, _is_bool = require, is_int, is_num, is_bool


def validate_config(config: ml_collections.ConfigDict):
    """Checks a run config; raises :class:`ConfigError` naming the bad field.

    Args:
      config: the run config (``configs/default.py`` schema).

    Returns:
      The :class:`comdml_jax.system.world.System` built while checking, so a
      caller need not build it again.
    """
    # The registries' names come from the JAX-free catalog, so that a bad config is
    # refused before JAX loads; the system modules are NumPy only.
    from comdml_jax.catalog import AGGREGATIONS as ALGORITHMS
    from comdml_jax.catalog import (
        AUX_HEADS,
        BACKENDS,
        BN_IMPLS,
        INITS,
        METHODS,
        MODELS,
        ON_NONFINITE,
        added_field,
    )
    from comdml_jax.catalog import CONV_IMPLS as IMPLS
    from comdml_jax.system.world import build_system

    c = config
    _require(_is_int(c.seed) and c.seed >= 0, "seed", c.seed, "use a non-negative integer")
    _require(c.method in METHODS, "method", c.method, f"choose one of {sorted(METHODS)}")
    _require(_is_int(c.rounds) and c.rounds >= 1, "rounds", c.rounds, "use an integer >= 1")
    _require(
        _is_num(c.target_accuracy) and 0.0 < c.target_accuracy <= 1.0,
        "target_accuracy",
        c.target_accuracy,
        "use a fraction in (0, 1]",
    )
    _require(c.model.name in MODELS, "model.name", c.model.name, f"choose one of {sorted(MODELS)}")
    _require(
        c.model.conv_impl in IMPLS, "model.conv_impl", c.model.conv_impl, f"choose one of {IMPLS}"
    )
    _require(
        c.model.bn_impl in BN_IMPLS, "model.bn_impl", c.model.bn_impl, f"choose one of {BN_IMPLS}"
    )
    _require(c.model.init in INITS, "model.init", c.model.init, f"choose one of {INITS}")
    aux = added_field(c, "model.aux_head")
    _require(aux in AUX_HEADS, "model.aux_head", aux, f"choose one of {AUX_HEADS}")
    _require(
        _is_int(c.num_agents) and c.num_agents >= 2,
        "num_agents",
        c.num_agents,
        "use an integer >= 2 (a single agent has no one to aggregate with; the paper: 10 to 100)",
    )
    _check_data(c)
    _check_optim(c)
    t = c.train
    _require(
        _is_int(t.batch_size) and t.batch_size >= 1,
        "train.batch_size",
        t.batch_size,
        "use an integer >= 1",
    )
    _require(
        _is_int(t.local_epochs) and t.local_epochs >= 1,
        "train.local_epochs",
        t.local_epochs,
        "use an integer >= 1",
    )
    _require(t.backend in BACKENDS, "train.backend", t.backend, f"choose one of {BACKENDS}")
    aggregation = t.get("aggregation", "psum")
    _require(
        aggregation in ALGORITHMS,
        "train.aggregation",
        aggregation,
        f"choose one of {tuple(ALGORITHMS)} (the collective that sums the agents' models)",
    )
    on_nonfinite = t.get("on_nonfinite", "stop")
    _require(
        on_nonfinite in ON_NONFINITE,
        "train.on_nonfinite",
        on_nonfinite,
        f"choose one of {ON_NONFINITE} (stop the run, or drop a diverged group's update)",
    )
    for f in ("eval_agents_every", "eval_agents_subset"):
        v = c.get(f, 0)
        _require(_is_int(v) and v >= 0, f, v, "use 0 (never / all) or a positive integer")
    _require(
        _is_int(c.eval_batch_size) and c.eval_batch_size >= 1,
        "eval_batch_size",
        c.eval_batch_size,
        "use >= 1",
    )
    _require(
        _is_int(c.eval_every) and c.eval_every >= 1,
        "eval_every",
        c.eval_every,
        "use an integer >= 1",
    )
    _warn_eval_every(c)
    _require(
        _is_int(c.checkpoint_every) and c.checkpoint_every >= 0,
        "checkpoint_every",
        c.checkpoint_every,
        "use 0 (no checkpoints) or a number of rounds",
    )
    _require(_is_bool(c.plots), "plots", c.plots, "use True or False")
    _check_batch_bound(c)
    _check_privacy(c, METHODS)
    try:
        system = build_system(c)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(str(e)) from e
    check_aggregation(c, system)
    return system


def _check_privacy(c: ml_collections.ConfigDict, methods) -> None:
    """``privacy.*`` (privacy/config.py), and central DP only where one aggregate exists."""
    from comdml_jax.privacy.config import PrivacySpec, validate_privacy

    validate_privacy(c)
    _check_split_privacy(c, methods)
    dp = PrivacySpec.from_config(c).dp
    if dp.enabled and dp.placement == "central" and methods[c.method].per_agent:
        _require(
            False,
            "privacy.dp.placement",
            dp.placement,
            f"method {c.method} has no single aggregate to noise (its agents keep their own "
            "models); use placement='local'",
        )


def _check_split_privacy(c: ml_collections.ConfigDict, methods) -> None:
    """``privacy.nopeek`` / ``privacy.patch_shuffle`` only where a model is split.

    Both act on the activation a slow agent sends to its fast partner at the
    cut; a method that never splits (or ComDML with ``system.scheduler='none'``,
    which never pairs) would run to the end with the option silently doing nothing.
    """
    from comdml_jax.catalog import SPLITTING_METHODS

    p = c.privacy
    for field in ("nopeek", "patch_shuffle"):
        if not p.get(field, False):
            continue
        _require(
            methods[c.method].splits,
            f"privacy.{field}",
            True,
            f"method {c.method} never splits a model, so there is no activation for it to "
            f"act on; it applies only to methods that split: {', '.join(SPLITTING_METHODS)} "
            f"(use --config.method={SPLITTING_METHODS[0]}, or privacy.{field}=False)",
        )
        _require(
            c.system.scheduler != "none",
            f"privacy.{field}",
            True,
            "system.scheduler='none' never pairs agents, so no model is split and there is "
            f"no activation for it to act on; use system.scheduler='greedy', or "
            f"privacy.{field}=False",
        )


def _check_data(c: ml_collections.ConfigDict) -> None:
    from comdml_jax.data.partition import PARTITIONS
    from comdml_jax.data.sources import DATASETS

    d = c.data
    _require(d.name in DATASETS, "data.name", d.name, f"choose one of {sorted(DATASETS)}")
    spec = DATASETS[d.name]
    download = d.get("download", False)
    _require(_is_bool(download), "data.download", download, "use True or False")
    mirror = d.get("mirror", "")
    _require(isinstance(mirror, str), "data.mirror", mirror, "use '' or a base URL")
    include_valid = d.get("include_valid", False)
    _require(_is_bool(include_valid), "data.include_valid", include_valid, "use True or False")
    _require(
        not include_valid or spec.has_valid,
        "data.include_valid",
        include_valid,
        f"{d.name} has no valid split; use False (only cinic10 has one)",
    )
    _require(
        d.partition in PARTITIONS,
        "data.partition",
        d.partition,
        f"choose one of {sorted(PARTITIONS)}",
    )
    _require(
        _is_num(d.alpha) and d.alpha > 0,
        "data.alpha",
        d.alpha,
        "the Dirichlet concentration must be > 0 (paper: 0.5)",
    )
    _require(
        _is_int(d.min_samples_per_agent) and d.min_samples_per_agent >= 1,
        "data.min_samples_per_agent",
        d.min_samples_per_agent,
        "use an integer >= 1",
    )
    sizes = {"train_subset": spec.train_size(bool(include_valid)), "test_subset": spec.num_test}
    for f, split in (("train_subset", "training"), ("test_subset", "test")):
        v, total = d[f], sizes[f]
        _require(_is_int(v) and v >= 0, f"data.{f}", v, "use 0 (everything) or a positive count")
        _require(
            not total or v <= total,
            f"data.{f}",
            v,
            f"{d.name} has {total} {split} samples"
            + (" (train + valid)" if f == "train_subset" and include_valid else "")
            + f"; use 1..{total}, or 0 for all of them",
        )
    _require(_is_bool(d.augment), "data.augment", d.augment, "use True or False")
    _require(
        _is_int(d.cutout) and d.cutout >= 0, "data.cutout", d.cutout, "use 0 (off) or a side length"
    )
    n = num_train_samples(c)
    if n and n < c.num_agents * d.min_samples_per_agent:
        field, value = (
            ("data.train_subset", d.train_subset)
            if d.train_subset
            else ("num_agents", c.num_agents)
        )
        _require(
            False,
            field,
            value,
            f"{n} training samples cannot give each of the {c.num_agents} agents at least "
            f"data.min_samples_per_agent={d.min_samples_per_agent} samples; raise "
            "data.train_subset or lower num_agents / data.min_samples_per_agent",
        )


def _check_optim(c: ml_collections.ConfigDict) -> None:
    o = c.optim
    _require(
        _is_num(o.lr) and o.lr > 0,
        "optim.lr",
        o.lr,
        "the learning rate must be a number > 0 (paper: 0.001)",
    )
    _require(
        _is_num(o.momentum) and 0.0 <= o.momentum < 1.0,
        "optim.momentum",
        o.momentum,
        "use a value in [0, 1) (paper: 0.9)",
    )
    _require(
        _is_num(o.weight_decay) and o.weight_decay >= 0,
        "optim.weight_decay",
        o.weight_decay,
        "use a value >= 0",
    )
    _require(
        _is_num(o.plateau_factor) and 0.0 < o.plateau_factor < 1.0,
        "optim.plateau_factor",
        o.plateau_factor,
        # optax's reduce_on_plateau refuses 1.0; a patience beyond the run keeps the lr.
        "use a factor in (0, 1) (paper: 0.2 for 10 agents, 0.5 for more); to keep the "
        "learning rate fixed, set optim.plateau_patience above the number of rounds",
    )
    _require(
        _is_int(o.plateau_patience) and o.plateau_patience >= 1,
        "optim.plateau_patience",
        o.plateau_patience,
        "use an integer number of rounds >= 1",
    )
    _require(
        _is_num(o.min_lr) and 0.0 < o.min_lr <= o.lr,
        "optim.min_lr",
        o.min_lr,
        f"use a value in (0, optim.lr={o.lr!r}]",
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


def num_train_samples(config: ml_collections.ConfigDict) -> int:
    """N, the training samples the run splits over its agents (0 when unknown).

    Args:
      config: a run config whose ``data`` block is valid.

    Returns:
      ``data.train_subset`` if set, else the registered size of the training
      split (``train`` + ``valid`` with ``data.include_valid``).
    """
    from comdml_jax.data.sources import DATASETS

    d = config.data
    if d.train_subset:
        return int(d.train_subset)
    return DATASETS[d.name].train_size(bool(d.get("include_valid", False)))


def largest_agent_bound(config: ml_collections.ConfigDict) -> int:
    """An upper bound on the largest agent's samples, known before partitioning.

    IID: ceil(N / K) exactly. Dirichlet: N - (K - 1) * data.min_samples_per_agent,
    since the partition gives every agent at least that many.

    Args:
      config: a run config whose ``data`` block and ``num_agents`` are valid.

    Returns:
      The bound (0 when N is unknown).
    """
    n, k = num_train_samples(config), int(config.num_agents)
    if not n:
        return 0
    if config.data.partition == "iid":
        return -(-n // k)
    return n - (k - 1) * int(config.data.min_samples_per_agent)


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
    _require(not largest or b <= largest, "train.batch_size", b, _batch_fix(c, largest))
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
    _require(b <= largest, "train.batch_size", b, _batch_fix(config, largest))
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


# ----------------------------------------------------------------------- aggregation


def profile_change_rounds(config: ml_collections.ConfigDict, system) -> list[int]:
    """The rounds in 0..rounds-1 at which the profiles (and so the links) can change.

    Args:
      config: the run config.
      system: the built :class:`comdml_jax.system.world.System`.

    Returns:
      Sorted rounds, starting with 0; between two of them every round has the
      same profiles.
    """
    spec = system.profiles
    rounds = int(config.rounds)
    if spec.trace is not None:
        starts = spec.trace.rounds.tolist()
    elif round(spec.dynamics_fraction * spec.num_agents) > 0:
        starts = [0, *spec.dynamics_rounds]
    else:
        starts = [0]
    return sorted({int(r) for r in starts if r < rounds} | {0})


def _bandwidth_field(config) -> tuple[str, object]:
    s = config.system
    if s.trace:
        return "system.trace", s.trace
    if len(s.bandwidth_mbps):
        return "system.bandwidth_mbps", s.bandwidth_mbps
    return "system.bandwidth_profiles_mbps", s.bandwidth_profiles_mbps


def _topology_field(config) -> tuple[str, object, str]:
    t = config.system.topology
    if t.kind == "random":
        return "system.topology.p", t.p, "raise p (Fig. 3 uses 0.2) or use kind='full'"
    if t.kind == "edges":
        return (
            "system.topology.edges",
            t.edges,
            "add an edge (i, j) between two agents with bandwidth > 0",
        )
    return "system.topology.kind", t.kind, "use kind='full', or give more agents a link"


def _span(first: int, last: int) -> str:
    return f"round {first}" if first == last else f"rounds {first}..{last}"


def check_aggregation(config: ml_collections.ConfigDict, system) -> None:
    """Refuses a config on which no round can aggregate; warns about empty segments.

    The rule is in the module docstring.

    Args:
      config: the run config.
      system: the :class:`comdml_jax.system.world.System` built from it.

    Raises:
      ConfigError: naming num_agents, participation, the bandwidth field or
        the topology field, whichever makes aggregation impossible.
    """
    from comdml_jax.system.routing import components
    from comdml_jax.system.topology import link_capacities

    k = int(config.num_agents)
    _require(
        k >= 2,
        "num_agents",
        k,
        "a single agent has no one to aggregate with; use >= 2 (the paper: 10 to 100)",
    )
    frac = float(system.participation)
    drawn = k if frac >= 1.0 else max(1, int(round(frac * k)))
    _require(
        drawn >= 2,
        "participation",
        config.participation,
        f"it samples {drawn} of the {k} agents per round and one agent cannot aggregate; use "
        f"participation >= {2 / k:.3g} (at least 2 agents)",
    )
    starts = profile_change_rounds(config, system)
    connected, grouped = [], []
    for r in starts:
        bw = system.profiles_at(r)[1]
        on = bw > 0
        labels = components(link_capacities(system.topology, bw), on)
        connected.append(int(on.sum()))
        grouped.append(int(np.bincount(labels[on]).max()) if on.any() else 0)
    rounds = int(config.rounds)
    span = _span(0, rounds - 1)
    if max(connected) < 2:
        field, value = _bandwidth_field(config)
        _require(
            False,
            field,
            value,
            f"{'no agent has' if max(connected) == 0 else 'only one agent has'} a link "
            f"(bandwidth > 0) in {span}, so no two agents can ever aggregate; give at least "
            "two agents a bandwidth > 0",
        )
    from comdml_jax.catalog import METHODS

    if METHODS[str(config.method)].exchange == "server":
        return  # FedAvg reaches its server whatever the peer topology (docs/timing_model.md)
    if max(grouped) < 2:
        field, value, fix = _topology_field(config)
        _require(
            False,
            field,
            value,
            f"with it no two agents with bandwidth > 0 are linked in {span} ({max(connected)} "
            f"connected agents, each on its own), so no two agents can ever aggregate; {fix}",
        )
    ends = [*starts[1:], rounds]
    for r0, r1, g in zip(starts, ends, grouped, strict=True):
        if g < 2:
            logging.warning(
                "%s: at most one agent can take part (no two agents with bandwidth > 0 are "
                "linked); these rounds are empty and are recorded as skipped",
                _span(r0, r1 - 1),
            )
