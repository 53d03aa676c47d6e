"""Pairing over routes (system.pairing_links = routes): a hand-computed line, the paths agree."""

import numpy as np
import pytest
from test_system_fixtures import resnet56_profile
from test_system_scheduler import toy_profile

from comdml_jax.methods.comdml import pairing_plan
from comdml_jax.system import build_system
from comdml_jax.system.exact import exact_plan
from comdml_jax.system.local_search import greedy_ls_plan
from comdml_jax.system.pair_routes import pairing_links
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.scheduler import greedy_plan, greedy_plan_reference
from comdml_jax.system.timing import TimingParams, price_round
from comdml_jax.system.topology import link_capacities, make_topology
from comdml_jax.system.world import main_component
from configs import fig3

ALPHA = 0.1
PARAMS = TimingParams(cpu_flops=1e9, cpu_gamma=1.0, latency_s=ALPHA)  # t_ref = 1 s
# one cut: T_s = 0.2, T_f = 0.8, ν = 1 megabit per batch (ν / c = 0.01 s at 100 Mbps)
PROFILE = toy_profile([1.0, 0.2], [0.0, 0.8], [0, 125_000])


def line_world():
    """0 - 1 - 2 - 3, 10 batches each; τ̂ = 10 / cpu = [10, 5, 1.25, 1.25] s."""
    topo = make_topology("edges", 4, edges=((0, 1), (1, 2), (2, 3)))
    links = link_capacities(topo, np.full(4, 100.0))
    return np.array([1.0, 2.0, 8.0, 8.0]), links, np.full(4, 10), np.ones(4, bool)


def test_routes_pair_the_slowest_agent_two_hops_away_by_hand():
    cpu, links, nb, part = line_world()
    direct = greedy_plan(PairingInputs(cpu, links, nb, part, PROFILE, PARAMS))
    # direct: 0's only neighbour is 1: max(10·0.2, 5 + 10·(0.01 + 0.8·0.5)) = 9.1 < 10;
    # 2 and 3 are equally fast, so nobody else pairs.
    assert direct.pairs == [(0, 1, 1)]
    t_direct = price_round(direct, cpu, links, nb, PROFILE, PARAMS)
    assert t_direct.makespan_s == pytest.approx(9.1)

    routed = pairing_links(links, part, "routes", ALPHA)
    assert routed.capacity([0, 0, 0], [1, 2, 3]).tolist() == [100.0, 100.0, 100.0]
    assert routed.relay([0, 0, 0], [1, 2, 3]) == pytest.approx([0.0, ALPHA, 2 * ALPHA])
    x = PairingInputs(cpu, routed, nb, part, PROFILE, PARAMS)
    plan = greedy_plan(x)
    # routes, agent 0: with 1: 9.1; with 2 (two hops, relay α per batch):
    # 1.25 + 10·(0.01 + 0.1 + 0.8·0.125) = 3.35; with 3 (three hops): 4.35  ->  2.
    # agent 1 next: 3 is free and two hops away: max(5·0.2, 1.25 + 10·0.21) = 3.35 < 5.
    assert plan.pairs == [(0, 2, 1), (1, 3, 1)]
    assert greedy_plan_reference(x).pairs == plan.pairs
    t = price_round(plan, cpu, links, nb, PROFILE, PARAMS, pair_links=routed)
    assert t.tau_s == pytest.approx([2.0, 1.0, 3.35, 3.35])
    assert t.comm_s[[2, 3]] == pytest.approx([10 * (0.01 + ALPHA)] * 2)
    assert t.makespan_s == pytest.approx(3.35)
    # the AllReduce is priced on the real line (3 hops), not on the routes
    assert t.exchange_time_s == t_direct.exchange_time_s > 0
    ls = greedy_ls_plan(x)
    t_ls = price_round(ls, cpu, links, nb, PROFILE, PARAMS, pair_links=routed)
    assert t_ls.makespan_s == t.makespan_s
    # the exact optimum over the routed links is this plan's makespan
    best = exact_plan(x)
    opt = price_round(best, cpu, links, nb, PROFILE, PARAMS, pair_links=routed)
    assert opt.makespan_s == t.makespan_s


