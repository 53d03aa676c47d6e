"""Models, cuts and the split profile (issue 2)."""

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.models import split
from comdml_jax.models.resnet import build_model, count_params
from comdml_jax.train import profile as profile_lib
from comdml_jax.train import steps


@pytest.fixture(scope="module")
def tiny():
    model = build_model("tiny", conv_impl="xla")
    params, stats = model.init(jax.random.key(0))
    aux = split.init_all_aux(model, jax.random.key(1))
    return model, params, stats, aux


def _batch(n=6, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 32, 32, 3))
    y = jnp.arange(n, dtype=jnp.int32) % 10
    return x, y


@pytest.mark.parametrize("name,expected", [("resnet56", 591_322), ("resnet110", 1_147_738)])
def test_paper_param_counts(name, expected):
    model = build_model(name)
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    assert count_params(params) == expected


def _basic_option_a_count(n: int, classes: int = 10) -> int:
    """He et al.'s CIFAR ResNet-(6n+2), option A, counted by hand (conv weights + BN gamma/beta)."""
    conv = lambda cin, cout: 9 * cin * cout
    bn = lambda c: 2 * c
    stem = conv(3, 16) + bn(16)
    g1 = n * (2 * conv(16, 16) + 2 * bn(16))
    g2 = conv(16, 32) + conv(32, 32) + 2 * bn(32) + (n - 1) * (2 * conv(32, 32) + 2 * bn(32))
    g3 = conv(32, 64) + conv(64, 64) + 2 * bn(64) + (n - 1) * (2 * conv(64, 64) + 2 * bn(64))
    return stem + g1 + g2 + g3 + 64 * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_basic_block_param_counts(depth):
    model = build_model(f"resnet{depth}_basic")
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    assert count_params(params) == _basic_option_a_count((depth - 2) // 6)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet56", [0, 1, 10, 19, 28, 37, 46, 55]),
        ("resnet110", [0, 1, 19, 37, 55, 73, 91, 109]),
    ],
)
def test_layers_offloaded_match_table1(name, expected):
    model = build_model(name)
    assert [split.layers_offloaded(model, m) for m in range(split.num_cuts(model))] == expected


def test_basic_block_cuts_are_block_boundaries():
    model = build_model("resnet20_basic")
    # stem + 9 blocks + head: cut m offloads the head and m-1 blocks of 2 layers.
    assert split.num_cuts(model) == 11
    assert [split.layers_offloaded(model, m) for m in range(4)] == [0, 1, 3, 5]


def test_split_then_join_is_lossless(tiny):
    model, params, stats, _ = tiny
    for m in range(split.num_cuts(model)):
        sp, fp = split.split_tree(model, params, m)
        assert set(sp).isdisjoint(fp)
        chex.assert_trees_all_equal(split.join_tree(sp, fp), params)
        ss, fs = split.split_tree(model, stats, m)
        chex.assert_trees_all_equal(split.join_tree(ss, fs), stats)


@pytest.mark.parametrize("train", [False, True])
def test_slow_then_fast_equals_full_model(tiny, train):
    model, params, stats, aux = tiny
    x, _ = _batch()
    full, full_stats = model.apply(params, stats, x, train)
    for m in range(1, split.num_cuts(model)):
        sp, fp = split.split_tree(model, params, m)
        ss, fs = split.split_tree(model, stats, m)
        sp = {**sp, split.AUX: aux[split.aux_key(m)]}
        _, z, s_stats = split.slow_forward(model, sp, ss, x, m, train)
        logits, f_stats = split.fast_forward(model, fp, fs, z, m, train)
        np.testing.assert_allclose(logits, full, atol=1e-5, rtol=0)
        chex.assert_trees_all_close(split.join_tree(s_stats, f_stats), full_stats, atol=1e-6)


