"""CIFAR augmentation in JAX, on device, keyed by (seed, round, agent, batch) (SPEC §3).

The pipeline follows the original PyTorch code's transforms:

1. ``RandomCrop(32, padding=4)``: the raw uint8 image is zero-padded by
   ``pad`` pixels on every side and a window of the original size is cut out at
   a uniform offset (dy, dx) in [0, 2 * pad], so the content shifts by up to
   ``pad`` pixels and zeros come in from the border.
2. ``RandomHorizontalFlip()``: mirror the columns with probability 1/2.
3. ``ToTensor() + Normalize(mean, std)``: x / 255, then (x - mean) / std.
4. Optional ``Cutout(L)`` (DeVries & Taylor 2017): a centre (cy, cx) uniform
   over the image pixels; the L x L square [cy - L//2, cy + L//2) x
   [cx - L//2, cx + L//2), clipped at the borders, is set to 0 in the
   normalised image.

The random draws (:func:`sample_params`) are separate from their application
(:func:`apply_params`), so tests can check the transform against a numpy
reference for given offsets. Everything is shape-static and free of Python
control flow on traced values: :func:`augment` can be jitted and vmapped over
an agent axis. The draws are batch-shaped arrays from one key per transform;
one batch's key comes from :func:`batch_key`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
PRNGKey = jax.Array  # a typed key from jax.random.key
ChannelStats = Array | tuple[float, float, float]  # float32 (3,) on the [0, 1] scale


class AugParams(NamedTuple):
    """Per-sample random choices for one batch; every field is int32 [B] or bool [B].

    Attributes:
      dy: crop row offset into the padded image, in [0, 2 * pad].
      dx: crop column offset into the padded image, in [0, 2 * pad].
      flip: whether to mirror the columns.
      cy: cutout centre row, in [0, H).
      cx: cutout centre column, in [0, W).
    """

    dy: Array
    dx: Array
    flip: Array
    cy: Array
    cx: Array


def batch_key(
    seed_key: PRNGKey, round_: int | Array, agent: int | Array, batch: int | Array
) -> PRNGKey:
    """The key of one local batch: fold_in(fold_in(fold_in(key, round), agent), batch).

    Args:
      seed_key: the run's augmentation key, e.g. ``jax.random.key(seed)``.
      round_: round index (may be traced).
      agent: agent index (may be traced).
      batch: batch index within the agent's local epoch (may be traced).

    Returns:
      A typed PRNG key.
    """
    return jax.random.fold_in(
        jax.random.fold_in(jax.random.fold_in(seed_key, round_), agent), batch
    )


def sample_params(
    key: PRNGKey,
    batch: int,
    height: int,
    width: int,
    *,
    pad: int = 4,
    crop: bool = True,
    flip: bool = True,
) -> AugParams:
    """Draws the per-sample crop offsets, flips and cutout centres of one batch.

    Args:
      key: the batch key.
      batch: B.
      height: image height H.
      width: image width W.
      pad: crop padding.
      crop: when False the offsets are ``pad`` (no shift).
      flip: when False no sample is flipped.

    Returns:
      The draws; disabled transforms get their identity values.
    """
    k_dy, k_dx, k_flip, k_cy, k_cx = jax.random.split(key, 5)
    shape = (batch,)
    if crop:
        dy = jax.random.randint(k_dy, shape, 0, 2 * pad + 1, dtype=jnp.int32)
        dx = jax.random.randint(k_dx, shape, 0, 2 * pad + 1, dtype=jnp.int32)
    else:
        dy = dx = jnp.full(shape, pad, dtype=jnp.int32)
    flips = jax.random.bernoulli(k_flip, 0.5, shape) if flip else jnp.zeros(shape, bool)
    cy = jax.random.randint(k_cy, shape, 0, height, dtype=jnp.int32)
    cx = jax.random.randint(k_cx, shape, 0, width, dtype=jnp.int32)
    return AugParams(dy, dx, flips, cy, cx)


def normalize(x: Array, mean: ChannelStats, std: ChannelStats) -> Array:
    """uint8 images to float32, scaled to [0, 1] and standardised per channel.

    Args:
      x: uint8 [..., 3] images.
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel std on the [0, 1] scale.

    Returns:
      float32 (x / 255 - mean) / std, same shape as ``x``.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (jnp.asarray(x, jnp.float32) * (1.0 / 255.0) - mean) / std


