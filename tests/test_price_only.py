"""Price-only rounds equal a training run's, bit for bit (issue 22 item 1).

The smoke config, 3 rounds, participation 0.6, drawn profiles with dynamics
at rounds 1 and 2, a random topology: ``comdml_jax.price_only`` (no training)
against ``experiment.run``'s ``metrics.jsonl``, method by method. ComDML and
BrainTorrent (whose plan reads its host state) run by default, the other
three with ``-m slow``.
"""

import json

import numpy as np
import pytest

from comdml_jax import experiment, price_only, rounds
from comdml_jax.config_check import validate_config
from comdml_jax.methods import METHODS
from comdml_jax.methods.braintorrent import pulled_by
from configs import smoke

SEED = 1


def dynamic_config(data_dir: str, method: str):
    c = smoke.get_config()
    c.data.data_dir = data_dir
    c.method = method
    c.seed = SEED
    c.rounds = 3
    c.participation = 0.6
    c.system.cpu = ()  # drawn from the profiles, so that the dynamics redraw them
    c.system.bandwidth_mbps = ()
    c.system.dynamics_rounds = (1, 2)
    c.system.dynamics_fraction = 0.4
    c.system.topology.kind = "random"
    c.system.topology.p = 0.7
    c.checkpoint_every = 0
    c.plots = False
    return c


def setup(cfg):
    return price_only.run_setup()(cfg)


def trained_round_times(config, workdir) -> list[float]:
    experiment.run(config, workdir, progress="off")
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln)["round_time_s"] for ln in lines]


def check(method, data_dir, tmp_path):
    config = dynamic_config(data_dir, method)
    got = price_only.price_rounds(config, *setup(config), config.rounds)
    want = trained_round_times(config, tmp_path)
    assert len(got) == len(want) == 3
    assert got == want  # bit for bit: the same floats
    report = price_only.price_comparison(config, [method], [SEED])  # the CLI's path
    assert report["methods"][method]["per_seed"][str(SEED)] == want


# The default suite trains the two methods with the most plan logic (pairs; versioned pulls);
# every other registered method, D-PSGD and any new one included, runs in the slow suite.
FAST = ("comdml", "braintorrent")


@pytest.mark.parametrize("method", FAST)
def test_price_only_equals_a_training_run(method, cifar10_dir, tmp_path):
    check(method, cifar10_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(METHODS) - set(FAST)))
def test_price_only_equals_a_training_run_slow(method, cifar10_dir, tmp_path):
    check(method, cifar10_dir, tmp_path)


def test_the_setting_is_dynamic(cifar10_dir):
    """The config really varies: participants and profiles change between rounds."""
    config = dynamic_config(cifar10_dir, "comdml")
    system = validate_config(config)
    states = [system.round_env(r) for r in range(3)]
    parts = [s.participants.tolist() for s in states]
    assert not all(p == parts[0] for p in parts) and not all(all(p) for p in parts)
    cpus = [np.asarray(s.cpu) for s in states]
    assert not all(np.array_equal(c, cpus[0]) for c in cpus)
    assert system.topology.kind == "random"


def test_braintorrent_host_state_advances_without_weights(cifar10_dir):
    """Price-only BrainTorrent carries versions only, never a model."""
    from comdml_jax.methods import get_method

    method = get_method("braintorrent")
    host = method.init_host(5)
    assert set(host._fields) == {"versions", "merged"}
    config = dynamic_config(cifar10_dir, "braintorrent")
    system, batches, profile = setup(config)
    ctx = rounds.context_for(config, system, method, 0, batches, None, profile)
    plan, _, _ = rounds.plan_and_price(method, ctx, host)
    trained = np.flatnonzero(plan.participants).tolist()
    after = method.advance_host(host, plan, trained)
    np.testing.assert_array_equal(after.versions, np.asarray(plan.participants, int))
    pulled = [i for i, _ in plan.transfers]
    np.testing.assert_array_equal(after.merged[pulled_by(plan), pulled], 1)


def test_cli_writes_price_json_and_md(cifar10_dir, tmp_path):
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "experiments.compare",
        "--config=configs/smoke.py",
        f"--config.data.data_dir={cifar10_dir}",
        "--config.rounds=2",
        f"--workdir={tmp_path}",
        "--seeds=0,1",
        "--methods=comdml,fedavg",
        "--price_only",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "price.json").read_text())
    e = report["methods"]
    assert set(e) == {"comdml", "fedavg"} and e["comdml"]["ratio"] == 1.0
    times = [t for ts in e["fedavg"]["per_seed"].values() for t in ts]
    assert len(times) == 4 and e["fedavg"]["round_time_s"]["mean"] == pytest.approx(np.mean(times))
    assert e["fedavg"]["ratio"] == pytest.approx(
        e["comdml"]["round_time_s"]["mean"] / e["fedavg"]["round_time_s"]["mean"]
    )
    md = (tmp_path / "price.md").read_text()
    assert "| fedavg |" in md and f"{e['fedavg']['ratio']:.4f}" in md
