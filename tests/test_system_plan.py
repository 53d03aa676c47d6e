"""The plan-only command (experiments/plan.py) on the Table I configs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_system_fixtures import resnet56_profile

from comdml_jax.system import build_system
from configs import table1
from experiments import plan as plan_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_table1_config_is_the_paper_setting():
    c1, c2 = table1.get_config("1"), table1.get_config("2")
    assert tuple(c1.system.cpu) == (2.0, 0.25) and tuple(c1.system.bandwidth_mbps) == (50.0, 50.0)
    assert tuple(c2.system.cpu) == (2.0, 1.0) and tuple(c2.system.bandwidth_mbps) == (100.0, 100.0)
    # 20,096 s / 5,573 s = 8 ** gamma
    assert 8**c1.system.cpu_gamma == pytest.approx(20096 / 5573)


def test_table1_agents_hold_half_of_cifar10_each(cifar10_dir):
    c1 = table1.get_config("1")
    c1.data.data_dir = cifar10_dir
    # CIFAR-10's 50,000 training images split in two, batches of 100
    batches, classes = plan_cli.run_batches(c1)
    assert batches.tolist() == [250, 250] and classes == 10


def test_per_cut_sweep_contains_the_pick():
    prof = resnet56_profile()
    for s in ("1", "2"):
        c = table1.get_config(s)
        rec = plan_cli.plan_round(build_system(c), 0, np.array([250, 250]), prof, sweep=True)
        times = [row["round_time_s"] for row in rec["per_cut"]]
        assert [row["layers_offloaded"] for row in rec["per_cut"]] == [0, 1, 10, 19, 28, 37, 46, 55]
        assert times[0] == pytest.approx(rec["alone_round_time_s"])  # cut 0 = no offload
        ((_, _, cut, layers),) = rec["pairs"]
        assert rec["round_time_s"] == pytest.approx(min(times)) == pytest.approx(times[cut])
        assert layers == rec["per_cut"][cut]["layers_offloaded"]


def test_cli_json(tmp_path, cifar10_dir):
    path = tmp_path / "profile.json"
    path.write_text(resnet56_profile().to_json())
    out = {}
    for s in ("1", "2"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.plan",
                f"--config=configs/table1.py:{s}",
                "--json",
                "--rounds=2",
                f"--profile_json={path}",
                f"--config.data.data_dir={cifar10_dir}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["round"] for r in lines] == [0, 1]
        out[s] = lines[0]
    assert out["1"]["pairs"][0][3] > out["2"]["pairs"][0][3]  # more layers offloaded in setting 1
    for rec in out.values():
        assert {"round", "pairs", "round_time_s", "alone_round_time_s", "per_cut"} <= set(rec)
        assert rec["round_time_s"] < rec["alone_round_time_s"]
