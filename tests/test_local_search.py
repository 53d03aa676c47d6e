"""``system.scheduler = "greedy_ls"``: Algorithm 1, then the local search (local_search.py)."""

import numpy as np
import pytest
from test_system_fixtures import resnet56_profile
from test_system_scheduler import UNIT, toy_profile

from comdml_jax.methods.comdml import pairing_plan
from comdml_jax.system import build_system, get_scheduler
from comdml_jax.system import local_search as ls
from comdml_jax.system.exact import exact_plan
from comdml_jax.system.local_search import greedy_ls_plan
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.scheduler import greedy_plan
from comdml_jax.system.timing import TimingParams, alone_s, price_round
from comdml_jax.system.topology import as_links, link_capacities, make_topology
from comdml_jax.system.world import main_component
from configs import default

# cuts: T_s = (1, .5, .1), T_f = (0, .5, .9), nu = 0; with UNIT, tau_hat = N / cpu, step = 1 / cpu
ZERO_BYTES = toy_profile([1, 0.5, 0.1], [0, 0.5, 0.9], [0, 0, 0])


def makespan(plan, cpu, links, nb, prof, params):
    return price_round(plan, cpu, links, nb, prof, params).makespan_s


def first_move_kinds(monkeypatch):
    """Records which move kind each applied move came from."""
    kinds = []
    for name in ("_repair", "_swap", "_steal", "_rehome", "_chain"):
        orig = getattr(ls._Search, name)

        def wrapped(self, *a, _orig=orig, _name=name):
            move = _orig(self, *a)
            if move is not None:
                kinds.append(_name)
            return move

        monkeypatch.setattr(ls._Search, name, wrapped)
    return kinds


def test_a_swap_fixes_the_greedy_by_hand(monkeypatch):
    kinds = first_move_kinds(monkeypatch)
    cpu = np.array([0.1, 10.0, 1.0, 1.0])  # A, B, C, D
    nb = np.array([1, 1, 9, 1])  # tau_hat = [10, 0.1, 9, 1]
    bw = np.full(4, 100.0)
    x = PairingInputs(cpu, bw, nb, np.ones(4, bool), ZERO_BYTES, UNIT)
    # Greedy (test_system_scheduler): A -> B at cut 2 (1), C -> D at cut 1:
    # max(4.5, 1 + 9 * 0.5 * 1) = 5.5; makespan 5.5, the critical agent is D (5.5).
    assert greedy_plan(x).pairs == [(0, 1, 2), (2, 3, 1)]
    # Local search on D, the fast partner of C: re-pair C? no free agent is faster than C
    # (A is slower), and C alone is 9 > 5.5. Swap the partners of (C, D) and (A, B):
    #   A -> D: cut 1 max(5, 1 + 0.5) = 5, cut 2 max(1, 1 + 0.9) = 1.9 -> 1.9;
    #   C -> B: cut 1 max(4.5, 0.1 + 9 * 0.5 * 0.1) = 4.5, cut 2 max(0.9, 0.1 + 9 * 0.9 * 0.1)
    #   = 0.91 -> 0.91. New max 1.9 < 5.5: accepted. Then the critical agent is D (1.9) and
    # nothing improves it (swapping back gives 5.5). 1.9 is the optimum (exact_plan).
    plan = greedy_ls_plan(x)
    assert sorted(plan.pairs) == [(0, 3, 2), (2, 1, 2)]
    assert kinds == ["_swap"]
    t = price_round(plan, cpu, bw, nb, ZERO_BYTES, UNIT)
    assert t.makespan_s == pytest.approx(1.9)
    assert np.allclose(t.tau_s, [1.0, 0.91, 0.9, 1.9])
    assert t.makespan_s == makespan(exact_plan(x), cpu, bw, nb, ZERO_BYTES, UNIT)


