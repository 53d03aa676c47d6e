"""``greedy_ls`` (system/local_search.py) against ``greedy`` and ``exact``.

    python benchmarks/local_search.py [--worlds N] [--part gap|time|both]

Part "gap": on N seeded random worlds (default 320, so that at least 300 of
them allow a pair), K = 4..12 agents, the makespan gap to the exact optimum
(CP-SAT, ``exact_plan``) of ``greedy`` and ``greedy_ls``, (makespan −
optimum) / optimum, each plan priced by ``timing.price_round``. The worlds
mix topologies (full; random p = 0.3, 0.6; ring), participation (every
connected agent, or each sampled with probability 0.75), CPU and bandwidth
draws (some agents disconnected), 1..30 batches per agent, and split
profiles (the analytic ResNet-56 at two FLOP counts, random 2..5-cut toy
profiles). Worlds where no pair is allowed (the optimum is everybody alone)
are skipped and counted.

Part "time": plan time of ``greedy`` and ``greedy_ls`` (best wall seconds of
7 calls at K = 1,000 and 5 at K = 10,000, the two schedulers' calls
interleaved so that the machine's load hits both alike) and their ratio, the
same ratio in process CPU seconds, the search's number of moves, and both
makespans (priced by ``price_round``), on the instances of
``benchmarks/scheduler_scale.py``: K = 1,000 (full, equal N; full, varied N;
random p = 0.2) and K = 10,000 (full, equal N; full, varied N).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine  # noqa: E402
from benchmarks.scheduler_scale import PROFILE, instance  # noqa: E402
from comdml_jax.system.exact import exact_plan, pair_table  # noqa: E402
from comdml_jax.system.local_search import _search, greedy_ls_plan  # noqa: E402
from comdml_jax.system.pairing_inputs import PairingInputs  # noqa: E402
from comdml_jax.system.scheduler import greedy_plan  # noqa: E402
from comdml_jax.system.split_profile import SplitProfile  # noqa: E402
from comdml_jax.system.timing import TimingParams, price_round  # noqa: E402
from comdml_jax.system.topology import link_capacities, make_topology  # noqa: E402
from comdml_jax.system.world import main_component  # noqa: E402


def toy_profile(slow, fast, nbytes) -> SplitProfile:
    m = len(slow)
    return SplitProfile(
        model="toy",
        batch_size=10,
        cuts=np.arange(m),
        layers_offloaded=np.arange(m),
        slow_rel_cost=np.asarray(slow, float),
        fast_rel_cost=np.asarray(fast, float),
        bytes_per_batch=np.asarray(nbytes, np.int64),
        slow_param_bytes=np.zeros(m, np.int64),
        fast_param_bytes=np.zeros(m, np.int64),
        full_step_flops=1e9,
        model_bytes=1_000_000,
    )


def random_world(seed: int):
    """One seeded world: (cpu, links, num_batches, participants, profile, params)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(4, 13))
    cpu = rng.choice([4.0, 2.0, 1.0, 0.5, 0.2, 0.25, 3.0], k)
    bw = rng.choice([0.0, 10.0, 20.0, 50.0, 100.0, 20.0, 100.0], k)
    nb = rng.integers(1, 31, k)
    kind = str(rng.choice(["full", "full", "random", "ring"]))
    topo = make_topology(kind, k, p=float(rng.choice([0.3, 0.6])), seed=int(rng.integers(10)))
    links = link_capacities(topo, bw)
    sampled = rng.random(k) < 0.75 if rng.random() < 0.5 else np.ones(k, bool)
    part = main_component(links, (bw > 0) & sampled)
    r = rng.random()
    if r < 0.4:
        prof = PROFILE if r < 0.2 else _scaled(PROFILE, 5e9)
    else:
        m = int(rng.integers(2, 6))
        fast = np.concatenate([[0], np.sort(rng.uniform(0.05, 1.0, m - 1))])
        slow = np.concatenate([[1], 1.02 - fast[1:]])
        nbytes = np.concatenate([[0], rng.integers(1, 400_001, m - 1)])
        prof = toy_profile(slow, fast, nbytes)
    params = TimingParams(cpu_flops=3e9, cpu_gamma=float(rng.choice([1.0, 0.62])))
    return cpu, links, nb, part, prof, params


