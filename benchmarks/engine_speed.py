"""Training samples/s of whole rounds, per method and agent count, against the bare steps.

    python benchmarks/engine_speed.py [--model resnet56] [--agents 10] [--samples 300]
        [--methods comdml,allreduce,fedavg,gossip,braintorrent] [--backends loop]
    python benchmarks/engine_speed.py --model tiny --agents 10,100,1000 --total-samples 20000 \\
        --batch 20 --methods comdml,gossip

One experiment per (agents, method, backend) on synthetic images (the paper's
CPU profiles, every link up so everyone trains), driven by the same
``experiment.run_round`` that real runs use: plan, price, batches, training,
the method's merge, the consensus evaluation and, for per-agent methods,
the per-agent evaluation every ``--eval-agents-every`` rounds (amortised:
the benchmark runs that many rounds per trial). After a warm-up round that
compiles everything, each trial times those rounds; the bare steps are the
same jitted training steps, each timed alone on a fixed batch, times the
number of batches the rounds trained. The rounds and the bare steps are timed
alternately, ``--repeats`` times, so the machine's drift hits both alike;
medians and the per-trial range of the ratio are printed, with the machine
and a breakdown of one round (training, merge, evaluation, the rest).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, time_calls  # noqa: E402

LINKS = (10.0, 20.0, 50.0, 100.0)


def synthetic_dataset(n_train: int, n_test: int, seed: int = 0):
    from comdml_jax.data.datasets import Dataset

    rng = np.random.default_rng(seed)
    return Dataset(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.int32),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=(np.arange(n_test) % 10).astype(np.int32),
        num_classes=10,
        name="cifar10",
        mean=np.array([0.49, 0.48, 0.45], np.float32),
        std=np.array([0.25, 0.24, 0.26], np.float32),
    )


def make_experiment(args, method: str, k: int, per_agent: int, backend: str, workdir: str):
    from comdml_jax import experiment
    from configs import default

    cfg = default.get_config()
    cfg.method = method
    cfg.num_agents = k
    cfg.model.name = args.model
    cfg.train.batch_size = args.batch
    cfg.train.backend = backend
    cfg.system.bandwidth_mbps = tuple(LINKS[i % len(LINKS)] for i in range(k))
    cfg.system.dynamics_rounds = ()
    cfg.data.min_samples_per_agent = 1
    cfg.eval_batch_size = min(1000, args.test)
    cfg.eval_agents_every = args.eval_agents_every
    cfg.eval_agents_subset = args.eval_agents_subset
    cfg.rounds = 10_000
    dataset = synthetic_dataset(k * per_agent, args.test)
    return experiment.build(cfg, workdir, dataset=dataset)


def bare_step_seconds(exp, roles: set[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Median seconds of each (role, cut) training step alone, on a fixed batch."""
    import jax
    import jax.numpy as jnp

    from comdml_jax.models import split
    from comdml_jax.train import steps

    model, tx, b = exp.model, exp.engine.tx, exp.config.train.batch_size
    cache = steps.StepCache(model, tx)
    params, stats = model.init(jax.random.key(0))
    aux = split.init_all_aux(model, jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (b, 32, 32, 3))
    y = jnp.arange(b, dtype=jnp.int32) % 10
    fresh = lambda t: jax.tree.map(jnp.copy, t)
    out = {}
    for role, cut in sorted(roles):
        if role == "full":
            box = [steps.init_state(fresh(params), fresh(stats), tx)]
        else:
            sp, fp = split.split_tree(model, fresh(params), cut)
            ss, fs = split.split_tree(model, fresh(stats), cut)
            sp = {**sp, split.AUX: fresh(aux[split.aux_key(cut)])}
            box = [(steps.init_state(sp, ss, tx), steps.init_state(fp, fs, tx))]
        fn = cache.get(role, cut)

        def call(fn=fn, box=box):
            box[0], loss = fn(box[0], x, y)
            jax.block_until_ready(loss)

        out[(role, cut)] = float(np.median(time_calls(call, warmup=2, repeats=5)))
    return out


