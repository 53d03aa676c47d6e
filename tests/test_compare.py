"""The comparison command (comdml_jax.comparison, experiments/compare.py) on real tiny runs.

Two comparisons of the smoke config (ComDML and AllReduce × seeds 0 and 1, 2
rounds each, no checkpoints, a target below chance so that every run reaches
it) are shared by the tests: A runs straight through; B is
interrupted right after its first run and rerun. Both must give the same
comparison.json byte for byte, and B's rerun must leave the first run alone.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from comdml_jax import comparison, experiment
from comdml_jax.report import comparison as report_lib
from configs import fig3, smoke, table2, table3

REPO = Path(__file__).resolve().parents[1]
METHODS = ["comdml", "allreduce"]
SEEDS = [0, 1]
META = {"config": "configs/smoke.py", "command": "python -m experiments.compare ..."}


def smoke_config(data_dir):
    c = smoke.get_config()
    c.data.data_dir = data_dir
    c.plots = False  # the comparison draws its own plots; the per-run ones only cost time
    c.checkpoint_every = 0  # finished runs are told by summary.json; orbax only costs time here
    c.target_accuracy = 0.05  # below chance on the stratified test set: always reached
    return c


def _snapshot(folder: Path) -> dict:
    """path -> (sha256, mtime_ns) of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class _Interrupt(KeyboardInterrupt):
    pass


@pytest.fixture(scope="module")
def compared(tmp_path_factory, cifar10_dir):
    config = smoke_config(cifar10_dir)
    root = tmp_path_factory.mktemp("compare")
    a, b = root / "a", root / "b"
    report_a = comparison.run_comparison(config, a, METHODS, SEEDS, META)

    real_run = experiment.run
    calls = []

    def run_then_interrupt(cfg, workdir):
        calls.append((cfg.method, cfg.seed))
        real_run(cfg, workdir)
        raise _Interrupt  # as a Ctrl-C right after the first run finished

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "run", run_then_interrupt)
        with pytest.raises(_Interrupt):
            comparison.run_comparison(config, b, METHODS, SEEDS, META)
    first = comparison.run_dir(b, "comdml", 0)
    before = _snapshot(first)
    partial = sorted(p.relative_to(b).as_posix() for p in b.glob("*/seed*/summary.json"))

    rerun_calls = []

    def counting_run(cfg, workdir):
        rerun_calls.append((cfg.method, cfg.seed))
        return real_run(cfg, workdir)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "run", counting_run)
        report_b = comparison.run_comparison(config, b, METHODS, SEEDS, META)
    return {
        "config": config,
        "a": a,
        "b": b,
        "report_a": report_a,
        "report_b": report_b,
        "interrupted_calls": calls,
        "partial": partial,
        "before": before,
        "after": _snapshot(first),
        "rerun_calls": rerun_calls,
    }


@pytest.mark.slow
def test_comparison_json_is_identical_when_run_again(compared):
    a, b = compared["a"], compared["b"]
    assert (a / "comparison.json").read_bytes() == (b / "comparison.json").read_bytes()
    assert (a / "comparison.md").read_bytes() == (b / "comparison.md").read_bytes()
    text = (a / "comparison.json").read_text() + (a / "comparison.md").read_text()
    assert "wall" not in text and str(a) not in text
    wall = json.loads((a / "comparison_wall.json").read_text())["wall_time_s"]
    assert set(wall) == set(METHODS) and all(set(w) == {"0", "1"} for w in wall.values())


@pytest.mark.slow
def test_interrupted_comparison_finishes_the_rest_without_redoing_the_first(compared):
    assert compared["interrupted_calls"] == [("comdml", 0)]
    assert compared["partial"] == ["comdml/seed0/summary.json"]
    assert compared["rerun_calls"] == [("allreduce", 0), ("comdml", 1), ("allreduce", 1)]
    assert compared["after"] == compared["before"]  # same bytes, same mtimes
    assert compared["report_b"]["pending"] == []


@pytest.mark.slow
def test_rerun_of_a_finished_comparison_runs_nothing(compared, monkeypatch):
    def fail(cfg, workdir):
        raise AssertionError(f"ran {cfg.method} seed {cfg.seed} again")

    monkeypatch.setattr(experiment, "run", fail)
    again = comparison.run_comparison(compared["config"], compared["a"], METHODS, SEEDS, META)
    assert again == json.loads((compared["a"] / "comparison.json").read_text())


