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

        def sums(params, stats, xb, yb):
            self.traces["eval"] += 1
            logits, _ = model.apply(params, stats, normalize(xb, mean, std), train=False)
            loss = steps.cross_entropy(logits, yb) * yb.shape[0]
            return loss, jnp.sum(jnp.argmax(logits, -1) == yb).astype(jnp.float32)

        self._sums = jax.jit(sums, compiler_options=xla_options or {})

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
        out = np.zeros(k)
        for i in range(k):
            row = lambda t, i=i: jax.tree.map(lambda x: x[i], t)
            out[i] = self(row(params), row(batch_stats), limit)[1]
        return out
