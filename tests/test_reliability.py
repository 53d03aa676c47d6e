"""Rounds that cannot run, agents that come and go, divergence and crashes (issue 13).

All on the smoke config (5 agents, the tiny model, real CIFAR-10).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import smoke_config, wall_free_records

from comdml_jax import experiment, rounds
from comdml_jax.train.engine import Engine
from configs import smoke

REPO = Path(__file__).resolve().parents[1]
K = 5


def write_trace(path: Path, rounds: list[tuple[int, list[float]]]) -> str:
    cpu = list(smoke.get_config().system.cpu)
    entries = [{"round": r, "bandwidth_mbps": bw} for r, bw in rounds]
    entries[0]["cpu"] = cpu
    path.write_text(json.dumps({"rounds": entries}))
    return str(path)


UP = [100.0, 50.0, 20.0, 50.0, 10.0]


def test_a_round_without_participants_is_skipped_and_changes_nothing(cifar10_dir, tmp_path):
    """participation 0.4 (2 of 5 sampled); in round 1 every link is down."""
    trace = write_trace(tmp_path / "trace.json", [(0, UP), (1, [0.0] * K), (2, UP)])
    config = smoke_config(cifar10_dir, rounds=3, participation=0.4, **{"system.trace": trace})
    summary = experiment.run(config, tmp_path / "run")
    recs = wall_free_records(tmp_path / "run")
    assert [r["round"] for r in recs] == [0, 1, 2] and summary["rounds"] == 3
    skipped = recs[1]
    assert skipped["skipped"] is True and "disconnected" in skipped["reason"]
    assert skipped["num_participants"] == 0 and skipped["round_time_s"] == 0.0
    assert skipped["sim_time_s"] == recs[0]["sim_time_s"]  # the clock does not advance
    assert recs[2]["sim_time_s"] == pytest.approx(recs[0]["sim_time_s"] + recs[2]["round_time_s"])
    # The same seeds without the empty round in between: round 2 straight after round 0.
    exp = experiment.build(config, tmp_path / "direct")
    state, rec0 = rounds.run_round(exp, rounds.initial_state(exp))
    state, rec2 = rounds.run_round(exp, state._replace(round=np.asarray(2, np.int64)))
    strip = lambda r: {k: v for k, v in json.loads(json.dumps(r, default=_plain)).items()}
    for got, want in ((rec0, recs[0]), (rec2, recs[2])):
        got = {k: v for k, v in strip(got).items() if k != "wall_time_s"}
        assert got == want


def _plain(x):
    return np.asarray(x).tolist()


def test_participants_follow_a_trace_of_disconnections(cifar10_dir, tmp_path):
    down_13 = [100.0, 0.0, 20.0, 0.0, 10.0]
    down_0 = [0.0, 50.0, 20.0, 50.0, 10.0]
    trace = write_trace(tmp_path / "t.json", [(0, UP), (1, down_13), (2, down_0), (3, UP)])
    config = smoke_config(
        cifar10_dir, rounds=4, plots=False, checkpoint_every=0, **{"system.trace": trace}
    )
    experiment.run(config, tmp_path / "run")
    got = [r["participants"] for r in wall_free_records(tmp_path / "run")]
    assert got == [[0, 1, 2, 3, 4], [0, 2, 4], [1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_a_single_participant_trains_alone_and_says_so(cifar10_dir, tmp_path):
    only_2 = [0.0, 0.0, 20.0, 0.0, 0.0]
    trace = write_trace(tmp_path / "t.json", [(0, UP), (1, only_2), (2, UP)])
    config = smoke_config(cifar10_dir, rounds=3, plots=False, **{"system.trace": trace})
    experiment.run(config, tmp_path / "run")
    recs = wall_free_records(tmp_path / "run")
    lone = recs[1]
    assert lone["participants"] == [2] and "trained alone" in lone["note"]
    assert lone["pairs"] == [] and lone["exchange_time_s"] == 0.0
    assert lone["round_time_s"] == pytest.approx(lone["compute_s"][2])
    assert "note" not in recs[0] and "note" not in recs[2]


def test_short_data_is_charged_for_the_samples_it_has(cifar10_dir, tmp_path):
    """60 samples per agent, batch 25: 2.4 batches charged (3 trained, the last wrapped)."""
    config = smoke_config(cifar10_dir, method="allreduce", **{"train.batch_size": 25})
    exp = experiment.build(config, tmp_path)
    _, rec = rounds.run_round(exp, rounds.initial_state(exp))
    t_ref = exp.profile.full_step_flops / exp.system.timing.cpu_flops
    if exp.system.timing.cpu_flops_calibration:  # the smoke config calibrates cpu_flops
        from comdml_jax.system.timing import reference_step_s

        t_ref = reference_step_s(exp.profile, exp.system.timing)
    cpu = np.asarray(config.system.cpu)
    np.testing.assert_allclose(rec["compute_s"], 2.4 * t_ref / cpu, rtol=1e-12)


@pytest.mark.slow
def test_an_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    cifar10_dir, tmp_path, monkeypatch
):
    original = Engine._run_loop

    def poisoned(self, group, start, batches, round_, lr, *rest):
        states, losses = original(self, group, start, batches, round_, lr, *rest)
        if round_ == 1:
            states = jax.tree.map(lambda x: x * np.nan if x.dtype.kind == "f" else x, states)
        return states, losses

    monkeypatch.setattr(Engine, "_run_loop", poisoned)
    config = smoke_config(cifar10_dir, rounds=3, **{"train.backend": "loop"})
    workdir = tmp_path / "run"
    with pytest.raises(rounds.NonFiniteRunError) as err:
        experiment.run(config, workdir)
    msg = str(err.value)
    assert "method comdml" in msg and "round 1:" in msg and "group at cut" in msg
    assert "agents [" in msg and "last good checkpoint" in msg
    state = experiment.restore_state(experiment.build(config, workdir))
    assert int(state.round) == 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.method))


# ------------------------------------------------------------------ crashes


def _cli(workdir, env=None, commit_delay_s=0.0):
    """The smoke run's CLI; with ``commit_delay_s`` each checkpoint commit waits that long."""
    cmd = [sys.executable, "-m", "experiments.run", "--config=configs/smoke.py"]
    if commit_delay_s:
        cmd = [sys.executable, str(REPO / "tests" / "fault_run.py"), str(commit_delay_s), *cmd[3:]]
    return subprocess.Popen(
        [*cmd, f"--workdir={workdir}", "--config.rounds=3", f"--config.data.data_dir={_DATA}"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


_DATA = os.environ.get("COMDML_DATA_DIR", "")


def _wait_for(pred, proc, timeout=600):
    t = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(
                f"the run ended before the kill point: {proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() - t > timeout:
            raise AssertionError("the kill point was never reached")
        time.sleep(0.01)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_sigkill_in_a_round_or_in_a_checkpoint_write_then_rerun_is_exact(cifar10_dir, tmp_path):
    whole = tmp_path / "whole"
    proc = _cli(whole)
    assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    want = wall_free_records(whole)
    assert len(want) == 3

    # Kill point 1: inside round 1, at a seeded moment after round 0's metrics line
    # (the same in every run of the test, so a failure can be replayed).
    in_round = tmp_path / "in_round"
    proc = _cli(in_round)
    _wait_for(lambda: _lines(in_round / "metrics.jsonl") >= 1, proc)
    time.sleep(np.random.default_rng(20261203).uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # Kill point 2: while round 1's checkpoint is half written (orbax's temporary folder).
    in_ckpt = tmp_path / "in_checkpoint"
    proc = _cli(in_ckpt, commit_delay_s=60)
    tmp_dirs = lambda: (
        [p for p in (in_ckpt / "checkpoints").glob("*tmp*")]
        if (in_ckpt / "checkpoints").is_dir()
        else []
    )
    _wait_for(lambda: bool(tmp_dirs()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    for workdir in (in_round, in_ckpt):
        proc = _cli(workdir)
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
        assert wall_free_records(workdir) == want, workdir.name


def test_a_round_whose_every_group_diverges_stops_a_skip_run(cifar10_dir, tmp_path, monkeypatch):
    """on_nonfinite=skip drops a diverged group, but a round with none left stops the run
    (issue 24 item 11: lr=1e6 used to skip every group of every round and exit 0)."""
    original = Engine._run_loop

    def poisoned(self, group, start, batches, round_, lr, *rest):
        states, losses = original(self, group, start, batches, round_, lr, *rest)
        if round_ == 1:  # every group of round 1 (the second) diverges
            losses = np.full_like(np.asarray(losses), np.nan)
        return states, losses

    monkeypatch.setattr(Engine, "_run_loop", poisoned)
    config = smoke_config(
        cifar10_dir,
        rounds=2,
        plots=False,
        **{"train.backend": "loop", "train.on_nonfinite": "skip"},
    )
    workdir = tmp_path / "run"
    with pytest.raises(rounds.NonFiniteRunError) as err:
        experiment.run(config, workdir)
    msg = str(err.value)
    assert "round 1:" in msg and "every group" in msg and "on_nonfinite=skip" in msg
    assert "last good checkpoint" in msg
    assert len(wall_free_records(workdir)) == 1  # round 0 was recorded, round 1 was not
    state = experiment.restore_state(experiment.build(config, workdir))
    assert int(state.round) == 1
