"""The round engine: backends, aggregation, weighting (issue 5)."""

from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.data.agents import make_epoch_batches
from comdml_jax.data.augment import batch_key
from comdml_jax.methods.base import average
from comdml_jax.models import split
from comdml_jax.models.conv import compiler_options
from comdml_jax.models.resnet import build_model
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train import aggregate, steps
from comdml_jax.train.engine import Engine, TrainData
from comdml_jax.train.types import ModelVars, row_bucket

K = 5
SIZES = [12, 8, 16, 6, 9]  # agent 4 sits out in the plans below
B = 4


@pytest.fixture(scope="module")
def world():
    model = build_model("tiny", conv_impl="xla")
    rng = np.random.default_rng(0)
    n = sum(SIZES)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    bounds = np.cumsum([0, *SIZES])
    parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(K)]
    data = TrainData(jnp.asarray(x), jnp.asarray(y), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    params, stats = model.init(jax.random.key(0))
    g = ModelVars(params, stats, split.init_all_aux(model, jax.random.key(1)))
    batches = make_epoch_batches(parts, B, jax.random.key(3), 0, epochs=1)
    return model, data, g, batches


def _engine(model, data, backend, devices=None):
    tx = steps.make_optimizer(0.05)
    return Engine(model, tx, data, backend, aggregate.make_mesh(devices), seed=0)


def _average(engine, g, agents, num_samples):
    """The global methods' merge: the data-size-weighted average (methods.base.average)."""
    ctx = SimpleNamespace(
        num_samples=np.asarray(num_samples),
        mesh=engine.mesh,
        central_noise=None,
        aggregation="psum",
    )
    return average(agents, g, ctx)[0]


def _train_round(engine, g, plan, batches, round_, lr):
    ticks = []
    agents = engine.train_agents(g, plan, batches, round_, lr, progress=ticks.append)
    return SimpleNamespace(
        model=_average(engine, g, agents, batches.num_samples),
        train_loss=agents.train_loss,
        ticks=ticks,
    )


def _weighted_mean(trees, weights):
    """Σ w_i t_i / Σ w_i in float64 numpy: the hand computation of the aggregation."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    return jax.tree.map(
        lambda *xs: sum(wi * np.asarray(x, np.float64) for wi, x in zip(w, xs, strict=True)), *trees
    )


# Agent 0 offloads to 2 at cut 2, agent 1 to 3 at cut 5, agent 4 sits out.
PLAN = RoundPlan(
    participants=np.array([True, True, True, True, False]),
    partner=np.array([2, 3, -1, -1, -1]),
    cut=np.array([2, 5, 0, 0, 0]),
)


def test_vmap_and_loop_backends_agree(world):
    model, data, g, batches = world
    loop = _train_round(_engine(model, data, "loop"), g, PLAN, batches, round_=1, lr=0.05)
    vmap = _train_round(_engine(model, data, "vmap"), g, PLAN, batches, round_=1, lr=0.05)
    chex.assert_trees_all_close(loop.model, vmap.model, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(loop.train_loss[:4], vmap.train_loss[:4], atol=1e-5)
    assert np.isnan(loop.train_loss[4]) and np.isnan(vmap.train_loss[4])
    # The progress callback counts batches: per agent on loop (the full group 2, 3, then
    # the pair groups' slow agents 0 and 1), per group on vmap; both add up to the round.
    nbs = np.asarray(batches.num_batches)
    total = _engine(model, data, "loop").round_batches(PLAN, batches)
    assert total == nbs[:4].sum() > 0
    assert loop.ticks == [nbs[2], nbs[3], nbs[0], nbs[1]]
    assert vmap.ticks == [nbs[2] + nbs[3], nbs[0], nbs[1]]
    # Aux heads of the cuts used moved; the others did not.
    for m in range(1, split.num_cuts(model)):
        moved = not np.allclose(
            loop.model.aux[split.aux_key(m)]["fc"]["kernel"],
            g.aux[split.aux_key(m)]["fc"]["kernel"],
        )
        assert moved == (m in (2, 5))


def test_one_device_and_eight_devices_aggregate_equally(world):
    model, data, g, batches = world
    assert jax.device_count() == 8
    engine = _engine(model, data, "loop")
    agents = engine.train_agents(g, PLAN, batches, 1, 0.05)
    eight = _average(engine, g, agents, batches.num_samples)
    engine.mesh = aggregate.make_mesh(jax.devices()[:1])
    one = _average(engine, g, agents, batches.num_samples)
    chex.assert_trees_all_close(one, eight, atol=1e-6, rtol=1e-6)


def test_weighted_average_matches_numpy():
    rng = np.random.default_rng(1)
    trees = [
        {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=5).astype(np.float32),
        }
        for _ in range(6)
    ]
    weights = np.array([3.0, 0.0, 1.0, 7.0, 2.0, 5.0])
    stacked = jax.tree.map(lambda *a: np.stack(a), *trees)
    for devices in (jax.devices()[:1], jax.devices()[:4], jax.devices()):
        got = aggregate.weighted_average(stacked, weights, aggregate.make_mesh(devices))
        for k in ("w", "b"):
            want = (
                sum(w * t[k].astype(np.float64) for w, t in zip(weights, trees, strict=True))
                / weights.sum()
            )
            np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-6)


def test_data_size_weighting_matches_hand_computation(world):
    """Everybody alone: the global model is Σ N_i w_i / Σ N_i of separately trained agents."""
    model, data, g, batches = world
    plan = RoundPlan.alone(np.array([True, True, True, False, True]))
    engine = _engine(model, data, "loop")
    result = _train_round(engine, g, plan, batches, round_=2, lr=0.05)

    # Hand computation: train each participant alone with the plain step, then average in numpy.
    tx = steps.make_optimizer(0.05)
    # The same XLA options as the engine's steps, so both compile the same arithmetic.
    step = jax.jit(steps.full_step_fn(model, tx), compiler_options=compiler_options())
    # The batch is augmented under jit, as inside the engine's step. Run eagerly, the
    # normalisation rounds 6,522 of a batch's 12,288 inputs one float32 ulp differently
    # (jax 0.12), and at batch 4 that moves a step's update by 4.6e-5 in a jump, not
    # smoothly (twice the perturbation moves it by 6e-8): an activation at a ReLU kink,
    # the model's only non-smooth op. Rounding the inputs alike, the paths agree to 1e-6.
    batch = jax.jit(data.batch)
    idx = np.asarray(batches.idx)
    finals, weights = [], []
    for a in np.flatnonzero(plan.participants):
        state = steps.set_lr(steps.init_state(g.params, g.batch_stats, tx), 0.05)
        for b in range(int(batches.num_batches[a])):
            key = batch_key(engine.key, 2, int(a), b)
            x, y = batch(data.x, data.y, jnp.asarray(idx[a, b]), key)
            state, _ = step(state, x, y)
        finals.append((state.params, state.batch_stats))
        weights.append(SIZES[a])
    want = _weighted_mean(finals, weights)
    chex.assert_trees_all_close(
        (result.model.params, result.model.batch_stats), want, atol=1e-6, rtol=1e-6
    )
    # Aux heads are untouched when nobody offloads.
    chex.assert_trees_all_equal(result.model.aux, g.aux)


def test_loop_backend_trains_every_real_batch_of_every_epoch(world):
    """Two local epochs through the engine equal the same jitted step called by hand.

    Both sides run the identical compiled step, so the comparison is exact up to
    the averaging; comparing different programs over many steps would not be
    (a 1e-7 perturbation of this model grows to 1e-4 within 8 SGD steps).
    """
    model, data, g, _ = world
    bounds = np.cumsum([0, *SIZES])
    parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(K)]
    batches = make_epoch_batches(parts, B, jax.random.key(4), 5, epochs=2)
    nb = np.asarray(batches.num_batches)
    np.testing.assert_array_equal(nb, 2 * -(-np.asarray(SIZES) // B))
    plan = RoundPlan.alone(np.array([True, False, True, True, False]))
    engine = _engine(model, data, "loop")
    result = _train_round(engine, g, plan, batches, round_=5, lr=0.05)
    step = engine._loop_step("full", 0)
    idx = np.asarray(batches.idx)
    finals, weights = [], []
    for a in np.flatnonzero(plan.participants):
        state = engine._start(jax.device_put(g, engine.home), jnp.float32(0.05), role="full", cut=0)
        for b in range(nb[a]):
            state, _ = step(state, data.x, data.y, idx[a, b], np.array([5, a, b], np.int32))
        finals.append((state.params, state.batch_stats))
        weights.append(SIZES[a])
    want = _weighted_mean(finals, weights)
    chex.assert_trees_all_close(
        (result.model.params, result.model.batch_stats), want, atol=1e-6, rtol=1e-6
    )


def test_mix_matches_numpy_on_any_device_count():
    """out_i = Σ_j W_ij x_j, with K not a multiple of the device count."""
    rng = np.random.default_rng(2)
    k = 5
    x = {"w": rng.normal(size=(k, 3, 2)).astype(np.float32), "b": rng.normal(size=k)}
    w = rng.uniform(size=(4, k))
    w[1, 2:] = 0.0  # a sparse row, as a Gossip receiver's
    want = jax.tree.map(lambda a: np.tensordot(w, a.astype(np.float64), axes=(1, 0)), x)
    for devices in (jax.devices()[:1], jax.devices()[:3], jax.devices()):
        got = aggregate.mix(x, w, aggregate.make_mesh(devices))
        for key in x:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1024, 1025])
def test_row_bucket_is_the_smallest_power_of_two_that_holds_n(n):
    b = row_bucket(n)
    assert b >= max(n, 1) and b & (b - 1) == 0  # holds n, a power of two
    assert b == 1 or b // 2 < n  # and the smallest one
