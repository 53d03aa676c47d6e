"""Test-set evaluation of one model or of every agent's model (SPEC §4, §7).

An :class:`Evaluator` owns the one jitted evaluation program of a run (no
module-level cache): the test images stay on device, the model runs in
evaluation mode (running BN statistics, no augmentation), and only the summed
loss and the number of correct predictions come back to the host.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from comdml_jax.data.augment import normalize
from comdml_jax.models.resnet import StagedModel
from comdml_jax.train import steps

Array = jax.Array
PyTree = Any


class Evaluator:
    """Test loss and accuracy of models on a fixed test set.

    Args:
      model: the staged model.
      x: uint8 [N, H, W, C] test images (moved to device).
      y: int [N] labels.
      mean: normalisation mean.
      std: normalisation std.
      batch_size: evaluation batch.
      xla_options: compiler options of the jitted program.
    """

    def __init__(
        self,
        model: StagedModel,
        x,
        y,
        mean,
        std,
        batch_size: int,
        xla_options: dict | None = None,
    ):
        self.x = jnp.asarray(x)
        self.y = jnp.asarray(y, jnp.int32)
        self.batch_size = int(batch_size)
        self.traces = collections.Counter()
        mean, std = tuple(mean), tuple(std)

        def forward(params, stats, xb, yb):
            logits, _ = model.apply(params, stats, normalize(xb, mean, std), train=False)
            loss = steps.cross_entropy(logits, yb) * yb.shape[0]
            return loss, jnp.sum(jnp.argmax(logits, -1) == yb).astype(jnp.float32)

        def sums(params, stats, xb, yb):
            self.traces["eval"] += 1
            return forward(params, stats, xb, yb)

        self._sums = jax.jit(sums, compiler_options=xla_options or {})

        def row_sums(params, stats, i, xb, yb):  # agent i of stacked [K, ...] models
            self.traces["eval_rows"] += 1
            row = lambda t: jax.tree.map(lambda x: x[i], t)
            return forward(row(params), row(stats), xb, yb)

        self._row_sums = jax.jit(row_sums, compiler_options=xla_options or {})

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])

    def __call__(self, params: PyTree, batch_stats: PyTree, limit: int = 0) -> tuple[float, float]:
        """(mean loss, accuracy) of one model on the test set.

        Args:
          params: the model's params.
          batch_stats: its BN running statistics.
          limit: evaluate only the first ``limit`` test images (0: all).

        Returns:
          Python floats.
        """
        n = self.num_examples if limit <= 0 else min(limit, self.num_examples)
        parts = []
        for s in range(0, n, self.batch_size):
            e = min(s + self.batch_size, n)
            parts.append(self._sums(params, batch_stats, self.x[s:e], self.y[s:e]))
        sums = np.asarray(jnp.stack([jnp.stack(p) for p in parts])).sum(0)
        return float(sums[0]) / n, float(sums[1]) / n

    def each(self, params: PyTree, batch_stats: PyTree, limit: int = 0) -> np.ndarray:
        """[K] accuracy of every model of a stacked [K, ...] pytree.

        Args:
          params: params stacked on a leading agent axis.
          batch_stats: BN statistics stacked likewise.
          limit: evaluate on the first ``limit`` test images (0: all).

        Returns:
          float64 [K] accuracies.
        """
        k = jax.tree.leaves(params)[0].shape[0]
        n = self.num_examples if limit <= 0 else min(limit, self.num_examples)
        # One program per (agent, batch) call, the row taken inside it, and one transfer
        # back for all agents: no eager per-leaf slicing, no per-agent synchronisation.
        correct = []
        for i in range(k):
            agent = np.int32(i)
            for s in range(0, n, self.batch_size):
                e = min(s + self.batch_size, n)
                correct.append(
                    self._row_sums(params, batch_stats, agent, self.x[s:e], self.y[s:e])[1]
                )
        per_batch = -(-n // self.batch_size)
        sums = np.asarray(jnp.stack(correct), np.float64).reshape(k, per_batch).sum(1)
        return sums / n
