"""Privacy wired into the round (issue 11): DP between training and merging, the
accountant in the metrics, NoPeek and patch shuffling inside the engine's pair steps."""

import dataclasses

import chex
import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import smoke_config

from comdml_jax import experiment, rounds
from comdml_jax.config_check import validate_config
from comdml_jax.data.agents import make_epoch_batches
from comdml_jax.errors import ConfigError
from comdml_jax.models import split
from comdml_jax.models.resnet import build_model
from comdml_jax.privacy.config import DpSpec, PrivacySpec
from comdml_jax.privacy.rounds import RoundPrivacy
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train import aggregate, steps
from comdml_jax.train.engine import Engine, TrainData
from comdml_jax.train.types import ModelVars, StartModels
from configs import smoke

K = 4
SIZES = [8, 8, 12, 8]
# 0 offloads to 2 at cut 2; 1 and 3 train alone.
PLAN = RoundPlan(np.ones(K, bool), np.array([2, -1, -1, -1]), np.array([2, 0, 0, 0]))


@pytest.fixture(scope="module")
def world():
    model = build_model("tiny", conv_impl="xla")
    rng = np.random.default_rng(0)
    n = sum(SIZES)
    data = TrainData(
        jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
        jnp.asarray(rng.integers(0, 10, n).astype(np.int32)),
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    bounds = np.cumsum([0, *SIZES])
    parts = [np.arange(bounds[i], bounds[i + 1]) for i in range(K)]
    params, stats = model.init(jax.random.key(0))
    g = ModelVars(params, stats, split.init_all_aux(model, jax.random.key(1)))
    batches = make_epoch_batches(parts, 4, jax.random.key(3), 0, epochs=1)
    return model, data, g, batches


def _train(world, privacy=None):
    model, data, g, batches = world
    engine = Engine(
        model,
        steps.make_optimizer(0.05),
        data,
        "loop",
        aggregate.make_mesh(jax.devices()[:1]),
        seed=0,
        privacy=privacy,
    )
    return engine.train_agents(g, PLAN, batches, 1, 0.05)


def _row_updates(world, trained):
    """Each agent's whole update (model, and its aux head if it offloaded), as a list."""
    _, _, g, _ = world
    out = []
    for row, a in enumerate(trained.order):
        pick = lambda t, row=row: jax.tree.map(lambda x: x[row], t)
        delta = jax.tree.map(
            lambda t, s: t - s,
            (pick(trained.params), pick(trained.batch_stats)),
            (g.params, g.batch_stats),
        )
        heads = [
            jax.tree.map(lambda h, s, i=i: h[i] - s, hs, g.aux[f"m{m}"])
            for m, (hs, who) in trained.aux.items()
            for i, w in enumerate(who)
            if w == a
        ]
        out.append((delta, heads))
    return out


def test_zero_noise_and_infinite_clip_change_nothing_bit_for_bit(world):
    trained = _train(world)
    spec = DpSpec("gaussian", "local", clip_norm=float("inf"), noise_multiplier=0.0)
    released = RoundPrivacy(spec, 0, K).release(StartModels(world[2]), trained, 1)
    chex.assert_trees_all_equal(
        (released.params, released.batch_stats, released.aux),
        (trained.params, trained.batch_stats, trained.aux),
    )


@pytest.mark.parametrize("mechanism, ord_", [("gaussian", 2), ("laplace", 1)])
def test_every_released_update_is_within_the_clip(world, mechanism, ord_):
    trained = _train(world)
    before = _row_updates(world, trained)
    norms = [float(optax.tree.norm(u, ord=ord_)) for u in before]
    clip = 0.5 * min(norms)  # every agent's update is clipped, to half its norm or less
    spec = DpSpec(mechanism, "central", clip_norm=clip)  # central: clipped, not noised
    released = RoundPrivacy(spec, 0, K).release(StartModels(world[2]), trained, 1)
    after = _row_updates(world, released)
    for n0, (d0, h0), (d1, h1) in zip(norms, before, after, strict=True):
        assert float(optax.tree.norm((d1, h1), ord=ord_)) <= clip * (1 + 1e-4)
        # The direction is kept: the released update is the trained one scaled by C / norm
        # (up to float32 rounding of start + update, 1e-7 of the weights).
        for a, b in zip(jax.tree.leaves((d0, h0)), jax.tree.leaves((d1, h1)), strict=True):
            want = clip / n0 * np.asarray(a)
            np.testing.assert_allclose(np.asarray(b), want, rtol=1e-5, atol=2e-7)


@pytest.mark.slow  # 49 s; tests/test_privacy_dp.py::test_local_noise_is_keyed_per_agent stays fast
def test_local_noise_is_fresh_per_agent_and_keyed_by_round(world):
    trained = _train(world)
    spec = DpSpec("gaussian", "local", clip_norm=1.0, noise_multiplier=1.0)
    dp = RoundPrivacy(spec, 0, K)
    a = dp.release(StartModels(world[2]), trained, 1)
    b = dp.release(StartModels(world[2]), trained, 1)
    c = dp.release(StartModels(world[2]), trained, 2)
    chex.assert_trees_all_equal(a.params, b.params)
    leaf = lambda r: np.asarray(jax.tree.leaves(r.params)[0])
    assert not np.allclose(leaf(a), leaf(c))
    assert not np.allclose(leaf(a)[0] - leaf(trained)[0], leaf(a)[1] - leaf(trained)[1])


def test_patch_shuffling_changes_the_fast_side_only_and_nopeek_the_slow_side(world):
    plain = _train(world)
    shuffled = _train(world, PrivacySpec(patch_shuffle=True, patch_size=2))
    nopeek = _train(world, PrivacySpec(nopeek=True, nopeek_alpha=0.5))
    model = world[0]
    b = split.boundary(model, 2)
    slow_stages = [f"s{i:02d}" for i in range(b)]
    fast_stages = [f"s{i:02d}" for i in range(b, model.num_stages)]
    row = plain.rows_of([0])[0]  # the offloading agent's row
    take = lambda t, names: {n: jax.tree.map(lambda x: x[row], t[n]) for n in names}
    # Shuffling acts after the slow step: its params and aux head are exactly the plain ones.
    chex.assert_trees_all_equal(take(shuffled.params, slow_stages), take(plain.params, slow_stages))
    chex.assert_trees_all_equal(shuffled.aux, plain.aux)
    diff = lambda x, y: float(optax.tree.norm(jax.tree.map(lambda a, b: a - b, x, y)))
    assert diff(take(shuffled.params, fast_stages), take(plain.params, fast_stages)) > 1e-6
    # NoPeek changes the slow side's loss, hence its params.
    assert diff(take(nopeek.params, slow_stages), take(plain.params, slow_stages)) > 1e-6
    # Agents that did not offload are untouched by both.
    other = plain.rows_of([1])[0]
    for t in (shuffled, nopeek):
        chex.assert_trees_all_equal(
            jax.tree.map(lambda x: x[other], t.params),
            jax.tree.map(lambda x: x[other], plain.params),
        )


@pytest.mark.slow
def test_rounds_report_the_epsilon_dp_accounting_gives(cifar10_dir, tmp_path):
    config = smoke_config(
        cifar10_dir,
        rounds=3,
        plots=False,
        **{
            "privacy.dp.mechanism": "laplace",
            "privacy.dp.clip_norm": 1e-3,
            "privacy.dp.epsilon_per_round": 0.5,
        },
    )
    exp = experiment.build(config, tmp_path)
    state = rounds.initial_state(exp)
    eps = []
    for _ in range(3):
        state, rec = rounds.run_round(exp, state)
        eps.append(rec["dp_epsilon"])
        assert rec["dp_delta"] == 1e-5
    for r, e in enumerate(eps, start=1):
        acc = dp_accounting.pld.PLDAccountant()
        acc.compose(dp_accounting.LaplaceDpEvent(1 / 0.5), r)
        assert e == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert eps[0] < eps[1] < eps[2]
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.method))


