"""Every CLI (run, compare, plan) refuses a bad config in one line with exit code 2 (issue 24).

Each case runs the CLI in a fresh process, as a user would, and checks the
whole of stderr: exactly one line, naming the field (or flag) and the fix, no
traceback and no usage text. None of these reaches JAX (the refusal's time is
measured by benchmarks/refusal_speed.py, not here).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comdml_jax import comparison
from comdml_jax.report.writers import to_jsonable
from configs import smoke

REPO = Path(__file__).resolve().parents[1]
USAGE_ERROR = 2

CLIS = {
    "run": ["experiments.run", "--config=configs/smoke.py"],
    "compare": ["experiments.compare", "--config=configs/smoke.py", "--seeds=0"],
    "plan": ["experiments.plan", "--config=configs/table1.py:1"],
}


def refuse(cli: str, *args: str, workdir: Path | None = None, env=None) -> str:
    """Runs ``cli`` with ``args``; asserts exit code 2 and one line of stderr; returns it."""
    cmd = [sys.executable, "-m", *CLIS[cli], *args]
    if cli != "plan":
        cmd.append(f"--workdir={workdir or '/nonexistent/never/created'}")
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == USAGE_ERROR, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "USAGE" not in proc.stderr
    assert proc.stdout == ""
    return lines[0]


def method_args(cli: str, method: str) -> list[str]:
    return [f"--methods={method}"] if cli == "compare" else [f"--config.method={method}"]


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_a_misspelled_field_gives_one_clean_line_with_the_suggestion(cli):
    line = refuse(cli, "--config.num_agent=5")
    assert line == (
        "--config.num_agent=5: the config has no field 'num_agent'; did you mean "
        "--config.num_agents? (configs/default.py lists every field)"
    )
    nested = refuse(cli, "--config.optim.lrr=0.1")
    assert nested.startswith("--config.optim.lrr=0.1: the config has no field 'optim.lrr'; ")
    assert "did you mean --config.optim.lr?" in nested


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_a_bad_value_gives_run_s_refusal(cli):
    assert refuse(cli, "--config.rounds=0") == "--config.rounds=0 is invalid: use an integer >= 1"


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize(
    ("field", "method"), [("nopeek", "allreduce"), ("patch_shuffle", "gossip")]
)
def test_a_privacy_option_that_cannot_act_is_refused(cli, field, method):
    line = refuse(cli, *method_args(cli, method), f"--config.privacy.{field}=true")
    assert line.startswith(f"--config.privacy.{field}=True is invalid: method {method} never ")
    assert "only to methods that split: comdml" in line


def test_a_splitting_method_that_never_pairs_is_refused_too():
    line = refuse("run", "--config.system.scheduler=none", "--config.privacy.nopeek=true")
    assert "--config.privacy.nopeek=True" in line and "system.scheduler='none'" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--methods=comdml,foo"],
            "--methods=comdml,foo: method 'foo' is unknown; choose from "
            "allreduce,braintorrent,comdml,dpsgd,fedavg,gossip",
        ),
        (
            ["--methods=comdml", "--seeds=a"],
            "--seeds=a is invalid: use distinct non-negative integers, e.g. --seeds=0,1,2",
        ),
        (
            ["--methods=comdml", "--seeds=1,1"],
            "--seeds=1,1 is invalid: use distinct non-negative integers, e.g. --seeds=0,1,2",
        ),
        (
            ["--methods=comdml", "--target=0.3"],
            "--target=0.3 only applies to a report (--report_only or --workdirs); a comparison "
            "that trains reads its target from --config.target_accuracy",
        ),
        (
            ["--methods=comdml", "--report_only", "--target=1.5"],
            "--target=1.5 is invalid: use an accuracy in (0, 1]",
        ),
    ],
)
def test_compare_flags_give_one_line_and_no_usage_text(args, expected):
    assert refuse("compare", *args) == expected


def test_compare_refuses_a_changed_config_on_an_existing_folder(tmp_path):
    config = smoke.get_config()
    config.data.data_dir = os.environ.get("COMDML_DATA_DIR", "")
    folder = comparison.run_dir(tmp_path, "comdml", 0)
    folder.mkdir(parents=True)
    stored = comparison.run_config(config, "comdml", 0)
    (folder / "config.json").write_text(json.dumps(to_jsonable(stored.to_dict())))
    line = refuse("compare", "--methods=comdml", "--config.optim.lr=0.5", workdir=tmp_path)
    assert line.startswith(f"{folder} holds a run of a different config (fields optim.lr differ)")
    assert not (tmp_path / "comparison.json").exists()


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_missing_data_without_download_is_refused_before_any_work(cli, tmp_path):
    args = method_args(cli, "comdml") + ["--config.data.download=false"]
    line = refuse(cli, *args, env={"COMDML_DATA_DIR": ""})
    assert line.startswith("no data directory for 'cifar10': data_dir is empty")


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_a_missing_config_file_is_refused(cli):
    cmd = [sys.executable, "-m", CLIS[cli][0], "--config=configs/nope.py", *CLIS[cli][2:]]
    if cli != "plan":
        cmd.append("--workdir=/nonexistent/never/created")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == USAGE_ERROR
    assert proc.stderr.strip().startswith("--config=configs/nope.py: no such config file")
    assert len(proc.stderr.strip().splitlines()) == 1
