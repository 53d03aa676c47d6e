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


@functools.cache
def _compiled_profile(model_name: str, batch_size: int, num_classes: int) -> SplitProfile:
    from comdml_jax.train.profile import split_profile

    return split_profile(model_name, batch_size, num_classes)


def load_profile(config: ConfigDict, profile_json: str = "", num_classes: int = 0) -> SplitProfile:
    """The config's split profile, from a JSON file or by compiling the model.

    Args:
      config: the run config.
      profile_json: a SplitProfile JSON file; empty to compile.
      num_classes: the data set's classes (default: by ``data.name``).

    Returns:
      The split profile.
    """
    if profile_json:
        from comdml_jax.system import SplitProfile

        with open(profile_json) as f:
            return SplitProfile.from_json(f.read())
    classes = num_classes or NUM_CLASSES[config.data.name]
    return _compiled_profile(config.model.name, config.train.batch_size, classes)


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
