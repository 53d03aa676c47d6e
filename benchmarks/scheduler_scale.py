"""Plan time of the pairing scheduler (Algorithm 1) at K = 100, 1,000 and 10,000.

    python benchmarks/scheduler_scale.py

Measures ``scheduler.greedy_plan`` (vectorised) next to
``scheduler.greedy_plan_reference`` (the plain Python-loop transcription) on the
same instances, checks they return the same plan, and prints the ratio. The
loop is skipped where its K² extrapolation from the previous size exceeds 60 s.

Instances: the paper's profile sets with the default balanced draw (20% of
agents per CPU and per bandwidth profile, so 20% are disconnected), an 8-cut
bottleneck ResNet-56 profile (analytic FLOP shares), and
  - "full, equal N": complete topology, every agent 10 batches (IID);
  - "full, varied N": complete topology, 1..100 batches per agent (non-IID
    sizes; defeats the collapsing of identical candidates);
  - "random p=0.2": Erdős–Rényi topology, 1..100 batches (K <= 1,000).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from comdml_jax.system import profiles_at  # noqa: E402
from comdml_jax.system.scheduler import greedy_plan, greedy_plan_reference  # noqa: E402
from comdml_jax.system.split_profile import SplitProfile  # noqa: E402
from comdml_jax.system.timing import TimingParams  # noqa: E402
from comdml_jax.system.topology import link_capacities, make_topology  # noqa: E402
from configs import default  # noqa: E402

LOOP_BUDGET_S = 60.0

# Bottleneck ResNet-56 at B = 100, cuts 0..7 (analytic FLOP shares, SPEC §2).
PROFILE = SplitProfile(
    model="resnet56",
    batch_size=100,
    cuts=np.arange(8),
    layers_offloaded=np.array([0, 1, 10, 19, 28, 37, 46, 55]),
    slow_rel_cost=np.array([1.0, 1.0, 0.8467, 0.6573, 0.5040, 0.3147, 0.1614, 0.0051]),
    fast_rel_cost=np.array([0.0, 0.00003, 0.1533, 0.3427, 0.4960, 0.6853, 0.8386, 0.9949]),
    bytes_per_batch=np.array(
        [0, 6554000, 6554000, 13107600, 13107600, 26214800, 26214800, 6554000]
    ),
    slow_param_bytes=np.zeros(8, np.int64),
    fast_param_bytes=np.zeros(8, np.int64),
    full_step_flops=56.3e9,
    model_bytes=2401256,
)


def instance(k: int, kind: str, seed: int = 0):
    c = default.get_config()
    c.num_agents, c.seed = k, seed
    cpu, bw = profiles_at(c, 0)
    rng = np.random.default_rng(seed)
    nb = np.full(k, 10) if kind == "full, equal N" else rng.integers(1, 101, k)
    topo = make_topology("random" if kind.startswith("random") else "full", k, p=0.2, seed=seed)
    links = link_capacities(topo, bw)
    return cpu, links, nb, bw > 0, PROFILE, TimingParams()


def best_time(fn, args, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    print(
        f"machine: {cpu_name()} ({platform.processor() or platform.machine()}), "
        f"{os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, python {platform.python_version()}"
    )
    print(
        f"{'instance':<16} {'K':>7} {'pairs':>6} {'vectorised_s':>13} {'loop_s':>9} "
        f"{'loop/vec':>9} {'same plan':>9}"
    )
    sizes = {
        "full, equal N": (100, 1000, 10000),
        "full, varied N": (100, 1000, 10000),
        "random p=0.2": (100, 1000),
    }
    for kind, ks in sizes.items():
        loop_prev = None
        for k in ks:
            args = instance(k, kind)
            vec_s, vec = best_time(greedy_plan, args, 3 if k <= 1000 else 1)
            est = None if loop_prev is None else loop_prev[1] * (k / loop_prev[0]) ** 2
            if est is not None and est > LOOP_BUDGET_S:
                loop_col, ratio, same = f"~{est:.0f} (skip)", "", ""
            else:
                loop_s, ref = best_time(greedy_plan_reference, args, 1)
                loop_prev = (k, loop_s)
                loop_col, ratio = f"{loop_s:.3f}", f"{loop_s / vec_s:.0f}x"
                same = str(ref.pairs == vec.pairs)
            print(
                f"{kind:<16} {k:>7} {len(vec.pairs):>6} {vec_s:>13.4f} {loop_col:>9} "
                f"{ratio:>9} {same:>9}"
            )


if __name__ == "__main__":
    main()