@pytest.mark.slow
def test_report_is_numpy_over_the_runs_own_summaries(compared):
    a, report = compared["a"], compared["report_a"]
    assert report == json.loads((a / "comparison.json").read_text())
    for m in METHODS:
        summaries = [
            json.loads((comparison.run_dir(a, m, s) / "summary.json").read_text()) for s in SEEDS
        ]
        stats = report["methods"][m]["stats"]
        for key in ("final_test_accuracy", "best_test_accuracy"):
            vals = [s[key] for s in summaries]
            assert stats[key]["mean"] == pytest.approx(np.mean(vals))
            assert stats[key]["std"] == pytest.approx(np.std(vals, ddof=report["ddof"]))
        ttt = [s["time_to_target_s"] for s in summaries]
        hit = [t for t in ttt if t is not None]
        assert stats["time_to_target_s"]["reached"] == len(hit)
        if hit:
            assert stats["time_to_target_s"]["mean"] == pytest.approx(np.mean(hit))
        assert [r["time_to_target_s"] for r in report["methods"][m]["seeds"]] == ttt
        assert stats["rounds"]["mean"] == 2
    red = report["reduction"]["allreduce"]
    t = {m: [r["time_to_target_s"] for r in report["methods"][m]["seeds"]] for m in METHODS}
    per_seed = [1 - c / b for c, b in zip(t["comdml"], t["allreduce"], strict=True) if c and b]
    assert red["n"] == len(per_seed) == 2
    assert red["mean"] == pytest.approx(np.mean(per_seed))
    assert red["std"] == pytest.approx(np.std(per_seed, ddof=1))


@pytest.mark.slow
def test_every_method_of_a_seed_shares_the_partition_and_config(compared):
    a = compared["a"]
    assert compared["report_a"]["shared_partition"] == {"0": True, "1": True}
    for s in SEEDS:
        cfgs = [
            json.loads((comparison.run_dir(a, m, s) / "config.json").read_text()) for m in METHODS
        ]
        diff = {k for k in cfgs[0] if cfgs[0][k] != cfgs[1][k]}
        assert diff == {"method"} and cfgs[0]["seed"] == s
    p0 = (comparison.run_dir(a, "comdml", 0) / "partition.json").read_text()
    p1 = (comparison.run_dir(a, "comdml", 1) / "partition.json").read_text()
    assert p0 != p1  # seeds differ


