"""Run-state checkpoints with orbax, for exact resume after a crash.

The whole run state is one pytree (:class:`comdml_jax.rounds.RunState`
flattened to a dict of arrays). A run that stops resumes from its last
checkpoint: everything else it needs (profiles, partitions, batches,
augmentation keys) is a pure function of (config, seed, round).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


class Checkpointer:
    """Saves and restores run-state pytrees under ``workdir/checkpoints``.

    Args:
      workdir: the run's output folder.
      max_to_keep: how many checkpoints to keep.
    """

    def __init__(self, workdir: str | os.PathLike[str], max_to_keep: int = 2):
        path = os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))
        os.makedirs(path, exist_ok=True)
        # Under jax.distributed only process 0 checkpoints (comdml_jax.distributed): orbax
        # must not wait for the other processes, and it saves host (numpy) arrays.
        multi = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,
            **({"multiprocessing_options": multi} if jax.process_count() > 1 else {}),
        )
        self.manager = ocp.CheckpointManager(path, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: PyTree) -> None:
        """Saves ``state`` (as host arrays) as checkpoint ``step`` and waits for the commit."""
        self.manager.save(step, args=ocp.args.StandardSave(jax.device_get(state)))
        self.manager.wait_until_finished()

    def restore(self, step: int, target: PyTree) -> PyTree:
        """Restores ``step`` into the structure (and dtypes) of ``target``, as host arrays."""
        target = jax.device_get(target)
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        self.manager.close()
