"""Compares methods: runs every method × seed of a config, or reads finished runs.

Run a comparison (each run in DIR/METHOD/seedS, resumable; rerunning picks up
where it stopped and keeps finished runs)::

    python -m experiments.compare --config=configs/table2.py:cifar10,iid,small \
        --workdir=runs/table2_small --methods=comdml,allreduce --seeds=0,1,2

It writes DIR/comparison.json and DIR/comparison.md (mean ± std over seeds of
the simulated time and rounds to target, final and best accuracy, and
ComDML's reduction against each baseline; "not reached in R rounds" where a
method missed the target), DIR/accuracy_vs_time.png (mean over seeds with a
min–max band) and DIR/time_to_target.png. Wall-clock times go to
DIR/comparison_wall.json only. Override config fields with ``--config.x=y``.
``--report_only`` rewrites the report from the finished runs without running;
with ``--target=A`` it reports the time to accuracy A instead of the config's
target (training never reads the target, so the runs are the same ones).
FedAvg trains exactly AllReduce's models, so with both in ``--methods`` its
run is AllReduce's finished run repriced (``comdml_jax.reprice``; the folder
gets ``repriced.json``) wherever every round has the same participants;
``--noreuse_runs`` trains it.

Price only (no training; seconds at every paper setting)::

    python -m experiments.compare --config=configs/table3.py:100,resnet110 \
        --workdir=runs/price_t3 --seeds=0,1,2 --price_only

prices every method × seed over ``config.rounds`` rounds through the training
run's own ``method.plan`` / ``method.price`` (``comdml_jax.price_only``) and
writes DIR/price.json and DIR/price.md: per method the per-round simulated time
(mean ± std over seeds and rounds) and ComDML's ratio to it.

Compare existing run folders (one run each)::

    python -m experiments.compare --workdirs=runs/a,runs/b [--labels=ComDML,AllReduce] \
        [--target=0.5] --out=runs/compare.png

prints, per run, the method, rounds, best and final test accuracy, the
simulated time to the target accuracy (the runs' own target unless
``--target`` is given), the total simulated time, and the speed-up against the
slowest to reach the target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from comdml_jax import launch
from comdml_jax.report.tables import comparison_rows
from comdml_jax.report.writers import JsonlWriter

# JAX and the plotting stack are imported only once every check has passed, so a
# refusal is as fast as experiments.run's (comdml_jax.launch).

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (.py, optionally :arg) of a comparison.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Comparison folder (with --config).")
_METHODS = flags.DEFINE_list(
    "methods",
    None,
    "Methods to compare (with --config), e.g. comdml,allreduce; default every registered "
    "method, comdml first.",
)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (with --config), e.g. 0,1,2.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only rewrite the report from the finished runs (with --config)."
)
_PRICE_ONLY = flags.DEFINE_bool(
    "price_only",
    False,
    "Only price every method's rounds (no training): writes price.json/price.md (with --config).",
)
_REUSE = flags.DEFINE_bool(
    "reuse_runs",
    True,
    "Reprice a finished run for a method that trains exactly its models (FedAvg from "
    "AllReduce, where every round has the same participants) instead of training it again "
    "(comdml_jax.reprice); --noreuse_runs trains every method.",
)
_WORKDIRS = flags.DEFINE_list("workdirs", None, "Finished run folders to compare.")
_LABELS = flags.DEFINE_list("labels", None, "Labels (default: each run's method).")
_TARGET = flags.DEFINE_float(
    "target",
    None,
    "Target accuracy of the report (with --workdirs, default: the first run's; with "
    "--report_only, default: the config's).",
)
_OUT = flags.DEFINE_string("out", "compare.png", "Where to write the plot (with --workdirs).")
_DISTRIBUTED = launch.define_distributed_flags()


def _config_name() -> str:
    return config_flags.get_config_filename(flags.FLAGS["config"])


def command_line(methods: list[str], seeds: list[int]) -> str:
    """The command that reproduces this comparison, with the workdir left as ``DIR``."""
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    flat = []

    def walk(d, prefix):
        for k, v in sorted(d.items()):
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" not in ("data.data_dir", "data.cache_dir"):
                flat.append(f"--config.{prefix}{k}={v}")

    walk(overrides, "")
    parts = [
        "python -m experiments.compare",
        f"--config={_config_name()}",
        *flat,
        "--workdir=DIR",
        f"--methods={','.join(methods)}",
        f"--seeds={','.join(map(str, seeds))}",
    ]
    return " ".join(parts)


def compare_runs() -> None:
    """``--workdirs`` mode: one table and one plot of existing runs."""
    from comdml_jax.report.plots import plot_accuracy_vs_time

    dirs = [Path(d) for d in _WORKDIRS.value]
    runs = {}
    target = _TARGET.value
    if _LABELS.value and len(_LABELS.value) != len(dirs):
        launch.fail(
            f"--labels has {len(_LABELS.value)} labels for {len(dirs)} --workdirs; give one each"
        )
    for i, d in enumerate(dirs):
        if not (d / "config.json").is_file() or not (d / "metrics.jsonl").is_file():
            launch.fail(
                f"--workdirs: {d} holds no finished run (no config.json or metrics.jsonl); "
                "give folders written by experiments.run"
            )
        cfg = json.loads((d / "config.json").read_text())
        label = _LABELS.value[i] if _LABELS.value else cfg["method"]
        runs[label] = JsonlWriter(d / "metrics.jsonl").read()
        if target is None:
            target = cfg["target_accuracy"]
    plot_accuracy_vs_time(runs, _OUT.value, target)
    print(f"target accuracy {target:.1%}; plot: {_OUT.value}")
    head = ("run", "rounds", "best", "final", "time to target (s)", "sim time (s)", "speed-up")
    print("{:14s} {:>6s} {:>7s} {:>7s} {:>19s} {:>13s} {:>9s}".format(*head))
    for r in comparison_rows(runs, target):
        ttt = r["time_to_target_s"]
        ttt_s = f"{ttt:19,.0f}" if ttt is not None else f"{'not reached':>19s}"
        speed = f"{r['speedup']:8.2f}x" if r["speedup"] else f"{'-':>9s}"
        print(
            f"{r['run']:14s} {r['rounds']:6d} {r['best_test_accuracy']:7.1%} "
            f"{r['final_test_accuracy']:7.1%} {ttt_s} {r['sim_time_s']:13,.0f} {speed}"
        )


def price_only(methods: list[str], seeds: list[int], meta: dict) -> dict:
    """``--price_only``: prices every method × seed and writes price.json/price.md."""
    from comdml_jax import price_only as price_lib

    report = price_lib.price_comparison(_CONFIG.value, methods, seeds)
    report = {**meta, "command": meta["command"] + " --price_only", **report}
    price_lib.write_price(_WORKDIR.value, report, meta["config"])
    return report


def main(argv):
    del argv
    if _WORKDIRS.value:
        if _CONFIG.value is not None:
            launch.fail("use either --workdirs (finished runs) or --config, not both")
        compare_runs()
        return
    if _CONFIG.value is None or not _WORKDIR.value:
        launch.fail("give --config and --workdir (run a comparison) or --workdirs (finished runs)")
    if _TARGET.value is not None and not _REPORT_ONLY.value:
        launch.fail(
            f"--target={_TARGET.value} only applies to a report (--report_only or --workdirs); "
            "a comparison that trains reads its target from --config.target_accuracy"
        )
    if _TARGET.value is not None and not 0.0 < _TARGET.value <= 1.0:
        launch.fail(f"--target={_TARGET.value} is invalid: use an accuracy in (0, 1]")
    from comdml_jax import comparison

    with launch.refusals():  # every run's checks (as experiments.run's), before JAX loads
        methods = comparison.validate_methods(_METHODS.value or comparison.all_methods())
        seeds = comparison.validate_seeds(_SEEDS.value)
        if not _REPORT_ONLY.value:
            comparison.check_comparison(_CONFIG.value, _WORKDIR.value, methods, seeds)
    meta = {"config": _config_name(), "command": command_line(methods, seeds)}
    if _TARGET.value is not None:
        meta["command"] += f" --report_only --target={_TARGET.value}"
    if _PRICE_ONLY.value:
        with launch.refusals():
            price_only(methods, seeds, meta)
        print((Path(_WORKDIR.value) / "price.md").read_text())
        return
    if _REPORT_ONLY.value:
        with launch.refusals():
            report = comparison.write_report(
                _WORKDIR.value, _CONFIG.value, methods, seeds, meta, target=_TARGET.value
            )
    else:
        launch.prepare_process()
        try:
            launch.init_distributed(_DISTRIBUTED)  # several processes: jax.distributed
        except ValueError as e:
            launch.fail(str(e))
        import jax

        from comdml_jax.rounds import NonFiniteRunError

        try:
            with launch.refusals():
                report = comparison.run_comparison(
                    _CONFIG.value, _WORKDIR.value, methods, seeds, meta, reuse=_REUSE.value
                )
        except NonFiniteRunError as e:  # the run diverged: its last good checkpoint is kept
            print(f"error: {e}", file=sys.stderr)
            sys.exit(launch.DIVERGED)
        if jax.process_index() > 0:
            return
    print((Path(_WORKDIR.value) / "comparison.md").read_text())
    if report["pending"]:
        logging.warning("not finished: %s", ", ".join(report["pending"]))


if __name__ == "__main__":
    app.run(main, flags_parser=launch.parse_flags)
