"""Patch shuffling of the activation a slow agent sends (Yao et al., 2022; SPEC §8).

Before z [B, H, W, C] leaves the slow agent, its spatial grid is cut into
p x p patches, and each sample's (H // p) * (W // p) patches are permuted with
that sample's own permutation. A patch moves as a whole: its p x p pixels keep
their arrangement and every pixel keeps all its C channels, in order. (The
original code permutes channels, which is not the method.)

Keys. Sample ``i`` of the batch draws its permutation from
``fold_in(key, i)``; the caller passes a key that is fresh per step (the
engine's batch key, folded with the shuffle stream's constant), so the
permutations differ between samples and between steps and any host
reproduces them.

Sizes that p does not divide. Only the top-left (H // p * p) x (W // p * p)
block is cut into patches and shuffled; the last H mod p rows and W mod p
columns stay where they are. A grid of at most one patch (p > H or p > W, or
p = H = W) is returned unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def to_patches(z: Array, patch_size: int) -> Array:
    """[B, H, W, C] -> [B, (H // p) * (W // p), p, p, C], row-major over the patch grid.

    The trailing H mod p rows and W mod p columns are dropped.
    """
    b, h, w, c = z.shape
    p = patch_size
    hp, wp = h // p, w // p
    core = z[:, : hp * p, : wp * p, :]
    return core.reshape(b, hp, p, wp, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp * wp, p, p, c)


def from_patches(patches: Array, grid: tuple[int, int]) -> Array:
    """The inverse of :func:`to_patches` on the patch grid ``(H // p, W // p)``."""
    b, _, p, _, c = patches.shape
    hp, wp = grid
    return (
        patches.reshape(b, hp, wp, p, p, c)
        .transpose(0, 1, 3, 2, 4, 5)
        .reshape(b, hp * p, wp * p, c)
    )


def patch_permutations(key: Array, batch: int, num_patches: int) -> Array:
    """[batch, num_patches] int32: sample i's permutation, drawn from ``fold_in(key, i)``."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch, dtype=jnp.uint32))
    return jax.vmap(lambda k: jax.random.permutation(k, num_patches))(keys)


def shuffle_patches(z: Array, key: Array, patch_size: int) -> Array:
    """Permutes the p x p patches of each sample of an NHWC activation.

    Args:
      z: [B, H, W, C] activation.
      key: a PRNG key, fresh per step; sample i uses ``fold_in(key, i)``.
      patch_size: p >= 1.

    Returns:
      An array like ``z`` whose patches are permuted per sample (see the module
      docstring for H or W not divisible by p).
    """
    if z.ndim != 4:
        raise ValueError(f"shuffle_patches expects NHWC activations; got shape {z.shape}")
    if patch_size < 1:
        raise ValueError(f"patch_size={patch_size} must be >= 1")
    b, h, w, _ = z.shape
    p = patch_size
    grid = (h // p, w // p)
    n = grid[0] * grid[1]
    if n <= 1:
        return z
    patches = to_patches(z, p)
    perm = patch_permutations(key, b, n)
    shuffled = jnp.take_along_axis(patches, perm[:, :, None, None, None], axis=1)
    core = from_patches(shuffled, grid)
    if grid[0] * p == h and grid[1] * p == w:
        return core
    return z.at[:, : grid[0] * p, : grid[1] * p, :].set(core)
