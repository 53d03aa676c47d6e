"""Multi-process runs on JAX's multi-controller runtime (``jax.distributed``), SPEC §4.

Every process runs the same program on the same config: the host-side world
(profiles, plan, prices) is computed identically everywhere. What is split:

- **Agents.** Agent i lives on device ``owner(i) = i · D // K`` of the global
  agent mesh (D devices over all processes, in ``jax.devices()`` order), so
  each process trains, and feeds the data of, only the agents of its own
  devices (a pair is trained where its slow agent's data is).
- **Merging.** The trained models are assembled into one global array whose
  rows live on their owners' devices (:func:`assemble`), and the methods'
  averages run over the global mesh with ``shard_map`` + ``psum`` (or the
  ppermute halving/doubling), so every process gets the same merged model.
- **Files.** Only process 0 writes metrics, plots, TensorBoard files and
  checkpoints; on resume it reads its checkpoint and sends it to the others
  (:func:`broadcast_tree`). The others hold the same run state in memory.

On CPU the collectives across processes use gloo. Launch N local processes
for a quick try with ``python -m experiments.local_cluster --num_processes=N
-- <experiments.run flags>``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

PyTree = Any


def initialize(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """``jax.distributed.initialize`` (gloo collectives on CPU); a no-op for one process.

    Call it before any JAX computation.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator.
      num_processes: the number of processes.
      process_id: this process, 0..num_processes-1.
    """
    if num_processes <= 1:
        return
    if not coordinator_address:
        raise ValueError("--coordinator_address=HOST:PORT is needed with --num_processes > 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def is_main() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


def agent_owners(num_agents: int, mesh) -> np.ndarray:
    """[K] the mesh position of each agent's owner device: i · D // K."""
    d = mesh.devices.size
    return (np.arange(num_agents, dtype=np.int64) * d) // max(num_agents, 1)


def owned_agents(num_agents: int, mesh) -> np.ndarray:
    """[K] bool: the agents whose owner device belongs to this process."""
    me = jax.process_index()
    procs = np.asarray([dev.process_index for dev in mesh.devices.flat])
    return procs[agent_owners(num_agents, mesh)] == me


def home_device(mesh):
    """The first device of ``mesh`` that this process can address."""
    me = jax.process_index()
    return next(dev for dev in mesh.devices.flat if dev.process_index == me)


def _bytes_of(x: np.ndarray) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(x).tobytes(), np.uint8)


def allgather(x: np.ndarray) -> np.ndarray:
    """[num_processes, ...]: every process's ``x`` (same shape and dtype), bit-exact.

    Sent as raw bytes, so float64 and int64 survive JAX's 32-bit default.
    """
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x[None]
    from jax.experimental import multihost_utils

    raw = np.asarray(multihost_utils.process_allgather(_bytes_of(x)), np.uint8)
    return np.stack([np.frombuffer(r.tobytes(), x.dtype).reshape(x.shape) for r in raw])


def broadcast_tree(tree: PyTree, like: PyTree) -> PyTree:
    """Process 0's ``tree`` on every process (``like`` gives the structure, shapes, dtypes).

    Args:
      tree: the value on process 0 (ignored elsewhere).
      like: a pytree of the same structure on every process.

    Returns:
      Process 0's values as numpy arrays, bit-exact.
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(like)
    templates = [np.asarray(x) for x in leaves]
    if is_main():
        src = [
            np.asarray(x, t.dtype).reshape(t.shape)
            for x, t in zip(jax.tree.leaves(tree), templates, strict=True)
        ]
        payload = np.concatenate([_bytes_of(x) for x in src]) if src else np.zeros(0, np.uint8)
    else:
        payload = np.zeros(sum(t.nbytes for t in templates), np.uint8)
    raw = np.asarray(multihost_utils.broadcast_one_to_all(payload), np.uint8).tobytes()
    out, pos = [], 0
    for t in templates:
        out.append(np.frombuffer(raw[pos : pos + t.nbytes], t.dtype).reshape(t.shape).copy())
        pos += t.nbytes
    return jax.tree.unflatten(treedef, out)
