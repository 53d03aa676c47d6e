"""Batch normalisation fused with the residual add and ReLU, with a hand-derived backward.

``y = relu(BN(x) + residual)`` is one ``jax.custom_vjp`` (:func:`bn_act`). Its
forward makes one pass for the two batch moments and one for y; its backward
saves only x and y (both of which the network keeps anyway: x is the
convolution output, y the next layer's input) and makes one pass for the two
per-channel reductions and one for dx. Left to autodiff, XLA:CPU splits the
same gradient into several passes and recomputes the BN-ReLU chain inside
every consumer (docs/cpu_speed_experiments.md, *Kept lowerings and XLA
options*). On CPU (``bn_impl="materialize"``) y also goes through
:func:`materialize`, which makes XLA:CPU compute it once for all its consumers
instead of fusing (and recomputing) it into each. The statistics
follow ``flax.linen.BatchNorm``: biased batch variance, running averages with
momentum.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from comdml_jax import catalog

Array = jax.Array


def _reduce_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))


def _moments(x: Array) -> tuple[Array, Array]:
    """Mean and biased variance over all axes but the last, E[x^2] - E[x]^2."""
    axes = _reduce_axes(x)
    n = x.size // x.shape[-1]
    mean = jnp.sum(x, axes) / n
    var = jnp.maximum(jnp.sum(jnp.square(x), axes) / n - jnp.square(mean), 0.0)
    return mean, var


IMPLS = catalog.BN_IMPLS  # ("auto", "plain", "materialize")


def resolve_impl(impl: str, platform: str | None = None) -> str:
    """``auto``: ``materialize`` on CPU (measured faster there), ``plain`` elsewhere."""
    if impl not in IMPLS:
        raise ValueError(
            f"model.bn_impl={impl!r} is not one of {IMPLS}; set --config.model.bn_impl"
        )
    if impl != "auto":
        return impl
    return "materialize" if (platform or jax.default_backend()) == "cpu" else "plain"


def materialize(y: Array) -> Array:
    """``y`` itself, computed once: an identity row gather that XLA:CPU will not duplicate.

    XLA:CPU fuses a cheap elementwise producer into every consumer, so a block
    output read by the next block, its residual add and the backward is
    recomputed, recursively, in each. A gather is "expensive" to XLA's fusion
    pass, so its consumers read the one materialised result.
    """
    flat = y.reshape(-1, y.shape[-1])
    rows = jnp.arange(flat.shape[0], dtype=jnp.int32)
    flat = flat.at[rows].get(mode="promise_in_bounds", unique_indices=True, indices_are_sorted=True)
    return flat.reshape(y.shape)


def _affine_act(x, scale, bias, mean, rstd, residual, relu):
    """``act((x - mean) * rstd * scale + bias + residual)`` as one per-channel multiply-add."""
    mult = scale * rstd
    y = x * mult + (bias - mean * mult)
    if residual is not None:
        y = y + residual
    return jnp.maximum(y, 0.0) if relu else y


def _forward(x, scale, bias, residual, eps, relu, once):
    mean, var = _moments(x)
    rstd = lax.rsqrt(var + eps)
    y = _affine_act(x, scale, bias, mean, rstd, residual, relu)
    if once:
        y = materialize(y)
    return y, mean, var, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def bn_act(
    x: Array,
    scale: Array,
    bias: Array,
    residual: Array | None,
    eps: float,
    relu: bool,
    once: bool = False,
):
    """Training-mode ``act(BN(x) + residual)`` over the last axis.

    Args:
      x: [..., C] activations.
      scale: [C] gamma.
      bias: [C] beta.
      residual: [..., C] added after the normalisation, or None.
      eps: variance epsilon.
      relu: apply ReLU at the end.
      once: compute y once for all its consumers (:func:`materialize`); the
        XLA:CPU lowering.

    Returns:
      (y, mean, var): the output and the batch moments (for the running
      averages; they carry no gradient).
    """
    y, mean, var, _ = _forward(x, scale, bias, residual, eps, relu, once)
    return y, mean, var


def _bn_act_fwd(x, scale, bias, residual, eps, relu, once):
    y, mean, var, rstd = _forward(x, scale, bias, residual, eps, relu, once)
    return (y, mean, var), (x, y, scale, mean, rstd, residual is not None)


def _bn_act_bwd(eps, relu, once, saved, cotangents):
    del eps, once
    x, y, scale, mean, rstd, has_residual = saved
    dy = cotangents[0]  # the moments' cotangents only feed the running averages
    axes = _reduce_axes(x)
    n = x.size // x.shape[-1]
    g = jnp.where(y > 0, dy, 0.0) if relu else dy  # gradient at BN(x) + residual
    dbias = jnp.sum(g, axes)
    # sum(g * xhat) with xhat = (x - mean) * rstd, without materialising xhat.
    dscale = rstd * (jnp.sum(g * x, axes) - mean * dbias)
    # dx = scale*rstd/n * (n g - dbias - xhat dscale), as a*g + b*x + c per channel.
    a = scale * rstd
    b = -a * rstd * dscale / n
    c = -a * dbias / n - b * mean
    dx = a * g + b * x + c
    return dx, dscale, dbias, (g if has_residual else None)


bn_act.defvjp(_bn_act_fwd, _bn_act_bwd)


def bn_act_reference(x, scale, bias, residual, eps, relu):
    """The same function by plain autodiff (tests compare against it)."""
    mean, var = _moments(x)
    y = (x - mean) * lax.rsqrt(var + eps) * scale + bias
    if residual is not None:
        y = y + residual
    return (jnp.maximum(y, 0.0) if relu else y), mean, var


class BatchNormAct(nn.Module):
    """``act(BN(x) + residual)``; variables named as ``flax.linen.BatchNorm``'s.

    Attributes:
      use_running_average: evaluation mode (normalise with the running stats).
      relu: apply ReLU after the (optional) residual add.
      momentum: running-average decay, 0.9 = PyTorch's 0.1.
      epsilon: variance epsilon.
      impl: a resolved implementation (see :func:`resolve_impl`).
    """

    use_running_average: bool = False
    relu: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5
    impl: str = "plain"

    @nn.compact
    def __call__(self, x: Array, residual: Array | None = None) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.use_running_average:
            rstd = lax.rsqrt(ra_var.value + self.epsilon)
            return _affine_act(x, scale, bias, ra_mean.value, rstd, residual, self.relu)
        once = self.impl == "materialize"
        y, mean, var = bn_act(x, scale, bias, residual, self.epsilon, self.relu, once)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * lax.stop_gradient(mean)
            ra_var.value = m * ra_var.value + (1 - m) * lax.stop_gradient(var)
        return y