def test_steal_and_rehome_by_hand(monkeypatch):
    kinds = first_move_kinds(monkeypatch)
    cpu = np.array([1.0, 10.0, 1.0, 5.0, 5.0])  # step = [1, 0.1, 1, 0.2, 0.2]
    nb = np.array([2, 9, 1, 9, 5])  # tau_hat = [2, 0.9, 1, 1.8, 1]
    bw = np.full(5, 100.0)
    x = PairingInputs(cpu, bw, nb, np.ones(5, bool), ZERO_BYTES, UNIT)
    # Greedy, slowest first. Agent 0 (2.0): with 1, cut 1 max(1, 0.9 + 2 * 0.5 * 0.1) = 1.0,
    # cut 2 max(0.2, 0.9 + 2 * 0.9 * 0.1) = 1.08; with 4, cut 1 max(1, 1 + 2 * 0.5 * 0.2) = 1.2
    # (cut 2: 1 + 2 * 0.9 * 0.2 = 1.36); with 2,
    # max(1, 1 + 1) = 2 -> 0 -> 1 at cut 1 (1.0). Agent 3 (1.8, N = 9): with 4, cut 1
    # max(0.9, 1 + 9 * 0.5 * 0.2) = 1.9, cut 2 max(0.18, 1 + 9 * 0.9 * 0.2) = 2.62; with 2,
    # max(0.9, 1 + 4.5) = 5.5: 1.9 is not below 1.8, 3 trains alone. Agent 2 (1.0): 4 is not
    # strictly faster, 1 is taken. Makespan 1.8 (agent 3 alone).
    assert greedy_plan(x).pairs == [(0, 1, 1)]
    # Local search on 3 (unpaired): re-pair with a free agent: 4 (1.9) or 2 (5.5), neither
    # below 1.8; no pair to swap with. Steal 1 from 0: 3 -> 1, cut 1
    # max(0.9, 0.9 + 9 * 0.5 * 0.1) = 1.35 (cut 2: 0.9 + 0.81 = 1.71), but 0 alone is 2.0.
    # Steal and rehome: 0 -> 4 at cut 1 (1.2, above): new max max(1.35, 1.2) = 1.35 < 1.8.
    # Then the critical agent is 1 (1.35): 3 -> 4 is 1.9, 3 -> 2 is 5.5, 3 alone is 1.8,
    # swapping with (0, 4) gives 3 -> 4 again: no improving move. The optimum is 1.35.
    plan = greedy_ls_plan(x)
    assert sorted(plan.pairs) == [(0, 4, 1), (3, 1, 1)]
    assert kinds == ["_rehome"]
    t = price_round(plan, cpu, bw, nb, ZERO_BYTES, UNIT)
    assert t.makespan_s == pytest.approx(1.35)
    assert np.allclose(t.tau_s, [1.0, 1.35, 1.0, 0.9, 1.2])
    assert t.makespan_s == makespan(exact_plan(x), cpu, bw, nb, ZERO_BYTES, UNIT)


def test_registered_and_accepted_by_the_config():
    assert get_scheduler("greedy_ls") is greedy_ls_plan
    c = default.get_config()
    c.num_agents, c.system.scheduler = 12, "greedy_ls"
    system = build_system(c)
    state = system.round_env(0)
    nb = np.full(12, 10)
    plan = pairing_plan(system, state, nb, resnet56_profile())
    greedy = pairing_plan(system, state, nb, resnet56_profile(), scheduler="greedy")
    prof = resnet56_profile()
    assert system.price(plan, state, nb, prof).makespan_s <= (
        system.price(greedy, state, nb, prof).makespan_s
    )


# --- seeded random worlds ---


def random_world(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(4, 13))
    cpu = rng.choice([4.0, 2.0, 1.0, 0.5, 0.2, 0.25, 3.0], k)
    bw = rng.choice([0.0, 10.0, 20.0, 50.0, 100.0, 20.0, 100.0], k)
    nb = rng.integers(1, 31, k)
    kind = ("full", "random", "ring")[seed % 3]  # every third world sparse of each kind
    topo = make_topology(kind, k, p=float(rng.choice([0.3, 0.6])), seed=int(rng.integers(10)))
    links = link_capacities(topo, bw)
    sampled = rng.random(k) < 0.75 if seed % 2 else np.ones(k, bool)  # participation < 1
    part = main_component(links, (bw > 0) & sampled)
    if seed % 4 < 2:
        prof = resnet56_profile(full_step_flops=float(rng.choice([5e9, 56.3e9])))
    else:
        m = int(rng.integers(2, 6))
        fast = np.concatenate([[0], np.sort(rng.uniform(0.05, 1.0, m - 1))])
        slow = np.concatenate([[1], 1.02 - fast[1:]])
        nbytes = np.concatenate([[0], rng.integers(1, 400_001, m - 1)])
        prof = toy_profile(slow, fast, nbytes)
    params = TimingParams(cpu_flops=3e9, cpu_gamma=float(rng.choice([1.0, 0.62])))
    return cpu, links, nb, part, prof, params


