"""2-D convolution with a per-backend, per-shape choice of XLA lowering.

Every model builds its convolutions through :class:`Conv`, so the choice of
lowering lives in one place (issue 6). Implementations, all NHWC / HWIO and
numerically equal to ``lax.conv_general_dilated``:

* ``xla``: ``lax.conv_general_dilated``. cuDNN on GPU, the TPU convolution
  unit on TPU, Eigen's spatial convolution on CPU.
* ``matmul``: 1x1 (and strided 1x1) convolutions as one matrix product over
  the flattened pixels. XLA:CPU runs the product on its GEMM path, several
  times faster than its convolution path, in particular for the weight
  gradient. Larger kernels use the ``xla`` path.

``auto`` resolves to ``matmul`` on CPU and ``xla`` elsewhere. The resolution is
static, taken when the model is built, so a compiled step never branches.
:func:`compiler_options` holds the per-platform XLA options that go with it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
from jax import lax

Array = jax.Array
Padding = Sequence[tuple[int, int]]

IMPLS = ("auto", "xla", "matmul")


def resolve_impl(impl: str, platform: str | None = None) -> str:
    """Maps ``auto`` to the fastest measured lowering for ``platform``.

    Args:
      impl: one of :data:`IMPLS`.
      platform: a JAX platform name; defaults to ``jax.default_backend()``.

    Returns:
      A concrete implementation name (not ``auto``).
    """
    if impl not in IMPLS:
        raise ValueError(
            f"model.conv_impl={impl!r} is not one of {IMPLS}; set --config.model.conv_impl"
        )
    if impl != "auto":
        return impl
    platform = platform or jax.default_backend()
    return "matmul" if platform == "cpu" else "xla"


def conv_xla(x: Array, kernel: Array, stride: int, padding: Padding) -> Array:
    """Reference convolution: ``lax.conv_general_dilated`` in NHWC/HWIO."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=tuple(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@jax.custom_vjp
def _pointwise(x: Array, w: Array) -> Array:
    """[..., Ci] x [Ci, Co] over the flattened pixels."""
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_fwd(x, w):
    return _pointwise(x, w), (x, w)


def _pointwise_bwd(saved, dy):
    x, w = saved
    dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
    # dW = X^T dY over all pixels, written as one contraction of the flattened
    # operands. Autodiff of the forward einsum produces the same maths, but XLA
    # then materialises a transposed copy of the larger operand.
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dw = lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))
    return dx, dw


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def conv_1x1_matmul(x: Array, kernel: Array, stride: int) -> Array:
    """A 1x1 convolution as a matrix product over pixels, with an explicit backward.

    A strided 1x1 convolution (no padding) reads pixels (s*i, s*j), so it is a
    strided slice followed by the product.
    """
    if stride != 1:
        x = x[:, ::stride, ::stride, :]
    return _pointwise(x, kernel[0, 0])


CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}


def compiler_options(platform: str | None = None) -> dict[str, str]:
    """XLA options for the training programs on ``platform`` (measured, issue 6).

    On CPU, XLA's library fusions send the convolutions' weight gradients to
    YNNPACK by default, which runs them 2x slower than XLA's own (Eigen)
    convolution; dots and reductions stay on YNNPACK, where they are fastest
    (:data:`CPU_OPTIONS`). Elsewhere, with jax older than
    :data:`MIN_JAX_FOR_CPU_OPTIONS`, or with an XLA that no longer knows the
    option: no options.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu" or not _cpu_options_supported():
        return {}
    return dict(CPU_OPTIONS)


# The XLA of jax 0.9 knows the option but its library reductions then round
# differently inside and outside vmap (the two agent backends drift apart by
# 1e-4 within four SGD steps); the option was measured on jax 0.10.
MIN_JAX_FOR_CPU_OPTIONS = (0, 10)


@functools.cache
def _cpu_options_supported() -> bool:
    version = tuple(int(p) for p in jax.__version__.split(".")[:2])
    if version < MIN_JAX_FOR_CPU_OPTIONS:
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
        return True
    except Exception as e:  # an XLA without this experimental option
        logging.getLogger(__name__).warning("XLA:CPU options %s not applied: %s", CPU_OPTIONS, e)
        return False


def conv2d(x: Array, kernel: Array, stride: int, padding: Padding, impl: str) -> Array:
    """Convolution through the lowering named by ``impl`` (already resolved)."""
    kh, kw = kernel.shape[:2]
    pointwise = kh == 1 and kw == 1 and all(p == (0, 0) for p in padding)
    if impl == "matmul" and pointwise:
        return conv_1x1_matmul(x, kernel, stride)
    if impl in ("xla", "matmul"):
        return conv_xla(x, kernel, stride, padding)
    raise ValueError(f"unknown conv impl {impl!r}; expected one of {IMPLS[1:]}")


class Conv(nn.Module):
    """Bias-free 2-D convolution, NHWC, PyTorch-style symmetric padding.

    Attributes:
      features: output channels.
      kernel_size: square kernel side.
      stride: spatial stride.
      impl: a resolved implementation name (see :func:`resolve_impl`).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    impl: str = "xla"
    kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        pad = (k - 1) // 2
        return conv2d(x, kernel, self.stride, ((pad, pad), (pad, pad)), self.impl)
