"""The run directory (issue 13): resume only with the recorded config, rounds raised
continues exactly, ``--fresh`` starts over, nothing touched when refused; and the CLI's
one-line errors with exit code 2.

The smoke config on real CIFAR-10 runs four times (module fixture ``runs``): 2 rounds in
one go, 1 round then resumed to 2 in a second workdir, and 2 rounds with ``fresh=True``
in a third workdir that holds another run's files.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import read_records, smoke_config, without_wall_time

from comdml_jax import experiment, run_dir
from comdml_jax.errors import ConfigError
from comdml_jax.run_dir import WorkdirError, config_diff, config_record

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every file and folder below ``folder``: content hash and mtime (files), or 'dir'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


# ------------------------------------------------------------------ shared runs


@pytest.fixture(scope="module")
def runs(cifar10_dir, tmp_path_factory):
    """The smoke runs, with the refused attempts made between them."""
    ns = SimpleNamespace()
    ns.config = smoke_config(cifar10_dir)

    ns.full = tmp_path_factory.mktemp("full")
    experiment.run(ns.config, ns.full)

    # 1 round, then attempts that must be refused untouched, then resumed to 2 rounds.
    ns.wd = tmp_path_factory.mktemp("resumed")
    experiment.run(smoke_config(cifar10_dir, rounds=1), ns.wd)
    ns.after_one = snapshot(ns.wd)
    ns.refusals = {}
    for name, overrides in {
        "lr": {"optim.lr": 0.1},
        "model": {"model.name": "resnet20_basic"},
        "eval_every": {"eval_every": 2},
    }.items():
        with pytest.raises(WorkdirError) as err:
            experiment.run(smoke_config(cifar10_dir, rounds=2, **overrides), ns.wd)
        ns.refusals[name] = (str(err.value), snapshot(ns.wd))
    ns.recorded_after_one = json.loads((ns.wd / "config.json").read_text())
    experiment.run(ns.config, ns.wd)
    with pytest.raises(WorkdirError) as err:
        experiment.run(smoke_config(cifar10_dir, rounds=1), ns.wd)
    ns.lower_rounds = str(err.value)

    # Another run's files (recorded with another lr, a stale metrics line, checkpoints
    # of 2 rounds) and a user's file: --fresh must start over and keep the user's file.
    ns.fresh = tmp_path_factory.mktemp("fresh")
    other = config_record(smoke_config(cifar10_dir, **{"optim.lr": 0.1}))
    (ns.fresh / "config.json").write_text(json.dumps(other))
    (ns.fresh / "metrics.jsonl").write_text(json.dumps({"round": 0, "stale": True}) + "\n")
    shutil.copytree(ns.wd / "checkpoints", ns.fresh / "checkpoints")
    (ns.fresh / "notes.txt").write_text("mine")
    ns.fresh_before = snapshot(ns.fresh)
    with pytest.raises(WorkdirError) as err:
        experiment.run(ns.config, ns.fresh)
    ns.fresh_refused = (str(err.value), snapshot(ns.fresh))
    with pytest.raises(ConfigError):  # a bad config removes nothing, even with fresh
        experiment.run(smoke_config(cifar10_dir, **{"train.batch_size": 0}), ns.fresh, fresh=True)
    ns.fresh_bad_config = snapshot(ns.fresh)
    experiment.run(ns.config, ns.fresh, fresh=True)
    return ns


def test_resume_with_another_lr_is_refused_naming_it_and_touching_nothing(runs):
    message, after = runs.refusals["lr"]
    assert "optim.lr: 0.05 (recorded) -> 0.1 (now)" in message
    assert "--fresh" in message and "new --workdir" in message
    assert "model.name" not in message and "rounds" not in message.split("Differing")[1][:60]
    assert after == runs.after_one


def test_resume_with_another_model_is_refused_before_any_orbax_error(runs):
    message, after = runs.refusals["model"]
    assert "model.name: 'tiny' (recorded) -> 'resnet20_basic' (now)" in message
    assert len(message) < 1000 and after == runs.after_one


def test_eval_every_changes_the_numbers_so_it_is_compared(runs):
    message, after = runs.refusals["eval_every"]
    assert "eval_every: 1 (recorded) -> 2 (now)" in message and after == runs.after_one


def test_resume_with_rounds_raised_continues_exactly(runs):
    full, resumed = read_records(runs.full), read_records(runs.wd)
    assert [r["round"] for r in resumed] == [0, 1]
    assert without_wall_time(resumed) == without_wall_time(full)
    # The recorded config described the 1-round run, and now describes the 2-round one.
    assert runs.recorded_after_one["rounds"] == 1
    assert json.loads((runs.wd / "config.json").read_text()) == config_record(runs.config)


def test_rounds_below_the_rounds_done_are_refused(runs):
    assert "--config.rounds=1 is invalid" in runs.lower_rounds
    assert "already holds 2 rounds" in runs.lower_rounds


def test_fresh_starts_over_and_keeps_other_files(runs):
    message, after = runs.fresh_refused
    assert "optim.lr: 0.1 (recorded) -> 0.05 (now)" in message
    assert after == runs.fresh_before == runs.fresh_bad_config
    assert without_wall_time(read_records(runs.fresh)) == without_wall_time(read_records(runs.full))
    assert (runs.fresh / "notes.txt").read_text() == "mine"
    assert json.loads((runs.fresh / "config.json").read_text()) == config_record(runs.config)
    assert run_dir.latest_round(runs.fresh) == 2


# ------------------------------------------------------------------ without training


def test_config_diff_ignores_only_the_resumable_fields(tmp_path):
    c = smoke_config("/data")
    recorded = config_record(c)
    changed = smoke_config(
        "/elsewhere",
        rounds=50,
        plots=False,
        checkpoint_every=5,
        **{"data.cache_dir": "/cache"},
    )
    assert config_diff(recorded, changed) == []
    changed.update_from_flattened_dict({"target_accuracy": 0.5, "system.cpu": (1.0,) * 5})
    assert config_diff(recorded, changed) == [
        ("system.cpu", [4.0, 2.0, 1.0, 0.5, 0.2], [1.0] * 5),
        ("target_accuracy", 0.15, 0.5),
    ]
    del recorded["system"]["sweep_cuts"]  # a field the recorded run did not have
    assert ("system.sweep_cuts", "<absent>", False) in config_diff(recorded, changed)


def test_run_files_without_a_recorded_config_are_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorkdirError, match=r"holds a run \(metrics.jsonl\) without a readable"):
        run_dir.prepare(smoke_config("/data"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "notes.txt"]
    found = run_dir.prepare(smoke_config("/data"), tmp_path, fresh=True)
    assert found.removed == ("metrics.jsonl",) and not found.resumed
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_empty_or_foreign_workdir_is_a_new_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    found = run_dir.prepare(smoke_config("/data"), tmp_path)
    assert not found.resumed and found.removed == ()


# ------------------------------------------------------------------ the CLI


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prints_a_bad_value_alone_and_exits_2(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli(
        "--config=configs/smoke.py",
        f"--workdir={workdir}",
        "--config.data.data_dir=/nonexistent",
        "--config.data.train_subset=100000",
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "--config.data.train_subset=100000 is invalid: cifar10 has 50000 training samples; "
        "use 1..50000, or 0 for all of them"
    ]
    assert not workdir.exists()


def test_cli_reports_a_missing_config_file_in_one_line(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli("--config=nope.py", f"--workdir={workdir}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--config=nope.py: no such config file 'nope.py'" in lines[0]
    assert "config_config" not in proc.stderr and not workdir.exists()


def test_the_backend_probe_line_is_filtered(tmp_path):
    """JAX logs the TPU probe on a CPU-only machine; the CLI's log filter drops it."""
    code = (
        "import logging\n"
        "from comdml_jax.launch import DropLibraryChatter\n"
        "class Keep(logging.Handler):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lines = []\n"
        "    def emit(self, record):\n"
        "        self.lines.append(record.getMessage())\n"
        "every, shown = Keep(), Keep()\n"
        "shown.addFilter(DropLibraryChatter())\n"
        "root = logging.getLogger()\n"
        "root.setLevel(logging.INFO)\n"
        "root.addHandler(every)\n"
        "root.addHandler(shown)\n"
        "import jax\n"
        "jax.devices()\n"
        "def probes(h):\n"
        "    return sum('Unable to initialize backend' in m for m in h.lines)\n"
        "print(probes(every), probes(shown))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # probe every backend
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    every, shown = map(int, proc.stdout.split())
    if every == 0:
        pytest.skip("JAX logged no failed backend probe on this machine")
    assert shown == 0


def test_a_run_recorded_before_a_field_was_added_reads_it_as_the_old_behaviour():
    c = smoke_config("/data")
    recorded = config_record(c)
    del recorded["model"]["aux_head"], recorded["system"]["pairing_links"]
    del recorded["train"]["aux_front_weight"], recorded["optim"]["warmup_rounds"]
    assert config_diff(recorded, c) == []
    from comdml_jax.comparison import config_differences

    assert config_differences(recorded, c) == []
    c.model.aux_head = "conv"  # but a new run with the option on differs from it
    assert config_diff(recorded, c) == [("model.aux_head", "linear", "conv")]
    assert config_differences(recorded, c) == ["model.aux_head"]


def test_code_reading_an_older_config_gets_the_added_fields_old_values():
    from comdml_jax.catalog import ADDED_FIELDS, added_field

    c = smoke_config("/data")
    c.system.pairing_links = "routes"
    assert added_field(c, "system.pairing_links") == "routes"
    del c.model["aux_head"], c.system["pairing_links"], c.train["aux_front_weight"]
    del c.optim["warmup_rounds"]
    assert [added_field(c, f) for f in ADDED_FIELDS] == ["linear", "direct", 1.0, 0]
