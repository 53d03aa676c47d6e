"""Aggregation speed: ``lax.psum`` against the ppermute halving/doubling AllReduce.

    python benchmarks/aggregate_speed.py [--model resnet56] [--agents 8] [--repeats 15]

On 8 fake CPU devices (``--xla_force_host_platform_device_count``, set before
JAX is imported), times :func:`comdml_jax.train.aggregate.weighted_average` of
``--agents`` stacked models of ``--model``'s size (params and BN statistics,
one agent per device) with each ``train.aggregation`` algorithm. The two are
called alternately, ``--repeats`` times each after a warm-up, on inputs already
sharded over the mesh, and the script prints the median wall time of each,
their ratio, the first (compiling) call and the machine. Fake CPU devices
share one process's memory, so this measures the collective's program
(copies, slices, adds, fusion), not a network; the timing model prices the
network.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from comdml_jax.models.resnet import build_model  # noqa: E402
from comdml_jax.train import aggregate  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--agents", type=int, default=DEVICES)
    p.add_argument("--repeats", type=int, default=15, help="timed calls per algorithm")
    args = p.parse_args()
    assert jax.device_count() == DEVICES, jax.devices()

    params, stats = build_model(args.model).init(jax.random.key(0))
    model = (params, stats)
    leaves = jax.tree.leaves(model)
    n_floats = sum(x.size for x in leaves)
    rng = np.random.default_rng(0)
    stacked = jax.tree.map(
        lambda x: np.asarray(x)[None] + rng.normal(size=(args.agents, *x.shape)).astype(x.dtype),
        model,
    )
    mesh = aggregate.make_mesh()
    stacked = jax.device_put(stacked, NamedSharding(mesh, P(aggregate.AXIS)))
    weights = rng.integers(100, 600, args.agents).astype(np.float64)  # N_i

    def call(algorithm):
        out = aggregate.weighted_average(stacked, weights, mesh, algorithm)
        jax.block_until_ready(out)
        return out

    names = tuple(aggregate.ALGORITHMS)
    outs, first = {}, {}
    for a in names:  # the first call compiles
        t = time.perf_counter()
        outs[a] = call(a)
        first[a] = time.perf_counter() - t
    for a in names:
        call(a)
    diff = max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(*(jax.tree.leaves(outs[a]) for a in names), strict=True)
    )
    times: dict[str, list[float]] = {a: [] for a in names}
    for _ in range(args.repeats):  # alternate, so drift hits both alike
        for a in names:
            t = time.perf_counter()
            call(a)
            times[a].append(time.perf_counter() - t)

    print(f"machine: {machine()}")
    print(
        f"model {args.model}: {len(leaves)} leaves, {n_floats:,} floats "
        f"({4 * n_floats / 2**20:.2f} MiB); weighted_average of {args.agents} agents on "
        f"{DEVICES} devices; median of {args.repeats} alternating calls"
    )
    med = {a: float(np.median(times[a])) for a in names}
    for a in names:
        lo, hi = min(times[a]), max(times[a])
        print(
            f"{a:18s} {1e3 * med[a]:8.2f} ms  (min {1e3 * lo:.2f}, max {1e3 * hi:.2f}); "
            f"first call (compiles) {first[a]:.1f} s"
        )
    print(f"ratio halving_doubling / psum: {med['halving_doubling'] / med['psum']:.2f}")
    print(f"max |halving_doubling - psum| over all leaves: {diff:.2e}")


if __name__ == "__main__":
    main()