def crop_flip(x: Array, params: AugParams, *, pad: int = 4) -> Array:
    """Zero-padded crop and horizontal flip of a uint8 batch for given draws.

    Output pixel (i, j) of sample b reads source pixel (i + dy - pad, j' + dx -
    pad) with j' = W - 1 - j when flipped, else j; sources outside the image
    read 0 (the zero padding). One vectorised gather, no per-sample control
    flow.

    Args:
      x: uint8 [B, H, W, C] images.
      params: the draws from :func:`sample_params`.
      pad: crop padding the offsets refer to.

    Returns:
      uint8 [B, H, W, C] cropped and flipped images.
    """
    b, h, w, _ = x.shape
    rows = jnp.arange(h, dtype=jnp.int32)[None, :] + params.dy[:, None] - pad  # [B, H]
    cols = jnp.arange(w, dtype=jnp.int32)[None, :]
    cols = jnp.where(params.flip[:, None], w - 1 - cols, cols) + params.dx[:, None] - pad
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    batch = jnp.arange(b)[:, None, None]
    out = x[batch, jnp.clip(rows, 0, h - 1)[:, :, None], jnp.clip(cols, 0, w - 1)[:, None, :]]
    return jnp.where(inside[..., None], out, jnp.zeros((), x.dtype))


def cutout_mask(params: AugParams, height: int, width: int, size: int) -> Array:
    """True inside each sample's Cutout square, clipped at the image borders.

    The square is rows [cy - size//2, cy + size//2) by columns
    [cx - size//2, cx + size//2), as in the original Cutout code.

    Args:
      params: the draws from :func:`sample_params` (cy, cx are used).
      height: H.
      width: W.
      size: the side L.

    Returns:
      bool [B, H, W].
    """
    half = size // 2
    r, c = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
    cy, cx = params.cy[:, None], params.cx[:, None]
    in_rows = (r >= jnp.clip(cy - half, 0, height)) & (r < jnp.clip(cy + half, 0, height))
    in_cols = (c >= jnp.clip(cx - half, 0, width)) & (c < jnp.clip(cx + half, 0, width))
    return in_rows[:, :, None] & in_cols[:, None, :]


def apply_params(
    x: Array,
    params: AugParams,
    mean: ChannelStats,
    std: ChannelStats,
    *,
    pad: int = 4,
    cutout: int = 0,
) -> Array:
    """Applies given crop offsets, flips and cutout centres to a uint8 batch.

    Args:
      x: uint8 [B, H, W, C] images.
      params: the draws from :func:`sample_params`.
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel std on the [0, 1] scale.
      pad: crop padding the offsets refer to.
      cutout: side L of the Cutout square; 0 disables it.

    Returns:
      float32 [B, H, W, C] normalised, augmented images.
    """
    _, h, w, _ = x.shape
    out = normalize(crop_flip(x, params, pad=pad), mean, std)
    if cutout > 0:
        out = jnp.where(cutout_mask(params, h, w, cutout)[..., None], 0.0, out)
    return out


def augment(
    key: PRNGKey,
    x: Array,
    mean: ChannelStats,
    std: ChannelStats,
    *,
    crop: bool = True,
    flip: bool = True,
    cutout: int = 0,
    pad: int = 4,
) -> Array:
    """Random crop (zero padding), horizontal flip, normalisation and optional Cutout.

    Args:
      key: the batch key (see :func:`batch_key`).
      x: uint8 [B, H, W, C] images.
      mean: per-channel mean on the [0, 1] scale (``Dataset.mean``).
      std: per-channel std on the [0, 1] scale (``Dataset.std``).
      crop: random crop with ``pad`` pixels of zero padding.
      flip: random horizontal flip with probability 1/2.
      cutout: Cutout side length (config ``data.cutout``); 0 disables it.
      pad: crop padding (4 for CIFAR).

    Returns:
      float32 [B, H, W, C] augmented, normalised images.
    """
    b, h, w, _ = x.shape
    params = sample_params(key, b, h, w, pad=pad, crop=crop, flip=flip)
    return apply_params(x, params, mean, std, pad=pad, cutout=cutout)
