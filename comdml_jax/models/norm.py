"""Batch normalisation with a hand-derived, single-pass backward.

The forward is the textbook training-mode batch norm (biased batch variance,
running averages with momentum, as ``flax.linen.BatchNorm``). The difference
is the gradient: :func:`batch_norm_train` is a ``jax.custom_vjp`` whose
backward makes one fused pass for the two per-channel reductions and one
elementwise pass for dx. Left to autodiff, XLA:CPU splits the same gradient
into several passes and fuses them into neighbouring ops with recomputation
(issue 6).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _moments(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Mean and biased variance in one pass over ``x`` (E[x^2] - E[x]^2)."""
    n = 1
    for a in axes:
        n *= x.shape[a]
    mean = jnp.sum(x, axes) / n
    mean_sq = jnp.sum(jnp.square(x), axes) / n
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: Array, scale: Array, bias: Array, eps: float):
    """Training-mode batch norm over all axes but the last.

    Args:
      x: [..., C] activations.
      scale: [C] gamma.
      bias: [C] beta.
      eps: variance epsilon.

    Returns:
      (y, mean, var): the normalised output and the batch moments (the moments
      carry no gradient; they feed the running averages).
    """
    y, mean, var, _ = _bn_fwd_impl(x, scale, bias, eps)
    return y, mean, var


def _bn_fwd_impl(x, scale, bias, eps):
    axes = tuple(range(x.ndim - 1))
    mean, var = _moments(x, axes)
    rstd = jax.lax.rsqrt(var + eps)
    mult = scale * rstd
    y = x * mult + (bias - mean * mult)
    return y, mean, var, rstd


def _bn_fwd(x, scale, bias, eps):
    y, mean, var, rstd = _bn_fwd_impl(x, scale, bias, eps)
    return (y, mean, var), (x, scale, mean, rstd)


def _bn_bwd(eps, res, cotangents):
    del eps
    x, scale, mean, rstd = res
    dy, _, _ = cotangents  # the moments' cotangents are zero by construction
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xhat = (x - mean) * rstd
    dbias = jnp.sum(dy, axes)
    dscale = jnp.sum(dy * xhat, axes)
    dx = (scale * rstd / n) * (n * dy - dbias - xhat * dscale)
    return dx, dscale, dbias


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


class BatchNorm(nn.Module):
    """Drop-in for ``nn.BatchNorm`` over the last axis (same variable names).

    Attributes:
      use_running_average: evaluation mode (normalise with the running stats).
      momentum: running-average decay, 0.9 = PyTorch's 0.1.
      epsilon: variance epsilon.
      scale_init: gamma initialiser.
    """

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    scale_init: nn.initializers.Initializer = nn.initializers.ones

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", self.scale_init, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.use_running_average:
            mult = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
            return x * mult + (bias - ra_mean.value * mult)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
            ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
        return y
