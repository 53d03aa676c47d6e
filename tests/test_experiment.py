"""End-to-end runs of the smoke config: outputs, timing, determinism, resume, validation (issue 5).

The expensive runs are module-scoped fixtures shared by several tests: one
uninterrupted 2-round run, one run stopped after round 1 and resumed, one CLI
run in a subprocess, and the two equal-speed experiments (ComDML, AllReduce).
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import chex
import numpy as np
import pytest
from conftest import final_state, read_records, smoke_config, without_wall_time

from comdml_jax import experiment, rounds
from comdml_jax.checkpoint import Checkpointer
from comdml_jax.config_check import validate_config
from comdml_jax.data.sources import DatasetNotFoundError
from configs import smoke, table2

REPO = Path(__file__).resolve().parents[1]
K = 5  # agents in the smoke config
RECORD_KEYS = {
    "round",
    "method",
    "sim_time_s",
    "round_time_s",
    "allreduce_time_s",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "pairs",
    "compute_s",
    "comm_s",
    "idle_s",
    "wall_time_s",
}
SUMMARY_KEYS = {
    "method",
    "rounds",
    "final_test_accuracy",
    "best_test_accuracy",
    "target_accuracy",
    "time_to_target_s",
    "sim_time_s",
    "wall_time_s",
    "startup_s",
}
PLOTS = ("accuracy_vs_time.png", "timeline_last_round.png", "partition.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ shared runs


@pytest.fixture(scope="module")
def uninterrupted(cifar10_dir, tmp_path_factory):
    """The smoke config run for its 2 rounds in one go."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    config = smoke_config(cifar10_dir)
    summary = experiment.run(config, workdir)
    return SimpleNamespace(
        config=config, workdir=workdir, summary=summary, records=read_records(workdir)
    )


@pytest.fixture(scope="module")
def resumed(cifar10_dir, tmp_path_factory):
    """The smoke config stopped after round 1, then continued to round 2 in the same workdir.

    The stop leaves an extra metrics line for round 1, as a crash between writing a
    round's metrics and saving its checkpoint would.
    """
    workdir = tmp_path_factory.mktemp("resumed")
    first = experiment.run(smoke_config(cifar10_dir, rounds=1), workdir)
    ckpt = Checkpointer(workdir)
    stopped_step = ckpt.latest_step()
    ckpt.close()
    stopped_records = read_records(workdir)
    # A crash after writing a round's metrics line but before its checkpoint leaves a
    # record that the resumed run must drop.
    with (workdir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"round": 1, "written_after_the_last_checkpoint": True}) + "\n")
    config = smoke_config(cifar10_dir)
    summary = experiment.run(config, workdir)
    return SimpleNamespace(
        config=config,
        workdir=workdir,
        summary=summary,
        records=read_records(workdir),
        stopped_step=stopped_step,
        stopped_records=stopped_records,
        first_summary=first,
    )


