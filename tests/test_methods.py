"""Every method of the paper on one engine: plans, prices and merges (issue 15).

Times are checked against values computed by hand from the formulas of docs/timing_model.md on
a 3-agent world; merges against hand-traced averages of stand-in models whose
"training" is known; whole rounds against each other through ``run_round``.
"""

from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax.methods import get_method
from comdml_jax.methods.base import RoundContext
from comdml_jax.methods.braintorrent import BrainTorrentState, pulled_by
from comdml_jax.methods.gossip import gossip_targets
from comdml_jax.streams import Purpose
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.profiles import rng_for
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.world import build_system
from comdml_jax.train import aggregate
from comdml_jax.train.types import AgentModels, ModelVars
from configs import default

ALPHA = 1e-3
B = 1_000_000  # model bytes: 8 Mbit


def toy_profile() -> SplitProfile:
    """t_ref = 1 s (1 GFLOP at 1 GFLOP/s); one cut: T_s = .5, T_f = .5, ν = 1 MB."""
    return SplitProfile(
        model="toy",
        batch_size=10,
        cuts=np.arange(2),
        layers_offloaded=np.array([0, 1]),
        slow_rel_cost=np.array([1.0, 0.5]),
        fast_rel_cost=np.array([0.0, 0.5]),
        bytes_per_batch=np.array([0, 1_000_000]),
        slow_param_bytes=np.zeros(2, np.int64),
        fast_param_bytes=np.zeros(2, np.int64),
        full_step_flops=1e9,
        model_bytes=B,
    )


def world(method: str, edges=(), participation=1.0, num_batches=(4.0, 4.0, 4.0), **system):
    """A 3-agent world: CPUs (2, 1, 0.5), links (100, 50, 20) Mbps, 4 batches each."""
    c = default.get_config()
    c.num_agents = 3
    c.participation = participation
    c.system.cpu = (2.0, 1.0, 0.5)
    c.system.bandwidth_mbps = (100.0, 50.0, 20.0)
    c.system.dynamics_rounds = ()
    c.system.cpu_flops = 1e9
    c.system.latency_s = ALPHA
    if edges:
        c.system.topology.kind = "edges"
        c.system.topology.edges = tuple(edges)
    for k, v in system.items():
        c.system[k] = v
    sysm = build_system(c)
    method_obj = get_method(method)

    def ctx(r=0, mesh=None):
        return RoundContext(
            round=r,
            seed=0,
            system=sysm,
            env=sysm.round_env(r),
            num_batches=np.asarray(num_batches),
            num_samples=np.array([40, 40, 40]),
            profile=toy_profile(),
            mesh=mesh,
        )

    return method_obj, ctx


def xfer(mbps, hops=1):
    return B * 8 / (mbps * 1e6) + hops * ALPHA


# ------------------------------------------------------------------ time formulas by hand
# Alone, τ = 4 batches x 1 s / cpu = (2, 4, 8) s for every method.


def test_allreduce_round_time_by_hand():
    method, ctx = world("allreduce")
    c = ctx()
    t = method.price(c, method.plan(c, None))
    # K = 3: p = 2, r = 1. 2 log2(2) α + 2 (1/2) X + (2 α + 2 X), X = 8 Mbit / 20 Mbps = .4 s.
    assert t.exchange_time_s == pytest.approx(2 * ALPHA + 0.4 + 2 * ALPHA + 0.8)
    assert t.round_time_s == pytest.approx(8.0 + 1.2 + 4 * ALPHA)
    np.testing.assert_allclose(t.compute_s, [2.0, 4.0, 8.0])


def test_comdml_round_time_by_hand():
    method, ctx = world("comdml")
    c = ctx()
    plan = method.plan(c, None)
    # Slowest agent 2 (τ̂ 8 s) looks at 0 and 1 at the single cut:
    #   with 0: max(8 · .5, 2 + 4 · (8 Mbit / 20 Mbps) + 4 · .5 · .5) = max(4, 2 + 1.6 + 1) = 4.6
    #   with 1: max(4, 4 + 4 · (8/20) + 4 · .5 · 1) = max(4, 4 + 1.6 + 2) = 7.6   -> pair (2 -> 0).
    # Then agent 1 (4 s) has no faster free partner.
    assert plan.pairs == [(2, 0, 1)]
    t = method.price(c, plan)
    np.testing.assert_allclose(t.tau_s, [4.6, 4.0, 4.0])
    assert t.round_time_s == pytest.approx(4.6 + 1.2 + 4 * ALPHA)


