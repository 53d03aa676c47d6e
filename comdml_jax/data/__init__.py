"""Data: data sets (decode once, cache), agent partitions, JAX augmentation, agent batches.

The function ``augment`` is not re-exported here: it would shadow the submodule
``comdml_jax.data.augment``. Use ``from comdml_jax.data.augment import augment``.
"""

import importlib

# name -> submodule. Loaded on first use (PEP 562), so that reading the data set and
# partition registries (comdml_jax.data.config) does not import JAX.
_EXPORTS = {
    "AgentBatches": "agents",
    "make_agent_batches": "agents",
    "make_epoch_batches": "agents",
    "pad_agents": "agents",
    "AugParams": "augment",
    "apply_params": "augment",
    "batch_key": "augment",
    "crop_flip": "augment",
    "cutout_mask": "augment",
    "normalize": "augment",
    "sample_params": "augment",
    "DATASETS": "sources",
    "Dataset": "datasets",
    "DatasetNotFoundError": "sources",
    "dataset_from_config": "datasets",
    "load_dataset": "datasets",
    "subset": "datasets",
    "PARTITIONS": "partition",
    "class_counts": "partition",
    "dirichlet": "partition",
    "iid": "partition",
    "label_skew": "partition",
    "partition_from_config": "partition",
    "plot_partition": "partition",
}

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "AgentBatches",
    "AugParams",
    "Dataset",
    "DatasetNotFoundError",
    "apply_params",
    "batch_key",
    "class_counts",
    "crop_flip",
    "cutout_mask",
    "dataset_from_config",
    "dirichlet",
    "iid",
    "label_skew",
    "load_dataset",
    "make_agent_batches",
    "make_epoch_batches",
    "normalize",
    "pad_agents",
    "partition_from_config",
    "plot_partition",
    "sample_params",
    "subset",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"comdml_jax.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