def run_cli(workdir, *overrides, env=None):
    """``python -m experiments.run`` on the smoke config in a fresh process."""
    cmd = [sys.executable, "-m", "experiments.run", "--config=configs/smoke.py"]
    return subprocess.run(
        [*cmd, f"--workdir={workdir}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cli_run(cifar10_dir, tmp_path_factory):
    """``python -m experiments.run`` on the smoke config in a fresh process."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    env = dict(os.environ, COMDML_JAX_CACHE=str(tmp_path_factory.mktemp("jax_cache")))
    proc = run_cli(
        workdir, f"--config.data.data_dir={cifar10_dir}", "--config.target_accuracy=0.05", env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return SimpleNamespace(workdir=workdir, records=read_records(workdir), stderr=proc.stderr)


@pytest.fixture(scope="module")
def equal_speed(cifar10_dir, tmp_path_factory):
    """ComDML and AllReduce built on agents of equal speed (same CPUs, links, data sizes)."""
    equal = {"system.cpu": (1.0,) * K, "system.bandwidth_mbps": (50.0,) * K}
    return {
        method: experiment.build(
            smoke_config(cifar10_dir, method=method, **equal), tmp_path_factory.mktemp(method)
        )
        for method in ("comdml", "allreduce")
    }


# ------------------------------------------------------------------ metrics and summary


def test_metrics_records_have_the_required_fields(uninterrupted):
    records = uninterrupted.records
    assert [r["round"] for r in records] == [0, 1]
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["method"] == "comdml"
        for key in ("compute_s", "comm_s", "idle_s"):
            assert len(r[key]) == K and all(v >= 0 for v in r[key])
        for pair in r["pairs"]:
            slow, fast, cut = pair
            assert all(isinstance(v, int) for v in pair)
            assert slow != fast and 0 <= slow < K and 0 <= fast < K and cut >= 1
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert np.isfinite(r["test_loss"]) and np.isfinite(r["train_loss"])


def test_smoke_agents_really_offload(uninterrupted):
    """The heterogeneous smoke setting pairs agents, so the other checks cover offloading."""
    for r in uninterrupted.records:
        assert r["pairs"], "the smoke config should pair its slow agents"
        assert r["round_time_s"] < r["alone_round_time_s"]
        for slow, fast, _ in r["pairs"]:
            assert r["comm_s"][fast] > 0 and r["comm_s"][slow] == 0
            assert r["compute_s"][slow] < r["compute_s"][fast]


def test_round_time_is_the_slowest_agent_plus_the_allreduce(uninterrupted):
    sim = 0.0
    for r in uninterrupted.records:
        tau = np.add(r["compute_s"], r["comm_s"])
        # Every smoke agent is connected, so every agent takes part.
        assert r["num_participants"] == K
        assert r["round_time_s"] == pytest.approx(tau.max() + r["allreduce_time_s"], rel=1e-12)
        assert r["allreduce_time_s"] > 0
        np.testing.assert_allclose(r["idle_s"], tau.max() - tau, rtol=0, atol=1e-12)
        sim += r["round_time_s"]
        assert r["sim_time_s"] == pytest.approx(sim, rel=1e-12)


def test_summary_matches_the_metrics(uninterrupted):
    records, summary = uninterrupted.records, uninterrupted.summary
    on_disk = json.loads((uninterrupted.workdir / "summary.json").read_text())
    assert on_disk == summary
    assert set(summary) == SUMMARY_KEYS
    accs = [r["test_accuracy"] for r in records]
    assert summary["method"] == "comdml"
    assert summary["rounds"] == len(records) == uninterrupted.config.rounds
    assert summary["final_test_accuracy"] == accs[-1]
    assert summary["best_test_accuracy"] == max(accs) >= summary["final_test_accuracy"]
    assert summary["target_accuracy"] == uninterrupted.config.target_accuracy
    assert summary["sim_time_s"] == records[-1]["sim_time_s"]
    assert summary["wall_time_s"] == records[-1]["wall_time_s"] > 0
    # wall_time_s counts the start-up (data, model, split profile) before round 0.
    assert 0 < summary["startup_s"] <= records[0]["wall_time_s"] <= records[-1]["wall_time_s"]
    target = uninterrupted.config.target_accuracy
    reached = [r["sim_time_s"] for r in records if r["test_accuracy"] >= target]
    assert summary["time_to_target_s"] == (reached[0] if reached else None)


# ------------------------------------------------------------------ methods


def test_equal_speeds_make_comdml_train_and_cost_exactly_like_allreduce(equal_speed):
    states = {m: rounds.initial_state(exp) for m, exp in equal_speed.items()}
    for _ in range(2):
        records = {}
        for method, exp in equal_speed.items():
            states[method], records[method] = rounds.run_round(exp, states[method])
        comdml, allreduce = records["comdml"], records["allreduce"]
        assert comdml["pairs"] == [] and comdml["method"] == "comdml"
        assert allreduce["method"] == "allreduce"
        for key in comdml.keys() - {"method", "wall_time_s"}:
            np.testing.assert_equal(comdml[key], allreduce[key], err_msg=key)
    chex.assert_trees_all_equal(states["comdml"].method, states["allreduce"].method)
    assert float(states["comdml"].sim_time_s) == float(states["allreduce"].sim_time_s) > 0


def test_final_round_evaluation_does_not_feed_the_plateau_schedule(equal_speed):
    """A run stopped early keeps the lr schedule of the longer run it resumes into."""
    exp = equal_speed["comdml"]
    start = rounds.initial_state(exp)
    out = {}
    for n_rounds in (1, 2):
        config = exp.config.copy_and_resolve_references()
        config.update_from_flattened_dict({"rounds": n_rounds, "eval_every": 2})
        out[n_rounds] = rounds.run_round(dataclasses.replace(exp, config=config), start)
    (short, short_record), (long, long_record) = out[1], out[2]
    assert np.isfinite(short_record["test_accuracy"])  # the short run's last round: evaluated
    assert np.isnan(long_record["test_accuracy"])  # round 0 of 2 with eval_every=2: not
    chex.assert_trees_all_equal(short.plateau, long.plateau, start.plateau)
    chex.assert_trees_all_equal(short.method, long.method)


def test_jitted_plateau_update_follows_optax_eagerly():
    """The round's jitted plateau step equals optax's own update, value by value.

    The values plateau, then improve, so the scale is cut (patience 2, factor
    0.5) and the counters reset; the jitted state must match at every step.
    """
    config = smoke.get_config()
    config.optim.update(plateau_factor=0.5, plateau_patience=2, min_lr=config.optim.lr / 8)
    eager = rounds.plateau_schedule(config)
    jitted = rounds.plateau_update(config)
    a = b = eager.init({})
    scales = []
    for v in (0.9, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7):
        _, a = eager.update({}, a, value=np.float32(v))
        b = jitted(b, np.float32(v))
        chex.assert_trees_all_equal(a, b)
        scales.append(float(b.scale))
    assert scales[0] == 1.0 and scales[-1] == 0.125  # cut three times, floored at min_lr / lr
    assert rounds.plateau_update(config) is jitted  # compiled once per schedule


# ------------------------------------------------------------------ determinism and resume


def test_checkpoint_restores_the_exact_run_state(equal_speed):
    exp = equal_speed["comdml"]
    assert experiment.restore_state(exp) is None  # nothing saved yet
    state, _ = rounds.run_round(exp, rounds.initial_state(exp))
    assert np.isfinite(float(state.plateau.best_value))  # the plateau saw round 0
    ckpt = Checkpointer(exp.workdir)
    experiment.save_state(ckpt, state)
    ckpt.close()
    restored = experiment.restore_state(exp)
    assert type(restored.plateau) is type(state.plateau)
    chex.assert_trees_all_equal(restored, state)
    # A checkpoint written before RunState had startup_s restores with startup_s = 0.
    state = state._replace(round=np.asarray(7, np.int64), startup_s=np.asarray(3.5))
    old = {k: v for k, v in rounds.state_to_tree(state).items() if k != "startup_s"}
    ckpt = Checkpointer(exp.workdir)
    ckpt.save(7, old)
    ckpt.close()
    restored = experiment.restore_state(exp)
    assert float(restored.startup_s) == 0.0
    chex.assert_trees_all_equal(restored, state._replace(startup_s=np.asarray(0.0)))


@pytest.mark.slow
def test_same_seed_in_another_process_writes_identical_metrics(uninterrupted, cli_run):
    assert without_wall_time(cli_run.records) == without_wall_time(uninterrupted.records)


def test_resume_after_round_1_matches_the_uninterrupted_run(uninterrupted, resumed):
    assert resumed.stopped_step == 1 and len(resumed.stopped_records) == 1
    assert without_wall_time(resumed.records) == without_wall_time(uninterrupted.records)
    assert resumed.summary.keys() == uninterrupted.summary.keys()
    for key in uninterrupted.summary.keys() - {"wall_time_s", "startup_s"}:
        assert resumed.summary[key] == uninterrupted.summary[key], key
    # Both sessions' start-ups are in the wall time: the first one's in round 0's record
    # (written by the first session), both in round 1's.
    first = resumed.first_summary["startup_s"]
    wall = [r["wall_time_s"] for r in resumed.records]
    assert 0 < first <= wall[0] == resumed.stopped_records[0]["wall_time_s"]
    assert first < resumed.summary["startup_s"] <= wall[1]
    assert wall[1] - wall[0] > resumed.summary["startup_s"] - first  # the 2nd start-up, and more
    want = final_state(uninterrupted.config, uninterrupted.workdir)
    got = final_state(resumed.config, resumed.workdir)
    assert int(got.round) == int(want.round) == 2
    chex.assert_trees_all_equal(
        got._replace(wall_time_s=0.0, startup_s=0.0), want._replace(wall_time_s=0.0, startup_s=0.0)
    )


# ------------------------------------------------------------------ validation


# The table of bad configs is in test_config_check.py, the workdir checks in test_run_dir.py.


def test_missing_data_dir_names_the_path(tmp_path):
    missing = tmp_path / "no_data_here"
    workdir = tmp_path / "run"
    with pytest.raises(DatasetNotFoundError) as err:
        experiment.run(smoke_config(str(missing), **{"data.download": False}), workdir)
    assert str(missing) in str(err.value) and err.value.path.startswith(str(missing))
    assert not workdir.exists()


# ------------------------------------------------------------------ the CLI


def test_cli_writes_every_output(cli_run):
    wd = cli_run.workdir
    config = json.loads((wd / "config.json").read_text())
    assert config["target_accuracy"] == 0.05  # the override round-trips
    assert config["model"]["name"] == "tiny" and config["num_agents"] == K
    assert config["system"]["cpu"] == list(smoke.get_config().system.cpu)

    records = cli_run.records
    assert [r["round"] for r in records] == [0, 1] and all(RECORD_KEYS <= r.keys() for r in records)
    summary = json.loads((wd / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["sim_time_s"] == records[-1]["sim_time_s"]
    assert summary["final_test_accuracy"] == records[-1]["test_accuracy"]
    # A stratified 200-image test set: even a constant prediction scores 10% >= 5%.
    assert summary["time_to_target_s"] == records[0]["sim_time_s"]

    partition = json.loads((wd / "partition.json").read_text())
    counts = np.asarray(partition["class_counts"])
    assert counts.shape == (K, 10) and counts.sum() == 300
    assert np.all(counts.sum(1) == 60)  # IID: 300 images over 5 agents
    assert 0.0 <= partition["label_skew"] < 1.0

    for name in PLOTS:
        data = (wd / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    ckpt = Checkpointer(wd)
    assert ckpt.latest_step() == 2
    ckpt.close()


def _event_steps(workdir: Path) -> dict[str, list[int]]:
    """TensorBoard tag -> the steps it was written at, over the event files in ``workdir``."""
    import struct

    from tensorboardX.proto import event_pb2

    steps = {}
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                steps.setdefault(v.tag, []).append(event.step)
    return steps


def test_metrics_log_and_tensorboard_number_rounds_alike(cli_run):
    """Round r is r in metrics.jsonl, in the log line and at TensorBoard step r (0-based)."""
    rounds = [r["round"] for r in cli_run.records]
    assert rounds == [0, 1]
    logged = [
        (int(m.group(1)), int(m.group(2)))
        for m in re.finditer(r"\] round (\d+) of 0-(\d+)  \d+ agents", cli_run.stderr)
    ]
    assert logged == [(r, 1) for r in rounds]
    steps = _event_steps(cli_run.workdir)
    assert steps["sim_time_s"] == steps["participants/count"] == rounds
    assert "participants/mean" not in steps  # ids are counted, never averaged
    # The CLI's start-up (imports included) is in the wall time of round 0.
    summary = json.loads((cli_run.workdir / "summary.json").read_text())
    assert 0 < summary["startup_s"] <= cli_run.records[0]["wall_time_s"]
    assert re.search(r"start-up \d+\.\d s .*round 0 of 0-1 next", cli_run.stderr)
    # stderr is a pipe here: no progress bar in the log.
    assert "\r" not in cli_run.stderr and "batch/s" not in cli_run.stderr
    assert "round/s" not in cli_run.stderr and "rounds:" not in cli_run.stderr


# ------------------------------------------------------------------ configs


def test_smoke_config_is_valid_and_small():
    c = smoke.get_config()
    validate_config(c)
    assert c.model.name == "tiny" and c.rounds == 2 and 4 <= c.num_agents <= 5
    assert len(set(c.system.cpu)) == c.num_agents  # heterogeneous


@pytest.mark.parametrize(
    "arg, name, partition, target",
    [
        ("cifar10,iid", "cifar10", "iid", 0.90),
        ("cifar10,noniid", "cifar10", "dirichlet", 0.85),
        ("cifar100,iid", "cifar100", "iid", 0.65),
        ("cifar100,noniid", "cifar100", "dirichlet", 0.60),
        ("cinic10,iid", "cinic10", "iid", 0.75),
        ("cinic10,noniid", "cinic10", "dirichlet", 0.65),
    ],
)
def test_table2_config_selects_the_paper_setting(arg, name, partition, target):
    c = table2.get_config(arg)
    validate_config(c)
    assert (c.data.name, c.data.partition, c.target_accuracy) == (name, partition, target)
    assert c.num_agents == 10 and c.model.name == "resnet56" and c.train.batch_size == 100
    assert (c.optim.lr, c.optim.momentum, c.optim.plateau_factor) == (0.001, 0.9, 0.2)
    assert c.data.alpha == 0.5 and c.system.dynamics_rounds == (100,)
    assert c.system.dynamics_fraction == 0.2 and c.rounds > 100


@pytest.mark.parametrize("arg", ["mnist,iid", "cifar10", "cifar10,dirichlet", "cifar10,iid,x"])
def test_table2_config_rejects_a_bad_argument(arg):
    with pytest.raises(ValueError, match="cifar10, cifar100, cinic10.*iid, noniid"):
        table2.get_config(arg)


def test_round_lr_ramps_by_hand():
    """W = 3, lr 0.04: rounds 0..4 train at 0.01, 0.02, 0.03, 0.04, 0.04; the plateau scales it."""
    config = smoke.get_config()
    config.optim.lr, config.optim.warmup_rounds = 0.04, 3
    got = [rounds.round_lr(config, r, 1.0) for r in range(5)]
    np.testing.assert_allclose(got, [0.01, 0.02, 0.03, 0.04, 0.04], rtol=1e-12)
    assert rounds.round_lr(config, 4, 0.5) == pytest.approx(0.02)
    config.optim.warmup_rounds = 0  # the paper: lr × scale, unchanged
    assert rounds.round_lr(config, 0, np.float32(0.2)) == float(0.04 * np.float32(0.2))


def test_warmup_rounds_train_at_the_ramp_and_the_plateau_waits(build_synthetic):
    """W = 2: rounds 0, 1 train at lr/3, 2 lr/3 and leave the plateau state as it started;
    round 2 trains at lr and is the first evaluation the plateau sees."""
    exp = build_synthetic("allreduce", rounds=3, **{"optim.warmup_rounds": 2})
    lr = float(exp.config.optim.lr)
    state = start = rounds.initial_state(exp)
    lrs = []
    for r in range(3):
        state, rec = rounds.run_round(exp, state)
        lrs.append(rec["lr"])
        if r < 2:
            chex.assert_trees_all_equal(state.plateau, start.plateau)
    np.testing.assert_allclose(lrs, [lr / 3, 2 * lr / 3, lr], rtol=1e-6)
    assert float(state.plateau.best_value) == pytest.approx(1.0 - rec["test_accuracy"])