@pytest.mark.slow
def test_plots_are_written(compared):
    for name in ("accuracy_vs_time.png", "time_to_target.png"):
        assert (compared["a"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_changed_config_is_refused(compared):
    changed = smoke_config(compared["config"].data.data_dir)
    changed.optim.lr = 0.5
    with pytest.raises(ValueError, match=r"fields optim\.lr differ.*another --workdir"):
        comparison.write_report(compared["a"], changed, METHODS, SEEDS)


@pytest.mark.slow
def test_a_report_at_another_target_recomputes_every_time_to_target(compared, tmp_path):
    """--report_only --target: each seed's time and rounds to the new target, by hand from
    its records; the runs (of the config's own target) are read, not refused."""
    a = tmp_path / "a"
    shutil.copytree(compared["a"], a)
    config = compared["config"]
    records = {
        (m, s): [json.loads(x) for x in (comparison.run_dir(a, m, s) / "metrics.jsonl").open()]
        for m in METHODS
        for s in SEEDS
    }
    accs = sorted({r["test_accuracy"] for rs in records.values() for r in rs})
    goal = accs[len(accs) // 2]  # reached by some runs and rounds, not by all
    assert goal != config.target_accuracy
    report = comparison.write_report(a, config, METHODS, SEEDS, target=goal)
    assert report["target_accuracy"] == goal
    for m in METHODS:
        for seed_row, s in zip(report["methods"][m]["seeds"], SEEDS, strict=True):
            hit = [r for r in records[(m, s)] if r["test_accuracy"] >= goal]
            want = hit[0]["sim_time_s"] if hit else None
            assert seed_row["time_to_target_s"] == want, (m, s)


@pytest.mark.slow
def test_cli_report_only_rewrites_the_same_numbers(compared, tmp_path):
    a = tmp_path / "a"
    shutil.copytree(compared["a"], a)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.compare",
            "--config=configs/smoke.py",
            f"--config.data.data_dir={compared['config'].data.data_dir}",
            "--config.plots=False",
            "--config.checkpoint_every=0",
            "--config.target_accuracy=0.05",
            f"--workdir={a}",
            "--methods=comdml,allreduce",
            "--seeds=0,1",
            "--report_only",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((a / "comparison.json").read_text())
    assert report["methods"] == compared["report_a"]["methods"]
    assert report["reduction"] == compared["report_a"]["reduction"]
    assert report["command"] == (
        "python -m experiments.compare --config=configs/smoke.py --config.checkpoint_every=0 "
        "--config.plots=False --config.target_accuracy=0.05 --workdir=DIR "
        "--methods=comdml,allreduce --seeds=0,1"
    )
    assert "| comdml |" in out.stdout  # it prints comparison.md


# ----------------------------------------------------------------------- validation


def test_unknown_method_is_refused_with_the_registry():
    from comdml_jax.methods import METHODS as REGISTERED

    with pytest.raises(ValueError) as err:
        comparison.validate_methods(["comdml", "fedavgg"])
    assert "'fedavgg' is unknown" in str(err.value) and "--methods=comdml,fedavgg" in str(err.value)
    assert all(m in str(err.value) for m in REGISTERED)
    with pytest.raises(ValueError, match="twice"):
        comparison.validate_methods(["comdml", "comdml"])
    with pytest.raises(ValueError, match="--seeds"):
        comparison.validate_seeds([0, 0])


def test_run_config_overrides_method_and_seed_only():
    c = smoke.get_config()
    r = comparison.run_config(c, "allreduce", 7)
    assert (r.method, r.seed) == ("allreduce", 7) and (c.method, c.seed) == ("comdml", 0)
    flat_c, flat_r = (comparison._flat(x.to_dict()) for x in (c, r))
    assert {k for k in flat_c if flat_c[k] != flat_r[k]} == {"method", "seed"}


def test_not_reached_names_the_rounds():
    runs = {
        "comdml": [
            {
                "seed": 0,
                "rounds": 7,
                "final_test_accuracy": 0.2,
                "best_test_accuracy": 0.3,
                "time_to_target_s": None,
                "rounds_to_target": None,
                "sim_time_s": 9.0,
            }
        ]
    }
    md = report_lib.format_markdown(report_lib.comparison_report(runs, target=0.9, rounds=7))
    assert md.count("not reached in 7 rounds") == 3  # time, rounds, and the per-seed row


# -------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "module, arg",
    [
        (table2, "cifar10,iid,small"),
        (table2, "cifar100,noniid,small"),
        (table3, "20,resnet56,small"),
        (table3, "100,resnet110,small"),
        (fig3, "cifar10,small"),
    ],
)
def test_small_configs_keep_the_heterogeneity_and_shrink_the_rest(module, arg):
    from comdml_jax.config_check import validate_config

    paper_arg = arg.replace(",small", "")
    paper, small = module.get_config(paper_arg), module.get_config(arg)
    validate_config(small)
    same = (
        "num_agents",
        "participation",
        "data.name",
        "data.partition",
        "data.alpha",
        "system.cpu_profiles",
        "system.bandwidth_profiles_mbps",
        "system.dynamics_fraction",
        "system.topology.kind",
        "system.topology.p",
        "optim.plateau_factor",
    )
    fp, fs = comparison._flat(paper.to_dict()), comparison._flat(small.to_dict())
    assert {k: fs[k] for k in same} == {k: fp[k] for k in same}
    assert small.rounds < paper.rounds and small.target_accuracy < paper.target_accuracy
    assert 0 < small.data.train_subset <= 20_000 and paper.data.train_subset == 0
    assert small.model.name.endswith("_basic") and not paper.model.name.endswith("_basic")
    (d,) = small.system.dynamics_rounds
    assert 0 < d < small.rounds and paper.system.dynamics_rounds == (100,)


def test_table3_and_fig3_paper_settings():
    c = table3.get_config("50,resnet110")
    assert (c.num_agents, c.participation, c.model.name, c.target_accuracy) == (
        50,
        0.2,
        "resnet110",
        0.80,
    )
    assert c.optim.plateau_factor == 0.5 and c.data.partition == "iid"
    f = fig3.get_config()
    assert (f.num_agents, f.system.topology.kind, f.system.topology.p) == (50, "random", 0.2)
    assert f.participation == 0.2 and f.model.name == "resnet56"
    for module, bad in (
        (table3, "30,resnet56"),
        (table3, "20"),
        (fig3, "mnist"),
        (table2, "cifar10,iid,big"),
    ):
        with pytest.raises(ValueError, match="is not"):
            module.get_config(bad)


@pytest.mark.parametrize("split", ["iid", "noniid"])
def test_medium_config_keeps_what_sets_the_compute_to_communication_balance(split):
    """medium = the paper's Table II setting with only the data, rounds, lr schedule and target
    changed."""
    from comdml_jax.config_check import validate_config

    paper, medium = (
        table2.get_config(f"cifar10,{split}"),
        table2.get_config(f"cifar10,{split},medium"),
    )
    validate_config(medium)
    fp, fm = comparison._flat(paper.to_dict()), comparison._flat(medium.to_dict())
    changed = {k for k in fp if fp[k] != fm[k]}
    assert changed == {
        "rounds",
        "target_accuracy",
        "data.train_subset",
        "data.test_subset",
        "system.dynamics_rounds",
        "optim.lr",
        "optim.plateau_patience",
        "eval_batch_size",
        "checkpoint_every",
    }
    # The model, batch and cuts are the paper's, so every round is priced as the paper's.
    assert (medium.model.name, medium.train.batch_size) == ("resnet56", 100)
    per_agent = medium.data.train_subset // medium.num_agents
    assert per_agent % medium.train.batch_size == 0  # whole batches: Ñ_i as the paper's ratio
    (d,) = medium.system.dynamics_rounds
    assert 0 < d < medium.rounds and medium.target_accuracy < paper.target_accuracy


@pytest.mark.parametrize("arg", ["cifar10,iid,small,medium", "cifar100,iid,medium"])
def test_medium_config_refuses_what_it_has_no_setting_for(arg):
    with pytest.raises(ValueError, match="medium"):
        table2.get_config(arg)
