"""The ``conv`` auxiliary head (model.aux_head): its function, and its price in the split profile.

The head is part of the slow side's training step, so T_s^m must grow by the
head's FLOPs and the slow side's params by the head's, while the fast side,
ν^m and the full step stay as they are (docs/timing_model.md).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax import run_inputs
from comdml_jax.errors import ConfigError
from comdml_jax.models import split
from comdml_jax.models.resnet import ConvHead, Head, build_model
from comdml_jax.train.profile import split_profile
from configs import smoke

MODEL, BATCH = "tiny", 8


@pytest.fixture(scope="module")
def profiles():
    return split_profile(MODEL, BATCH, 10, "linear"), split_profile(MODEL, BATCH, 10, "conv")


def test_conv_head_adds_its_training_flops_to_the_slow_side(profiles):
    linear, conv = profiles
    model = build_model(MODEL, conv_impl="xla", bn_impl="plain")
    shapes = model.stage_output_shapes(BATCH)
    for m in range(1, split.num_cuts(model)):
        b, h, w, c = shapes[split.boundary(model, m) - 1]
        # multiply-adds of a 3x3 "same" conv that land inside the image: per axis the
        # three taps see H-1, H and H-1 rows, so (3H-2)(3W-2) per (c_in, c_out) pair
        conv_flops = 2 * b * c * c * (3 * h - 2) * (3 * w - 2)
        added = (conv.slow_rel_cost[m] - linear.slow_rel_cost[m]) * linear.full_step_flops
        # forward + two backward convolutions, plus the BN-ReLU and the update (a larger
        # share at tiny widths: 7% at C = 4)
        assert 1.0 <= added / (3 * conv_flops) <= 1.1, (m, added / (3 * conv_flops))
        assert conv.slow_param_bytes[m] - linear.slow_param_bytes[m] == (9 * c * c + 2 * c) * 4
    np.testing.assert_array_equal(conv.fast_rel_cost, linear.fast_rel_cost)
    np.testing.assert_array_equal(conv.bytes_per_batch, linear.bytes_per_batch)
    np.testing.assert_array_equal(conv.fast_param_bytes, linear.fast_param_bytes)
    assert conv.full_step_flops == linear.full_step_flops
    assert conv.model_bytes == linear.model_bytes
    assert conv.slow_rel_cost[0] == linear.slow_rel_cost[0] == 1.0


def test_conv_head_is_conv_bn_relu_then_gap_dense():
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 8))
    head = ConvHead(10, "xla", "plain")
    params = head.init(jax.random.key(1), x)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
    got = np.asarray(head.apply({"params": params}, x), np.float64)

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xn = np.asarray(x, np.float64)
    pad = np.pad(xn, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((4, 6, 6, 8))
    for dy in range(3):
        for dx in range(3):
            y += pad[:, dy : dy + 6, dx : dx + 6, :] @ p["conv"]["kernel"][dy, dx]
    mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))  # batch moments, biased
    y = (y - mean) / np.sqrt(var + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    y = np.maximum(y, 0.0).mean(axis=(1, 2))
    want = y @ p["head"]["fc"]["kernel"] + p["head"]["fc"]["bias"]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # the matmul lowering computes the same head
    again = ConvHead(10, "matmul", "materialize").apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(again), got, rtol=1e-5, atol=1e-5)


def test_linear_head_is_the_papers_head_unchanged():
    model = build_model(MODEL)
    assert model.aux_head == "linear" and isinstance(split.aux_head(model), Head)
    key = jax.random.key(3)
    got = split.init_aux(model, 2, key)
    c = model.stage_output_shapes(1)[split.boundary(model, 2) - 1][-1]
    want = Head(10).init(key, jnp.zeros((1, 1, 1, c)))["params"]
    jax.tree.map(np.testing.assert_array_equal, got, want)
    conv = split.init_aux(build_model(MODEL, aux_head="conv"), 2, key)
    assert conv["conv"]["kernel"].shape == (3, 3, c, c)


def test_a_profile_file_measured_with_another_head_is_refused(tmp_path, profiles):
    linear, _ = profiles
    path = tmp_path / "profile.json"
    path.write_text(linear.to_json())
    cfg = smoke.get_config()
    assert run_inputs.load_profile(cfg, str(path)).slow_rel_cost.tolist() == (
        linear.slow_rel_cost.tolist()
    )
    assert json.loads(linear.to_json())[0]["aux_head"] == "linear"
    cfg.model.aux_head = "conv"
    with pytest.raises(ConfigError, match="model.aux_head"):
        run_inputs.load_profile(cfg, str(path))
    with pytest.raises(ValueError, match="model.aux_head"):
        build_model(MODEL, aux_head="mlp")
