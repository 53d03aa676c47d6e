"""Who takes part when the participants' graph splits, and what a round charges (issue 24).

docs/timing_model.md, Participants: AllReduce and ComDML run in the largest
connected component of the sampled, connected agents P; FedAvg reaches its server whatever the peer
topology; Gossip and BrainTorrent let every agent of P train, and exchange only
between agents of P. The run and the plan CLI charge Ñ_i = E · N_i / B
(SPEC §1). Every expected number below is computed by hand from the SPEC
formulas and the config's profiles: t_ref from the Table I calibration, b the
tiny model's bytes, ν^1 its cut-1 activations (both read off the split profile).
"""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comdml_jax import experiment
from comdml_jax.methods import METHODS, RoundContext, get_method
from comdml_jax.methods.base import split_warning
from comdml_jax.methods.braintorrent import draw_aggregator
from comdml_jax.system.topology import make_topology
from comdml_jax.system.world import build_system
from comdml_jax.train import aggregate
from comdml_jax.train import profile as profile_lib
from comdml_jax.train.types import AgentModels, ModelVars
from configs import smoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALPHA = 1e-3  # configs/default.py: system.latency_s


@pytest.fixture(scope="module")
def tiny():
    """The smoke config's split profile (tiny model, B = 20, 10 classes)."""
    return profile_lib.split_profile("tiny", 20, 10)


def t_ref_table1(profile, gamma=1.0):
    """Table I's calibration (docs/timing_model.md): t_ref / 2^γ = 5573/621 · ν^1 · 8 / 50e6."""
    return 5573.0 / (655.0 - 34.0) * profile.bytes_per_batch[1] * 8 / 50e6 * 2.0**gamma


def xfer(num_bytes, mbps, hops=1):
    """docs/timing_model.md: bytes · 8 / (rate · 1e6) + α per hop."""
    return num_bytes * 8 / (mbps * 1e6) + hops * ALPHA


def records(workdir) -> list[dict]:
    return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ item 1: FedAvg on a split graph

SPLIT = ((0, 1), (1, 2), (3, 4))


def test_fedavg_trains_every_agent_of_a_split_graph(cifar10_dir, tmp_path, tiny, caplog):
    c = smoke.get_config()
    c.data.data_dir = cifar10_dir
    c.method = "fedavg"
    c.rounds = 1
    c.checkpoint_every = 0
    c.plots = False
    c.system.topology.kind = "edges"
    c.system.topology.edges = SPLIT
    with caplog.at_level(logging.WARNING):
        experiment.run(c, tmp_path)
    (rec,) = records(tmp_path)
    assert rec["participants"] == [0, 1, 2, 3, 4] and "sat_out" not in rec
    # By hand: 300 images IID over 5 agents, 60 each = 3 batches of 20; S / |P| = 1000 / 5 =
    # 200 Mbps > every bw, so r_i = bw_i; t_i = 2 xfer(b, bw_i) + 3 t_ref / cpu_i.
    t_ref = t_ref_table1(tiny)
    cpu, bw = (4.0, 2.0, 1.0, 0.5, 0.2), (100.0, 50.0, 20.0, 50.0, 10.0)
    t = [2 * xfer(tiny.model_bytes, r) + 3 * t_ref / s for s, r in zip(cpu, bw, strict=True)]
    assert rec["round_time_s"] == pytest.approx(max(t), rel=1e-9)
    assert rec["round_time_s"] == pytest.approx(7.11, abs=0.005)  # the SPEC number
    # item 8: the run says at its start what the split means for FedAvg
    (msg,) = [r.getMessage() for r in caplog.records if "topology splits" in r.getMessage()]
    assert "[[0, 1, 2], [3, 4]]" in msg and "reaches its server directly" in msg
    assert "No agent sits out" in msg


def test_allreduce_and_comdml_keep_the_largest_component_and_say_who_sat_out(tiny):
    for name in ("allreduce", "comdml", "fedavg", "gossip", "braintorrent"):
        c = smoke.get_config()
        c.system.topology.kind = "edges"
        c.system.topology.edges = SPLIT
        system, method = build_system(c), get_method(name)
        env = system.round_env(0, method.take_part)
        if name in ("allreduce", "comdml"):
            assert env.participants.tolist() == [True, True, True, False, False], name
            assert np.flatnonzero(env.sat_out).tolist() == [3, 4]
        else:
            assert env.participants.all() and not env.sat_out.any(), name


# ------------------------------------------------------------------ item 2: BrainTorrent's pulls


def _trained(order) -> AgentModels:
    params = {"s00": {"w": jnp.stack([jnp.full((2, 3), float(a)) for a in order])}}
    stats = {"s00": {"m": jnp.stack([jnp.zeros(3) for _ in order])}}
    return AgentModels(params, stats, tuple(order), {}, np.zeros(12))


