"""Two processes on jax.distributed against one process, the same 4-device agent mesh (issue 12).

``experiments.local_cluster`` starts 2 processes x 2 fake CPU devices on
127.0.0.1 (gloo collectives); the reference is one process with 4 fake
devices. Agents are owned by the same devices in both, so the same models are
summed over the same mesh, only by different collectives: the first round's
merge agrees to float32 rounding, and the simulated times and plans exactly.
Later rounds train from models that differ in the last bits, which a few SGD
steps of the tiny model amplify (a 1e-7 perturbation grows to ~1e-3 in one
local epoch), so they are compared loosely.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from comdml_jax import experiment, rounds
from comdml_jax.checkpoint import Checkpointer
from configs import smoke

# Whole multi-process runs (several processes, gloo): `pytest -m slow`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXACT = ("round", "method", "num_participants", "participants", "sim_time_s", "round_time_s")
PLAN = ("pairs", "transfers", "compute_s", "comm_s", "exchange_s", "idle_s")


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # each process compiles its own programs
    return env


def _run(cmd, devices):
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _records(workdir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]


def _state_after_round_1(config, workdir):
    exp = experiment.build(config, workdir)
    like = rounds.initial_state(exp)
    ckpt = Checkpointer(workdir)
    try:
        tree = ckpt.restore(1, rounds.state_to_tree(like))
    finally:
        ckpt.close()
    return rounds.state_from_tree(tree, like)


def _args(method, data_dir):
    return [
        "-m",
        "experiments.run",
        "--config=configs/smoke.py",
        f"--config.method={method}",
        f"--config.data.data_dir={data_dir}",
    ]


@pytest.fixture(scope="module")
def one_process(cifar10_dir, tmp_path_factory):
    """Per method: one process with 4 fake devices."""
    out = {}
    for method in ("comdml", "gossip"):
        wd = tmp_path_factory.mktemp(f"one_{method}")
        _run([sys.executable, *_args(method, cifar10_dir), f"--workdir={wd}"], devices=4)
        out[method] = wd
    return out


def _two_processes(method, data_dir, tmp_path, devices_per_process):
    cluster = [sys.executable, "-m", "experiments.local_cluster", "--num_processes=2"]
    cluster += [f"--devices_per_process={devices_per_process}", f"--log_dir={tmp_path / 'logs'}"]
    wd = [f"--workdir={tmp_path / 'p{process_id}'}"]
    _run([*cluster, "--", *_args(method, data_dir), *wd], devices=devices_per_process)
    # Only process 0 writes: metrics, plots, TensorBoard files and checkpoints.
    assert not (tmp_path / "p1").exists()
    two = tmp_path / "p0"
    assert (two / "checkpoints").is_dir() and list(two.glob("events.out.tfevents.*"))
    return two


def _compare(one: Path, two: Path, method: str, data_dir: str, model_tol: dict, first_rel: float):
    want, got = _records(one), _records(two)
    assert len(want) == len(got) == 2
    for a, b in zip(want, got, strict=True):
        for k in EXACT + PLAN:
            assert a.get(k) == b.get(k), k
    first_a, first_b = want[0], got[0]
    assert first_b["train_loss"] == pytest.approx(first_a["train_loss"], rel=first_rel)
    assert first_b["test_loss"] == pytest.approx(first_a["test_loss"], rel=first_rel)
    assert abs(first_b["test_accuracy"] - first_a["test_accuracy"]) <= 1 / 200
    second_a, second_b = want[1], got[1]
    assert second_b["train_loss"] == pytest.approx(second_a["train_loss"], rel=5e-3)
    assert second_b["test_loss"] == pytest.approx(second_a["test_loss"], rel=5e-3)
    config = smoke.get_config()
    config.data.data_dir = data_dir
    config.method = method
    sa, sb = _state_after_round_1(config, one), _state_after_round_1(config, two)
    assert int(sa.round) == int(sb.round) == 1
    for x, y in zip(jax.tree.leaves(sa.method), jax.tree.leaves(sb.method), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **model_tol)


@pytest.mark.parametrize("method", ["comdml", "gossip"])
def test_two_processes_merge_like_one_process(one_process, cifar10_dir, tmp_path, method):
    """2 processes x 4 devices against 1 x 4: each agent trains bit for bit alike (XLA:CPU's
    kernels see the same devices per process), so only the cross-process sum differs."""
    two = _two_processes(method, cifar10_dir, tmp_path, devices_per_process=4)
    _compare(one_process[method], two, method, cifar10_dir, {"rtol": 1e-5, "atol": 1e-7}, 1e-6)


def _max_diff(config, a: Path, b: Path) -> float:
    sa, sb = _state_after_round_1(config, a), _state_after_round_1(config, b)
    leaves = zip(jax.tree.leaves(sa.method), jax.tree.leaves(sb.method), strict=True)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in leaves)


def test_two_by_two_devices_match_one_by_four(one_process, cifar10_dir, tmp_path):
    """The issue's 2 processes x 2 devices against 1 x 4, the same 4-device mesh.

    XLA:CPU's training kernels round differently with 2 and with 4 devices in a
    process (measured: one process with 2 devices against one with 4 gives round-0
    train losses 2.4138645172 and 2.4138644695), and the round's SGD steps amplify
    that noise. So the yardstick is that noise itself, measured in the same test:
    one process with 2 devices against one with 4. Two processes with 2 devices
    each must stay within a few times that distance of 1 x 4 (a wrong merge across
    processes, e.g. a lost or doubled agent, is orders of magnitude further off).
    The metrics that do not depend on the training arithmetic must be equal.
    """
    two = _two_processes("comdml", cifar10_dir, tmp_path, devices_per_process=2)
    one_by_two = tmp_path / "one_by_two"
    _run([sys.executable, *_args("comdml", cifar10_dir), f"--workdir={one_by_two}"], devices=2)
    one = one_process["comdml"]
    want, got = _records(one), _records(two)
    assert len(want) == len(got) == 2
    for a, b in zip(want, got, strict=True):
        for k in EXACT + PLAN:
            assert a.get(k) == b.get(k), k
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=5e-3)
    config = smoke.get_config()
    config.data.data_dir = cifar10_dir
    config.method = "comdml"
    noise = _max_diff(config, one_by_two, one)
    assert 0 < noise < 1e-2  # the kernels' noise is there, and small
    assert _max_diff(config, two, one) <= 5 * noise
