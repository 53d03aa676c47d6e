"""DP on model updates: clipping, noise, placements (comdml_jax.privacy.dp)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.privacy import dp
from comdml_jax.privacy.config import DpSpec

N = 200_000  # noise coordinates per agent: standard errors of ~0.2%


def _apply(spec: DpSpec, updates, keys):
    tx = dp.privatize(spec)
    fn = jax.jit(lambda u, k: tx.update(u, tx.init(u), keys=k)[0])
    return fn(updates, keys)


def _stacked(scales):
    """P agents' updates as a pytree, agent i's entries of magnitude ~scales[i]."""
    rng = np.random.default_rng(0)
    s = np.asarray(scales, np.float32)
    return {
        "conv": {
            "kernel": jnp.asarray(rng.normal(size=(len(s), 3, 3, 2)) * s[:, None, None, None])
        },
        "bn": {"bias": jnp.asarray(rng.normal(size=(len(s), 5)) * s[:, None])},
        "var": jnp.asarray(rng.normal(size=(len(s), 4)) * s[:, None]),
    }


def _norms(tree, ord_):
    leaves = [np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree.leaves(tree)]
    flat = np.concatenate(leaves, axis=1)
    return np.abs(flat).sum(1) if ord_ == 1 else np.sqrt((flat**2).sum(1))


def _keys(p, seed=0):
    return jax.random.split(jax.random.key(seed), p)


@pytest.mark.parametrize("mechanism, ord_", [("gaussian", 2), ("laplace", 1)])
def test_every_clipped_update_is_within_the_bound(mechanism, ord_):
    clip = 1.5
    updates = _stacked([1e-3, 0.05, 0.3, 1.0, 10.0, 300.0])
    before = _norms(updates, ord_)
    assert before.min() < clip < before.max()  # some agents are clipped, some not
    spec = DpSpec(
        mechanism=mechanism, clip_norm=clip, noise_multiplier=0.0, epsilon_per_round=math.inf
    )
    out = _apply(spec, updates, _keys(6))
    after = _norms(out, ord_)
    assert np.all(after <= clip * (1 + 1e-6))  # float32 rounding of the scale
    for i in range(6):
        mine = jax.tree.map(lambda x, i=i: np.asarray(x[i], np.float64), (updates, out))
        ratio = after[i] / before[i]
        for u, o in zip(jax.tree.leaves(mine[0]), jax.tree.leaves(mine[1]), strict=True):
            np.testing.assert_allclose(o, u * min(1.0, ratio), rtol=1e-5, atol=1e-12)
        if before[i] > clip:
            assert after[i] == pytest.approx(clip, rel=1e-5)
        else:
            assert after[i] == pytest.approx(before[i], rel=1e-6)
    # the library's norm helper agrees with the float64 one
    np.testing.assert_allclose(dp.update_norms(out, ord_), after, rtol=1e-5)


def test_local_gaussian_noise_std_matches_sigma_times_clip():
    sigma, clip = 0.7, 2.0
    spec = DpSpec(mechanism="gaussian", clip_norm=clip, noise_multiplier=sigma)
    zeros = {"w": jnp.zeros((2, N)), "b": jnp.zeros((2, 10))}
    noise = np.asarray(_apply(spec, zeros, _keys(2))["w"], np.float64)
    std = sigma * clip
    for a in range(2):
        # sample std of n normals: standard error std / sqrt(2n); mean: std / sqrt(n)
        assert abs(noise[a].std() - std) < 5 * std / math.sqrt(2 * N)
        assert abs(noise[a].mean()) < 5 * std / math.sqrt(N)
    # independent agents (own keys): correlation within 5 standard errors of 0
    assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 5 / math.sqrt(N)


def test_local_laplace_noise_scale_matches_clip_over_epsilon():
    eps, clip = 0.5, 3.0
    spec = DpSpec(mechanism="laplace", clip_norm=clip, epsilon_per_round=eps)
    zeros = {"w": jnp.zeros((2, N))}
    noise = np.asarray(_apply(spec, zeros, _keys(2, seed=1))["w"], np.float64)
    b = clip / eps
    for a in range(2):
        # |X| ~ Exponential(b): mean b, std b, so the standard error of mean |X| is b / sqrt(n)
        assert abs(np.abs(noise[a]).mean() - b) < 5 * b / math.sqrt(N)
        # Laplace, not Gaussian: E|X| / std is 1/sqrt(2) = 0.707 (a Gaussian gives 0.798)
        assert np.abs(noise[a]).mean() / noise[a].std() == pytest.approx(1 / math.sqrt(2), abs=0.01)


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_central_noise_is_calibrated_to_the_weighted_mean(mechanism):
    sigma, eps, clip = 1.3, 0.5, 2.0
    spec = DpSpec(
        mechanism=mechanism,
        placement="central",
        clip_norm=clip,
        noise_multiplier=sigma,
        epsilon_per_round=eps,
    )
    weights = np.array([1.0, 3.0, 4.0, 0.0])  # the last is a padded agent
    s = clip * 4.0 / 8.0  # C * max w / sum w
    assert float(dp.mean_sensitivity(spec, weights)) == pytest.approx(s)
    fn = jax.jit(lambda m, k, w: dp.central_noise(m, k, spec, w))
    noise = np.asarray(fn({"w": jnp.zeros(N)}, jax.random.key(3), weights)["w"], np.float64)
    if mechanism == "gaussian":
        assert abs(noise.std() - sigma * s) < 5 * sigma * s / math.sqrt(2 * N)
    else:
        assert abs(np.abs(noise).mean() - s / eps) < 5 * (s / eps) / math.sqrt(N)
    # the per-agent half of central DP clips but adds no noise
    updates = {"w": jnp.full((4, 8), 0.01)}
    out = _apply(spec, updates, _keys(4))
    np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(updates["w"]))


def _bits(tree):
    return [np.asarray(x).view(np.uint32) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("placement", ["local", "central"])
@pytest.mark.parametrize("mechanism", ["none", "gaussian", "laplace"])
def test_no_noise_and_no_clip_change_nothing_bit_for_bit(mechanism, placement):
    spec = DpSpec(
        mechanism=mechanism,
        placement=placement,
        clip_norm=math.inf,
        noise_multiplier=0.0,
        epsilon_per_round=math.inf,
    )
    updates = _stacked([1e-30, 1.0, 1e30])
    updates["bn"]["bias"] = updates["bn"]["bias"].at[0, 0].set(-0.0).at[1, 1].set(0.0)
    out = _apply(spec, updates, _keys(3))
    for a, b in zip(_bits(updates), _bits(out), strict=True):
        np.testing.assert_array_equal(a, b)
    mean = jax.tree.map(lambda x: x[1], updates)
    noised = jax.jit(lambda m, k: dp.central_noise(m, k, spec, np.ones(3)))(mean, jax.random.key(0))
    for a, b in zip(_bits(mean), _bits(noised), strict=True):
        np.testing.assert_array_equal(a, b)


def test_local_noise_is_keyed_per_agent():
    spec = DpSpec(mechanism="gaussian", clip_norm=1.0, noise_multiplier=1.0)
    zeros = {"w": jnp.zeros((3, 64))}
    keys = _keys(3)
    a = np.asarray(_apply(spec, zeros, keys)["w"])
    np.testing.assert_array_equal(a, np.asarray(_apply(spec, zeros, keys)["w"]))
    assert not np.array_equal(a[0], a[1])
    # agent 1's noise depends only on agent 1's key
    other = keys.at[0].set(jax.random.key(99))
    b = np.asarray(_apply(spec, zeros, other)["w"])
    np.testing.assert_array_equal(a[1:], b[1:])
    assert not np.array_equal(a[0], b[0])


def test_clamp_variances_touches_only_var_leaves():
    model = {
        "params": {"s00": {"bn": {"bias": jnp.array([-1.0, 2.0]), "scale": jnp.array([-3.0])}}},
        "batch_stats": {
            "s00": {"bn": {"mean": jnp.array([-1.0, 2.0]), "var": jnp.array([-0.5, 0.3, 0.0])}}
        },
    }
    out = dp.clamp_variances(model)
    np.testing.assert_array_equal(
        out["batch_stats"]["s00"]["bn"]["var"], np.float32([0.0, 0.3, 0.0])
    )
    np.testing.assert_array_equal(out["batch_stats"]["s00"]["bn"]["mean"], [-1.0, 2.0])
    np.testing.assert_array_equal(out["params"]["s00"]["bn"]["bias"], [-1.0, 2.0])
    np.testing.assert_array_equal(out["params"]["s00"]["bn"]["scale"], [-3.0])
    floored = dp.clamp_variances(model["batch_stats"], floor=1e-3)
    np.testing.assert_allclose(floored["s00"]["bn"]["var"], [1e-3, 0.3, 1e-3])
