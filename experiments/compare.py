"""Compares finished runs: one accuracy-vs-simulated-time plot and a table.

    python -m experiments.compare --workdirs=runs/a,runs/b [--labels=ComDML,AllReduce] \
        [--target=0.5] --out=runs/compare.png

For each run it prints the method, rounds, best and final test accuracy, the
simulated time to the target accuracy (the runs' own target unless
``--target`` is given), the total simulated time, and the speed-up of each run
against the slowest to reach the target.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from comdml_jax.report.plots import plot_accuracy_vs_time
from comdml_jax.report.tables import comparison_rows
from comdml_jax.report.writers import JsonlWriter

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Run folders to compare.")
_LABELS = flags.DEFINE_list("labels", None, "Labels (default: each run's method).")
_TARGET = flags.DEFINE_float("target", None, "Target accuracy (default: the first run's).")
_OUT = flags.DEFINE_string("out", "compare.png", "Where to write the plot.")
flags.mark_flag_as_required("workdirs")


def main(argv):
    del argv
    dirs = [Path(d) for d in _WORKDIRS.value]
    runs = {}
    target = _TARGET.value
    for i, d in enumerate(dirs):
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
        ttt_s = f"{ttt:19.0f}" if ttt is not None else f"{'not reached':>19s}"
        speed = f"{r['speedup']:8.2f}x" if r["speedup"] else f"{'-':>9s}"
        print(
            f"{r['run']:14s} {r['rounds']:6d} {r['best_test_accuracy']:7.1%} "
            f"{r['final_test_accuracy']:7.1%} {ttt_s} {r['sim_time_s']:13.0f} {speed}"
        )


if __name__ == "__main__":
    app.run(main)