def test_fedavg_round_time_by_hand():
    method, ctx = world("fedavg", server_bandwidth_mbps=30.0)
    c = ctx()
    t = method.price(c, method.plan(c, None))
    # S / |P| = 10 Mbps < every bw, so r_i = 10: down and up 8 Mbit / 10 Mbps + α each.
    np.testing.assert_allclose(t.detail["rate_mbps"], [10.0, 10.0, 10.0])
    np.testing.assert_allclose(t.comm_s, 2 * (0.8 + ALPHA))
    assert t.round_time_s == pytest.approx(8.0 + 1.6 + 2 * ALPHA)
    # With a fast server the agents' own links bind: r = (100, 50, 20).
    method, ctx = world("fedavg", server_bandwidth_mbps=1000.0)
    t = method.price(ctx(), method.plan(ctx(), None))
    np.testing.assert_allclose(t.detail["rate_mbps"], [100.0, 50.0, 20.0])
    assert t.round_time_s == pytest.approx(8.0 + 2 * xfer(20.0))


def test_gossip_round_time_on_a_line_by_hand():
    """Edges 0-1-2: 0 and 2 can only send to 1; 1 sends to 0 or 2."""
    method, ctx = world("gossip", edges=((0, 1), (1, 2)))
    c = ctx()
    plan = method.plan(c, None)
    sends = dict(plan.transfers)
    assert sends[0] == 1 and sends[2] == 1 and sends[1] in (0, 2)
    t = method.price(c, plan)
    # Agent 1 receives from 0 (c = 50) and 2 (c = 20), serialised.
    into_1 = xfer(50.0) + xfer(20.0)
    into_other = xfer(50.0) if sends[1] == 0 else xfer(20.0)
    assert t.exchange_s[1] == pytest.approx(into_1)
    assert t.exchange_s[sends[1]] == pytest.approx(into_other)
    assert t.round_time_s == pytest.approx(8.0 + max(into_1, into_other))


def test_braintorrent_round_time_on_a_line_by_hand():
    """Edges 0-1-2: the aggregator pulls both others, 0 <-> 2 over two hops."""
    method, ctx = world("braintorrent", edges=((0, 1), (1, 2)))
    state = method.init(_stand_in_model(), 3)
    pulls = {  # aggregator -> its serialised pulls (route bottleneck, hops)
        0: xfer(50.0) + xfer(20.0, hops=2),
        1: xfer(50.0) + xfer(20.0),
        2: xfer(20.0) + xfer(20.0, hops=2),
    }
    seen = set()
    for r in range(6):
        c = ctx(r)
        plan = method.plan(c, state)
        a = pulled_by(plan)
        seen.add(a)
        assert sorted(i for i, _ in plan.transfers) == sorted({0, 1, 2} - {a})
        t = method.price(c, plan)
        assert t.exchange_time_s == pytest.approx(pulls[a])
        assert t.round_time_s == pytest.approx(8.0 + pulls[a])
    assert len(seen) > 1  # the aggregator changes across rounds


# ------------------------------------------------------------------ merges with stand-in models


def _stand_in_model(value=0.0):
    return ModelVars({"s00": {"w": jnp.full((2, 3), value)}}, {"s00": {"m": jnp.zeros(3)}}, {})


def _trained(values: dict[int, float], k: int) -> AgentModels:
    """Stand-in trained models: agent i's params are all ``values[i]``."""
    order = tuple(sorted(values))
    params = {"s00": {"w": jnp.stack([jnp.full((2, 3), values[a]) for a in order])}}
    stats = {"s00": {"m": jnp.stack([jnp.full(3, values[a] / 10) for a in order])}}
    return AgentModels(params, stats, order, {}, np.zeros(k))


def test_gossip_merge_is_the_hand_traced_equal_weight_average():
    """A complete graph of 5, fixed seed: receivers average their own and what they got."""
    k = 5
    mesh = aggregate.make_mesh(jax.devices()[:2])
    c = default.get_config()
    c.num_agents = k
    c.system.cpu = (1.0,) * k
    c.system.bandwidth_mbps = (10.0,) * k
    c.system.dynamics_rounds = ()
    sysm = build_system(c)
    env = sysm.round_env(0)
    ctx = SimpleNamespace(
        seed=0, round=0, env=env, mesh=mesh, num_samples=np.full(k, 10), aggregation="psum"
    )
    method = get_method("gossip")
    state = method.init(_stand_in_model(), k)
    plan = method.plan(ctx, state)
    targets = gossip_targets(0, 0, env.participants, env.links)
    senders = np.flatnonzero(targets >= 0)
    assert plan.transfers == [(int(i), int(targets[i])) for i in senders]
    trained_values = {i: float(i + 1) for i in range(k)}  # "training" sets agent i to i + 1
    new, info = method.merge(state, None, _trained(trained_values, k), plan, ctx, None)
    for j in range(k):
        got = [i for i in range(k) if targets[i] == j]
        want = np.mean([trained_values[j]] + [trained_values[i] for i in got])
        np.testing.assert_allclose(np.asarray(new.params["s00"]["w"][j]), want, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(new.batch_stats["s00"]["m"][j]), want / 10, 1e-6)
    assert info["receivers"] == sorted(set(targets.tolist()) - {-1})


