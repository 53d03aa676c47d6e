"""Timing model (docs/timing_model.md, eq. (4)) and AllReduce against hand-computed values."""

import math

import numpy as np
import pytest
from test_system_fixtures import resnet56_profile

from comdml_jax.system.route_stats import route_stats
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import (
    RoundPlan,
    TimingParams,
    allreduce_s,
    calibrate_cpu_flops,
    halving_doubling_s,
    price_round,
    ring_s,
)
from comdml_jax.system.topology import link_capacities, make_topology

SQRT2 = math.sqrt(2)


def small_profile(full_step_flops=1e9, model_bytes=4_000_000) -> SplitProfile:
    """3 cuts: T_s = (1, .6, .3), T_f = (0, .4, .7), ν = (0, 1 MB, 2 MB)."""
    return SplitProfile(
        model="toy",
        batch_size=10,
        cuts=np.arange(3),
        layers_offloaded=np.array([0, 1, 2]),
        slow_rel_cost=np.array([1.0, 0.6, 0.3]),
        fast_rel_cost=np.array([0.0, 0.4, 0.7]),
        bytes_per_batch=np.array([0, 1_000_000, 2_000_000]),
        slow_param_bytes=np.zeros(3, np.int64),
        fast_param_bytes=np.zeros(3, np.int64),
        full_step_flops=full_step_flops,
        model_bytes=model_bytes,
    )


def test_two_agents_eq4_by_hand():
    # t_ref = 1e9 FLOP / 1e9 FLOP/s = 1 s; gamma = 1.
    params = TimingParams(cpu_flops=1e9, cpu_gamma=1.0, latency_s=1e-3)
    cpu = np.array([1.0, 4.0])
    bw = np.array([10.0, 20.0])  # c_01 = min = 10 Mbps
    nb = np.array([100, 50])
    plan = RoundPlan(np.array([True, True]), np.array([1, -1]), np.array([1, 0]))
    t = price_round(plan, cpu, bw, nb, small_profile(), params)
    # alone: tau_0 = 100 * 1 / 1 = 100 s; tau_1 = 50 * 1 / 4 = 12.5 s
    # slow 0 at cut 1: 100 * 0.6 = 60 s
    # fast 1: own 12.5 s + receive 100 * (1e6 B * 8 / (10 * 1e6)) = 80 s
    #         + fast side 100 * 0.4 * 1/4 = 10 s
    assert t.tau_s == pytest.approx([60.0, 102.5])
    assert t.compute_s == pytest.approx([60.0, 22.5])
    assert t.comm_s == pytest.approx([0.0, 80.0])
    assert t.idle_s == pytest.approx([42.5, 0.0])
    # AllReduce K = 2: 2 log2(2) alpha + 2 (1/2) b / beta = 0.002 + 4e6 * 8 / 10e6 = 3.202 s
    assert t.allreduce_s == pytest.approx(3.202)
    assert t.makespan_s == pytest.approx(102.5)
    assert t.round_time_s == pytest.approx(102.5 + 3.202)
    assert t.alone_round_time_s == pytest.approx(100.0 + 3.202)


def test_three_agents_eq4_with_gamma_by_hand():
    # t_ref = 1e9 / 2e9 = 0.5 s; gamma = 0.5, so s = sqrt(cpu).
    params = TimingParams(cpu_flops=2e9, cpu_gamma=0.5, latency_s=1e-3)
    cpu = np.array([0.5, 2.0, 1.0])
    bw = np.array([50.0, 100.0, 20.0])
    nb = np.array([40, 60, 20])
    plan = RoundPlan(np.ones(3, bool), np.array([1, -1, -1]), np.array([2, 0, 0]))
    t = price_round(plan, cpu, bw, nb, small_profile(), params)
    # alone: tau_0 = 40 * 0.5 / sqrt(0.5) = 20 sqrt2; tau_1 = 60 * 0.5 / sqrt2 = 15 sqrt2;
    #        tau_2 = 20 * 0.5 / 1 = 10
    # slow 0 at cut 2: 20 sqrt2 * 0.3 = 6 sqrt2
    # fast 1: 15 sqrt2 + 40 * 2e6 * 8 / (50e6) (= 12.8) + 40 * 0.7 * 0.5 / sqrt2 (= 7 sqrt2)
    assert t.tau_s == pytest.approx([6 * SQRT2, 22 * SQRT2 + 12.8, 10.0])
    assert t.comm_s == pytest.approx([0.0, 12.8, 0.0])
    assert t.compute_s == pytest.approx([6 * SQRT2, 22 * SQRT2, 10.0])
    top = 22 * SQRT2 + 12.8
    assert t.idle_s == pytest.approx([top - 6 * SQRT2, 0.0, top - 10.0])
    # AllReduce K = 3: p = 2, r = 1: 2*1*a + 2*(1/2)*X + (2a + 2X) = 4a + 3X,
    # beta = 20 Mbps, X = 4e6 * 8 / 20e6 = 1.6 s
    assert t.allreduce_s == pytest.approx(4e-3 + 4.8)
    assert t.round_time_s == pytest.approx(top + 4.804)
    assert t.alone_round_time_s == pytest.approx(20 * SQRT2 + 4.804)
    ring = price_round(
        plan, cpu, bw, nb, small_profile(), TimingParams(2e9, 0.5, 1e-3, allreduce="ring")
    )
    # ring K = 3: 2*2*a + 2*(2/3)*X
    assert ring.allreduce_s == pytest.approx(4e-3 + 4 / 3 * 1.6)


