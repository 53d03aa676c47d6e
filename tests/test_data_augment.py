"""JAX augmentation against a numpy reference: crop (zero padding), flip, normalise, Cutout."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.data.augment import (
    AugParams,
    apply_params,
    augment,
    batch_key,
    crop_flip,
    normalize,
    sample_params,
)

MEAN = np.array([0.5, 0.4, 0.3], np.float32)
STD = np.array([0.25, 0.2, 0.3], np.float32)
B = 8  # one batch shape for most tests, so the jitted functions compile once

# Jitted once per module: eager op-by-op dispatch would compile every primitive.
aug = jax.jit(augment, static_argnames=("crop", "flip", "cutout", "pad"))
sample = jax.jit(sample_params, static_argnums=(1, 2, 3), static_argnames=("pad", "crop", "flip"))
crop_flip_j = jax.jit(crop_flip, static_argnames="pad")
apply_j = jax.jit(apply_params, static_argnames=("pad", "cutout"))


def _images(b, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


def _ref_crop_flip(x, dy, dx, flip, pad=4):
    """torchvision RandomCrop(padding=pad) + RandomHorizontalFlip for given draws."""
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(len(x))])
    return np.where(np.asarray(flip)[:, None, None, None], out[:, :, ::-1], out)


def _ref_normalize(x):
    return (x.astype(np.float32) / 255.0 - MEAN) / STD


def _params(dy, dx, flip, cy=0, cx=0):
    n = len(dy)
    return AugParams(
        jnp.asarray(dy, jnp.int32),
        jnp.asarray(dx, jnp.int32),
        jnp.asarray(flip, bool),
        jnp.full(n, cy, jnp.int32),
        jnp.full(n, cx, jnp.int32),
    )


def test_normalize_by_hand():
    x = np.array([[[[0, 255, 51]]]], np.uint8)
    got = np.asarray(normalize(x, MEAN, STD))
    want = [(0 - 0.5) / 0.25, (1 - 0.4) / 0.2, (0.2 - 0.3) / 0.3]
    np.testing.assert_allclose(got[0, 0, 0], want, rtol=1e-6)
    assert got.dtype == np.float32


def test_crop_flip_matches_numpy_reference_for_drawn_params():
    x = _images(64)
    params = sample(jax.random.key(3), 64, 32, 32)
    got = np.asarray(crop_flip_j(x, params))
    want = _ref_crop_flip(x, np.asarray(params.dy), np.asarray(params.dx), np.asarray(params.flip))
    assert np.array_equal(got, want)


def test_augment_is_sample_params_then_reference():
    x = _images(B)
    key = jax.random.key(11)
    params = sample(key, B, 32, 32)
    ref = _ref_crop_flip(x, np.asarray(params.dy), np.asarray(params.dx), np.asarray(params.flip))
    got = np.asarray(aug(key, x, MEAN, STD))
    np.testing.assert_allclose(got, _ref_normalize(ref), rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == x.shape


def test_crop_shifts_at_most_pad_with_zeros_coming_in():
    x = _images(2)
    # dy = dx = 8: content moves up-left by 4; dy = dx = 0: down-right by 4.
    out = np.asarray(crop_flip_j(x, _params([8, 0], [8, 0], [False, False])))
    assert np.array_equal(out[0, :28, :28], x[0, 4:, 4:])
    assert not out[0, 28:].any() and not out[0, :, 28:].any()
    assert np.array_equal(out[1, 4:, 4:], x[1, :28, :28])
    assert not out[1, :4].any() and not out[1, :, :4].any()
    # dy = dx = 4 is the identity.
    assert np.array_equal(np.asarray(crop_flip_j(x, _params([4, 4], [4, 4], [False] * 2))), x)


def test_drawn_offsets_cover_exactly_zero_to_eight_and_flip_is_fair():
    params = sample(jax.random.key(0), 4000, 32, 32)
    for offsets in (params.dy, params.dx):
        assert set(np.unique(np.asarray(offsets)).tolist()) == set(range(9))
    # Binomial(4000, 1/2): sd 0.0079, so +-0.04 is over 5 sd.
    assert abs(float(np.mean(params.flip)) - 0.5) < 0.04
    assert np.asarray(params.cy).min() >= 0 and np.asarray(params.cy).max() == 31


def test_flip_is_a_mirror():
    x = _images(2)
    out = np.asarray(crop_flip_j(x, _params([4] * 2, [4] * 2, [True] * 2)))
    assert np.array_equal(out, x[:, :, ::-1])


def test_crop_and_flip_can_be_turned_off():
    x = _images(B)
    got = np.asarray(aug(jax.random.key(0), x, MEAN, STD, crop=False, flip=False))
    np.testing.assert_allclose(got, _ref_normalize(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("cy", "cx", "rows", "cols"),
    [
        (10, 20, (2, 18), (12, 28)),  # inside: [c - 8, c + 8)
        (0, 5, (0, 8), (0, 13)),  # clipped at the top / left border
        (31, 30, (23, 32), (22, 32)),  # clipped at the bottom / right border
    ],
)
def test_cutout_zeroes_exactly_the_clipped_square(cy, cx, rows, cols):
    x = _images(1)
    params = _params([4], [4], [False], cy=cy, cx=cx)
    got = np.asarray(apply_j(x, params, MEAN, STD, cutout=16))[0]
    want = _ref_normalize(x)[0]
    want[rows[0] : rows[1], cols[0] : cols[1]] = 0.0
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # No pixel outside the square normalises to exactly 0 (255 * mean is never an integer).
    assert np.count_nonzero(got == 0.0) == 3 * (rows[1] - rows[0]) * (cols[1] - cols[0])


def test_same_key_same_output():
    x = _images(B)
    key = batch_key(jax.random.key(0), 3, 1, 2)
    a = aug(key, x, MEAN, STD, cutout=16)
    b = aug(batch_key(jax.random.key(0), 3, 1, 2), x, MEAN, STD, cutout=16)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batch_key_is_the_fold_in_chain_and_separates_rounds_agents_batches():
    seed = jax.random.key(7)
    manual = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(seed, 2), 5), 1)
    assert np.array_equal(
        jax.random.key_data(batch_key(seed, 2, 5, 1)), jax.random.key_data(manual)
    )
    x = _images(B)

    def out(r, a, b):
        return np.asarray(aug(batch_key(seed, r, a, b), x, MEAN, STD))

    base = out(0, 0, 0)
    for other in (out(1, 0, 0), out(0, 1, 0), out(0, 0, 1)):
        assert not np.array_equal(base, other)


def test_vmap_over_agents_matches_per_agent_calls():
    num_agents = 3
    x = np.stack([_images(B, seed=s) for s in range(num_agents)])
    seed = jax.random.key(1)
    keys = jax.vmap(lambda a: batch_key(seed, 4, a, 0))(jnp.arange(num_agents))
    fn = jax.jit(jax.vmap(lambda k, xb: augment(k, xb, MEAN, STD, cutout=8)))
    got = np.asarray(fn(keys, x))
    for a in range(num_agents):
        want = aug(batch_key(seed, 4, a, 0), x[a], MEAN, STD, cutout=8)
        np.testing.assert_allclose(got[a], np.asarray(want), rtol=1e-6, atol=1e-6)


def test_new_keys_do_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, x):
        return augment(key, x, MEAN, STD, cutout=16)

    x = _images(B)
    for r in range(3):
        run(batch_key(jax.random.key(0), r, 0, 0), x)
