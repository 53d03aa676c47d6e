"""How fast each CLI refuses a bad config, beside how long ``import jax`` takes (issue 24 item 6).

    python benchmarks/refusal_speed.py [REPEATS]

Every case is a fresh process, timed from start to exit; the cases are run
side by side in one loop, their order rotating every repeat (default 5), so a
busy machine slows them alike. The cases: ``python -c pass`` (the
interpreter alone), ``python -c "import jax"``, and for each CLI (run,
compare, plan) a bad value (``--config.rounds=0``, refused by the config
check), a privacy option that cannot act (``--config.privacy.nopeek=true`` on
AllReduce) and a misspelled field (``--config.num_agent=5``, refused by the
flag parser). Each refusal must exit with code 2 and one line on stderr.

Prints, per case, the median and min wall seconds and the median as a ratio of
``import jax``'s, then the machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, machine  # noqa: E402

PY = sys.executable
NOWHERE = "--workdir=/nonexistent/refusal_speed"
CLI = {
    "run": ["-m", "experiments.run", "--config=configs/smoke.py", NOWHERE],
    "compare": ["-m", "experiments.compare", "--config=configs/smoke.py", NOWHERE, "--seeds=0"],
    "plan": ["-m", "experiments.plan", "--config=configs/table1.py:1"],
}
BAD = {
    "rounds=0": lambda cli: ["--config.rounds=0"],
    "nopeek on allreduce": lambda cli: [
        "--methods=allreduce" if cli == "compare" else "--config.method=allreduce",
        "--config.privacy.nopeek=true",
    ],
    "misspelled field": lambda cli: ["--config.num_agent=5"],
}


def cases() -> dict[str, tuple[list[str], bool]]:
    """name -> (python arguments, whether it must be a refusal)."""
    out = {"python -c pass": (["-c", "pass"], False), "import jax": (["-c", "import jax"], False)}
    for cli, args in CLI.items():
        for what, extra in BAD.items():
            out[f"{cli}: {what}"] = ([*args, *extra(cli)], True)
    return out


def time_one(args: list[str], refusal: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.run([PY, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if refusal:
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1:
            raise RuntimeError(
                f"{args}: not a one-line refusal (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
    elif proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    table = cases()
    names = list(table)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats + 1):  # the first pass warms the file cache and is dropped
        order = names[i % len(names) :] + names[: i % len(names)]
        for n in order:
            t = time_one(*table[n])
            if i:
                times[n].append(t)
    jax_s = statistics.median(times["import jax"])
    print(f"{repeats} repeats per case, order rotating; wall seconds of a fresh process")
    print(f"{'case':32s} {'median s':>9s} {'min s':>7s} {'/ import jax':>13s}")
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:32s} {med:9.2f} {min(times[n]):7.2f} {med / jax_s:12.2f}x")
    worst = max(statistics.median(times[n]) for n in names if table[n][1])
    print(f"slowest refusal (median): {worst:.2f} s, {worst / jax_s:.2f}x import jax")
    m = machine()
    print(f"host: {m['cpu']}, {m['cores']} cores, Python {m['python']}, jax {m.get('jax', '-')}")


if __name__ == "__main__":
    main()
