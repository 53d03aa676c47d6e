"""Data-size-weighted model averaging over a device mesh (SPEC §4).

The agent axis of a stacked pytree is sharded over the mesh axis ``agents``
with ``jax.shard_map``. Each device sums its own agents' weighted models and
``lax.psum`` adds the partial sums across the mesh, so one device, eight
devices or several processes under ``jax.distributed`` compute the same
average. The agent axis is padded to a multiple of the device count with
zero-weight agents.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "agents"
PyTree = Any


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``agents`` over ``devices`` (default: all devices)."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(np.asarray(devices), (AXIS,))


def pad_axis0(tree: PyTree, multiple: int) -> PyTree:
    """Pads the leading (agent) axis of every leaf with zeros to a multiple."""
    n = jax.tree.leaves(tree)[0].shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return tree
    return jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]), tree
    )


@functools.lru_cache(maxsize=16)
def _weighted_sum_fn(mesh: Mesh):
    def local(stacked, w):
        # w: [local agents], already normalised on the host to sum to one.
        def one(x):
            part = jnp.tensordot(w, x.astype(jnp.float32), axes=(0, 0))
            return jax.lax.psum(part, AXIS).astype(x.dtype)

        return jax.tree.map(one, stacked)

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(AXIS), P(AXIS)), out_specs=P())
    return jax.jit(fn)


def weighted_average(stacked: PyTree, weights, mesh: Mesh) -> PyTree:
    """Σ_i w_i x_i / Σ_i w_i over the leading axis, sharded over ``mesh``.

    Args:
      stacked: a pytree whose leaves have a leading agent axis [K, ...].
      weights: [K] non-negative weights (N_i for agents that took part, 0 else).
      mesh: a 1-D mesh with axis ``agents``.

    Returns:
      The average, replicated, with the agent axis removed.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.shape[0] != jax.tree.leaves(stacked)[0].shape[0]:
        raise ValueError(f"weights of shape {w.shape} do not match the stacked agent axis")
    if not np.all(w >= 0) or w.sum() <= 0:
        raise ValueError("aggregation weights must be non-negative with a positive sum")
    w = (w / w.sum()).astype(np.float32)
    n_dev = mesh.devices.size
    stacked = pad_axis0(stacked, n_dev)
    w = np.concatenate([w, np.zeros((-len(w)) % n_dev, np.float32)])
    sharding = NamedSharding(mesh, P(AXIS))
    stacked = jax.device_put(stacked, sharding)
    w = jax.device_put(w, sharding)
    return _weighted_sum_fn(mesh)(stacked, w)
