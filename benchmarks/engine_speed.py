"""Training samples/s of whole rounds, per method and agent count, against the bare steps.

    python benchmarks/engine_speed.py [--model resnet56] [--agents 10] [--samples 300]
        [--methods comdml,allreduce,fedavg,gossip,braintorrent] [--backends loop]
    python benchmarks/engine_speed.py --model tiny --agents 10,100,1000 --total-samples 20000 \\
        --batch 20 --methods comdml,gossip

One experiment per (agents, method, backend) on synthetic images (the paper's
CPU profiles, every link up so everyone trains), driven by the same
``rounds.run_round`` that real runs use: plan, price, batches, training,
the method's merge, the consensus evaluation and, for per-agent methods,
the per-agent evaluation every ``--eval-agents-every`` rounds. After a
warm-up round that compiles everything, each trial times
``--rounds-per-trial`` rounds (default ``--eval-agents-every``, so the
per-agent evaluation is amortised, for every method alike). Each round is
timed beside two replays of exactly the steps it trained, as many calls per
(role, cut) as its plan trained batches (:class:`BareSteps`): the engine's
own compiled per-batch programs alone (the benchmark fails if the timed
rounds re-trace any of them) and plain ``StepPrograms`` steps on a fixed batch.
The order of the three rotates from round to round, so the machine's drift
hits all alike. Printed per method: round vs its steps alone (what the round
adds: plan, price, batches, starts, merge, evaluation), round vs plain steps,
and engine step vs plain step (what gathering and augmenting inside the step
costs), each the median over ``--repeats`` trials with the per-trial range;
then a breakdown of one round, and the machine.
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

from benchmarks.common import jitted_step, machine  # noqa: E402

LINKS = (10.0, 20.0, 50.0, 100.0)


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
    from comdml_jax.data.datasets import synthetic_dataset

    dataset = synthetic_dataset(k * per_agent, args.test)
    return experiment.build(cfg, workdir, dataset=dataset)


class BareSteps:
    """The round's jitted training steps alone, without the rest of the round.

    ``program="engine"``: the engine's own per-batch programs (gather, augment
    and step, the very executables the rounds run; no new compilation), from
    the engine's starting state of agent 0, on agent 0's first batch indices.
    ``program="plain"``: the bare :class:`StepPrograms` steps (a fresh cache with
    the engine's compiler options) on one fixed float batch, from a fresh
    state. :meth:`run` replays a round's work: for each (role, cut), the step
    called as many times as the round trained batches of it, back to back
    (dispatched asynchronously, as the engine's loop does), from a fresh state.
    """

    def __init__(self, exp, state, roles: set[tuple[str, int]], program: str):
        import jax
        import jax.numpy as jnp

        from comdml_jax import rounds
        from comdml_jax.models import split
        from comdml_jax.train import steps
        from comdml_jax.train.types import StartModels

        eng, b = exp.engine, exp.config.train.batch_size
        self.program = program
        self.templates, self.fns = {}, {}
        if program == "engine":
            plan = exp.method.plan(rounds.round_context(exp, int(state.round)), state.method)
            start = exp.method.start(state.method, plan)
            start = StartModels(jax.device_put(start.model, eng.home), start.per_agent)
            lr = jnp.float32(exp.config.optim.lr)
            self.args = (eng.data.x, eng.data.y, np.asarray(exp.parts[0][:b], np.int32))
            for role, cut in sorted(roles):
                self.templates[(role, cut)] = eng._agent_start(start, 0, lr, role, cut)
                self.fns[(role, cut)] = eng._loop_step(role, cut)
        else:
            cache = steps.StepPrograms(exp.model, eng.tx, xla_options=eng.steps.xla_options)
            params, stats = exp.model.init(jax.random.key(0))
            aux = split.init_all_aux(exp.model, jax.random.key(2))
            x = jax.random.normal(jax.random.key(3), (b, 32, 32, 3))
            self.args = (x, jnp.arange(b, dtype=jnp.int32) % 10)
            for role, cut in sorted(roles):
                if role == "full":
                    st = steps.init_state(params, stats, eng.tx)
                else:
                    sp, fp = split.split_tree(exp.model, params, cut)
                    ss, fs = split.split_tree(exp.model, stats, cut)
                    sp = {**sp, split.AUX: aux[split.aux_key(cut)]}
                    st = (steps.init_state(sp, ss, eng.tx), steps.init_state(fp, fs, eng.tx))
                self.templates[(role, cut)] = st
                self.fns[(role, cut)] = jitted_step(cache, role, cut)
        self.run(dict.fromkeys(self.templates, 2))  # compile (plain) and warm up

    def run(self, counts: dict[tuple[str, int], int]) -> float:
        """Wall seconds of ``counts[(role, cut)]`` steps of each (role, cut)."""
        import jax
        import jax.numpy as jnp

        total = 0.0
        for key, n in sorted(counts.items()):
            state = jax.block_until_ready(jax.tree.map(jnp.copy, self.templates[key]))
            fn, loss = self.fns[key], None
            t0 = time.perf_counter()
            for i in range(n):
                if self.program == "engine":
                    rab = np.array([0, 0, i], np.int32)
                    state, loss = fn(state, *self.args, rab)
                else:
                    state, loss = fn(state, *self.args)
            jax.block_until_ready((state, loss))
            total += time.perf_counter() - t0
        return total


def round_batches(exp, plan) -> dict[tuple[str, int], int]:
    """Batches trained per (role, cut) group in a round of ``plan``."""
    from comdml_jax.train.engine import groups_of

    nb = exp.config.train.local_epochs * -(-exp.num_samples // exp.config.train.batch_size)
    return {(g.role, g.cut): int(sum(nb[a] for a in g.agents)) for g in groups_of(plan)}


def breakdown(exp, state) -> dict[str, float]:
    """One round's pieces, each timed alone (seconds)."""
    import jax

    from comdml_jax import rng, rounds
    from comdml_jax.data.agents import make_epoch_batches

    cfg, r = exp.config, int(state.round)
    t = {}
    t0 = time.perf_counter()
    ctx = rounds.round_context(exp, r)
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
    p.add_argument("--repeats", type=int, default=3, help="trials per method")
    p.add_argument(
        "--rounds-per-trial",
        type=int,
        default=0,
        help="rounds per trial (0: --eval-agents-every, so per-agent evaluation is amortised)",
    )
    args = p.parse_args()

    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # as the CLI does: glibc tunables for XLA's scratch buffers
    import jax

    from comdml_jax import rounds

    print(f"machine: {json.dumps(machine())}")
    for k in (int(a) for a in args.agents.split(",")):
        per_agent = args.total_samples // k if args.total_samples else args.samples
        for backend in args.backends.split(","):
            for method in args.methods.split(","):
                with tempfile.TemporaryDirectory() as wd:
                    exp = make_experiment(args, method, k, per_agent, backend, wd)
                    state = rounds.initial_state(exp)
                    state, _ = rounds.run_round(exp, state)  # compiles every program
                    n_rounds = args.rounds_per_trial or max(1, args.eval_agents_every)
                    ctx = rounds.round_context(exp, int(state.round))
                    roles = set(round_batches(exp, exp.method.plan(ctx, state.method)))
                    roles |= {("full", 0)}
                    traces = dict(exp.engine.traces)
                    bare = {p: BareSteps(exp, state, roles, p) for p in ("engine", "plain")}
                    clocks = ["round", "engine", "plain"]
                    per_trial = {c: [] for c in clocks}
                    for trial in range(args.repeats):
                        spent = dict.fromkeys(clocks, 0.0)
                        trained_batches = {}
                        for i in range(n_rounds):
                            ctx = rounds.round_context(exp, int(state.round))
                            counts = round_batches(exp, exp.method.plan(ctx, state.method))
                            for key, n in counts.items():
                                trained_batches[key] = trained_batches.get(key, 0) + n
                            # Each round beside its own bare steps, the order rotating from
                            # round to round, so the machine's drift hits all three alike.
                            j = (trial * n_rounds + i) % 3
                            for clock in clocks[j:] + clocks[:j]:
                                if clock == "round":
                                    t0 = time.perf_counter()
                                    state, _ = rounds.run_round(exp, state)
                                    jax.block_until_ready(state.method)
                                    spent["round"] += time.perf_counter() - t0
                                else:
                                    spent[clock] += bare[clock].run(counts)
                        for c in clocks:
                            per_trial[c].append(spent[c] / n_rounds)
                    if exp.engine.traces != traces:
                        raise RuntimeError(f"the timed rounds re-traced: {exp.engine.traces}")
                    samples = sum(trained_batches.values()) * args.batch / n_rounds
                    parts = breakdown(exp, state)
                med = {c: float(np.median(v)) for c, v in per_trial.items()}
                t = {c: np.asarray(v) for c, v in per_trial.items()}
                overheads = {
                    "round vs its steps alone": t["round"] / t["engine"],
                    "round vs plain steps": t["round"] / t["plain"],
                    "engine step vs plain step": t["engine"] / t["plain"],
                }
                print(
                    f"K={k:5d} {method:13s} {backend:5s}: round {med['round']:8.2f} s "
                    f"({samples / med['round']:8.1f} samples/s), its steps alone "
                    f"{med['engine']:8.2f} s ({samples / med['engine']:8.1f} samples/s), plain "
                    f"steps {med['plain']:8.2f} s ({samples / med['plain']:8.1f} samples/s)",
                    flush=True,
                )
                for name, v in overheads.items():
                    print(
                        f"      {name}: {np.median(v) - 1:+.1%} "
                        f"(per trial {v.min() - 1:+.1%}..{v.max() - 1:+.1%})"
                    )
                print("      one round: " + ", ".join(f"{n} {v:.3f} s" for n, v in parts.items()))
    print(
        f"\nmodel {args.model}, batch {args.batch}, test set {args.test} images, per-agent "
        f"evaluation every {args.eval_agents_every} rounds on {args.eval_agents_subset} images"
    )


if __name__ == "__main__":
    main()
