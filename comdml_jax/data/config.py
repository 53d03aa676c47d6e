"""The data section of a run config: its validation and the agent data sizes it implies.

:func:`validate_data` checks ``config.data`` (and that the training samples can
give every agent ``data.min_samples_per_agent``) before any data is loaded:

  - ``data.name`` against the registry (:data:`comdml_jax.data.sources.DATASETS`),
    ``data.download``, ``data.mirror``, ``data.include_valid`` (only where the data
    set has a valid split), ``data.partition`` (:data:`comdml_jax.data.partition.PARTITIONS`),
    ``data.alpha``, ``data.min_samples_per_agent``, ``data.augment``, ``data.cutout``;
  - ``data.train_subset`` / ``data.test_subset`` against the split sizes in the
    data set's registry entry (:class:`comdml_jax.data.sources.DatasetSpec`).

:func:`num_train_samples` and :func:`largest_agent_bound` give the agents' data
sizes known before partitioning: for IID the agent sizes are floor(N/K) and
ceil(N/K); for Dirichlet, every agent holds at least ``data.min_samples_per_agent``,
so the largest holds at most N - (K - 1) * min_samples. The train layer checks
``train.batch_size`` against them (:mod:`comdml_jax.train.config`).

Imports no JAX: the registries read here are NumPy only, so a bad config is
refused before JAX loads.
"""

from __future__ import annotations

import ml_collections

from comdml_jax.data.partition import PARTITIONS
from comdml_jax.data.sources import DATASETS
from comdml_jax.errors import is_bool, is_int, is_num, require


def validate_data(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.data``; raises :class:`~comdml_jax.errors.ConfigError` naming the field.

    Args:
      config: the run config, with ``num_agents`` already checked.
    """
    c = config
    d = c.data
    require(d.name in DATASETS, "data.name", d.name, f"choose one of {sorted(DATASETS)}")
    spec = DATASETS[d.name]
    download = d.get("download", False)
    require(is_bool(download), "data.download", download, "use True or False")
    mirror = d.get("mirror", "")
    require(isinstance(mirror, str), "data.mirror", mirror, "use '' or a base URL")
    include_valid = d.get("include_valid", False)
    require(is_bool(include_valid), "data.include_valid", include_valid, "use True or False")
    require(
        not include_valid or spec.has_valid,
        "data.include_valid",
        include_valid,
        f"{d.name} has no valid split; use False (only cinic10 has one)",
    )
    require(
        d.partition in PARTITIONS,
        "data.partition",
        d.partition,
        f"choose one of {sorted(PARTITIONS)}",
    )
    require(
        is_num(d.alpha) and d.alpha > 0,
        "data.alpha",
        d.alpha,
        "the Dirichlet concentration must be > 0 (paper: 0.5)",
    )
    require(
        is_int(d.min_samples_per_agent) and d.min_samples_per_agent >= 1,
        "data.min_samples_per_agent",
        d.min_samples_per_agent,
        "use an integer >= 1",
    )
    sizes = {"train_subset": spec.train_size(bool(include_valid)), "test_subset": spec.num_test}
    for f, split in (("train_subset", "training"), ("test_subset", "test")):
        v, total = d[f], sizes[f]
        require(is_int(v) and v >= 0, f"data.{f}", v, "use 0 (everything) or a positive count")
        require(
            not total or v <= total,
            f"data.{f}",
            v,
            f"{d.name} has {total} {split} samples"
            + (" (train + valid)" if f == "train_subset" and include_valid else "")
            + f"; use 1..{total}, or 0 for all of them",
        )
    require(is_bool(d.augment), "data.augment", d.augment, "use True or False")
    require(
        is_int(d.cutout) and d.cutout >= 0, "data.cutout", d.cutout, "use 0 (off) or a side length"
    )
    n = num_train_samples(c)
    if n and n < c.num_agents * d.min_samples_per_agent:
        field, value = (
            ("data.train_subset", d.train_subset)
            if d.train_subset
            else ("num_agents", c.num_agents)
        )
        require(
            False,
            field,
            value,
            f"{n} training samples cannot give each of the {c.num_agents} agents at least "
            f"data.min_samples_per_agent={d.min_samples_per_agent} samples; raise "
            "data.train_subset or lower num_agents / data.min_samples_per_agent",
        )


def num_train_samples(config: ml_collections.ConfigDict) -> int:
    """N, the training samples the run splits over its agents (0 when unknown).

    Args:
      config: a run config whose ``data`` block is valid.

    Returns:
      ``data.train_subset`` if set, else the registered size of the training
      split (``train`` + ``valid`` with ``data.include_valid``).
    """
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
