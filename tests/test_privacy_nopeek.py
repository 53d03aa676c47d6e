"""NoPeek's sample distance correlation (comdml_jax.privacy.nopeek)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.privacy import nopeek

# Jitted: eager JAX dispatches op by op, which is slow on a shared 2-core CPU.
distance_correlation = jax.jit(nopeek.distance_correlation)
nopeek_loss = jax.jit(nopeek.nopeek_loss)


def _reference_dcor(x: np.ndarray, z: np.ndarray) -> float:
    """Székely et al. (2007), in float64 from explicit pairwise differences, no eps."""

    def centred(v):
        v = v.reshape(v.shape[0], -1).astype(np.float64)
        d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
        return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()

    a, b = centred(x), centred(z)
    return float(np.sqrt((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())))


def test_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 4, 2)).astype(np.float32)
    z = (np.tanh(x.reshape(24, -1)[:, :10]) + 0.5 * rng.normal(size=(24, 10))).astype(np.float32)
    got = float(distance_correlation(jnp.asarray(x), jnp.asarray(z)))
    assert got == pytest.approx(_reference_dcor(x, z), abs=2e-5)
    assert 0.2 < got < 0.95  # a partly dependent pair, so the check is not at an endpoint


def test_is_one_for_a_similarity_transform():
    # z = c Q x + b with Q having orthonormal columns (here embedding 24 dims into 40)
    # keeps every pairwise distance up to the factor c, so dCor is exactly 1.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 24)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    z = 3.0 * x @ q[:24] + rng.normal(size=(1, 40))
    assert float(distance_correlation(jnp.asarray(x), jnp.asarray(z, jnp.float32))) == (
        pytest.approx(1.0, abs=1e-4)
    )
    # and dCor(x, x) = 1 for an NHWC batch
    xi = jnp.asarray(rng.normal(size=(16, 4, 4, 3)), jnp.float32)
    assert float(distance_correlation(xi, xi)) == pytest.approx(1.0, abs=1e-4)


def test_is_near_zero_for_independent_samples():
    # For independent x and z, n * dCov_n^2 converges in distribution (Székely et al.
    # 2007, Thm. 5), so the sample dCor is O(n^-1/2): about 0.07 at n = 2000 for these
    # low-dimensional normals; 0.15 leaves a wide margin. A dependent, uncorrelated
    # pair (z = x^2) stays far above it.
    rng = np.random.default_rng(2)
    n = 2000
    x = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    assert float(distance_correlation(x, z)) < 0.15
    assert float(distance_correlation(x, x**2)) > 0.35


def test_gradient_is_finite_also_for_a_constant_batch():
    grad = jax.jit(jax.grad(nopeek.distance_correlation, argnums=(0, 1)))
    x = jnp.ones((8, 4, 4, 3))
    z = jnp.full((8, 2, 2, 5), 2.0)
    for g in grad(x, z):
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.isfinite(float(distance_correlation(x, z)))
    # a batch with duplicated samples (zero off-diagonal distances) and a random one
    rng = np.random.default_rng(3)
    xr = jnp.asarray(rng.normal(size=(8, 12)), jnp.float32)
    xd = xr.at[1].set(xr[0])
    for a in (xr, xd):
        for g in grad(a, jnp.tanh(a[:, :5])):
            assert np.all(np.isfinite(np.asarray(g)))
            assert np.any(np.asarray(g) != 0)


def test_nopeek_loss_weights_ce_and_dcor():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    d = float(distance_correlation(x, z))
    assert float(nopeek_loss(jnp.float32(2.0), x, z, 0.25)) == pytest.approx(
        0.75 * 2.0 + 0.25 * d, rel=1e-6
    )
    assert float(nopeek_loss(jnp.float32(2.0), x, z, 0.0)) == 2.0
