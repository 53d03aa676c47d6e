"""Patch shuffling of the sent activation (comdml_jax.privacy.shuffle)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.privacy import shuffle

# Jitted (patch size static): eager JAX dispatches op by op, slow on a shared CPU.
shuffle_patches = jax.jit(shuffle.shuffle_patches, static_argnums=2)


def _patches_np(z: np.ndarray, p: int) -> np.ndarray:
    """[B, n, p*p*C] patches, row-major over the grid, by explicit slicing."""
    b, h, w, c = z.shape
    out = [
        [
            z[i, r : r + p, s : s + p, :].reshape(-1)
            for r in range(0, h - p + 1, p)
            for s in range(0, w - p + 1, p)
        ]
        for i in range(b)
    ]
    return np.asarray(out)


def _sorted_rows(a: np.ndarray) -> list[bytes]:
    return sorted(row.tobytes() for row in a)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_preserves_each_samples_multiset_of_patches(p):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 8, 8, 5)).astype(np.float32)
    out = np.asarray(shuffle_patches(jnp.asarray(z), jax.random.key(0), p))
    pz, po = _patches_np(z, p), _patches_np(out, p)
    for i in range(z.shape[0]):
        assert _sorted_rows(pz[i]) == _sorted_rows(po[i])
    assert not np.array_equal(out, z)


def test_differs_between_samples_and_between_steps():
    rng = np.random.default_rng(1)
    one = rng.normal(size=(1, 8, 8, 3)).astype(np.float32)
    z = jnp.asarray(np.repeat(one, 4, axis=0))  # four identical samples, 16 patches each
    a = np.asarray(shuffle_patches(z, jax.random.key(7), 2))
    for i in range(1, 4):
        assert not np.array_equal(a[0], a[i])  # 1/16! chance of a tie
    b = np.asarray(shuffle_patches(z, jax.random.fold_in(jax.random.key(7), 1), 2))
    assert not np.array_equal(a, b)
    again = np.asarray(shuffle_patches(z, jax.random.key(7), 2))
    np.testing.assert_array_equal(a, again)  # keyed: reproducible


def test_keeps_channels_and_pixel_blocks_together():
    # Encode each pixel's (row, col) and channel: value = (row * W + col) * C + channel.
    b, h, w, c, p = 2, 6, 8, 4, 2
    rows, cols, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    z = np.broadcast_to(((rows * w + cols) * c + ch).astype(np.float32), (b, h, w, c))
    out = np.asarray(shuffle_patches(jnp.asarray(z), jax.random.key(3), p))
    src = out[..., 0] / c  # the source pixel of every output pixel
    # every pixel keeps its channels, in order: not a channel permutation
    np.testing.assert_array_equal(out - out[..., :1], np.broadcast_to(np.arange(c), out.shape))
    src_r, src_c = src // w, src % w
    offsets = np.arange(p)
    for i in range(b):
        for r in range(0, h, p):
            for s in range(0, w, p):
                br, bc = src_r[i, r : r + p, s : s + p], src_c[i, r : r + p, s : s + p]
                # the block comes from one aligned p x p source block, arranged as it was
                assert br[0, 0] % p == 0 and bc[0, 0] % p == 0
                np.testing.assert_array_equal(
                    br - br[0, 0], np.broadcast_to(offsets[:, None], (p, p))
                )
                np.testing.assert_array_equal(
                    bc - bc[0, 0], np.broadcast_to(offsets[None, :], (p, p))
                )
    assert not np.array_equal(out, z)


def test_remainder_rows_and_columns_stay_in_place():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, 7, 5, 3)).astype(np.float32)  # p = 2: 3 x 2 patches + remainder
    out = np.asarray(shuffle_patches(jnp.asarray(z), jax.random.key(5), 2))
    np.testing.assert_array_equal(out[:, 6:, :, :], z[:, 6:, :, :])
    np.testing.assert_array_equal(out[:, :, 4:, :], z[:, :, 4:, :])
    pz, po = _patches_np(z[:, :6, :4], 2), _patches_np(out[:, :6, :4], 2)
    for i in range(2):
        assert _sorted_rows(pz[i]) == _sorted_rows(po[i])
    assert not np.array_equal(out, z)


def test_a_single_patch_is_left_unchanged_and_eager_agrees():
    z = jnp.asarray(np.random.default_rng(6).normal(size=(2, 4, 4, 3)), jnp.float32)
    np.testing.assert_array_equal(shuffle_patches(z, jax.random.key(0), 4), z)
    np.testing.assert_array_equal(shuffle_patches(z, jax.random.key(0), 5), z)
    f = jax.jit(shuffle_patches, static_argnums=2)
    np.testing.assert_array_equal(
        f(z, jax.random.key(1), 2), shuffle_patches(z, jax.random.key(1), 2)
    )
