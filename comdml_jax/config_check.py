"""Config validation, run before any work starts: the run-level fields, then each layer.

Every check names the config field, the bad value and how to fix it, so a bad
``--config.x=y`` fails in a second instead of after the data has loaded and
the model has compiled. Nothing here loads data or touches the file system
beyond reading ``system.trace`` (the workdir and cache paths are checked by
:mod:`comdml_jax.run_dir`), and nothing imports JAX.

Each layer checks its own section, and its rules are documented there:
  - ``model.*``: :func:`comdml_jax.models.config.validate_model`;
  - ``data.*`` and the samples per agent: :func:`comdml_jax.data.config.validate_data`;
  - ``optim.*``, ``train.*``, the evaluation fields and ``train.batch_size``
    against the largest agent's data: :func:`comdml_jax.train.config.validate_train`
    (the exact sizes, once the partition exists: :func:`comdml_jax.train.config.check_partition`);
  - ``privacy.*``: :func:`comdml_jax.privacy.config.validate_privacy`;
  - ``system.*``: :func:`comdml_jax.system.world.build_system`.

This module owns what no single layer can know:
  - the run-level fields (``seed``, ``method``, ``rounds``, ``target_accuracy``,
    ``num_agents``, ``checkpoint_every``, ``plots``);
  - the rules that read the method registry (:mod:`comdml_jax.catalog`): central
    DP only where one aggregate exists, ``privacy.nopeek`` / ``privacy.patch_shuffle``
    and ``train.aux_front_weight`` != 1 only where a model is split, and aggregation
    (:func:`check_aggregation`), by the rule below.

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
"""

from __future__ import annotations

import ml_collections
import numpy as np
from absl import logging

# The registries' names come from the JAX-free catalog, and every layer's check
# imports no JAX, so that a bad config is refused before JAX loads; the system
# modules are NumPy only.
from comdml_jax.catalog import METHODS, SPLITTING_METHODS, added_field
from comdml_jax.data.config import validate_data
from comdml_jax.errors import ConfigError, is_bool, is_int, is_num, require
from comdml_jax.models.config import validate_model
from comdml_jax.privacy.config import PrivacySpec, validate_privacy
from comdml_jax.system.routing import components
from comdml_jax.system.topology import link_capacities
from comdml_jax.system.world import build_system
from comdml_jax.train.config import validate_train


def validate_config(config: ml_collections.ConfigDict):
    """Checks a run config; raises :class:`ConfigError` naming the bad field.

    Args:
      config: the run config (``configs/default.py`` schema).

    Returns:
      The :class:`comdml_jax.system.world.System` built while checking, so a
      caller need not build it again.
    """
    c = config
    require(is_int(c.seed) and c.seed >= 0, "seed", c.seed, "use a non-negative integer")
    require(c.method in METHODS, "method", c.method, f"choose one of {sorted(METHODS)}")
    require(is_int(c.rounds) and c.rounds >= 1, "rounds", c.rounds, "use an integer >= 1")
    require(
        is_num(c.target_accuracy) and 0.0 < c.target_accuracy <= 1.0,
        "target_accuracy",
        c.target_accuracy,
        "use a fraction in (0, 1]",
    )
    require(
        is_int(c.num_agents) and c.num_agents >= 2,
        "num_agents",
        c.num_agents,
        "use an integer >= 2 (a single agent has no one to aggregate with; the paper: 10 to 100)",
    )
    require(
        is_int(c.checkpoint_every) and c.checkpoint_every >= 0,
        "checkpoint_every",
        c.checkpoint_every,
        "use 0 (no checkpoints) or a number of rounds",
    )
    require(is_bool(c.plots), "plots", c.plots, "use True or False")
    validate_model(c)
    validate_data(c)
    validate_train(c)
    _check_privacy(c)
    _check_front_weight(c)
    try:
        system = build_system(c)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(str(e)) from e
    check_aggregation(c, system)
    return system


def _check_privacy(c: ml_collections.ConfigDict) -> None:
    """``privacy.*`` (privacy/config.py), and central DP only where one aggregate exists."""
    validate_privacy(c)
    _check_split_privacy(c)
    dp = PrivacySpec.from_config(c).dp
    if dp.enabled and dp.placement == "central" and METHODS[c.method].per_agent:
        require(
            False,
            "privacy.dp.placement",
            dp.placement,
            f"method {c.method} has no single aggregate to noise (its agents keep their own "
            "models); use placement='local'",
        )


def _check_split_privacy(c: ml_collections.ConfigDict) -> None:
    """``privacy.nopeek`` / ``privacy.patch_shuffle`` only where a model is split.

    Both act on the activation a slow agent sends to its fast partner at the
    cut; a method that never splits (or ComDML with ``system.scheduler='none'``,
    which never pairs) would run to the end with the option silently doing nothing.
    """
    p = c.privacy
    for field in ("nopeek", "patch_shuffle"):
        if not p.get(field, False):
            continue
        require(
            METHODS[c.method].splits,
            f"privacy.{field}",
            True,
            f"method {c.method} never splits a model, so there is no activation for it to "
            f"act on; it applies only to methods that split: {', '.join(SPLITTING_METHODS)} "
            f"(use --config.method={SPLITTING_METHODS[0]}, or privacy.{field}=False)",
        )
        require(
            c.system.scheduler != "none",
            f"privacy.{field}",
            True,
            "system.scheduler='none' never pairs agents, so no model is split and there is "
            f"no activation for it to act on; use system.scheduler='greedy', or "
            f"privacy.{field}=False",
        )


def _check_front_weight(c: ml_collections.ConfigDict) -> None:
    """``train.aux_front_weight`` != 1 only where a slow agent's front is head-trained.

    It reweights the fronts of slow agents in ComDML's merge, so a method that
    never splits (or ComDML that never pairs) would ignore it; and central DP
    calibrates its noise to the data-size-weighted average, which it changes.
    """
    w = added_field(c, "train.aux_front_weight")
    if w == 1.0:
        return
    field = "train.aux_front_weight"
    require(
        METHODS[c.method].splits and c.system.scheduler != "none",
        field,
        w,
        f"method {c.method} (system.scheduler={c.system.scheduler!r}) never splits a model, so "
        f"no front is trained against an auxiliary head; use 1.0, or --config.method="
        f"{SPLITTING_METHODS[0]} with a scheduler that pairs",
    )
    dp = PrivacySpec.from_config(c).dp
    require(
        not (dp.enabled and dp.placement == "central"),
        field,
        w,
        "central DP calibrates its noise to the data-size-weighted average; use 1.0 with "
        "privacy.dp.placement='central', or placement='local'",
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
    k = int(config.num_agents)
    require(
        k >= 2,
        "num_agents",
        k,
        "a single agent has no one to aggregate with; use >= 2 (the paper: 10 to 100)",
    )
    frac = float(system.participation)
    drawn = k if frac >= 1.0 else max(1, int(round(frac * k)))
    require(
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
        require(
            False,
            field,
            value,
            f"{'no agent has' if max(connected) == 0 else 'only one agent has'} a link "
            f"(bandwidth > 0) in {span}, so no two agents can ever aggregate; give at least "
            "two agents a bandwidth > 0",
        )
    if METHODS[str(config.method)].exchange == "server":
        return  # FedAvg reaches its server whatever the peer topology (docs/timing_model.md)
    if max(grouped) < 2:
        field, value, fix = _topology_field(config)
        require(
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
