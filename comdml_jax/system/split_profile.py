"""The split-model profile: the contract between the models and the timing model.

SPEC §2 "Split profile" and the paper's Sec. IV-B ("split model profiling"): for
every cut m the relative training cost of the slow side T_s^m (with its
auxiliary head) and of the fast side T_f^m, both relative to one full-model
training step, the bytes ν^m sent per batch, and the parameter bytes per side.

This module is plain numpy so that the host-side system (timing, scheduler)
never needs to import JAX. ``comdml_jax.train.profile.split_profile`` computes
it from the compiled training steps.

Cut convention: cut m offloads the last m stages of the model to the fast
agent. m = 0 is "no split" (T_s = 1, T_f = 0, ν = 0).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np


@dataclasses.dataclass(frozen=True)
class SplitProfile:
    """Per-cut costs of a model at one batch size.

    Attributes:
      model: model name, e.g. ``"resnet56"``.
      batch_size: B, the batch the costs were measured at.
      cuts: [M] int, the cut indices 0..M-1.
      layers_offloaded: [M] int, the paper's "layers offloaded" count per cut.
      slow_rel_cost: [M] float, T_s^m (slow side + aux head) / full step.
      fast_rel_cost: [M] float, T_f^m (fast side) / full step.
      bytes_per_batch: [M] int, ν^m = activation bytes + label bytes per batch.
      slow_param_bytes: [M] int, bytes of slow-side params (+ aux head).
      fast_param_bytes: [M] int, bytes of fast-side params.
      full_step_flops: FLOPs of one full-model training step at batch B.
      model_bytes: b = 4 bytes x (params + BN statistics), the AllReduce payload.
      aux_head: the auxiliary head the slow side was profiled with (``model.aux_head``).
    """

    model: str
    batch_size: int
    cuts: np.ndarray
    layers_offloaded: np.ndarray
    slow_rel_cost: np.ndarray
    fast_rel_cost: np.ndarray
    bytes_per_batch: np.ndarray
    slow_param_bytes: np.ndarray
    fast_param_bytes: np.ndarray
    full_step_flops: float
    model_bytes: int
    aux_head: str = "linear"

    @property
    def num_cuts(self) -> int:
        return int(len(self.cuts))

    def rows(self) -> list[dict]:
        """One JSON-ready dict per cut (the ``comdml-profile --json`` format)."""
        return [
            {
                "cut": int(self.cuts[m]),
                "layers_offloaded": int(self.layers_offloaded[m]),
                "slow_rel_cost": float(self.slow_rel_cost[m]),
                "fast_rel_cost": float(self.fast_rel_cost[m]),
                "bytes_per_batch": int(self.bytes_per_batch[m]),
                "slow_param_bytes": int(self.slow_param_bytes[m]),
                "fast_param_bytes": int(self.fast_param_bytes[m]),
            }
            for m in range(self.num_cuts)
        ]

    def to_json(self) -> str:
        """A JSON array with one object per cut (the ``comdml-profile --json`` format).

        Each object holds the cut's fields of :meth:`rows` plus the model-level
        ``model``, ``batch_size``, ``full_step_flops`` and ``model_bytes``, so the
        array alone rebuilds the profile (:meth:`from_json`).
        """
        meta = {
            "model": self.model,
            "batch_size": self.batch_size,
            "full_step_flops": self.full_step_flops,
            "model_bytes": self.model_bytes,
            "aux_head": self.aux_head,
        }
        return json.dumps([{**row, **meta} for row in self.rows()])

    @classmethod
    def from_json(cls, text: str) -> SplitProfile:
        """Parses :meth:`to_json`'s output."""
        rows = json.loads(text)
        if not isinstance(rows, list) or not rows:
            raise ValueError("a split profile JSON is a non-empty array of per-cut objects")

        def col(k, dtype):
            return np.asarray([r[k] for r in rows], dtype=dtype)

        first = rows[0]
        return cls(
            model=first["model"],
            batch_size=int(first["batch_size"]),
            cuts=col("cut", np.int64),
            layers_offloaded=col("layers_offloaded", np.int64),
            slow_rel_cost=col("slow_rel_cost", np.float64),
            fast_rel_cost=col("fast_rel_cost", np.float64),
            bytes_per_batch=col("bytes_per_batch", np.int64),
            slow_param_bytes=col("slow_param_bytes", np.int64),
            fast_param_bytes=col("fast_param_bytes", np.int64),
            full_step_flops=float(first["full_step_flops"]),
            model_bytes=int(first["model_bytes"]),
            aux_head=str(first.get("aux_head", "linear")),
        )
