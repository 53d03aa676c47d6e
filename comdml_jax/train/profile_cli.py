"""``comdml-profile``: the split profile of a model, one row per cut.

    comdml-profile --model resnet56 --batch-size 100 [--json] [--num-classes 10]
                   [--aux-head linear|conv]

Prints, for every cut m, the layers offloaded, T_s^m and T_f^m (training cost
of the slow side + aux head and of the fast side relative to the full step,
from XLA's FLOP count), ν^m (bytes sent per batch) and the parameter bytes on
each side. ``--json`` prints a JSON array with one object per cut.
"""

from __future__ import annotations

import argparse

from comdml_jax.catalog import AUX_HEADS
from comdml_jax.models.resnet import MODELS


def format_table(profile) -> str:
    """The profile as an aligned text table."""
    head = (
        f"{profile.model}, batch {profile.batch_size}: full training step "
        f"{profile.full_step_flops / 1e9:.2f} GFLOP, model {profile.model_bytes / 1e6:.2f} MB\n"
    )
    cols = (
        "cut",
        "layers",
        "T_s (slow)",
        "T_f (fast)",
        "nu bytes/batch",
        "slow params B",
        "fast params B",
    )
    lines = [head, "{:>4} {:>7} {:>11} {:>11} {:>15} {:>14} {:>14}".format(*cols)]
    for r in profile.rows():
        lines.append(
            f"{r['cut']:>4} {r['layers_offloaded']:>7} {r['slow_rel_cost']:>11.4f} "
            f"{r['fast_rel_cost']:>11.4f} {r['bytes_per_batch']:>15,} "
            f"{r['slow_param_bytes']:>14,} {r['fast_param_bytes']:>14,}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="comdml-profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet56", choices=sorted(MODELS))
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument(
        "--aux-head", default="linear", choices=AUX_HEADS, help="the cuts' auxiliary head"
    )
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per cut")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    from comdml_jax.train.profile import split_profile

    profile = split_profile(args.model, args.batch_size, args.num_classes, args.aux_head)
    print(profile.to_json() if args.json else format_table(profile))


if __name__ == "__main__":
    main()