def round_batches(exp, plan) -> dict[tuple[str, int], int]:
    """Batches trained per (role, cut) group in a round of ``plan``."""
    from comdml_jax.train.engine import groups_of

    nb = exp.config.train.local_epochs * -(-exp.num_samples // exp.config.train.batch_size)
    return {(g.role, g.cut): int(sum(nb[a] for a in g.agents)) for g in groups_of(plan)}


def breakdown(exp, state) -> dict[str, float]:
    """One round's pieces, each timed alone (seconds)."""
    import jax

    from comdml_jax import experiment, rng
    from comdml_jax.data.agents import make_epoch_batches

    cfg, r = exp.config, int(state.round)
    t = {}
    t0 = time.perf_counter()
    ctx = experiment.round_context(exp, r)
    plan = exp.method.plan(ctx, state.method)
    exp.method.price(ctx, plan)
    t["plan + price"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = make_epoch_batches(
        exp.parts, cfg.train.batch_size, rng.stream(cfg.seed, "shuffle"), r, 1
    )
    jax.block_until_ready(batches)
    t["batches"] = time.perf_counter() - t0
    start = exp.method.start(state.method, plan)
    t0 = time.perf_counter()
    trained = exp.engine.train_agents(start, plan, batches, r, cfg.optim.lr)
    jax.block_until_ready(trained.params)
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mstate, _ = exp.method.merge(state.method, start, trained, plan, ctx, jax.random.key(0))
    jax.block_until_ready(mstate)
    t["merge"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = exp.method.consensus(mstate, ctx)
    exp.evaluator(model.params, model.batch_stats)
    t["evaluate consensus"] = time.perf_counter() - t0
    models = exp.method.agent_models(mstate)
    if models is not None and cfg.eval_agents_every:
        t0 = time.perf_counter()
        exp.evaluator.each(*models, limit=cfg.eval_agents_subset)
        t[f"evaluate agents (1/{cfg.eval_agents_every} rounds)"] = (
            time.perf_counter() - t0
        ) / cfg.eval_agents_every
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--agents", default="10", help="comma-separated agent counts")
    p.add_argument("--samples", type=int, default=300, help="training samples per agent")
    p.add_argument(
        "--total-samples", type=int, default=0, help="total training samples (overrides --samples)"
    )
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--test", type=int, default=1000, help="test images")
    p.add_argument("--eval-agents-every", type=int, default=5)
    p.add_argument("--eval-agents-subset", type=int, default=200)
    p.add_argument("--methods", default="comdml,allreduce,fedavg,gossip,braintorrent")
    p.add_argument("--backends", default="loop")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # as the CLI does: glibc tunables for XLA's scratch buffers
    import jax

    from comdml_jax import experiment

    print(f"machine: {json.dumps(machine())}")
    rows = []
    for k in (int(a) for a in args.agents.split(",")):
        per_agent = args.total_samples // k if args.total_samples else args.samples
        for backend in args.backends.split(","):
            for method in args.methods.split(","):
                with tempfile.TemporaryDirectory() as wd:
                    exp = make_experiment(args, method, k, per_agent, backend, wd)
                    state = experiment.initial_state(exp)
                    state, _ = experiment.run_round(exp, state)  # compiles every program
                    n_rounds = max(1, args.eval_agents_every if exp.method.per_agent else 1)
                    ctx = experiment.round_context(exp, int(state.round))
                    roles = set(round_batches(exp, exp.method.plan(ctx, state.method)))
                    roles |= {("full", 0)}
                    rounds_t, bare_t, ratios = [], [], []
                    for _ in range(args.repeats):
                        bare = bare_step_seconds(exp, roles)
                        t0 = time.perf_counter()
                        trained_batches = {}
                        for _ in range(n_rounds):
                            ctx = experiment.round_context(exp, int(state.round))
                            plan = exp.method.plan(ctx, state.method)
                            for key, n in round_batches(exp, plan).items():
                                trained_batches[key] = trained_batches.get(key, 0) + n
                            state, _ = experiment.run_round(exp, state)
                        jax.block_until_ready(state.method)
                        elapsed = time.perf_counter() - t0
                        base = sum(bare[key] * n for key, n in trained_batches.items())
                        rounds_t.append(elapsed / n_rounds)
                        bare_t.append(base / n_rounds)
                        ratios.append(elapsed / base)
                    samples = sum(trained_batches.values()) * args.batch / n_rounds
                    parts = breakdown(exp, state)
                rows.append((k, method, backend, samples, rounds_t, bare_t, ratios, parts))
                r, b = float(np.median(rounds_t)), float(np.median(bare_t))
                print(
                    f"K={k:5d} {method:13s} {backend:5s}: round {r:8.2f} s "
                    f"({samples / r:8.1f} samples/s), bare steps {b:8.2f} s "
                    f"({samples / b:8.1f} samples/s), overhead {r / b - 1:+.1%} "
                    f"(per trial {min(ratios) - 1:+.1%}..{max(ratios) - 1:+.1%})",
                    flush=True,
                )
                print("      one round: " + ", ".join(f"{n} {v:.3f} s" for n, v in parts.items()))
    print(
        f"\nmodel {args.model}, batch {args.batch}, test set {args.test} images, per-agent "
        f"evaluation every {args.eval_agents_every} rounds on {args.eval_agents_subset} images"
    )


if __name__ == "__main__":
    main()
