"""Training-step speed of the paper's ResNet-56 against a PyTorch CPU reference.

    python benchmarks/step_speed.py [--model resnet56] [--batch 100] [--cut 4]

Measures, side by side in one run (each in a fresh process so thread pools do
not compete), the training samples/s of

* the bottleneck ResNet-56 full step and one local-loss split step (the
  ``pair`` step: slow side + aux head, then the fast side on the detached
  activations) with this package's default lowering for the platform;
* the same with the reference lowering (``lax.conv`` everywhere, no XLA:CPU
  options, glibc's default allocator settings): the "before";
* the same model and steps in PyTorch (SGD with momentum), NCHW and
  channels-last; the faster of the two is the reference;

and prints the ratios, the achieved GFLOP/s (XLA's FLOP count of the step)
against the machine's float32 matmul peak, and the machine.

PyTorch's speed on this machine varies by up to 20% from one process to the
next, so ``--trials`` (default 3) alternates fresh JAX and PyTorch processes
that many times: each figure is the median over trials of the per-process
median step, and the ratio is also given per trial (min – max).
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


def child_jax(args) -> dict:
    import jax
    import jax.numpy as jnp

    from comdml_jax.models import split
    from comdml_jax.models.resnet import build_model
    from comdml_jax.train import profile as profile_lib
    from comdml_jax.train import steps

    reference = args.lowering == "reference"
    impls = {"conv_impl": "xla", "bn_impl": "plain"} if reference else {}
    model = build_model(args.model, **impls)
    tx = steps.make_optimizer(0.01)
    cache = steps.StepPrograms(model, tx, xla_options={} if reference else None)
    params, stats = model.init(jax.random.key(0))
    b = args.batch
    x = jax.random.normal(jax.random.key(1), (b, 32, 32, 3))
    y = jnp.arange(b, dtype=jnp.int32) % 10
    out = {"lowering": args.lowering, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}

    fresh = lambda t: jax.tree.map(jnp.copy, t)  # the steps donate their state
    box = [steps.init_state(fresh(params), fresh(stats), tx)]
    full = jitted_step(cache, "full")

    def run_full():
        box[0], loss = full(box[0], x, y)
        loss.block_until_ready()

    out["full_s"] = time_calls(run_full, repeats=args.repeats)

    m = args.cut
    sp, fp = split.split_tree(model, fresh(params), m)
    ss, fs = split.split_tree(model, fresh(stats), m)
    sp = {**sp, split.AUX: split.init_aux(model, m, jax.random.key(2))}
    pbox = [(steps.init_state(sp, ss, tx), steps.init_state(fp, fs, tx))]
    pair = jitted_step(cache, "pair", m)

    def run_pair():
        pbox[0], losses = pair(pbox[0], x, y)
        losses[1].block_until_ready()

    out["pair_s"] = time_calls(run_pair, repeats=args.repeats)
    prof = profile_lib.split_profile(args.model, b)
    out["full_flops"] = prof.full_step_flops
    out["pair_flops"] = prof.full_step_flops * (prof.slow_rel_cost[m] + prof.fast_rel_cost[m])
    out["layers_offloaded"] = int(prof.layers_offloaded[m])
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    out["matmul_s"] = time_calls(lambda: mm(a).block_until_ready(), repeats=args.repeats)
    out["machine"] = machine()
    return out


def child_torch(args) -> dict:
    import torch
    from torch import nn

    from benchmarks.torch_reference import aux_head, bottleneck_resnet

    torch.set_num_threads(__import__("os").cpu_count())
    cl = args.layout == "channels_last"
    stages = bottleneck_resnet({"resnet56": 3, "resnet110": 6}[args.model])
    fmt = torch.channels_last if cl else torch.contiguous_format
    b = args.batch
    x = torch.randn(b, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.arange(b) % 10
    ce = nn.CrossEntropyLoss()
    full = nn.Sequential(*stages).to(memory_format=fmt)
    opt = torch.optim.SGD(full.parameters(), lr=0.01, momentum=0.9)

    def run_full():
        opt.zero_grad(set_to_none=True)
        ce(full(x), y).backward()
        opt.step()

    out = {"layout": args.layout, "full_s": time_calls(run_full, repeats=args.repeats)}
    boundary = len(stages) - args.cut
    slow = nn.Sequential(*stages[:boundary]).to(memory_format=fmt)
    fast = nn.Sequential(*stages[boundary:]).to(memory_format=fmt)
    with torch.no_grad():
        channels = slow(x[:1]).shape[1]
    head = aux_head(channels)
    s_opt = torch.optim.SGD(
        list(slow.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9
    )
    f_opt = torch.optim.SGD(fast.parameters(), lr=0.01, momentum=0.9)

    def run_pair():
        s_opt.zero_grad(set_to_none=True)
        z = slow(x)
        ce(head(z), y).backward()
        s_opt.step()
        f_opt.zero_grad(set_to_none=True)
        ce(fast(z.detach()), y).backward()
        f_opt.step()

    out["pair_s"] = time_calls(run_pair, repeats=args.repeats)
    a = torch.ones(2048, 2048)
    out["matmul_s"] = time_calls(lambda: a @ a, repeats=args.repeats)
    out["torch"] = torch.__version__
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56", choices=["resnet56", "resnet110"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument(
        "--cut", type=int, default=4, help="the split step's cut (4: 28 layers offloaded)"
    )
    p.add_argument("--repeats", type=int, default=7, help="timed steps per process")
    p.add_argument("--trials", type=int, default=3, help="alternating JAX/PyTorch processes")
    p.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--lowering", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--layout", default="nchw", help=argparse.SUPPRESS)
    p.add_argument("--skip_reference_lowering", action="store_true")
    args = p.parse_args()
    if args.child == "jax":
        print(json.dumps(child_jax(args)))
        return
    if args.child == "torch":
        print(json.dumps(child_torch(args)))
        return

    common = ["benchmarks/step_speed.py", f"--model={args.model}", f"--batch={args.batch}"]
    common += [f"--cut={args.cut}", f"--repeats={args.repeats}"]
    trials: dict[str, list[dict]] = {}
    # This package's CLI runs with glibc tunables for XLA's scratch buffers
    # (comdml_jax.host_memory); the reference lowering runs without them.
    if not args.skip_reference_lowering:
        plain = {"COMDML_TUNE_MALLOC": "0"}
        trials["jax_reference"] = [
            run_json([*common, "--child=jax", "--lowering=reference"], env=plain)
        ]
    for _ in range(args.trials):  # alternate the processes so drift hits all alike
        trials.setdefault("jax", []).append(run_json([*common, "--child=jax"], env=tuned_env()))
        for layout in ("nchw", "channels_last"):
            try:
                r = run_json([*common, "--child=torch", f"--layout={layout}"])
            except RuntimeError as e:
                reason = str(e).splitlines()[-1]
                print(f"PyTorch reference unavailable ({reason}); pip install -e '.[bench]'")
                continue
            trials.setdefault(f"torch_{layout}", []).append(r)
    b = args.batch
    med = lambda r, k: float(np.median(r[k]))
    keys = ("full_s", "pair_s")
    rates = {n: {k: [b / med(r, k) for r in rs] for k in keys} for n, rs in trials.items()}
    rate = lambda n, k: float(np.median(rates[n][k]))
    j = trials["jax"][0]
    print(f"machine: {json.dumps(j['machine'])}")
    if "torch_nchw" in trials:
        print(f"torch {trials['torch_nchw'][0]['torch']}")
    print(
        f"model {args.model}, batch {b}, split step at cut {args.cut} "
        f"({j['layers_offloaded']} layers offloaded); median over {args.trials} alternating "
        f"processes of the median of {args.repeats} steps\n"
    )
    print(f"{'implementation':34s} {'full samples/s':>15s} {'split samples/s':>16s}  per process")
    for name in trials:
        per = " / ".join(f"{f:.0f},{s:.0f}" for f, s in zip(*rates[name].values(), strict=True))
        print(f"{name:34s} {rate(name, 'full_s'):15.1f} {rate(name, 'pair_s'):16.1f}  {per}")
    torch_names = [n for n in ("torch_nchw", "torch_channels_last") if n in trials]
    for ref in [*torch_names, "best PyTorch"] if torch_names else []:
        names = torch_names if ref == "best PyTorch" else [ref]
        line = []
        for k, what in (("full_s", "full step"), ("pair_s", "split step")):
            n_t = min(len(rates[n][k]) for n in ["jax", *names])
            per = [rates["jax"][k][t] / max(rates[n][k][t] for n in names) for t in range(n_t)]
            best = max(rate(n, k) for n in names)
            line.append(
                f"{what} {rate('jax', k) / best:.2f} (per trial {min(per):.2f}-{max(per):.2f})"
            )
        print(f"ratio jax / {ref}: " + ", ".join(line))
    if "jax_reference" in trials:
        print(
            f"ratio jax / jax reference lowering: full "
            f"{rate('jax', 'full_s') / rate('jax_reference', 'full_s'):.2f}, "
            f"split {rate('jax', 'pair_s') / rate('jax_reference', 'pair_s'):.2f}"
        )
    peak = max(2 * 2048**3 / min(r["matmul_s"]) / 1e9 for r in trials["jax"])
    full_gf = j["full_flops"] * rate("jax", "full_s") / b / 1e9
    pair_gf = j["pair_flops"] * rate("jax", "pair_s") / b / 1e9
    print(
        f"achieved: full step {full_gf:.1f} GFLOP/s, split step {pair_gf:.1f} GFLOP/s "
        f"(XLA FLOP count {j['full_flops'] / b / 1e6:.0f} MFLOP/sample); "
        f"float32 matmul peak (2048^3, XLA) {peak:.0f} GFLOP/s -> {full_gf / peak:.0%} of peak"
    )


if __name__ == "__main__":
    main()