def test_fast_loss_has_zero_gradient_wrt_slow_params(tiny):
    model, params, stats, aux = tiny
    x, y = _batch()
    tx = steps.make_optimizer(0.1)
    m = 4
    sp, fp = split.split_tree(model, params, m)
    ss, fs = split.split_tree(model, stats, m)
    sp = {**sp, split.AUX: aux[split.aux_key(m)]}
    slow = steps.slow_step_fn(model, tx, m)

    def fast_loss_of_slow_params(slow_params):
        state = steps.init_state(slow_params, ss, tx)
        _, (z, yy, _) = slow(state, x, y)
        logits, _ = split.fast_forward(model, fp, fs, z, m, True)
        return steps.cross_entropy(logits, yy)

    grads = jax.grad(fast_loss_of_slow_params)(sp)
    for g in jax.tree.leaves(grads):
        assert np.all(np.asarray(g) == 0.0)


def test_profile_bytes_and_costs():
    model = build_model("tiny", conv_impl="xla")
    batch = 8
    prof = profile_lib.split_profile("tiny", batch)
    shapes = model.stage_output_shapes(batch)
    assert prof.num_cuts == split.num_cuts(model)
    for m in range(1, prof.num_cuts):
        b, h, w, c = shapes[split.boundary(model, m) - 1]
        assert (
            prof.bytes_per_batch[m] == b * c * h * w * 4 + batch * 4
        )  # activations + int32 labels
    assert prof.bytes_per_batch[0] == 0
    assert prof.slow_rel_cost[0] == 1.0 and prof.fast_rel_cost[0] == 0.0
    assert np.all(prof.slow_rel_cost[1:] > 0) and np.all(prof.fast_rel_cost[1:] > 0)
    # A deeper cut (more stages on the slow side, i.e. a smaller m) costs the slow agent more.
    assert np.all(np.diff(prof.slow_rel_cost[1:]) < 0)
    assert np.all(np.diff(prof.fast_rel_cost[1:]) > 0)
    params, stats = model.init(jax.random.key(0))
    n_params = count_params(params)
    n_stats = sum(x.size for x in jax.tree.leaves(stats))
    assert prof.model_bytes == 4 * (n_params + n_stats)
    np.testing.assert_array_equal(
        prof.fast_param_bytes + prof.slow_param_bytes - prof.slow_param_bytes[0],
        np.r_[
            0,
            [
                4 * count_params(split.init_aux(model, m, jax.random.key(0)))
                for m in range(1, prof.num_cuts)
            ],
        ],
    )


@pytest.mark.parametrize("conv_impl", ["auto", "xla"])
def test_vmapped_step_equals_separate_steps(tiny, conv_impl):
    _, params, stats, _ = tiny
    model = build_model("tiny", conv_impl=conv_impl)
    tx = steps.make_optimizer(0.05)
    step = steps.full_step_fn(model, tx)
    xs = jnp.stack([_batch(seed=s)[0] for s in range(4)])
    ys = jnp.stack([_batch(seed=s)[1] for s in range(4)])
    # Agents whose weights differ, as they do after a few local steps.
    keys = jax.random.split(jax.random.key(7), 4)
    states = [
        steps.init_state(
            jax.tree.map(lambda p, k=k: p + 0.01 * jax.random.normal(k, p.shape), params), stats, tx
        )
        for k in keys
    ]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    v_state, v_loss = jax.jit(jax.vmap(step))(stacked, xs, ys)
    jstep = jax.jit(step)
    for i in range(4):
        s_state, s_loss = jstep(states[i], xs[i], ys[i])
        mine = jax.tree.map(lambda a, i=i: a[i], v_state)
        chex.assert_trees_all_close(
            (mine.params, mine.batch_stats),
            (s_state.params, s_state.batch_stats),
            atol=1e-5,
            rtol=1e-5,
        )
        np.testing.assert_allclose(v_loss[i], s_loss, atol=1e-5, rtol=1e-5)
        # The momentum trace is the raw gradient. vmap lowers the 3x3 convolutions of
        # agents with different weights to grouped convolutions; measured against a
        # float64 step, XLA:CPU's grouped-convolution weight gradient is off by up to
        # 1.3e-4 (on gradients of ~0.2) where the single convolution is off by 2e-7.
        chex.assert_trees_all_close(mine.opt_state, s_state.opt_state, atol=2e-4, rtol=1e-5)


