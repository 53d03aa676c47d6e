"""Every method through the one ``run_round`` on real CIFAR-10 (issue 15).

The smoke config (5 agents with explicit, heterogeneous profiles, the tiny
model, 2 rounds) is run for every method: uninterrupted, and stopped after
round 1 then resumed in the same workdir.
"""

import chex
import jax
import numpy as np
import pytest
from conftest import final_state, smoke_config, wall_free_records

from comdml_jax import experiment
from comdml_jax.methods import METHODS

# Ten whole runs (every method, uninterrupted and resumed): `pytest -m slow`.
pytestmark = pytest.mark.slow

ALL = sorted(METHODS)


def method_config(data_dir: str, **overrides):
    """The smoke config with every agent's model evaluated every round (100 test images)."""
    return smoke_config(
        data_dir, **{"eval_agents_every": 1, "eval_agents_subset": 100, **overrides}
    )


@pytest.fixture(scope="module")
def runs(cifar10_dir, tmp_path_factory):
    """Per method: an uninterrupted 2-round run and a 1-round run resumed to 2."""
    out = {}
    for method in ALL:
        whole = tmp_path_factory.mktemp(f"{method}_whole")
        experiment.run(method_config(cifar10_dir, method=method), whole)
        resumed = tmp_path_factory.mktemp(f"{method}_resumed")
        experiment.run(method_config(cifar10_dir, method=method, rounds=1), resumed)
        experiment.run(method_config(cifar10_dir, method=method), resumed)
        out[method] = (whole, resumed)
    return out


@pytest.mark.parametrize("method", ALL)
def test_resume_after_round_1_equals_the_uninterrupted_run(runs, cifar10_dir, method):
    whole, resumed = runs[method]
    assert wall_free_records(resumed) == wall_free_records(whole)
    config = method_config(cifar10_dir, method=method)
    got, want = final_state(config, resumed), final_state(config, whole)
    assert int(got.round) == int(want.round) == 2
    # Every piece of run state, per-agent models and BrainTorrent's versions included.
    chex.assert_trees_all_equal(
        got._replace(wall_time_s=0.0, startup_s=0.0), want._replace(wall_time_s=0.0, startup_s=0.0)
    )


@pytest.mark.parametrize("method", ALL)
def test_every_round_records_its_exchange(runs, method):
    whole, _ = runs[method]
    for r in wall_free_records(whole):
        assert r["method"] == method and r["num_participants"] == 5
        tau = np.add(r["compute_s"], r["comm_s"])
        assert r["round_time_s"] == pytest.approx(tau.max() + max(r["exchange_s"]), rel=1e-12)
        if method == "gossip":
            assert len(r["transfers"]) == 5  # every participant sends to one neighbour
            assert r["exchange_time_s"] == pytest.approx(max(r["exchange_s"]))
        if method == "braintorrent":
            a = r["aggregator"]
            assert sorted(s for s, _ in r["transfers"]) == sorted(set(range(5)) - {a})
            assert {t for _, t in r["transfers"]} == {a} and r["pulled"] == [
                s for s, _ in r["transfers"]
            ]
            assert r["exchange_s"][a] == pytest.approx(sum(r["pull_s"]))
        if method == "fedavg":
            assert len(r["rate_mbps"]) == 5 and r["exchange_time_s"] == 0.0
        if method in ("comdml", "allreduce"):
            assert r["allreduce_time_s"] == r["exchange_time_s"] > 0


def test_fedavg_trains_the_same_model_as_allreduce_at_another_time(runs, cifar10_dir):
    states = {
        m: final_state(method_config(cifar10_dir, method=m), runs[m][0])
        for m in ("fedavg", "allreduce")
    }
    chex.assert_trees_all_equal(states["fedavg"].method, states["allreduce"].method)
    fed, ar = (wall_free_records(runs[m][0]) for m in ("fedavg", "allreduce"))
    assert [r["test_accuracy"] for r in fed] == [r["test_accuracy"] for r in ar]
    assert [r["round_time_s"] for r in fed] != [r["round_time_s"] for r in ar]


@pytest.mark.parametrize("method", ["gossip", "braintorrent"])
def test_per_agent_accuracy_statistics_match_each_agent_evaluated_alone(runs, cifar10_dir, method):
    whole, _ = runs[method]
    config = method_config(cifar10_dir, method=method)
    exp = experiment.build(config, whole)
    state = experiment.restore_state(exp)
    params, stats = exp.method.agent_models(state.method)
    accs = []
    for i in range(config.num_agents):
        row = lambda t, i=i: jax.tree.map(lambda x: x[i], t)
        accs.append(exp.evaluator(row(params), row(stats), limit=100)[1])
    last = wall_free_records(whole)[-1]
    assert last["agent_test_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert last["agent_test_accuracy_min"] == pytest.approx(min(accs), abs=1e-12)
    assert last["agent_test_accuracy_max"] == pytest.approx(max(accs), abs=1e-12)
