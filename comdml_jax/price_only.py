"""Price-only comparisons: every method's round times over R rounds and seeds, no training.

The library behind ``python -m experiments.compare --config=... --price_only``.
Each round goes through the training run's own pricing path
(:func:`comdml_jax.rounds.context_for` and
:func:`~comdml_jax.rounds.plan_and_price`, i.e. ``method.plan`` then
``method.price``); nothing here prices anything itself. A method whose plan
reads its own state (BrainTorrent's versions) carries only the host part of
that state (``method.init_host`` / ``method.advance_host``), advanced with the
round's participants as the agents that trained (a training run advances it
with the agents that trained; they differ only when ``train.on_nonfinite=skip``
drops a diverged group).

The per-round time of a method is the mean ± std (numpy, ddof
:data:`~comdml_jax.report.comparison.DDOF`) over every (seed, round), skipped
rounds included at 0 s (as a training run's clock counts them), so that mean ×
rounds is the simulated time of R rounds. ComDML's ratio to a method is the
ratio of their means (below 1: ComDML's rounds are shorter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from comdml_jax.methods import get_method
from comdml_jax.report.comparison import DDOF, REFERENCE, mean_std
from comdml_jax.report.writers import write_json
from comdml_jax.rounds import context_for, plan_and_price
from comdml_jax.run_dir import run_config


def price_rounds(config, system, num_batches, profile, rounds: int) -> list[float]:
    """``round_time_s`` of rounds 0..R-1 of ``config`` (its method and seed), without training.

    Args:
      config: one run's config (``method`` and ``seed`` set).
      system: its system (``config_check.validate_config(config)``).
      num_batches: [K] Ñ_i a training run charges (``run_inputs.run_batches``).
      profile: the split profile.
      rounds: R.

    Returns:
      R floats, bit for bit a training run's ``round_time_s`` records.
    """
    method = get_method(config.method)
    host = method.init_host(int(config.num_agents))
    out = []
    for r in range(int(rounds)):
        ctx = context_for(config, system, method, r, num_batches, None, profile)
        plan, _, seconds = plan_and_price(method, ctx, host)
        out.append(seconds)
        if plan.participants.any():
            host = method.advance_host(host, plan, np.flatnonzero(plan.participants).tolist())
    return out


def run_setup() -> Callable:
    """The ``setup`` of :func:`price_comparison` that a training run's inputs give.

    ``setup(cfg) -> (system, num_batches, profile)``: the system
    ``config_check.validate_config`` builds, Ñ_i from the partition
    (``run_inputs.run_batches``, once per seed: every method of a seed shares it)
    and the compiled split profile (``run_inputs.load_profile``, one compile per
    model, cached).
    """
    from comdml_jax import run_inputs
    from comdml_jax.config_check import validate_config

    batches_of = {}

    def setup(cfg):
        system = validate_config(cfg)
        if int(cfg.seed) not in batches_of:
            batches_of[int(cfg.seed)] = run_inputs.run_batches(cfg)
        batches, num_classes = batches_of[int(cfg.seed)]
        return system, batches, run_inputs.load_profile(cfg, "", num_classes)

    return setup


def price_comparison(
    config,
    methods: Sequence[str],
    seeds: Sequence[int],
    setup: Callable | None = None,
    rounds: int | None = None,
) -> dict:
    """Every method × seed priced over R rounds; ``price.json``'s content.

    Args:
      config: the shared config.
      methods: methods, in report order.
      seeds: seeds.
      setup: ``setup(run_config) -> (system, num_batches, profile)`` (the CLI's:
        ``validate_config``, ``run_inputs.run_batches`` and ``load_profile``).
      rounds: R (default ``config.rounds``).

    Returns:
      ``{"rounds", "seeds", "ddof", "reference", "methods": {m: {"round_time_s":
      mean_std, "per_seed": {seed: [R times]}, "ratio": ComDML mean / this mean}}}``.
    """
    rounds = int(config.rounds if rounds is None else rounds)
    setup = setup or run_setup()
    times = {m: {} for m in methods}
    for s in seeds:
        for m in methods:
            cfg = run_config(config, m, s)
            system, batches, profile = setup(cfg)
            times[m][str(s)] = price_rounds(cfg, system, batches, profile, rounds)
    out = {}
    for m in methods:
        stats = mean_std([t for ts in times[m].values() for t in ts])
        out[m] = {"round_time_s": stats, "per_seed": times[m]}
    ref = out.get(REFERENCE)
    for m in methods:
        base = out[m]["round_time_s"]["mean"]
        ok = ref is not None and base
        out[m]["ratio"] = ref["round_time_s"]["mean"] / base if ok else None
    return {
        "rounds": rounds,
        "seeds": [int(s) for s in seeds],
        "ddof": DDOF,
        "reference": REFERENCE,
        "methods": out,
    }


def format_markdown(report: Mapping, title: str = "price-only comparison") -> str:
    """``price.md``: per method the per-round time (mean ± std) and ComDML's ratio to it."""
    ref = report["reference"]
    lines = [
        f"# {title}",
        "",
        f"Simulated seconds per round, no training: mean ± std (numpy, ddof={report['ddof']}) "
        f"over seeds {', '.join(map(str, report['seeds']))} × {report['rounds']} rounds "
        f"(skipped rounds count 0 s). Ratio: {ref}'s mean / the method's mean.",
    ]
    if report.get("command"):
        lines += ["", "```", report["command"], "```"]
    lines += ["", f"| method | round time (s) | {ref} / method |", "|---|---|---|"]
    for m, e in report["methods"].items():
        st = e["round_time_s"]
        cell = f"{st['mean']:.4g}" + (f" ± {st['std']:.3g}" if st["std"] is not None else "")
        ratio = f"{e['ratio']:.4f}" if e["ratio"] is not None else "-"
        lines.append(f"| {m} | {cell} | {ratio} |")
    return "\n".join(lines) + "\n"


def write_price(workdir, report: Mapping, title: str = "price-only comparison") -> None:
    """Writes ``price.json`` and ``price.md`` into ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "price.json", report)
    (workdir / "price.md").write_text(format_markdown(report, title))