def test_masked_padded_step_leaves_state_bit_identical(tiny):
    model, params, stats, _ = tiny
    tx = steps.make_optimizer(0.05)
    state = steps.init_state(params, stats, tx)
    x, y = _batch()
    masked = jax.jit(steps.masked(steps.full_step_fn(model, tx)))
    same, _ = masked(state, jnp.bool_(False), x, y)
    chex.assert_trees_all_equal(same, state)
    moved, _ = masked(state, jnp.bool_(True), x, y)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_equal(moved, state)


def test_profile_cli_json_has_one_object_per_cut(capsys):
    from comdml_jax.system.split_profile import SplitProfile
    from comdml_jax.train import profile_cli

    profile_cli.main(["--model", "tiny", "--batch-size", "8", "--json"])
    rows = json.loads(capsys.readouterr().out)
    want = profile_lib.split_profile("tiny", 8)
    assert len(rows) == want.num_cuts
    fields = {"cut", "layers_offloaded", "slow_rel_cost", "fast_rel_cost", "bytes_per_batch"}
    fields |= {"slow_param_bytes", "fast_param_bytes"}
    for m, row in enumerate(rows):
        assert fields <= set(row)
        assert row["cut"] == m and row["bytes_per_batch"] == want.bytes_per_batch[m]
    back = SplitProfile.from_json(json.dumps(rows))
    np.testing.assert_array_equal(back.slow_rel_cost, want.slow_rel_cost)
    assert back.full_step_flops == want.full_step_flops and back.model_bytes == want.model_bytes
    profile_cli.main(["--model", "tiny", "--batch-size", "8"])
    table = capsys.readouterr().out
    assert len(table.strip().splitlines()) == want.num_cuts + 3  # title, blank, header, rows


# --- The basic-block ResNet-8 against the same network written with flax.linen's own layers ---


class _PlainBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, shortcut A or B, add, ReLU; nn.Conv, nn.BatchNorm only."""

    planes: int
    stride: int
    shortcut: str

    @nn.compact
    def __call__(self, x, train):
        def conv(features, k, stride, name):
            pad = [(k // 2, k // 2)] * 2  # symmetric, as PyTorch pads
            return nn.Conv(features, (k, k), (stride, stride), pad, use_bias=False, name=name)

        def bn(name):
            return nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name
            )

        y = nn.relu(bn("bn1")(conv(self.planes, 3, self.stride, "conv1")(x)))
        y = bn("bn2")(conv(self.planes, 3, 1, "conv2")(y))
        if x.shape != y.shape:
            if self.shortcut == "A":
                x = x[:, :: self.stride, :: self.stride, :]
                extra = self.planes - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
            else:
                x = bn("down_bn")(conv(self.planes, 1, self.stride, "down_conv")(x))
        return nn.relu(x + y)


class _PlainStage(nn.Module):
    planes: int
    stride: int
    shortcut: str

    @nn.compact
    def __call__(self, x, train):
        return _PlainBlock(self.planes, self.stride, self.shortcut, name="block")(x, train)


class _PlainStem(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        x = nn.Conv(16, (3, 3), padding=[(1, 1)] * 2, use_bias=False, name="conv")(x)
        bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")
        return nn.relu(bn(x))


class _PlainHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10, name="fc")(x.mean((1, 2)))


class _PlainResNet8(nn.Module):
    """Variables named as the project's stages (s00 ... s04), so its params plug in as they are."""

    shortcut: str

    @nn.compact
    def __call__(self, x, train):
        x = _PlainStem(name="s00")(x, train)
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
            x = _PlainStage(planes, stride, self.shortcut, name=f"s0{i + 1}")(x, train)
        return _PlainHead(name="s04")(x)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_basic_resnet8_equals_the_network_built_from_flax_layers(shortcut):
    """Same params, same batch: the training loss, every gradient, the new BN running
    statistics and the evaluation logits equal those of nn.Conv / nn.BatchNorm / nn.Dense
    (the fused BN-add-ReLU and its hand backward, the 1x1 matmul lowering, the stage split).
    The platform's default lowerings; test_model_lowerings_agree_with_the_reference_model
    checks the others against each other."""
    model = build_model("resnet8_basic", shortcut=shortcut)
    params, stats = model.init(jax.random.key(0))
    stats_in = {k: v for k, v in stats.items() if v}  # the head has no statistics
    plain = _PlainResNet8(shortcut)
    want = plain.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), False)
    assert jax.tree.structure(want["params"]) == jax.tree.structure(params)
    assert jax.tree.structure(want["batch_stats"]) == jax.tree.structure(stats_in)
    x, y = _batch(n=16, seed=3)
    y = jax.random.randint(jax.random.key(4), (16,), 0, 10)

    def ours(p):
        logits, new = model.apply(p, stats, x, train=True)
        return steps.cross_entropy(logits, y), new

    def theirs(p):
        variables = {"params": p, "batch_stats": stats_in}
        logits, new = plain.apply(variables, x, True, mutable=["batch_stats"])
        return steps.cross_entropy(logits, y), new["batch_stats"]

    (loss, new), grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(params)
    (loss_p, new_p), grads_p = jax.jit(jax.value_and_grad(theirs, has_aux=True))(params)
    np.testing.assert_allclose(loss, loss_p, rtol=1e-6)

    # Per leaf, relative to the leaf's norm: the first layers' gradients carry
    # the float32 rounding of the whole backward pass, which differs between
    # the fused BN backward and autodiff and between XLA versions (largest
    # leaf error: 1.4e-6 on jax 0.10.2, 2.9e-3 on jax 0.12, in the stem's BN
    # bias; a wrong gradient is off by O(1)).
    def rel_err(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-12))

    errs = jax.tree.map(rel_err, grads, grads_p)
    assert max(jax.tree.leaves(errs)) < 1e-2, errs
    chex.assert_trees_all_close({k: v for k, v in new.items() if v}, new_p, rtol=1e-5, atol=1e-6)
    moved = jax.tree.map(lambda a, b: a + 0.1 * b, stats_in, new_p)  # non-trivial running stats
    logits = jax.jit(lambda p, s: model.apply(p, {**stats, **s}, x, train=False)[0])(params, moved)
    logits_p = plain.apply({"params": params, "batch_stats": moved}, x, False)
    np.testing.assert_allclose(logits, logits_p, rtol=1e-5, atol=1e-5)