def test_braintorrent_pulls_only_newer_versions_and_others_keep_their_models():
    k = 4
    method = get_method("braintorrent")
    mesh = aggregate.make_mesh(jax.devices()[:1])
    c = default.get_config()
    c.num_agents = k
    c.system.cpu = (1.0,) * k
    c.system.bandwidth_mbps = (10.0,) * k
    c.system.dynamics_rounds = ()
    sysm = build_system(c)
    env = sysm.round_env(0)
    sizes = np.array([10, 20, 30, 40])
    ctx = SimpleNamespace(
        seed=3, round=0, env=env, mesh=mesh, num_samples=sizes, aggregation="psum"
    )
    state = method.init(_stand_in_model(), k)
    # Round 0: everybody trains (agent i's model becomes i + 1).
    plan = method.plan(ctx, state)
    a = pulled_by(plan)
    want_a = int(np.flatnonzero(env.participants)[rng_for(3, Purpose.AGGREGATOR, 0).integers(k)])
    assert a == want_a
    assert sorted(i for i, _ in plan.transfers) == [i for i in range(k) if i != a]
    vals = {i: float(i + 1) for i in range(k)}
    state, info = method.merge(state, None, _trained(vals, k), plan, ctx, None)
    w = np.asarray(state.params["s00"]["w"])
    np.testing.assert_allclose(w[a], np.sum(sizes * np.arange(1, 5)) / sizes.sum(), rtol=1e-6)
    for i in range(k):
        if i != a:
            np.testing.assert_allclose(w[i], vals[i])  # non-aggregators keep their models
    np.testing.assert_array_equal(np.asarray(state.versions), [1, 1, 1, 1])
    # Round 1: only agents {a, x} train; the same aggregator a has merged everyone's
    # version 1, so it pulls only x (newer), not the agents that did not train again.
    x = (a + 1) % k
    part = np.zeros(k, bool)
    part[[a, x]] = True
    env1 = dataclass_replace(env, participants=part)
    ctx1 = SimpleNamespace(
        seed=3, round=1, env=env1, mesh=mesh, num_samples=sizes, aggregation="psum"
    )
    plan1 = method.plan(ctx1, state)
    if pulled_by(plan1) == a:
        assert [i for i, _ in plan1.transfers] == [x]
    else:  # x aggregates: it never merged anything, but pulls only from participants
        assert [i for i, _ in plan1.transfers] == [a]


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_braintorrent_state_is_a_checkpointable_pytree():
    method = get_method("braintorrent")
    state = method.init(_stand_in_model(1.5), 3)
    assert isinstance(state, BrainTorrentState)
    leaves = jax.tree.leaves(state)
    assert any(x.shape == (3, 3) for x in leaves)  # merged versions
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x, state), state)


def test_rounds_without_participants_and_plans_with_transfers_validate():
    two, none, zero = np.array([True, True]), np.array([-1, -1]), np.array([0, 0])
    with pytest.raises(ValueError, match="participants"):
        RoundPlan(np.array([True, False]), none, zero, edges=[(0, 1)])
    with pytest.raises(ValueError, match="itself"):
        RoundPlan(two, none, zero, edges=[(1, 1)])
    with pytest.raises(ValueError, match="repeat"):
        RoundPlan(two, none, zero, edges=[(0, 1), (0, 1)])
    plan = RoundPlan(two, none, zero, edges=[(1, 0), (0, 1)])
    assert plan.transfers == [(0, 1), (1, 0)]


# ------------------------------------------------------------------ D-PSGD (SPEC §7)