def _scaled(p: SplitProfile, flops: float) -> SplitProfile:
    import dataclasses

    return dataclasses.replace(p, full_step_flops=flops)


def makespan(plan, world) -> float:
    cpu, links, nb, _, prof, params = world
    return price_round(plan, cpu, links, nb, prof, params).makespan_s


def gap_part(n: int):
    gaps = {"greedy": [], "greedy_ls": []}
    skipped, t0 = 0, time.perf_counter()
    for seed in range(n):
        w = random_world(seed)
        x = PairingInputs(*w)
        if pair_table(x).slow.size == 0:
            skipped += 1
            continue
        opt = makespan(exact_plan(x), w)
        for name, fn in (("greedy", greedy_plan), ("greedy_ls", greedy_ls_plan)):
            gaps[name].append((makespan(fn(x), w) - opt) / opt)
    used = n - skipped
    print(
        f"\ngap to exact: {n} worlds (K = 4..12), {skipped} skipped (no allowed pair), "
        f"{used} compared ({time.perf_counter() - t0:.1f} s)"
    )
    print(f"{'scheduler':<10} {'mean gap':>9} {'p99':>8} {'max':>8} {'at optimum':>11}")
    for name, g in gaps.items():
        g = np.asarray(g)
        print(
            f"{name:<10} {100 * g.mean():>8.3f}% {100 * np.percentile(g, 99):>7.2f}% "
            f"{100 * g.max():>7.2f}% {int((g <= 0).sum()):>5} / {used}"
        )


def best_times(fns, args, repeats):
    """Best wall and best CPU seconds of each ``fn(PairingInputs(*args))``, the calls
    interleaved (load hits both alike); building the inputs is included, as in a run."""
    wall, cpu, out = [float("inf")] * len(fns), [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, c = time.perf_counter(), time.process_time()
            out[i] = fn(PairingInputs(*args))
            wall[i] = min(wall[i], time.perf_counter() - t)
            cpu[i] = min(cpu[i], time.process_time() - c)
    return wall, cpu, out


def time_part():
    print(
        f"\n{'instance':<16} {'K':>6} {'greedy_s':>9} {'greedy_ls_s':>11} {'ratio':>6} "
        f"{'cpu ratio':>9} {'moves':>5} {'greedy makespan':>15} {'greedy_ls makespan':>18} "
        f"{'gain':>7}"
    )
    cases = [(1000, "full, equal N"), (1000, "full, varied N"), (1000, "random p=0.2")]
    cases += [(10000, "full, equal N"), (10000, "full, varied N")]
    for k, kind in cases:
        args = instance(k, kind)
        reps = 7 if k <= 1000 else 5
        wall, cpu, (pg, pl) = best_times((greedy_plan, greedy_ls_plan), args, reps)
        moves = _search(PairingInputs(*args)).moves
        mg, ml = makespan(pg, args), makespan(pl, args)
        print(
            f"{kind:<16} {k:>6} {wall[0]:>9.4f} {wall[1]:>11.4f} {wall[1] / wall[0]:>5.2f}x "
            f"{cpu[1] / cpu[0]:>8.2f}x {moves:>5} {mg:>15.2f} {ml:>18.2f} "
            f"{100 * (mg - ml) / mg:>6.2f}%",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", type=int, default=320)
    ap.add_argument("--part", choices=("gap", "time", "both"), default="both")
    args = ap.parse_args()
    print(f"machine: {json.dumps(machine())}, numpy {np.__version__}, load {os.getloadavg()}")
    if args.part in ("gap", "both"):
        gap_part(args.worlds)
    if args.part in ("time", "both"):
        time_part()


if __name__ == "__main__":
    main()
