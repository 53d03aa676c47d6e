"""Price-only comparison at Table III's largest setting, and side by side with training.

    COMDML_DATA_DIR=... python benchmarks/price_only.py [--seeds=0,1,2]

Part 1: ``comdml_jax.price_only.price_comparison`` (what ``experiments.compare
--price_only`` runs) on configs/table3.py:100,resnet110 (100 agents, 300
rounds), every method, the given seeds: the seconds of the split profile's
compile (once per process), of the labels and partition, and of the pricing
itself, with the rounds priced per second.

Part 2, side by side on configs/smoke.py (ComDML, seed 0, 3 rounds): one
trained round's wall time (``rounds.run_round``, rounds 1 and 2, after
round 0 compiled) against one price-only round's (the same rounds'
``plan_and_price``), and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402


def table3(seeds: list[int]) -> None:
    from comdml_jax import price_only, run_inputs
    from comdml_jax.comparison import all_methods, run_config
    from configs import table3 as t3

    config = t3.get_config("100,resnet110")
    methods = all_methods()
    t0 = time.perf_counter()
    cfg = run_config(config, methods[0], seeds[0])
    _, classes = run_inputs.run_batches(cfg)
    run_inputs.load_profile(cfg, "", classes)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = price_only.price_comparison(config, methods, seeds)
    price_s = time.perf_counter() - t0
    n = len(methods) * len(seeds) * int(config.rounds)
    print(
        f"table3 100,resnet110: {len(methods)} methods x {len(seeds)} seeds x {config.rounds} "
        f"rounds = {n} rounds priced in {price_s:.2f} s ({n / price_s:,.0f} rounds/s; labels, "
        f"partition and systems included); split profile compile + first labels "
        f"{compile_s:.2f} s (once per process)"
    )
    for m, e in report["methods"].items():
        st = e["round_time_s"]
        print(
            f"  {m:13s} round {st['mean']:9.2f} ± {st['std']:7.2f} s  comdml/{m} {e['ratio']:.4f}"
        )


def side_by_side() -> None:
    from comdml_jax import experiment, price_only, rounds
    from configs import smoke

    config = smoke.get_config()
    config.data.data_dir = os.environ.get("COMDML_DATA_DIR", "")
    config.rounds = 3
    config.checkpoint_every = 0
    config.plots = False
    with tempfile.TemporaryDirectory() as wd:
        exp = experiment.build(config, wd)
        state = rounds.initial_state(exp)
        state, _ = rounds.run_round(exp, state)  # round 0: compiles
        t0 = time.perf_counter()
        for _ in range(2):
            state, _ = rounds.run_round(exp, state)
        trained = (time.perf_counter() - t0) / 2
    setup = price_only.run_setup()
    system, batches, profile = setup(config)
    price_only.price_rounds(config, system, batches, profile, 3)  # warm
    reps = 200
    t0 = time.perf_counter()
    for _ in range(reps):
        price_only.price_rounds(config, system, batches, profile, 3)
    priced = (time.perf_counter() - t0) / (3 * reps)
    print(
        f"smoke (comdml, 5 agents, tiny): one trained round {trained * 1e3:.1f} ms, one "
        f"price-only round {priced * 1e6:.1f} us: ratio {trained / priced:,.0f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    args = p.parse_args()
    print("host:", machine())
    table3([int(s) for s in args.seeds.split(",")])
    side_by_side()


if __name__ == "__main__":
    main()
