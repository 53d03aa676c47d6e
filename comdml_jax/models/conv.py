"""2-D convolution with a per-backend, per-shape choice of XLA lowering.

Every model builds its convolutions through :class:`Conv`, so the choice of
lowering lives in one place (docs/cpu_speed_experiments.md, *Kept lowerings
and XLA options*). Implementations, all NHWC / HWIO and numerically equal to
``lax.conv_general_dilated``:

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
import re
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from comdml_jax import catalog

Array = jax.Array
Padding = Sequence[tuple[int, int]]

IMPLS = catalog.CONV_IMPLS  # ("auto", "xla", "matmul")


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
    """XLA options for the training programs on ``platform``.

    Where XLA:CPU's library fusions send convolutions' weight gradients to
    YNNPACK by default, which runs them slower than XLA's own (Eigen)
    convolution, :data:`CPU_OPTIONS` keeps only dots and reductions on
    YNNPACK, where they are fastest. Whether this XLA does so is probed, not
    read from its version (:func:`_cpu_options_supported`). Elsewhere, or
    where the probe fails: no options. The measurements and the jax versions
    probed: (docs/cpu_speed_experiments.md, *Kept lowerings and XLA options*).
    """
    platform = platform or jax.default_backend()
    if platform != "cpu" or not _cpu_options_supported():
        return {}
    return dict(CPU_OPTIONS)


# The probe's convolution: a 3x3 layer of ResNet-56's first groups at the paper's batch
# of 100. XLA:CPU picks library fusions by shape, so the probe uses a shape the models run.
_PROBE_X = (100, 32, 32, 16)
_PROBE_W = (3, 3, 16, 16)


def convolutions_in_library_fusions(hlo_text: str) -> int:
    """How many convolutions a compiled module's text runs inside YNNPACK library fusions.

    Args:
      hlo_text: ``jax.jit(f).lower(...).compile().as_text()`` of an XLA:CPU program.

    Returns:
      The number of ``convolution`` instructions in computations called by a
      ``ynn_fusion``.
    """
    called = re.findall(r"%ynn_fusion[\w.]* = .*?calls=%([\w.]+)", hlo_text)
    count = 0
    for name in set(called):
        body = re.search(rf"^%{re.escape(name)} \(.*?^}}", hlo_text, re.M | re.S)
        if body:
            count += len(re.findall(r" convolution\(", body.group(0)))
    return count


def _weight_gradient_hlo(options: dict[str, str]) -> str:
    """The compiled text of one 3x3 convolution's weight gradient (the probe)."""
    dims = ("NHWC", "HWIO", "NHWC")

    def wgrad(x, w, dy):
        fwd = lambda w: lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims
        )
        return jax.vjp(fwd, w)[1](dy)[0]

    x = jax.ShapeDtypeStruct(_PROBE_X, jnp.float32)
    w = jax.ShapeDtypeStruct(_PROBE_W, jnp.float32)
    fn = jax.jit(wgrad, compiler_options=options)
    return fn.lower(x, w, x).compile().as_text()


@functools.cache
def _cpu_options_supported() -> bool:
    """True when this XLA:CPU puts weight gradients on YNNPACK and :data:`CPU_OPTIONS` stop it.

    Compiles (does not run) one convolution weight gradient with XLA's defaults
    and with the options, once per process: the options are used only where
    the default compile has a convolution inside a library fusion and the
    optioned compile is accepted and has none.
    """
    try:
        default = convolutions_in_library_fusions(_weight_gradient_hlo({}))
        if default == 0:
            return False  # nothing to take off YNNPACK
        optioned = convolutions_in_library_fusions(_weight_gradient_hlo(CPU_OPTIONS))
    except Exception as e:  # an XLA without this experimental option
        logging.getLogger(__name__).warning("XLA:CPU options %s not applied: %s", CPU_OPTIONS, e)
        return False
    return optioned == 0


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