def test_a_one_hop_route_costs_the_direct_link_and_complete_topologies_are_unchanged():
    cpu, links, nb, part = line_world()
    routed = pairing_links(links, part, "routes", ALPHA)
    one_hop = ([0, 1, 2], [1, 2, 3])
    assert routed.capacity(*one_hop).tolist() == links.capacity(*one_hop).tolist()
    assert routed.relay(*one_hop).tolist() == [0.0, 0.0, 0.0]
    full = link_capacities(make_topology("full", 4), np.full(4, 100.0))
    assert pairing_links(full, part, "routes", ALPHA) is full
    assert pairing_links(links, part, "direct", ALPHA) is links
    # a sampled-out agent can relay but is not a partner
    part2 = np.array([True, False, True, True])
    r2 = pairing_links(links, part2, "routes", ALPHA)
    assert r2.capacity([0, 0], [1, 2]).tolist() == [0.0, 100.0]


def test_routed_scheduler_paths_agree_on_random_sparse_worlds():
    rng = np.random.default_rng(3)
    for seed in range(12):
        k = int(rng.integers(6, 30))
        cpu = rng.choice([4.0, 2.0, 1.0, 0.5, 0.2], k)
        bw = rng.choice([0.0, 10.0, 20.0, 50.0, 100.0], k)
        nb = rng.choice([5, 10, 20], k)
        links = link_capacities(make_topology("random", k, p=0.2, seed=seed), bw)
        part = main_component(links, (bw > 0) & (rng.random(k) < 0.8))
        routed = pairing_links(links, part, "routes", 1e-3)
        x = PairingInputs(cpu, routed, nb, part, resnet56_profile(), TimingParams())
        plan = greedy_plan(x)
        assert plan.pairs == greedy_plan_reference(x).pairs
        t = price_round(plan, cpu, links, nb, resnet56_profile(), TimingParams(), routed)
        direct = greedy_plan(
            PairingInputs(cpu, links, nb, part, resnet56_profile(), TimingParams())
        )
        # every pair is between participants that a route joins
        for i, j, _ in plan.pairs:
            assert part[i] and part[j] and routed.capacity([i], [j])[0] > 0
        ls = greedy_ls_plan(x)
        tl = price_round(ls, cpu, links, nb, resnet56_profile(), TimingParams(), routed)
        assert tl.makespan_s <= t.makespan_s
        if len(direct.pairs) and k <= 12:
            e = exact_plan(x)
            te = price_round(e, cpu, links, nb, resnet56_profile(), TimingParams(), routed)
            assert te.makespan_s <= tl.makespan_s


def test_the_system_plans_and_prices_over_routes_at_fig3s_setting():
    c = fig3.get_config("cifar10")
    c.system.pairing_links = "routes"
    system = build_system(c)
    direct_system = build_system(fig3.get_config("cifar10"))
    nb = np.full(c.num_agents, 10)
    prof = resnet56_profile()
    more = 0
    for r in range(6):
        state = system.round_env(r)
        plan = pairing_plan(system, state, nb, prof)
        routed = pairing_links(state.links, state.participants, "routes", system.timing.latency_s)
        want = price_round(plan, state.cpu, state.links, nb, prof, system.timing, routed)
        got = system.price(plan, state, nb, prof)
        assert got.round_time_s == want.round_time_s
        direct = pairing_plan(direct_system, state, nb, prof)
        assert (
            direct.pairs
            == greedy_plan(
                PairingInputs(state.cpu, state.links, nb, state.participants, prof, system.timing)
            ).pairs
        )
        more += len(plan.pairs) > len(direct.pairs)
    assert more >= 3  # on 20% of the links routes find partners that neighbours do not
    c.system.pairing_links = "multihop"
    with pytest.raises(ValueError, match="system.pairing_links"):
        build_system(c)
