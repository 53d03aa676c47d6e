"""Every convolution and batch-norm lowering against the reference (issue 6)."""

import collections
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.models import conv, norm
from comdml_jax.models.resnet import build_model


def _conv_shapes_used_by_models():
    """(kernel, stride, c_in, c_out, spatial) of every Conv in the registered models."""
    found = set()
    for name in ("resnet56", "resnet110", "resnet20_basic", "tiny"):
        model = build_model(name, conv_impl="xla")
        x = jnp.zeros((1, *model.input_shape))
        params, stats = jax.eval_shape(model.init, jax.random.key(0))

        def record(next_fun, args, kwargs, context):
            mod = context.module
            if isinstance(mod, conv.Conv):
                found.add(
                    (mod.kernel_size, mod.stride, args[0].shape[-1], mod.features, args[0].shape[1])
                )
            return next_fun(*args, **kwargs)

        import flax.linen as nn

        with nn.intercept_methods(record):
            jax.eval_shape(functools.partial(model.apply, x=x, train=True), params, stats)
    return sorted(found)


SHAPES = _conv_shapes_used_by_models()


def assert_close(actual, desired, rtol=1e-5):
    """Equal to ``rtol`` relative to the tensor's scale (sums of many terms cancel per element)."""
    desired = np.asarray(desired)
    scale = max(float(np.max(np.abs(desired))), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


def test_models_use_the_expected_kernel_shapes():
    kinds = {(k, s) for k, s, *_ in SHAPES}
    assert kinds == {(1, 1), (1, 2), (3, 1), (3, 2)}


@pytest.mark.parametrize("impl", ["xla", "matmul"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "k{}s{}_{}to{}_{}px".format(*s))
def test_conv_lowerings_match_lax_conv(impl, shape):
    k, s, cin, cout, hw = shape
    hw = min(hw, 8)  # the same kernel and stride on a smaller image keeps the test fast
    x = jax.random.normal(jax.random.key(0), (3, hw, hw, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) / np.sqrt(k * k * cin)
    pad = (k - 1) // 2
    padding = ((pad, pad), (pad, pad))

    def ref(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (s, s), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def got(x, w):
        return conv.conv2d(x, w, s, padding, impl)

    y_ref, y = ref(x, w), jax.jit(got)(x, w)
    assert_close(y, y_ref)
    ct = jax.random.normal(jax.random.key(2), y_ref.shape)
    g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * ct), argnums=(0, 1))(x, w)
    g = jax.jit(jax.grad(lambda x, w: jnp.sum(got(x, w) * ct), argnums=(0, 1)))(x, w)
    for a, b in zip(g, g_ref, strict=True):
        assert_close(a, b)


def test_auto_picks_the_matmul_path_for_pointwise_convs_on_cpu():
    assert conv.resolve_impl("auto", "cpu") == "matmul"
    assert conv.resolve_impl("auto", "gpu") == "xla"
    assert conv.resolve_impl("auto", "tpu") == "xla"
    assert jax.default_backend() == "cpu"
    layer = conv.Conv(8, kernel_size=1, stride=1, impl=conv.resolve_impl("auto"))
    x = jnp.ones((2, 4, 4, 16))
    params = layer.init(jax.random.key(0), x)
    hlo = jax.jit(layer.apply).lower(params, x).as_text()
    assert "dot_general" in hlo and "convolution" not in hlo
    layer3 = conv.Conv(8, kernel_size=3, stride=1, impl=conv.resolve_impl("auto"))
    hlo3 = jax.jit(layer3.apply).lower(layer3.init(jax.random.key(0), x), x).as_text()
    assert "convolution" in hlo3


def _library_fusion_ops(hlo_text: str) -> collections.Counter:
    """Instruction kinds (convolution, dot, reduce) inside the computations that
    ``ynn_fusion`` instructions call: the test's own reading of the compiled text."""
    ops = collections.Counter()
    for name in set(re.findall(r"%ynn_fusion[\w.]* = .*?calls=%([\w.]+)", hlo_text)):
        body = re.search(rf"^%{re.escape(name)} \(.*?^}}", hlo_text, re.M | re.S).group(0)
        for op in ("convolution", "dot", "reduce"):
            ops[op] += len(re.findall(rf" {op}\(", body))
    return ops


def test_cpu_compiler_options_keep_dots_and_reductions_on_the_library():
    """A program with a 3x3 weight gradient, a matmul and a sum, compiled by XLA:CPU.

    With the options, the dot and the reduce still run in library (YNNPACK)
    fusions and the convolution does not; its weight gradient still equals a
    numpy im2col reference. Where this XLA sends no convolution to the library
    by default, the options must be off.
    """
    assert conv.compiler_options("gpu") == {}
    opts = conv.compiler_options("cpu")
    dims = ("NHWC", "HWIO", "NHWC")

    def program(x, w, dy, a, b):
        fwd = lambda w: jax.lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims
        )
        return jax.vjp(fwd, w)[1](dy)[0], a @ b, jnp.sum(a, axis=0)

    shapes = [(100, 32, 32, 16), (3, 3, 16, 16), (100, 32, 32, 16), (256, 256), (256, 256)]
    specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    compiled = lambda o: jax.jit(program, compiler_options=o).lower(*specs).compile()
    default = _library_fusion_ops(compiled({}).as_text())
    if not opts:
        assert default["convolution"] == 0  # nothing to take off the library
        return
    assert default["convolution"] >= 1  # the reason for the options
    optioned = _library_fusion_ops(compiled(opts).as_text())
    assert optioned["convolution"] == 0
    assert optioned["dot"] >= 1 and optioned["reduce"] >= 1

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    dw = np.asarray(compiled(opts)(*args)[0])
    x, dy = args[0].astype(np.float64), args[2].astype(np.float64)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.empty((3, 3, 16, 16))
    for i in range(3):
        for j in range(3):
            want[i, j] = np.einsum("nhwc,nhwd->cd", xp[:, i : i + 32, j : j + 32], dy)
    assert_close(dw, want, rtol=1e-4)


def test_library_fusion_convolutions_are_counted_from_the_hlo_text():
    """The probe's parser on hand-written module text: only convolutions under a ynn_fusion."""
    text = """
%fused_computation (p0: f32[2], p1: f32[2]) -> f32[2] {
  %p0 = f32[2]{0} parameter(0)
  ROOT %convolution.2 = f32[2]{0} convolution(%p0, %p1), window={size=1}
}

%fused_computation.1 (p0: f32[2]) -> f32[2] {
  ROOT %convolution.3 = f32[2]{0} convolution(%p0, %p0), window={size=1}
}

ENTRY %main (a: f32[2]) -> f32[2] {
  %ynn_fusion = f32[2]{0} fusion(%a, %a), kind=kCustom, calls=%fused_computation
  %loop_fusion = f32[2]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1
  ROOT %convolution = f32[2]{0} convolution(%a, %a), window={size=1}
}
"""
    assert conv.convolutions_in_library_fusions(text) == 1
    assert conv.convolutions_in_library_fusions(text.replace("%ynn_fusion", "%other")) == 0


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("once", [False, True])
def test_fused_batch_norm_matches_autodiff(residual, relu, once):
    x = jax.random.normal(jax.random.key(0), (4, 5, 5, 8)) * 2.0 + 1.0
    scale = jnp.linspace(0.5, 2.0, 8)
    bias = jnp.linspace(-1.0, 1.0, 8)
    res = jax.random.normal(jax.random.key(1), x.shape) if residual else None
    ct = jax.random.normal(jax.random.key(2), x.shape)
    y, mean, var = norm.bn_act(x, scale, bias, res, 1e-5, relu, once)
    y_ref, mean_ref, var_ref = norm.bn_act_reference(x, scale, bias, res, 1e-5, relu)
    assert_close(y, y_ref)
    np.testing.assert_allclose(mean, np.mean(np.asarray(x), axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, np.var(np.asarray(x), axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var_ref, var, rtol=1e-5)
    argnums = (0, 1, 2, 3) if residual else (0, 1, 2)

    def loss(fn, *args):
        a = list(args) + ([] if residual else [None])
        return jnp.sum(
            fn(a[0], a[1], a[2], a[3], 1e-5, relu, *([once] if fn is norm.bn_act else []))[0] * ct
        )

    args = (x, scale, bias, res) if residual else (x, scale, bias)
    g = jax.jit(jax.grad(lambda *a: loss(norm.bn_act, *a), argnums=argnums))(*args)
    g_ref = jax.grad(lambda *a: loss(norm.bn_act_reference, *a), argnums=argnums)(*args)
    for a, b in zip(g, g_ref, strict=True):
        assert_close(a, b)


def test_materialize_is_the_identity():
    y = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    np.testing.assert_array_equal(jax.jit(norm.materialize)(y), y)


@pytest.mark.parametrize(
    "conv_impl,bn_impl", [("matmul", "materialize"), ("matmul", "plain"), ("xla", "materialize")]
)
def test_model_lowerings_agree_with_the_reference_model(conv_impl, bn_impl):
    from comdml_jax.train import steps

    ref_model = build_model("tiny", conv_impl="xla", bn_impl="plain")
    model = build_model("tiny", conv_impl=conv_impl, bn_impl=bn_impl)
    params, stats = ref_model.init(jax.random.key(0))
    tx = steps.make_optimizer(0.1)
    x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
    y = jnp.arange(8) % 10
    s_ref, l_ref = jax.jit(steps.full_step_fn(ref_model, tx))(
        steps.init_state(params, stats, tx), x, y
    )
    s, loss = jax.jit(steps.full_step_fn(model, tx))(steps.init_state(params, stats, tx), x, y)
    np.testing.assert_allclose(loss, l_ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
