"""Training samples/s of one simulated ComDML round, per agent backend, against the bare steps.

    python benchmarks/engine_speed.py [--model resnet56] [--agents 10] [--samples 300]
                                      [--backends loop,vmap]

One round of ``--agents`` heterogeneous agents (the paper's CPU profiles, all
links up so everyone trains), each holding ``--samples`` images, planned by
ComDML's scheduler, so the round mixes full-model epochs and split pairs. For
each backend it times ``Engine.train_round`` (training + aggregation, after a
warm-up round that compiles every step) and compares it with the sum of the
isolated jitted steps the round is made of, each timed alone on the same
machine: the ratio is the engine's overhead. The bare steps and the rounds
are measured alternately, ``--repeats`` times, so that the machine's drift
hits both alike; the medians and the per-trial range of the ratio are
printed, with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, time_calls  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--samples", type=int, default=300, help="training samples per agent")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--backends", default="loop,vmap")
    p.add_argument(
        "--repeats", type=int, default=3, help="alternating trials of bare steps and rounds"
    )
    args = p.parse_args()

    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # as the CLI does: glibc tunables for XLA's scratch buffers
    import jax
    import jax.numpy as jnp

    from comdml_jax.data.agents import make_agent_batches
    from comdml_jax.models import split
    from comdml_jax.models.resnet import build_model
    from comdml_jax.system.world import build_system
    from comdml_jax.train import aggregate, steps
    from comdml_jax.train import profile as profile_lib
    from comdml_jax.train.engine import Engine, GlobalModel, TrainData, groups_of
    from configs import default

    k, b = args.agents, args.batch
    cfg = default.get_config()
    cfg.num_agents = k
    cfg.model.name = args.model
    cfg.train.batch_size = b
    links = (10.0, 20.0, 50.0, 100.0)
    cfg.system.bandwidth_mbps = tuple(links[i % len(links)] for i in range(k))
    system = build_system(cfg)
    profile = profile_lib.split_profile(args.model, b)
    rng = np.random.default_rng(0)
    n = k * args.samples
    data = TrainData(
        jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
        jnp.asarray(rng.integers(0, 10, n).astype(np.int32)),
        (0.49, 0.48, 0.45),
        (0.25, 0.24, 0.26),
    )
    parts = [np.arange(i * args.samples, (i + 1) * args.samples) for i in range(k)]
    batches = make_agent_batches(parts, b, jax.random.key(1), 0)
    nb = np.asarray(batches.num_batches)
    state = system.round_state(0)
    plan = system.plan(state, nb, profile)
    model = build_model(args.model)
    tx = steps.make_optimizer(0.01)
    params, stats = model.init(jax.random.key(0))
    g = GlobalModel(params, stats, split.init_all_aux(model, jax.random.key(2)))
    trained = int(sum(nb[a] for grp in groups_of(plan) for a in grp.agents)) * b
    print(f"machine: {json.dumps(machine())}")
    print(
        f"{args.model}, {k} agents x {args.samples} samples, batch {b}: "
        f"{len(plan.pairs)} pairs {plan.pairs}, {trained} samples trained per round\n"
    )

    # The bare steps, each timed alone: the engine's lower bound.
    cache = steps.StepCache(model, tx)
    x = jax.random.normal(jax.random.key(3), (b, 32, 32, 3))
    y = jnp.arange(b, dtype=jnp.int32) % 10
    fresh = lambda t: jax.tree.map(jnp.copy, t)
    bare_calls = []
    for grp in groups_of(plan):
        if grp.role == "full":
            box = [steps.init_state(fresh(params), fresh(stats), tx)]
            fn = cache.get("full")
        else:
            sp, fp = split.split_tree(model, fresh(params), grp.cut)
            ss, fs = split.split_tree(model, fresh(stats), grp.cut)
            sp = {**sp, split.AUX: fresh(g.aux[split.aux_key(grp.cut)])}
            box = [(steps.init_state(sp, ss, tx), steps.init_state(fp, fs, tx))]
            fn = cache.get("pair", grp.cut)

        def call(fn=fn, box=box):
            box[0], out = fn(box[0], x, y)
            jax.block_until_ready(out)

        call()  # compile
        bare_calls.append((call, int(sum(nb[a] for a in grp.agents))))

    def bare_round() -> float:
        """The round's steps, each group's median step times its number of batches."""
        return sum(float(np.median(time_calls(c, warmup=1, repeats=3))) * n for c, n in bare_calls)

    engines = {}
    for backend in args.backends.split(","):
        engine = Engine(model, tx, data, backend, aggregate.make_mesh(), seed=0)

        def one_round(engine=engine):
            out = engine.train_round(g, plan, batches, 0, 0.01)
            jax.block_until_ready(out.model)

        one_round()  # compile every (role, cut)
        engines[backend] = one_round
    # Alternate the measurements so that the machine's drift hits all alike.
    times: dict[str, list[float]] = {"bare": [], **{k: [] for k in engines}}
    for _ in range(args.repeats):
        times["bare"].append(bare_round())
        for backend, one_round in engines.items():
            times[backend].append(time_calls(one_round, warmup=0, repeats=1)[0])
    bare = float(np.median(times["bare"]))
    print(f"{'what':42s} {'seconds':>9s} {'samples/s':>10s} {'vs bare steps':>14s}  per trial")
    print(f"{'bare jitted steps, summed':42s} {bare:9.2f} {trained / bare:10.1f} {1.0:14.2f}")
    results = {}
    for backend in engines:
        t = float(np.median(times[backend]))
        results[backend] = t
        per = [e / r for e, r in zip(times[backend], times["bare"], strict=True)]
        label = f"engine.train_round, backend={backend}"
        print(
            f"{label:42s} {t:9.2f} {trained / t:10.1f} {t / bare:14.2f}  "
            f"{min(per):.2f}-{max(per):.2f}"
        )
    if "loop" in results and "vmap" in results:
        speedup = results["loop"] / results["vmap"]
        print(f"\nvmap / loop speed: {speedup:.2f}x on {jax.default_backend()}")
    if "loop" in results:
        print(f"engine overhead over the bare steps (loop): {results['loop'] / bare - 1:+.1%}")


if __name__ == "__main__":
    main()
