"""Data-size-weighted model averaging over a device mesh (SPEC §4).

The agent axis of a stacked pytree is sharded over the mesh axis ``agents``
with ``jax.shard_map``. Each device sums its own agents' weighted models and
an AllReduce adds the partial sums across the mesh, so one device, eight
devices or several processes under ``jax.distributed`` compute the same
average. The AllReduce is chosen by name (``train.aggregation``, see
:data:`ALGORITHMS`): ``psum`` (XLA's all-reduce) or ``halving_doubling`` (the
recursive halving/doubling that the timing model prices, built from
``lax.ppermute`` in :mod:`comdml_jax.train.collectives`). The agent axis is
padded to a multiple of the device count with zero-weight agents.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from comdml_jax.train import collectives

AXIS = "agents"
PyTree = Any

# The AllReduce algorithms by name: the values ``train.aggregation`` accepts.
ALGORITHMS = collectives.ALGORITHMS


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


# One program pads every leaf (hundreds of eager concatenations otherwise).
_pad = jax.jit(pad_axis0, static_argnums=1)


@functools.lru_cache(maxsize=32)
def _mix_fn(mesh: Mesh, algorithm: str, squeeze: bool):
    allreduce = collectives.get(algorithm)

    def local(stacked, w):
        # stacked: this device's agents [k_local, ...]; w: [K_out, k_local].
        parts = jax.tree.map(
            lambda x: jnp.tensordot(w, x.astype(jnp.float32), axes=(1, 0)), stacked
        )
        total = allreduce(parts, AXIS)
        # squeeze: drop the K_out = 1 axis inside the program; done eagerly per leaf,
        # it costs more than the AllReduce (measured: benchmarks/aggregate_speed.py).
        return jax.tree.map(lambda t, x: (t[0] if squeeze else t).astype(x.dtype), total, stacked)

    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(AXIS), P(None, AXIS)),
        out_specs=P(),
        # ppermute's result is typed as varying over the axis although every device
        # holds the same sum (see collectives); psum's is checked as replicated.
        check_vma=algorithm == "psum",
    )
    return jax.jit(fn)


def mix(stacked: PyTree, weights, mesh: Mesh, algorithm: str = "psum") -> PyTree:
    """out_i = Σ_j W_ij x_j over the leading (agent) axis, sharded over ``mesh``.

    Every averaging a method needs is a mix: the global data-size-weighted
    average is the rank-one case (one row), Gossip's equal-weight merge and
    BrainTorrent's aggregator are sparse rows. Each device multiplies its own
    agents' columns of W, and the AllReduce ``algorithm`` adds the partial
    sums across the mesh, so 1 device, 8 devices or several processes give the
    same result.

    Args:
      stacked: a pytree whose leaves have a leading agent axis [K_in, ...].
      weights: [K_out, K_in] non-negative mixing weights (rows need not sum to one).
      mesh: a 1-D mesh with axis ``agents``.
      algorithm: the AllReduce, a key of :data:`ALGORITHMS` (``train.aggregation``).

    Returns:
      A pytree with leaves [K_out, ...], replicated over the mesh.
    """
    return _mix(stacked, weights, mesh, algorithm, squeeze=False)


def _mix(stacked: PyTree, weights, mesh: Mesh, algorithm: str, squeeze: bool) -> PyTree:
    collectives.get(algorithm)  # a clear error for an unknown name
    w = np.asarray(weights, np.float64)
    k_in = jax.tree.leaves(stacked)[0].shape[0]
    if w.ndim != 2 or w.shape[1] != k_in:
        raise ValueError(f"mixing weights of shape {w.shape} do not match {k_in} stacked agents")
    if not np.all(w >= 0):
        raise ValueError("mixing weights must be non-negative")
    n_dev = mesh.devices.size
    rows = NamedSharding(mesh, P(AXIS))
    if is_global(stacked):  # assembled across processes: rows already on their owners
        if k_in % n_dev:
            raise ValueError(f"a global stack of {k_in} rows does not divide over {n_dev} devices")
    elif k_in % n_dev:
        stacked = _pad(stacked, n_dev)
    w = np.concatenate([w, np.zeros((w.shape[0], (-k_in) % n_dev))], axis=1).astype(np.float32)
    stacked = to_mesh(stacked, rows)
    w = to_mesh(w, NamedSharding(mesh, P(None, AXIS)))
    out = _mix_fn(mesh, algorithm, squeeze)(stacked, w)
    if jax.process_count() > 1:  # the replicated result, as this process's local arrays
        out = jax.tree.map(lambda x: x.addressable_data(0), out)
    return out


def is_global(tree: PyTree) -> bool:
    """Whether ``tree`` holds arrays spread over several processes (see ``distributed``)."""
    return any(
        isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(tree)
    )


def to_mesh(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """``tree`` placed with ``sharding``; from a value every process holds whole.

    One process: ``jax.device_put``. Several: each process supplies the shards
    of its own devices from its copy (``jax.make_array_from_callback``); arrays
    that are already global are kept as they are.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def weighted_average(stacked: PyTree, weights, mesh: Mesh, algorithm: str = "psum") -> PyTree:
    """Σ_i w_i x_i / Σ_i w_i over the leading axis, sharded over ``mesh``.

    Args:
      stacked: a pytree whose leaves have a leading agent axis [K, ...].
      weights: [K] non-negative weights (N_i for agents that took part, 0 else).
      mesh: a 1-D mesh with axis ``agents``.
      algorithm: the AllReduce, a key of :data:`ALGORITHMS` (``train.aggregation``).

    Returns:
      The average, replicated, with the agent axis removed.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or w.shape[0] != jax.tree.leaves(stacked)[0].shape[0]:
        raise ValueError(f"weights of shape {w.shape} do not match the stacked agent axis")
    if not np.all(w >= 0) or w.sum() <= 0:
        raise ValueError("aggregation weights must be non-negative with a positive sum")
    return _mix(stacked, (w / w.sum())[None, :], mesh, algorithm, squeeze=True)
