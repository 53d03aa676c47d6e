"""The pairing scheduler (Algorithm 1) and the exact solver of problem (5)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_system_fixtures import resnet56_profile

from comdml_jax.methods.comdml import pairing_plan
from comdml_jax.system import build_system, scheduler
from comdml_jax.system.exact import brute_force_plan, exact_plan
from comdml_jax.system.gap import greedy_gap
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.scheduler import greedy_plan, greedy_plan_reference, no_offload_plan
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import TimingParams, alone_s, price_round
from comdml_jax.system.topology import as_links, link_capacities, make_topology
from comdml_jax.system.world import main_component
from configs import table1

UNIT = TimingParams(cpu_flops=1e9, cpu_gamma=1.0)  # t_ref = 1 s for full_step_flops = 1e9


def toy_profile(slow, fast, nbytes) -> SplitProfile:
    m = len(slow)
    return SplitProfile(
        model="toy",
        batch_size=10,
        cuts=np.arange(m),
        layers_offloaded=np.arange(m),
        slow_rel_cost=np.asarray(slow, float),
        fast_rel_cost=np.asarray(fast, float),
        bytes_per_batch=np.asarray(nbytes, np.int64),
        slow_param_bytes=np.zeros(m, np.int64),
        fast_param_bytes=np.zeros(m, np.int64),
        full_step_flops=1e9,
        model_bytes=1_000_000,
    )


def test_greedy_by_hand():
    # tau_hat = N / cpu = [20, 2.5, 10]; one cut: T_s = T_f = 0.5, nu = 0.
    prof = toy_profile([1, 0.5], [0, 0.5], [0, 0])
    cpu, bw, nb = np.array([0.5, 4.0, 1.0]), np.full(3, 100.0), np.full(3, 10)
    plan = greedy_plan(PairingInputs(cpu, bw, nb, np.ones(3, bool), prof, UNIT))
    # agent 0 first: with 1: max(10, 2.5 + 10 * 0.5 / 4) = 10; with 2: max(10, 10 + 5) = 15
    # -> pairs with 1 (10 < 20). Agent 2 next: 1 is taken, nobody else is faster.
    assert plan.pairs == [(0, 1, 1)]
    t = price_round(plan, cpu, bw, nb, prof, UNIT)
    assert t.makespan_s == pytest.approx(10.0)


def test_greedy_ties_go_to_the_lowest_index():
    prof = toy_profile([1, 0.5], [0, 0.5], [0, 0])
    cpu = np.array([4.0, 0.5, 4.0, 0.5])
    x = PairingInputs(cpu, np.full(4, 100.0), np.full(4, 10), np.ones(4, bool), prof, UNIT)
    plan = greedy_plan(x)
    # agents 1 and 3 tie as slowest (1 first); 0 and 2 tie as partners (0 first)
    assert plan.pairs == [(1, 0, 1), (3, 2, 1)]


def test_greedy_is_suboptimal_where_exact_is_not_by_hand():
    # cuts: T_s = (1, .5, .1), T_f = (0, .5, .9), nu = 0; tau_hat = N / cpu.
    prof = toy_profile([1, 0.5, 0.1], [0, 0.5, 0.9], [0, 0, 0])
    cpu = np.array([0.1, 10.0, 1.0, 1.0])  # A, B, C, D
    nb = np.array([1, 1, 9, 1])  # tau_hat = [10, 0.1, 9, 1]
    x = PairingInputs(cpu, np.full(4, 100.0), nb, np.ones(4, bool), prof, UNIT)
    # Greedy: A -> B at cut 2: max(1, 0.1 + 0.9 * 1/10) = 1 (A -> D is at best 1.9);
    # then C -> D at cut 1: max(4.5, 1 + 0.5 * 9) = 5.5 < 9. Makespan 5.5.
    # Exact: A -> D at cut 2: max(1, 1 + 0.9) = 1.9; C -> B at cut 2: max(0.9, 0.1 + 0.81) = 0.91.
    assert greedy_plan(x).pairs == [(0, 1, 2), (2, 3, 1)]
    gap = greedy_gap(x)
    assert gap.greedy_s == pytest.approx(5.5)
    assert gap.exact_s == pytest.approx(1.9)
    assert gap.gap == pytest.approx((5.5 - 1.9) / 1.9)
    assert sorted(exact_plan(x).pairs) == [(0, 3, 2), (2, 1, 2)]


@pytest.mark.parametrize("setting_picks_more, setting_picks_fewer", [("1", "2")])
def test_table1_offloads_more_layers_in_setting_1(setting_picks_more, setting_picks_fewer):
    prof = resnet56_profile()
    nb = np.array([250, 250])  # 25,000 samples per agent at B = 100
    layers, savings = {}, {}
    for s in (setting_picks_more, setting_picks_fewer):
        system = build_system(table1.get_config(s))
        state = system.round_env(0)
        plan = pairing_plan(system, state, nb, prof)
        assert [(i, j) for i, j, _ in plan.pairs] == [(1, 0)]  # the slow agent offloads to the fast
        t = system.price(plan, state, nb, prof)
        layers[s] = int(prof.layers_offloaded[plan.pairs[0][2]])
        savings[s] = 1 - t.round_time_s / t.alone_round_time_s
        # the picked cut is the best of all forced cuts
        forced = [system.price(plan.with_cut(m), state, nb, prof).round_time_s for m in range(8)]
        assert t.round_time_s == pytest.approx(min(forced))
    assert layers["1"] > layers["2"]
    assert savings["1"] > savings["2"] > 0


@pytest.mark.slow
def test_table1_with_the_compiled_profile():
    profile_lib = pytest.importorskip("comdml_jax.train.profile")
    prof = profile_lib.split_profile("resnet56", 100, 10)
    nb = np.array([250, 250])
    picked = {}
    for s in ("1", "2"):
        system = build_system(table1.get_config(s))
        state = system.round_env(0)
        plan = pairing_plan(system, state, nb, prof)
        picked[s] = int(prof.layers_offloaded[plan.pairs[0][2]]) if plan.pairs else 0
    assert picked["1"] > picked["2"]


def test_none_scheduler_never_pairs():
    prof = resnet56_profile()
    plan = no_offload_plan(
        PairingInputs(
            np.array([0.2, 4.0]),
            np.array([100.0, 100.0]),
            np.array([10, 10]),
            np.ones(2, bool),
            prof,
            UNIT,
        )
    )
    assert plan.pairs == []


def test_pairing_inputs_normalise_links_and_derive_what_the_schedulers_share():
    prof = toy_profile([1, 0.5], [0, 0.5], [0, 0])
    cpu, nb, part = [0.5, 4.0, 1.0], [10, 10, 5], [True, True, False]
    x = PairingInputs(cpu, np.full(3, 100.0), nb, part, prof, UNIT)
    assert x.links.complete and x.num_agents == 3
    assert x.cpu.dtype == x.num_batches.dtype == np.float64 and x.participants.dtype == bool
    assert np.array_equal(x.tau_hat, alone_s(cpu, nb, prof, UNIT))  # to the bit
    assert np.array_equal(x.terms.slow, [1, 0.5])
    for a in (x.cpu, x.num_batches, x.participants, x.step, x.tau_hat):
        assert not a.flags.writeable
    mine = np.array(cpu)
    PairingInputs(mine, np.full(3, 100.0), nb, part, prof, UNIT)
    assert mine.flags.writeable  # a copy: the caller's arrays are left alone
    links = as_links(np.full(3, 100.0))
    assert PairingInputs(cpu, links, nb, part, prof, UNIT).links is links
    dense = PairingInputs(cpu, np.full((3, 3), 100.0), nb, part, prof, UNIT)
    assert not dense.links.complete
    with pytest.raises(ValueError, match="num_batches must have shape"):
        PairingInputs(cpu, np.full(3, 100.0), [10, 10], part, prof, UNIT)


# --- random instances ---


@st.composite
def instances(draw, max_k=12, complete=None):
    k = draw(st.integers(2, max_k))
    cpu = np.array(
        draw(
            st.lists(st.sampled_from([4.0, 2.0, 1.0, 0.5, 0.2, 0.25, 3.0]), min_size=k, max_size=k)
        )
    )
    bw = np.array(
        draw(
            st.lists(
                st.sampled_from([0.0, 10.0, 20.0, 50.0, 100.0, 20.0, 100.0]), min_size=k, max_size=k
            )
        )
    )
    nb = np.array(draw(st.lists(st.integers(1, 30), min_size=k, max_size=k)))
    kind = (
        draw(st.sampled_from(["full", "random", "ring"]))
        if complete is None
        else ("full" if complete else draw(st.sampled_from(["random", "ring"])))
    )
    topo = make_topology(kind, k, p=draw(st.sampled_from([0.3, 0.6])), seed=draw(st.integers(0, 9)))
    links = link_capacities(topo, bw)
    sampled = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=k, max_size=k))
    part = main_component(links, (bw > 0) & np.array(sampled))
    if draw(st.booleans()):
        prof = resnet56_profile(full_step_flops=draw(st.sampled_from([5e9, 56.3e9])))
    else:
        m = draw(st.integers(2, 5))
        fast = np.concatenate(
            [[0], np.sort(draw(st.lists(st.floats(0.05, 1.0), min_size=m - 1, max_size=m - 1)))]
        )
        slow = np.concatenate([[1], 1.02 - fast[1:]])
        nbytes = [0] + draw(st.lists(st.integers(1, 400_000), min_size=m - 1, max_size=m - 1))
        prof = toy_profile(slow, fast, nbytes)
    params = TimingParams(cpu_flops=3e9, cpu_gamma=draw(st.sampled_from([1.0, 0.62])))
    return cpu, links, nb, part, prof, params


@settings(max_examples=200, deadline=None)
@given(instances(max_k=25), st.sampled_from([1, 2, 8]))
def test_vectorised_greedy_equals_the_loop(inst, table_min_class):
    x = PairingInputs(*inst)
    saved, scheduler._TABLE_MIN_CLASS = scheduler._TABLE_MIN_CLASS, table_min_class
    try:  # both complete-topology paths (hypothesis does not mix with monkeypatch)
        vec = greedy_plan(x)
    finally:
        scheduler._TABLE_MIN_CLASS = saved
    ref = greedy_plan_reference(x)
    assert np.array_equal(vec.partner, ref.partner) and np.array_equal(vec.cut, ref.cut)
    # and through a dense c matrix (the non-complete code path)
    cpu, links, nb, part, prof, params = inst
    dense = greedy_plan(PairingInputs(cpu, links.dense(), nb, part, prof, params))
    assert np.array_equal(dense.partner, ref.partner) and np.array_equal(dense.cut, ref.cut)


@pytest.mark.parametrize("table_min_class", [1, 8, 10**9])
def test_vectorised_greedy_equals_the_loop_at_scale(monkeypatch, table_min_class):
    """Both paths of the complete topology (sorted class tables, direct evaluation) and a mix."""
    monkeypatch.setattr(scheduler, "_TABLE_MIN_CLASS", table_min_class)
    rng = np.random.default_rng(0)
    k = 400
    cpu = rng.choice([4.0, 2.0, 1.0, 0.5, 0.2], k)
    bw = rng.choice([0.0, 10.0, 20.0, 50.0, 100.0], k)
    nb = rng.choice([5, 10, 20], k)
    for links in (as_links(bw), link_capacities(make_topology("random", k, p=0.1, seed=1), bw)):
        x = PairingInputs(cpu, links, nb, bw > 0, resnet56_profile(), TimingParams())
        vec, ref = greedy_plan(x), greedy_plan_reference(x)
        assert len(vec.pairs) > k // 10
        assert vec.pairs == ref.pairs


@settings(max_examples=200, deadline=None)
@given(instances(max_k=14))
def test_greedy_plan_properties(inst):
    cpu, links, nb, part, prof, params = inst
    plan = greedy_plan(PairingInputs(*inst))
    tau_hat = alone_s(cpu, nb, prof, params)
    agents = [a for i, j, _ in plan.pairs for a in (i, j)]
    assert len(agents) == len(set(agents))  # at most one pair each
    for i, j, m in plan.pairs:
        assert part[i] and part[j]
        assert links.capacity([i], [j])[0] > 0  # connected
        assert tau_hat[j] < tau_hat[i]  # faster
        assert 1 <= m < prof.num_cuts
    assert np.array_equal(plan.participants, part)
    t = price_round(plan, cpu, links, nb, prof, params)
    assert t.makespan_s <= t.alone_round_time_s - t.allreduce_s + 1e-9
    assert t.round_time_s <= t.alone_round_time_s


@settings(max_examples=150, deadline=None)
@given(instances(max_k=7))
def test_exact_equals_brute_force_and_bounds_greedy(inst):
    cpu, links, nb, part, prof, params = inst
    x = PairingInputs(*inst)
    exact = price_round(exact_plan(x), cpu, links, nb, prof, params).makespan_s
    brute = price_round(brute_force_plan(x), cpu, links, nb, prof, params).makespan_s
    greedy = price_round(greedy_plan(x), cpu, links, nb, prof, params).makespan_s
    assert exact == brute  # exact in float: CP-SAT optimises ranks of the float values
    assert greedy >= exact