def test_model_init_schemes_have_the_variances_they_name():
    """model.init: 'lecun' kernels have variance 1/fan_in, 'paper' convs 2/fan_out.

    For a 3x3 convolution with C_in = C_out the paper's init has twice the LeCun
    variance (docs/learning_vs_reference.md); the heads' biases are zeroed by
    'lecun', BN parameters are left alone, and 'paper' is the identity.
    """
    from comdml_jax.models.init import apply_init

    model = build_model("resnet8_basic", conv_impl="xla", bn_impl="plain")
    params, _ = model.init(jax.random.key(0))
    assert apply_init(params, jax.random.key(1), "paper") is params
    lecun = apply_init(params, jax.random.key(1), "lecun")
    flat_p = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    flat_l = dict(jax.tree_util.tree_flatten_with_path(lecun)[0])
    checked = 0
    for path, new in flat_l.items():
        old, name = flat_p[path], path[-1].key
        if name == "kernel" and new.ndim == 4 and new.shape[2] == new.shape[3] >= 32:
            k, cin, cout = new.shape[0], new.shape[2], new.shape[3]
            # >= 9,216 draws: the sample variance is within 1.5% (one std) of its value.
            assert float(jnp.var(new)) == pytest.approx(1.0 / (k * k * cin), rel=0.06)
            assert float(jnp.var(old)) == pytest.approx(2.0 / (k * k * cout), rel=0.06)
            checked += 1
        elif name == "kernel" and new.ndim == 2:  # the classifier, 64 -> 10
            assert float(jnp.var(new)) == pytest.approx(1.0 / new.shape[0], rel=0.25)
        elif name == "kernel":  # the other convolutions: redrawn, same shape
            assert new.shape == old.shape and not np.allclose(new, old)
        elif name == "bias" and any(getattr(p, "key", None) == "fc" for p in path):
            assert not np.any(np.asarray(new)) and np.any(np.asarray(old))
        else:  # BN scale and bias
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert checked == 2  # the 32 -> 32 and 64 -> 64 convolutions
    with pytest.raises(ValueError, match="model.init='kaiming' is unknown"):
        apply_init(params, jax.random.key(1), "kaiming")