def check_feasible(plan, cpu, links, nb, part, prof, params):
    tau_hat = alone_s(cpu, nb, prof, params)
    agents = [a for i, j, _ in plan.pairs for a in (i, j)]
    assert len(agents) == len(set(agents))  # at most one pair each
    for i, j, m in plan.pairs:
        assert part[i] and part[j]  # only participants
        assert links.capacity([i], [j])[0] > 0  # a usable link
        assert tau_hat[j] < tau_hat[i]  # strictly faster partner
        assert 1 <= m < prof.num_cuts
    assert np.array_equal(plan.participants, part)


@pytest.mark.parametrize("seed", range(40))
def test_between_exact_and_greedy_on_random_worlds(seed):
    w = random_world(seed)
    cpu, links, nb, part, prof, params = w
    x = PairingInputs(*w)
    plan = greedy_ls_plan(x)
    check_feasible(plan, *w)
    exact = makespan(exact_plan(x), cpu, links, nb, prof, params)
    got = makespan(plan, cpu, links, nb, prof, params)
    greedy = makespan(greedy_plan(x), cpu, links, nb, prof, params)
    assert exact <= got <= greedy
    again = greedy_ls_plan(x)  # deterministic
    assert np.array_equal(again.partner, plan.partner) and np.array_equal(again.cut, plan.cut)
    # the search starts from the greedy's pairs at the greedy's cuts
    g = greedy_plan(x)
    assert np.array_equal(ls._Search(x, g).cut, g.cut)
    # the τ the search tracked is the τ the plan is priced at, to the bit
    s = ls._search(x)
    tau = price_round(s.plan(), cpu, links, nb, prof, params).tau_s
    assert np.array_equal(tau[part], s.tau[part])


def test_reaches_the_optimum_on_most_random_worlds():
    hits = total = 0
    for seed in range(40):
        w = random_world(seed)
        cpu, links, nb, part, prof, params = w
        x = PairingInputs(*w)
        exact = makespan(exact_plan(x), cpu, links, nb, prof, params)
        greedy = makespan(greedy_plan(x), cpu, links, nb, prof, params)
        if greedy == exact:
            continue
        total += 1
        hits += makespan(greedy_ls_plan(x), cpu, links, nb, prof, params) == exact
    assert total >= 3  # the worlds do exercise the search
    assert hits >= total - 1


@pytest.mark.parametrize("kind", ["full", "random"])
@pytest.mark.parametrize("batches", ["varied", "few"])
def test_at_scale(kind, batches):
    """K = 600, varied Ñ or few profile classes: the search improves and stays exactly priced."""
    rng = np.random.default_rng(3)
    k = 600
    cpu = rng.choice([4.0, 2.0, 1.0, 0.5, 0.2], k)
    bw = rng.choice([0.0, 10.0, 20.0, 50.0, 100.0], k)
    nb = rng.integers(1, 101, k) if batches == "varied" else rng.choice([3, 10, 40], k)
    links = as_links(bw) if kind == "full" else link_capacities(make_topology(kind, k, p=0.05), bw)
    part = main_component(links, bw > 0)
    w = (cpu, links, nb, part, resnet56_profile(), TimingParams())
    s = ls._search(PairingInputs(*w))
    plan = s.plan()
    check_feasible(plan, *w)
    t = price_round(plan, cpu, links, nb, resnet56_profile(), TimingParams())
    assert np.array_equal(t.tau_s[part], s.tau[part])
    greedy = makespan(
        greedy_plan(PairingInputs(*w)), cpu, links, nb, resnet56_profile(), TimingParams()
    )
    assert s.moves > 0 and t.makespan_s < greedy


def test_nothing_to_do():
    cpu, bw, nb = np.array([1.0, 2.0]), np.array([100.0, 100.0]), np.array([10, 10])
    none = np.zeros(2, bool)
    assert greedy_ls_plan(PairingInputs(cpu, bw, nb, none, ZERO_BYTES, UNIT)).pairs == []
    one_cut = toy_profile([1.0], [0.0], [0])
    x = PairingInputs(cpu, bw, nb, np.ones(2, bool), one_cut, UNIT)
    assert greedy_ls_plan(x).pairs == []