def test_dpsgd_round_time_on_a_line_by_hand():
    """Edges 0-1-2, c = (50, 20): everyone sends to each neighbour; 1 receives twice."""
    method, ctx = world("dpsgd", edges=((0, 1), (1, 2)))
    c = ctx()
    plan = method.plan(c, None)
    assert plan.transfers == [(0, 1), (1, 0), (1, 2), (2, 1)]
    t = method.price(c, plan)
    np.testing.assert_allclose(t.exchange_s, [xfer(50.0), xfer(50.0) + xfer(20.0), xfer(20.0)])
    assert t.exchange_time_s == pytest.approx(xfer(50.0) + xfer(20.0))
    assert t.round_time_s == pytest.approx(8.0 + xfer(50.0) + xfer(20.0))
    np.testing.assert_allclose(t.compute_s, [2.0, 4.0, 8.0])


def test_dpsgd_merge_on_a_line_by_hand():
    """Degrees (1, 2, 1): W = [[2/3, 1/3, 0], [1/3, 1/3, 1/3], [0, 1/3, 2/3]]."""
    method, ctx = world("dpsgd", edges=((0, 1), (1, 2)))
    c = ctx(mesh=aggregate.make_mesh(jax.devices()[:1]))
    state = method.init(_stand_in_model(), 3)
    plan = method.plan(c, state)
    new, info = method.merge(state, None, _trained({0: 1.0, 1: 2.0, 2: 3.0}, 3), plan, c, None)
    w = np.asarray(new.params["s00"]["w"])
    for i, want in enumerate([4 / 3, 2.0, 8 / 3]):
        np.testing.assert_allclose(w[i], want, rtol=1e-6)
    assert info["receivers"] == [0, 1, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpsgd_merge_equals_the_metropolis_mix_in_numpy(seed):
    """A random graph of 8 with 6 sampled: participants mix by Metropolis weights, others keep."""
    k = 8
    c = default.get_config()
    c.num_agents, c.seed, c.participation = k, seed, 0.75
    c.system.cpu = (1.0,) * k
    c.system.bandwidth_mbps = (10.0,) * k
    c.system.dynamics_rounds = ()
    c.system.topology.kind = "random"
    c.system.topology.p = 0.4
    sysm = build_system(c)
    method = get_method("dpsgd")
    env = sysm.round_env(0, method.take_part)
    ctx = SimpleNamespace(
        seed=seed,
        round=0,
        env=env,
        mesh=aggregate.make_mesh(jax.devices()[:2]),
        num_samples=np.full(k, 10),
        aggregation="psum",
    )
    state = method.init(_stand_in_model(), k)
    plan = method.plan(ctx, state)
    values = {i: float(np.random.default_rng(seed).normal() + i) for i in range(k)}
    trained = {i: v for i, v in values.items() if env.participants[i]}
    new, _ = method.merge(state, None, _trained(trained, k), plan, ctx, None)
    # The reference: the participants' adjacency from the topology itself, weights by loop.
    part = np.asarray(env.participants, bool)
    adj = np.zeros((k, k), bool)
    for i in range(k):
        for j in range(k):
            adj[i, j] = i != j and part[i] and part[j] and env.links.capacity(i, j) > 0
    deg = adj.sum(axis=1)
    w = np.eye(k)
    for i in range(k):
        for j in range(k):
            if adj[i, j]:
                w[i, j] = 1.0 / (1 + max(deg[i], deg[j]))
        w[i, i] = 1.0 - (w[i].sum() - w[i, i])
    x = np.array([values[i] if part[i] else 0.0 for i in range(k)])  # unsampled: initial 0
    want = w @ x
    got = np.asarray(new.params["s00"]["w"])[:, 0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert adj.any()  # the seeds give a graph with edges to mix over
    np.testing.assert_allclose(w.sum(axis=0), 1.0)  # doubly stochastic: the mean is kept


# ------------------------------------------------------------------ ComDML's front weight


def _two_stage_trained(values: dict[int, tuple[float, float]], k: int) -> AgentModels:
    """Stand-in models of two stages: agent i's s00 is values[i][0], its s01 values[i][1]."""
    order = tuple(sorted(values))
    params = {
        f"s0{s}": {"w": jnp.stack([jnp.full((2,), values[a][s]) for a in order])} for s in (0, 1)
    }
    stats = {
        f"s0{s}": {"m": jnp.stack([jnp.full((2,), values[a][s] / 10) for a in order])}
        for s in (0, 1)
    }
    return AgentModels(params, stats, order, {}, np.zeros(k))


def _comdml_ctx(k, sizes, w):
    return SimpleNamespace(
        mesh=aggregate.make_mesh(jax.devices()[:1]),
        num_samples=np.asarray(sizes),
        aggregation="psum",
        central_noise=None,
        aux_front_weight=w,
    )


def test_front_weights_by_hand():
    """3 stages; agent 2 slow at cut 1 (front s00, s01), agent 3 at cut 2 (front s00)."""
    from comdml_jax.methods.comdml import front_weights

    plan = RoundPlan(np.ones(4, bool), np.array([-1, -1, 0, 1]), np.array([0, 0, 1, 2]))
    got = front_weights(plan, [10, 20, 30, 40], 3, 0.5)
    np.testing.assert_array_equal(got["s00"], [10, 20, 15, 20])
    np.testing.assert_array_equal(got["s01"], [10, 20, 15, 40])
    np.testing.assert_array_equal(got["s02"], [10, 20, 30, 40])


@pytest.mark.parametrize("w", [0.0, 0.25])
def test_comdml_merge_down_weights_the_head_trained_front_by_hand(w):
    """Agent 2 offloads at cut 1 of a 2-stage model: only its s00 is weighed by w."""
    k, sizes = 3, [40, 20, 30]
    vals = {0: (1.0, 10.0), 1: (2.0, 20.0), 2: (4.0, 40.0)}
    plan = RoundPlan(np.ones(k, bool), np.array([-1, -1, 0]), np.array([0, 0, 1]))
    method = get_method("comdml")
    state = method.init(ModelVars({}, {}, {}), k)
    new, info = method.merge(
        state, None, _two_stage_trained(vals, k), plan, _comdml_ctx(k, sizes, w), None
    )
    front = (40 * 1.0 + 20 * 2.0 + w * 30 * 4.0) / (40 + 20 + w * 30)
    back = (40 * 10.0 + 20 * 20.0 + 30 * 40.0) / 90
    np.testing.assert_allclose(np.asarray(new.model.params["s00"]["w"]), front, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.model.batch_stats["s00"]["m"]), front / 10, 1e-6)
    np.testing.assert_allclose(np.asarray(new.model.params["s01"]["w"]), back, rtol=1e-6)
    assert info["merged"] == [0, 1, 2]


def test_comdml_merge_at_weight_one_is_the_papers_average_bit_for_bit():
    """w = 1 takes the paper's path; the per-stage path with N_i everywhere gives the same bits."""
    from comdml_jax.methods.base import average
    from comdml_jax.methods.comdml import front_weights

    k, sizes = 3, [40, 20, 30]
    vals = {0: (1.1, 10.3), 1: (2.7, 20.9), 2: (4.3, 40.1)}
    plan = RoundPlan(np.ones(k, bool), np.array([-1, -1, 0]), np.array([0, 0, 1]))
    method, trained = get_method("comdml"), _two_stage_trained(vals, k)
    state = method.init(ModelVars({}, {}, {}), k)
    ctx = _comdml_ctx(k, sizes, 1.0)
    paper, _ = get_method("allreduce").merge(state, None, trained, plan, ctx, None)
    ours, _ = method.merge(state, None, trained, plan, ctx, None)
    chex.assert_trees_all_equal(paper, ours)
    staged, _ = average(trained, state.model, ctx, stage_weights=front_weights(plan, sizes, 2, 1.0))
    chex.assert_trees_all_equal(paper.model.params, staged.params)
    chex.assert_trees_all_equal(paper.model.batch_stats, staged.batch_stats)


def test_aux_front_weight_reweights_only_the_slow_agents_fronts_in_a_round(build_synthetic):
    """One synthetic ComDML round at w = 1 and w = 0: the plan and price are the same, the
    stages behind every slow agent's boundary are bit for bit the same, and the stem (front
    of every slow agent) differs."""
    from comdml_jax import rounds

    out = {}
    for w in (1.0, 0.0):
        exp = build_synthetic("comdml", workdir=None, rounds=1, **{"train.aux_front_weight": w})
        state, rec = rounds.run_round(exp, rounds.initial_state(exp))
        out[w] = (state.method.model, rec)
    (paper, rec1), (front0, rec0) = out[1.0], out[0.0]
    assert rec1["pairs"] and rec1["pairs"] == rec0["pairs"]
    assert rec1["round_time_s"] == rec0["round_time_s"]
    stages = sorted(paper.params)
    first_shared = len(stages) - min(cut for _, _, cut in rec1["pairs"])
    for name in stages[first_shared:]:
        chex.assert_trees_all_equal(paper.params[name], front0.params[name])
    diff = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))),
        paper.params[stages[0]],
        front0.params[stages[0]],
    )
    assert max(jax.tree.leaves(diff)) > 1e-6