@pytest.mark.slow  # 32 s; test_zero_noise_and_infinite_clip_change_nothing_bit_for_bit stays fast
def test_dp_off_and_dp_at_zero_noise_give_identical_rounds(cifar10_dir, tmp_path):
    plain = experiment.build(smoke_config(cifar10_dir, rounds=2), tmp_path / "a")
    zero = experiment.build(
        smoke_config(
            cifar10_dir,
            rounds=2,
            **{
                "privacy.dp.mechanism": "gaussian",
                "privacy.dp.noise_multiplier": 0.0,
                "privacy.dp.clip_norm": float("inf"),
            },
        ),
        tmp_path / "b",
    )
    sa, sb = rounds.initial_state(plain), rounds.initial_state(zero)
    for _ in range(2):
        sa, ra = rounds.run_round(plain, sa)
        sb, rb = rounds.run_round(zero, sb)
        for k in ra.keys() - {"wall_time_s"}:
            np.testing.assert_equal(ra[k], rb[k], err_msg=k)
        assert rb["dp_epsilon"] == float("inf")
    chex.assert_trees_all_equal(sa.method, sb.method)
    assert dataclasses.asdict(zero.privacy.spec)["noise_multiplier"] == 0.0


def test_central_noise_is_refused_for_methods_without_one_aggregate():
    c = smoke.get_config()
    c.method = "gossip"
    c.privacy.dp.mechanism = "gaussian"
    c.privacy.dp.placement = "central"
    with pytest.raises(ConfigError, match="privacy.dp.placement"):
        validate_config(c)
