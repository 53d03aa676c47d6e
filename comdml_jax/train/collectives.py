"""AllReduce collectives over a named mesh axis, for use inside ``jax.shard_map``.

Every collective here has the signature ``(tree, axis_name) -> tree``: each
device passes its own partial pytree and gets back the sum over the axis, on
every device. :data:`ALGORITHMS` holds them by name (``train.aggregation``):

* ``psum``: ``lax.psum``, XLA's own all-reduce.
* ``halving_doubling``: the recursive halving/doubling AllReduce of Thakur,
  Rabenseifner & Gropp (2005), written with ``lax.ppermute``, so that the
  algorithm the timing model prices (:func:`comdml_jax.system.timing.halving_doubling_s`)
  is one that runs.

The halving/doubling steps and how they match the priced time. D devices,
p = 2^⌊log2 D⌋ of them in the *core*, r = D − p *extra* devices, b the bytes
of the (flattened, padded) vector, X(n) the time to move n bytes and α the
per-message latency:

1. pre-step (only when r > 0): extra device p + i sends its whole vector to
   core device i, which adds it: one message of b bytes, α + X(b);
2. reduce-scatter by recursive halving, log2 p steps: at the step with
   distance d = p/2, p/4, ..., 1, core device i exchanges with i XOR d, sends
   the half of its current block that the partner keeps and adds the half it
   receives. Core device i ends with block i of b/p bytes, fully summed.
   Bytes sent: b/2 + b/4 + ... + b/p = (p−1)/p · b;
3. allgather by recursive doubling, log2 p steps: at distance d = 1, 2, ...,
   p/2, device i exchanges its block with i XOR d and the two are joined in
   rank order, so the block doubles each step. (p−1)/p · b bytes again;
4. post-step (only when r > 0): core device i sends the result to p + i:
   α + X(b).

Total: 2·log2(p)·α + 2(p−1)/p · X(b) + [r > 0]·(2α + 2X(b)), exactly the
``halving_doubling`` formula of :mod:`comdml_jax.system.timing` (with H = 1
hop). The vector is padded with zeros to a multiple of p so every halving
splits evenly; the padding is cut off afterwards.

Inside ``shard_map`` the output of ``ppermute`` is typed as varying over the
axis even though every device holds the same sum; a ``shard_map`` that
returns it with ``out_specs=P()`` needs ``check_vma=False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
PyTree = Any
Collective = Callable[[PyTree, str], PyTree]


def psum_tree(tree: PyTree, axis_name: str) -> PyTree:
    """``lax.psum`` of every leaf over ``axis_name``.

    Args:
      tree: this device's partial pytree.
      axis_name: the mesh axis to sum over.

    Returns:
      The sum over the axis, on every device.
    """
    return jax.tree.map(lambda x: lax.psum(x, axis_name), tree)


def _core_size(d: int) -> int:
    """p = 2^⌊log2 d⌋, the largest power of two <= d."""
    return 1 << (d.bit_length() - 1)


def halving_doubling_allreduce(x: Array, axis_name: str) -> Array:
    """Recursive halving/doubling sum of a 1-D vector over ``axis_name`` (module docstring).

    Args:
      x: this device's vector [n] (any n; padded internally to a multiple of p).
      axis_name: the mesh axis to sum over (size D, any D >= 1).

    Returns:
      [n], the sum of every device's ``x``, on every device.
    """
    if x.ndim != 1:
        raise ValueError(f"halving_doubling_allreduce takes a 1-D vector, got shape {x.shape}")
    d = int(lax.axis_size(axis_name))
    if d == 1:
        return x
    p = _core_size(d)
    r = d - p
    n = x.shape[0]
    pad = (-n) % p
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,), x.dtype)])
    rank = lax.axis_index(axis_name)

    # 1. Pre-step: the r extra devices fold their vectors into core devices 0..r-1.
    if r:
        x = x + lax.ppermute(x, axis_name, [(p + i, i) for i in range(r)])

    # 2. Reduce-scatter by recursive halving: distance p/2, p/4, ..., 1.
    block = x
    dist = p // 2
    while dist >= 1:
        half = block.shape[0] // 2
        upper = (rank & dist) != 0  # this device keeps the upper half
        keep = lax.dynamic_slice(block, (jnp.where(upper, half, 0),), (half,))
        send = lax.dynamic_slice(block, (jnp.where(upper, 0, half),), (half,))
        pairs = [(i, i ^ dist) for i in range(p)]
        block = keep + lax.ppermute(send, axis_name, pairs)
        dist //= 2

    # 3. Allgather by recursive doubling: distance 1, 2, ..., p/2.
    dist = 1
    while dist < p:
        upper = (rank & dist) != 0
        pairs = [(i, i ^ dist) for i in range(p)]
        other = lax.ppermute(block, axis_name, pairs)
        lo = jnp.where(upper, other, block)
        hi = jnp.where(upper, block, other)
        block = jnp.concatenate([lo, hi])
        dist *= 2

    # 4. Post-step: core devices 0..r-1 send the result back to the extra devices.
    if r:
        back = lax.ppermute(block, axis_name, [(i, p + i) for i in range(r)])
        block = jnp.where(rank >= p, back, block)
    return block[:n]


def halving_doubling_tree(tree: PyTree, axis_name: str) -> PyTree:
    """:func:`halving_doubling_allreduce` of a pytree, as one flattened vector.

    The leaves are cast to their common result dtype, flattened and
    concatenated into one vector, so the collective runs once for the whole
    model (as the timing model prices it), then split and cast back per leaf.

    Args:
      tree: this device's partial pytree.
      axis_name: the mesh axis to sum over.

    Returns:
      The sum over the axis, on every device, with the leaves' shapes and dtypes.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    dtype = jnp.result_type(*leaves)
    flat = jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
    total = halving_doubling_allreduce(flat, axis_name)
    out, start = [], 0
    for leaf in leaves:
        size = leaf.size
        out.append(total[start : start + size].reshape(leaf.shape).astype(leaf.dtype))
        start += size
    return jax.tree.unflatten(treedef, out)


ALGORITHMS: dict[str, Collective] = {
    "psum": psum_tree,
    "halving_doubling": halving_doubling_tree,
}


def get(name: str) -> Collective:
    """The collective registered as ``name``.

    Args:
      name: a key of :data:`ALGORITHMS` (``train.aggregation``).

    Returns:
      The collective ``(tree, axis_name) -> tree``.
    """
    if name not in ALGORITHMS:
        raise ValueError(
            f"train.aggregation={name!r} is not one of {tuple(ALGORITHMS)}; "
            f"set --config.train.aggregation to one of them"
        )
    return ALGORITHMS[name]
