"""What a run's pricing needs besides the system: the split profile and Ñ_i per agent.

Shared by ``experiments.plan`` and ``experiments.compare --price_only``
(``comdml_jax.price_only``). Light to import: JAX and the data stack load only
inside the functions, so a command's flag checks stay fast.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
from ml_collections import ConfigDict

if TYPE_CHECKING:
    from comdml_jax.system import SplitProfile

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "cinic10": 10}


def aux_head_of(config: ConfigDict) -> str:
    """``model.aux_head``, ``linear`` (the paper's head) where a config predates the field."""
    from comdml_jax.catalog import added_field

    return added_field(config, "model.aux_head")


@functools.cache
def _compiled_profile(
    model_name: str, batch_size: int, num_classes: int, aux_head: str = "linear"
) -> SplitProfile:
    from comdml_jax.train.profile import split_profile

    return split_profile(model_name, batch_size, num_classes, aux_head)


def load_profile(config: ConfigDict, profile_json: str = "", num_classes: int = 0) -> SplitProfile:
    """The config's split profile, from a JSON file or by compiling the model.

    Args:
      config: the run config.
      profile_json: a SplitProfile JSON file; empty to compile.
      num_classes: the data set's classes (default: by ``data.name``).

    Returns:
      The split profile.

    Raises:
      ConfigError: the file was profiled with another auxiliary head than
        ``model.aux_head``.
    """
    if profile_json:
        from comdml_jax.system import SplitProfile

        with open(profile_json) as f:
            profile = SplitProfile.from_json(f.read())
        if profile.aux_head != aux_head_of(config):
            from comdml_jax.errors import ConfigError

            raise ConfigError(
                f"model.aux_head = {aux_head_of(config)!r}, but the profile {profile_json} was "
                f"measured with aux_head {profile.aux_head!r}: its T_s includes that head; "
                "profile the model again with the config's head, or set --config.model.aux_head"
            )
        return profile
    classes = num_classes or NUM_CLASSES[config.data.name]
    return _compiled_profile(
        config.model.name, config.train.batch_size, classes, aux_head_of(config)
    )


def run_batches(config: ConfigDict) -> tuple[np.ndarray, int]:
    """[K] Ñ_i a training run of ``config`` charges, and the data set's classes (module docstring).

    Args:
      config: the run config.

    Returns:
      (num_batches, num_classes).

    Raises:
      ConfigError: ``num_agents`` leaves an agent without samples.
    """
    from comdml_jax.data.agents import charged_batches  # loads JAX: only after the checks
    from comdml_jax.data.datasets import dataset_from_config
    from comdml_jax.data.partition import partition_for_run

    dataset = dataset_from_config(config.data, int(config.seed))
    parts = partition_for_run(config, np.asarray(dataset.y_train))
    sizes = [len(p) for p in parts]
    t = config.train
    return charged_batches(sizes, t.batch_size, t.local_epochs), dataset.num_classes
