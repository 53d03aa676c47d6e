"""Per-agent evaluation: ``Evaluator.each`` against the previous eager-row loop, side by side.

    python benchmarks/eval_speed.py [K]

K stacked tiny models (default 100), each evaluated on the first 200 of 1,000
synthetic test images; checks both give the same accuracies and prints the
median of 3 alternating timings of each, their ratio and the machine.
"""

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine  # noqa: E402
from comdml_jax.models.resnet import build_model  # noqa: E402
from comdml_jax.train.evaluate import Evaluator  # noqa: E402

K, N = (int(sys.argv[1]) if len(sys.argv) > 1 else 100), 200
model = build_model("tiny", num_classes=10)
keys = jax.random.split(jax.random.key(0), K)
ps, ss = zip(*[model.init(k) for k in keys], strict=True)
P = jax.tree.map(lambda *x: jnp.stack(x), *ps)
S = jax.tree.map(lambda *x: jnp.stack(x), *ss)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
y = rng.integers(0, 10, 1000)
ev = Evaluator(model, x, y, (0.5,) * 3, (0.25,) * 3, 1000)


def old(params, stats, limit):
    """The previous Evaluator.each: rows sliced eagerly, one synchronisation per agent."""
    k = jax.tree.leaves(params)[0].shape[0]
    out = np.zeros(k)
    for i in range(k):
        row = lambda t, i=i: jax.tree.map(lambda x: x[i], t)
        out[i] = ev(row(params), row(stats), limit)[1]
    return out


a, b = old(P, S, N), ev.each(P, S, N)
print("equal accuracies:", np.array_equal(a, b))
to, tn = [], []
for _ in range(3):
    t = time.perf_counter()
    old(P, S, N)
    to.append(time.perf_counter() - t)
    t = time.perf_counter()
    ev.each(P, S, N)
    tn.append(time.perf_counter() - t)
print(machine())
print(
    f"K={K}, {N} test images each: old {np.median(to):.3f} s, new {np.median(tn):.3f} s, "
    f"old/new {np.median(to) / np.median(tn):.1f}x"
)
