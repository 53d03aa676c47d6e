"""Data: data sets (decode once, cache), agent partitions, JAX augmentation, agent batches.

The function ``augment`` is not re-exported here: it would shadow the submodule
``comdml_jax.data.augment``. Use ``from comdml_jax.data.augment import augment``.
"""

from comdml_jax.data.agents import AgentBatches, make_agent_batches, make_epoch_batches, pad_agents
from comdml_jax.data.augment import (
    AugParams,
    apply_params,
    batch_key,
    crop_flip,
    cutout_mask,
    normalize,
    sample_params,
)
from comdml_jax.data.datasets import (
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    dataset_from_config,
    load_dataset,
    subset,
)
from comdml_jax.data.partition import (
    PARTITIONS,
    class_counts,
    dirichlet,
    iid,
    label_skew,
    partition_from_config,
    plot_partition,
)

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