def test_braintorrent_pulls_only_from_participants(tiny):
    c = smoke.get_config()
    c.method = "braintorrent"
    c.num_agents = 12
    c.system.cpu = ()
    c.system.bandwidth_mbps = ()
    c.participation = 0.5
    c.system.server_bandwidth_mbps = 100.0
    system, method = build_system(c), get_method("braintorrent")
    mesh = aggregate.make_mesh(jax.devices()[:1])
    sizes = np.full(12, 25)
    model = ModelVars({"s00": {"w": jnp.zeros((2, 3))}}, {"s00": {"m": jnp.zeros(3)}}, {})
    state = method.init(model, 12)
    seen = {}  # by hand: versions = rounds trained; merged[a] = what a last pulled
    versions, merged = np.zeros(12, int), np.zeros((12, 12), int)
    for r in range(3):
        ctx = RoundContext(r, 0, system, system.round_env(r, method.take_part), sizes / 20,
                           sizes, tiny, mesh)  # fmt: skip
        part = np.flatnonzero(ctx.env.participants)
        plan = method.plan(ctx, state)
        a = draw_aggregator(0, r, ctx.env.participants)
        versions[part] += 1
        want = [int(i) for i in part if i != a and versions[i] > merged[a, i]]
        pulled = [i for i, _ in plan.transfers]
        assert pulled == want and set(pulled) <= set(part.tolist())
        merged[a, want] = versions[want]
        seen[r] = (part.tolist(), a, pulled, method.price(ctx, plan), ctx.env.bandwidth_mbps)
        state, _ = method.merge(state, None, _trained(part.tolist()), plan, ctx, None)
    part, a, pulled, timing, bw = seen[2]
    # The case: round 2, aggregator 9; agents 8 and 10 were not sampled.
    assert a == 9 and part == [1, 4, 7, 9, 11] and pulled == [1, 4, 7, 11]
    # pull = Σ xfer(b, min(bw_9, bw_i)) on the complete graph: bw_9 = 100, bw = 100, 20, 50, 10.
    assert [bw[i] for i in (9, 1, 4, 7, 11)] == [100.0, 100.0, 20.0, 50.0, 10.0]
    pull = sum(xfer(tiny.model_bytes, r) for r in (100.0, 20.0, 50.0, 10.0))
    assert timing.exchange_time_s == pytest.approx(pull, rel=1e-12)
    assert timing.exchange_time_s == pytest.approx(0.050, abs=0.0006)
    tau = [25 / 20 * t_ref_table1(tiny) / system.profiles_at(2)[0][i] for i in part]
    assert timing.round_time_s == pytest.approx(max(tau) + pull, rel=1e-12)


# ------------------------------------------------------------------ item 3: plan = run


def test_the_plan_cli_prices_round_0_as_a_training_run_does(cifar10_dir, tmp_path, tiny, plan_json):
    """A Dirichlet split (uneven N_i, not multiples of B), 2 local epochs, ComDML."""
    over = {
        "data.partition": "dirichlet",
        "data.alpha": 0.3,
        "train.local_epochs": 2,
    }
    c = smoke.get_config()
    c.data.data_dir = cifar10_dir
    c.rounds = 1
    c.checkpoint_every = 0
    c.plots = False
    c.update_from_flattened_dict(over)
    experiment.run(c, tmp_path / "run")
    (rec,) = records(tmp_path / "run")
    sizes = json.loads((tmp_path / "run" / "partition.json").read_text())["class_counts"]
    sizes = [sum(row) for row in sizes]
    assert len(set(sizes)) > 1 and any(n % 20 for n in sizes)
    (planned,) = plan_json(cifar10_dir, tiny, *[f"--config.{k}={v}" for k, v in over.items()])
    assert planned["round_time_s"] == pytest.approx(rec["round_time_s"], rel=1e-12)
    assert planned["alone_round_time_s"] == pytest.approx(rec["alone_round_time_s"], rel=1e-12)
    assert [p[:3] for p in planned["pairs"]] == rec["pairs"]
    # By hand: Ñ_i = 2 N_i / 20 (not 2 ⌈N_i / 20⌉); alone τ̂_i = Ñ_i t_ref / cpu_i.
    nb = [2 * n / 20 for n in sizes]
    assert planned["agents"]["num_batches"] == pytest.approx(nb, rel=1e-12)
    t_ref = t_ref_table1(tiny)
    cpu = (4.0, 2.0, 1.0, 0.5, 0.2)
    alone = [n * t_ref / s for n, s in zip(nb, cpu, strict=True)]
    # halving/doubling (docs/timing_model.md), K = 5 (p = 4, r = 1), β = 10 Mbps, X = 8b / 10e6:
    # 2 log2(4) α + 2 (3/4) X + 2 α + 2 X
    x = tiny.model_bytes * 8 / 10e6
    allreduce = 2 * 2 * ALPHA + 2 * 0.75 * x + 2 * ALPHA + 2 * x
    assert rec["allreduce_time_s"] == pytest.approx(allreduce, rel=1e-12)
    assert rec["alone_round_time_s"] == pytest.approx(max(alone) + allreduce, rel=1e-9)
    # agent 2 (1 CPU) trains alone and its τ binds: the pairs finish sooner
    assert 2 not in {a for p in rec["pairs"] for a in p[:2]}
    assert rec["round_time_s"] == pytest.approx(alone[2] + allreduce, rel=1e-9)


# ------------------------------------------------------------------ item 8: the start-up warning

ISOLATING = ((0, 1), (2, 3))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_split_topology_is_reported_with_what_the_method_does(name):
    top = make_topology("edges", 5, edges=ISOLATING)
    msg = split_warning(top, get_method(name))
    assert "[[0, 1], [2, 3], [4]]" in msg and "isolated agents (no link): [4]" in msg
    if name in ("allreduce", "comdml"):
        assert "largest connected component" in msg
        assert "With every agent sampled and connected, these sit out: [2, 3, 4]" in msg
    else:
        assert "No agent sits out" in msg
    assert split_warning(make_topology("full", 5), get_method(name)) is None
    assert split_warning(make_topology("ring", 5), get_method(name)) is None


def test_the_warning_stays_short_for_many_agents():
    top = make_topology("random", 10_000, p=1e-4, seed=0)
    msg = split_warning(top, get_method("allreduce"))
    assert len(msg) < 2000 and "more" in msg and "agents from" in msg
