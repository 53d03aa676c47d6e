"""A/B of XLA:CPU options on the ResNet-56 training step, against the package's default.

    python benchmarks/xla_options.py [--trials 3] [--variant NAME='{"option": value}' ...]

Each variant adds XLA compiler options (or, for keys that start with ``--``,
``XLA_FLAGS``) on top of what the package uses (``conv.compiler_options()``)
and times the full step of the default CPU lowering in a fresh process. The
default and the variants alternate ``--trials`` times, so the machine's drift
hits all alike. Printed per variant: the median samples/s, the ratio to the
default (median and per-trial range), and whether the compiled program
computes anything differently (the loss after the same steps from the same
start differs from the default's: an option that leaves it bit-identical did
not change the numerics, and usually not the program). Without ``--variant``
it runs the options measured for issue 6 (docs/cpu_speed_experiments.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks.common import jitted_step, machine, run_json, time_calls  # noqa: E402
from comdml_jax.host_memory import tuned_env  # noqa: E402

MEASURED = {
    "vector_width_512": {"--xla_cpu_prefer_vector_width": 512},
    "no_concurrency_scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": False},
    "memory_scheduler": {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
    "xnn_graph_greedy": {
        "xla_cpu_use_xnnpack": True,
        "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY",
    },
    "onednn_convolutions": {
        "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    },
    "single_thread_eigen": {"--xla_cpu_multi_thread_eigen": False},
}


def child(args) -> dict:
    import jax
    import jax.numpy as jnp

    from comdml_jax.models.conv import compiler_options
    from comdml_jax.models.resnet import build_model
    from comdml_jax.train import steps

    extra = json.loads(args.options)
    opts = {**compiler_options(), **{k: v for k, v in extra.items() if not k.startswith("--")}}
    model = build_model(args.model)
    tx = steps.make_optimizer(0.01)
    fn = jitted_step(steps.StepPrograms(model, tx, xla_options=opts), "full")
    params, stats = model.init(jax.random.key(0))
    box = [steps.init_state(params, stats, tx)]
    x = jax.random.normal(jax.random.key(1), (args.batch, 32, 32, 3))
    y = jnp.arange(args.batch, dtype=jnp.int32) % 10
    loss = [None]

    def run():
        box[0], loss[0] = fn(box[0], x, y)
        loss[0].block_until_ready()

    times = time_calls(run, repeats=args.repeats)
    return {"step_s": times, "loss": float(loss[0]), "machine": machine()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56", choices=["resnet56", "resnet110"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7, help="timed steps per process")
    p.add_argument("--trials", type=int, default=3, help="alternating rounds of processes")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON of options")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    variants = {"default": {}}
    if args.variant:
        for v in args.variant:
            name, _, spec = v.partition("=")
            variants[name] = json.loads(spec)
    else:
        variants.update(MEASURED)
    base = ["benchmarks/xla_options.py", "--child", f"--model={args.model}"]
    base += [f"--batch={args.batch}", f"--repeats={args.repeats}"]
    results: dict[str, list[dict]] = {n: [] for n in variants}
    for _ in range(args.trials):
        for name, opts in variants.items():
            env = tuned_env()
            flags = [
                f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                for k, v in opts.items()
                if k.startswith("--")
            ]
            if flags:
                env["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
            try:
                r = run_json([*base, f"--options={json.dumps(opts)}"], env=env)
            except RuntimeError as e:
                r = {"error": str(e).strip().splitlines()[-1][:120]}
            results[name].append(r)

    def rates(name):
        return [args.batch / float(np.median(r["step_s"])) for r in results[name] if "step_s" in r]

    print(f"machine: {json.dumps(results['default'][0]['machine'])}")
    print(
        f"model {args.model}, batch {args.batch}, full step; median over {args.trials} "
        f"alternating processes of the median of {args.repeats} steps\n"
    )
    print(f"{'variant':26s} {'samples/s':>10s} {'vs default':>11s}  {'per trial':>11s}  numerics")
    ref = rates("default")
    ref_loss = results["default"][0]["loss"]
    for name in variants:
        rs = rates(name)
        if not rs:
            print(f"{name:26s} failed: {results[name][0]['error']}")
            continue
        per = [a / b for a, b in zip(rs, ref, strict=False)]
        same = all(r.get("loss") == ref_loss for r in results[name])
        print(
            f"{name:26s} {np.median(rs):10.1f} {np.median(rs) / np.median(ref):11.2f}  "
            f"{min(per):.2f}-{max(per):.2f}  {'unchanged' if same else 'changed'}"
        )


if __name__ == "__main__":
    main()