def test_non_participants_take_no_part():
    params = TimingParams(cpu_flops=1e9)
    plan = RoundPlan(np.array([True, False, True]), np.full(3, -1), np.zeros(3))
    t = price_round(
        plan,
        np.array([1.0, 0.2, 2.0]),
        np.array([10.0, 0.0, 10.0]),
        np.array([10, 10, 10]),
        small_profile(),
        params,
    )
    assert t.tau_s == pytest.approx([10.0, 0.0, 5.0])
    assert t.idle_s == pytest.approx([0.0, 0.0, 5.0])
    # K = 2 over the two participants: 2a + X, X = 4e6 * 8 / 10e6
    assert t.allreduce_s == pytest.approx(2e-3 + 3.2)


# b = 1e6 B at beta = 8 Mbps: X = 1 s; alpha = 0.01 s
@pytest.mark.parametrize(
    "k, hd, ring",
    [
        (1, 0.0, 0.0),
        (2, 2 * 0.01 + 1.0, 2 * 0.01 + 1.0),
        # K = 8: 2*3*a + 2*7/8*X
        (8, 0.06 + 1.75, 14 * 0.01 + 1.75),
        # K = 6: core p = 4: 2*2*a + 2*3/4*X, fold: 2a + 2X
        (6, 0.04 + 1.5 + 0.02 + 2.0, 10 * 0.01 + 10 / 6),
        # K = 10: core p = 8: 0.06 + 1.75, fold: 2a + 2X
        (10, 0.06 + 1.75 + 0.02 + 2.0, 18 * 0.01 + 1.8),
    ],
)
def test_allreduce_formulas(k, hd, ring):
    assert halving_doubling_s(k, 1e6, 8.0, 0.01) == pytest.approx(hd)
    assert ring_s(k, 1e6, 8.0, 0.01) == pytest.approx(ring)


def test_allreduce_bottleneck_and_hops_on_a_ring():
    params = TimingParams(latency_s=0.01)
    bw = np.array([8.0, 100.0, 100.0, 100.0, 100.0, 100.0])
    # complete: 1 hop, beta = 8 -> the K = 6 value above
    assert allreduce_s(np.ones(6, bool), bw, 1e6, params) == pytest.approx(3.56)
    ring = link_capacities(make_topology("ring", 6), bw)
    # ring of 6: diameter 3 hops, so alpha -> 3 alpha: 6 steps * 0.03 + 3.5 X
    assert allreduce_s(np.ones(6, bool), ring, 1e6, params) == pytest.approx(6 * 0.03 + 3.5)


def test_routes_take_the_widest_shortest_path():
    # square 0-1-2-3-0; 0 -> 2 via 1 (10 Mbps) or via 3 (50 Mbps), both 2 hops
    topo = make_topology("edges", 4, edges=[(0, 1), (1, 2), (2, 3), (3, 0)])
    links = link_capacities(topo, np.array([100.0, 10.0, 100.0, 50.0]))
    r = route_stats(links, np.array([True, False, True, False]))
    assert (r.hops, r.bottleneck_mbps) == (2, 50.0)
    with pytest.raises(ValueError, match="not connected"):
        route_stats(
            link_capacities(topo, np.array([100.0, 0.0, 100.0, 0.0])),
            np.array([True, False, True, False]),
        )


def test_round_plan_rejects_invalid_pairings():
    on = np.ones(3, bool)
    with pytest.raises(ValueError, match="at most one pair"):
        RoundPlan(on, np.array([2, 2, -1]), np.array([1, 1, 0]))
    with pytest.raises(ValueError, match="at most one pair"):
        RoundPlan(on, np.array([1, 2, -1]), np.array([1, 1, 0]))
    with pytest.raises(ValueError, match="cut"):
        RoundPlan(on, np.array([1, -1, -1]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="participants"):
        RoundPlan(np.array([True, False, True]), np.array([1, -1, -1]), np.array([1, 0, 0]))
    plan = RoundPlan(on, np.array([2, -1, -1]), np.array([1, 0, 0]))
    assert plan.pairs == [(0, 2, 1)]
    assert plan.with_cut(0).pairs == [] and plan.with_cut(2).pairs == [(0, 2, 2)]


def test_price_rejects_a_pair_without_a_link():
    plan = RoundPlan(np.ones(2, bool), np.array([1, -1]), np.array([1, 0]))
    c = np.zeros((2, 2))
    with pytest.raises(ValueError, match="no link"):
        price_round(plan, np.ones(2), c, np.ones(2), small_profile(), TimingParams())


def test_cpu_flops_calibration_from_table1_by_hand():
    prof = resnet56_profile()
    # nu^1 = 100 * (8*8*256) * 4 + 100 * 4 = 6,554,000 B -> 1.04864 s at 50 Mbps
    per_batch_comm = 6_554_000 * 8 / 50e6
    for gamma in (1.0, 0.617):
        t_ref = 5573 / (655 - 34) * per_batch_comm * 2**gamma
        assert calibrate_cpu_flops(prof, gamma) == pytest.approx(56.3e9 / t_ref)
    # roughly 3 GFLOP/s per simulated CPU (docs/timing_model.md)
    assert 2.9e9 < calibrate_cpu_flops(prof, 1.0) < 3.1e9
    calibrated = TimingParams(cpu_gamma=1.0, cpu_flops_calibration="table1")
    plan = RoundPlan.alone(np.array([True]))
    t = price_round(plan, np.array([2.0]), np.array([50.0]), np.array([1]), prof, calibrated)
    # the fast agent's batch is (5573 / 621) times cut 1's activation transfer
    assert t.tau_s[0] == pytest.approx(5573 / 621 * per_batch_comm)
