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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Padding = Sequence[tuple[int, int]]
ConvFn = Callable[[Array, Array, int, Padding], Array]

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


def conv_1x1_matmul(x: Array, kernel: Array, stride: int) -> Array:
    """A 1x1 convolution as a matrix product over pixels.

    A strided 1x1 convolution (no padding) reads pixels (s*i, s*j), so it is a
    strided slice followed by the product.
    """
    if stride != 1:
        x = x[:, ::stride, ::stride, :]
    return jnp.einsum("nhwc,cd->nhwd", x, kernel[0, 0])


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
