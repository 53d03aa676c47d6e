"""A comparison of methods over seeds, as numbers: mean ± std and ComDML's reduction (SPEC §9).

Pure functions over per-seed summaries, so the statistics can be checked
against numpy without training. The input is one dict per (method, seed), as
:func:`seed_summary` reads it off a run's ``metrics.jsonl`` records:

    {"seed": 0, "rounds": 20, "final_test_accuracy": 0.41, "best_test_accuracy": 0.43,
     "time_to_target_s": 812.5, "rounds_to_target": 14, "sim_time_s": 1204.0}

Conventions:
- Spread is numpy's ``np.std(values, ddof=DDOF)`` with ``DDOF = 1`` (the
  sample standard deviation over seeds); with a single value it is None.
- Time to target and rounds to target are averaged over the seeds whose run
  reached the target. A method that no seed brought to the target is "not
  reached in R rounds", never a number; one that only some seeds did carries
  ``reached`` < ``seeds`` and the table says so.
- ComDML's reduction against a baseline is ``1 - t_comdml / t_baseline`` per
  seed, averaged (mean ± std) over the seeds where both reached the target.
- The decomposition against a baseline splits the time-to-target ratio per
  seed: ``t_ref / t_base = (t_ref / n_ref) / (t_base / n_base) × n_ref / n_base``
  (n: rounds to target), i.e. the per-round ratio (the mean simulated round up
  to the target) times the rounds-to-target ratio, each mean ± std over the
  seeds where both reached the target (:func:`decomposition`).
- Nothing here reads wall-clock time, so a report is a pure function of the
  simulated runs (the comparison writes wall times to a separate file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from comdml_jax.report.tables import run_summary

DDOF = 1  # np.std(..., ddof=DDOF): the sample standard deviation over seeds
REFERENCE = "comdml"  # the method whose reduction against every other is reported

SeedSummary = dict  # one (method, seed) run's numbers, see the module docstring
MethodRuns = Mapping[str, Sequence[SeedSummary]]  # method -> per-seed summaries


def rounds_to_target(records: Sequence[dict], target: float) -> int | None:
    """The number of rounds run when the test accuracy first reached ``target`` (a count).

    Args:
      records: a run's ``metrics.jsonl`` records, in round order (``round`` 0-based).
      target: the target test accuracy.

    Returns:
      ``round + 1`` of the first evaluated record at or above ``target``, or None.
    """
    for r in records:
        acc = r.get("test_accuracy")
        if acc is not None and acc >= target:
            return int(r["round"]) + 1
    return None


def seed_summary(seed: int, records: Sequence[dict], target: float) -> SeedSummary:
    """One run's numbers for the comparison (no wall time).

    Args:
      seed: the run's seed.
      records: its ``metrics.jsonl`` records.
      target: the target test accuracy.

    Returns:
      :func:`~comdml_jax.report.tables.run_summary` plus ``seed`` and ``rounds_to_target``.
    """
    return {
        "seed": int(seed),
        **run_summary(records, target),
        "rounds_to_target": rounds_to_target(records, target),
    }


def mean_std(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}`` of ``values``: ``np.mean`` and ``np.std(ddof=DDOF)``.

    Args:
      values: numbers (None entries are not allowed; filter them first).

    Returns:
      mean and std as floats (None when there are no values; std None for one value).
    """
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    return {
        "mean": float(np.mean(x)) if n else None,
        "std": float(np.std(x, ddof=DDOF)) if n > DDOF else None,
        "n": n,
    }


def _reached(values: Sequence[float | None]) -> dict:
    stats = mean_std([v for v in values if v is not None])
    return {**stats, "reached": stats.pop("n"), "seeds": len(values)}


def method_stats(runs: Sequence[SeedSummary]) -> dict:
    """Mean ± std over one method's seeds.

    Args:
      runs: the method's per-seed summaries.

    Returns:
      ``time_to_target_s`` and ``rounds_to_target`` (over the seeds that reached
      the target: mean, std, reached, seeds), ``final_test_accuracy``,
      ``best_test_accuracy``, ``rounds`` and ``sim_time_s`` (over all seeds:
      mean, std, n).
    """

    def over_all(key):
        return mean_std([r[key] for r in runs if r[key] is not None])

    return {
        "time_to_target_s": _reached([r["time_to_target_s"] for r in runs]),
        "rounds_to_target": _reached([r["rounds_to_target"] for r in runs]),
        "final_test_accuracy": over_all("final_test_accuracy"),
        "best_test_accuracy": over_all("best_test_accuracy"),
        "rounds": over_all("rounds"),
        "sim_time_s": over_all("sim_time_s"),
    }


def reduction(reference: Sequence[SeedSummary], baseline: Sequence[SeedSummary]) -> dict:
    """The reference method's time saving against a baseline, seed by seed.

    ``1 - t_ref / t_base`` for every seed that both runs reached the target, then
    mean ± std over those seeds (a fraction; 0.7 is 70% less time).

    Args:
      reference: the reference method's per-seed summaries (ComDML).
      baseline: the baseline's per-seed summaries.

    Returns:
      mean, std, n (seeds used), per_seed (``[{seed, reduction}]``) and, when n is 0,
      ``reason``: which side never reached the target.
    """
    ref = {r["seed"]: r["time_to_target_s"] for r in reference}
    base = {r["seed"]: r["time_to_target_s"] for r in baseline}
    common = sorted(set(ref) & set(base))
    per_seed = [
        {"seed": s, "reduction": 1.0 - ref[s] / base[s]}
        for s in common
        if ref[s] is not None and base[s] is not None and base[s] > 0
    ]
    out = {**mean_std([p["reduction"] for p in per_seed]), "per_seed": per_seed}
    if not per_seed:
        ref_hit = any(ref[s] is not None for s in common)
        base_hit = any(base[s] is not None for s in common)
        if not common:
            out["reason"] = "no seed in common"
        elif not ref_hit and not base_hit:
            out["reason"] = "neither reached the target"
        elif not ref_hit:
            out["reason"] = "the reference did not reach the target"
        elif not base_hit:
            out["reason"] = "the baseline did not reach the target"
        else:
            out["reason"] = "no seed where both reached the target"
    return out


def decomposition(reference: Sequence[SeedSummary], baseline: Sequence[SeedSummary]) -> dict:
    """Time-to-target ratio = per-round ratio × rounds-to-target ratio, seed by seed.

    For each seed where both reached the target: ``time_ratio = t_ref / t_base``,
    ``rounds_ratio = n_ref / n_base`` and ``per_round_ratio = (t_ref / n_ref) /
    (t_base / n_base)``, so ``time_ratio == per_round_ratio * rounds_ratio`` (up
    to rounding). Below 1 the reference gains: per round (shorter rounds) or in
    rounds (fewer to the target).

    Args:
      reference: the reference method's per-seed summaries (ComDML).
      baseline: the baseline's per-seed summaries.

    Returns:
      ``per_round_ratio``, ``rounds_ratio``, ``time_ratio`` (each mean, std, n over
      those seeds) and ``per_seed`` (``[{seed, per_round_ratio, rounds_ratio,
      time_ratio}]``).
    """
    ref = {r["seed"]: r for r in reference}
    base = {r["seed"]: r for r in baseline}
    per_seed = []
    for s in sorted(set(ref) & set(base)):
        a, b = ref[s], base[s]
        t_a, t_b, n_a, n_b = (
            a["time_to_target_s"],
            b["time_to_target_s"],
            a["rounds_to_target"],
            b["rounds_to_target"],
        )
        if None in (t_a, t_b, n_a, n_b) or not (t_a > 0 and t_b > 0 and n_a > 0 and n_b > 0):
            continue
        per_seed.append(
            {
                "seed": s,
                "per_round_ratio": (t_a / n_a) / (t_b / n_b),
                "rounds_ratio": n_a / n_b,
                "time_ratio": t_a / t_b,
            }
        )
    keys = ("per_round_ratio", "rounds_ratio", "time_ratio")
    return {**{k: mean_std([p[k] for p in per_seed]) for k in keys}, "per_seed": per_seed}


def comparison_report(
    runs: MethodRuns,
    *,
    target: float,
    rounds: int,
    reference: str = REFERENCE,
    meta: Mapping | None = None,
) -> dict:
    """The whole comparison (``comparison.json``): per-method stats and reductions.

    Args:
      runs: method -> its per-seed summaries (methods in the order to report).
      target: the target test accuracy.
      rounds: R, the configured number of rounds ("not reached in R rounds").
      reference: the method whose reduction against the others is reported;
        without it in ``runs`` there are no reductions.
      meta: extra fields to record (config name, command, ...), JSON-able.

    Returns:
      ``{"target_accuracy", "rounds", "ddof", "reference", "methods": {m: {"stats",
      "seeds"}}, "reduction": {baseline: reduction}, "decomposition": {baseline:
      decomposition}, **meta}``.
    """
    methods = {m: {"stats": method_stats(rs), "seeds": list(rs)} for m, rs in runs.items()}
    reductions, parts = {}, {}
    if reference in runs:
        reductions = {m: reduction(runs[reference], rs) for m, rs in runs.items() if m != reference}
        parts = {m: decomposition(runs[reference], rs) for m, rs in runs.items() if m != reference}
    return {
        **(dict(meta) if meta else {}),
        "target_accuracy": target,
        "rounds": rounds,
        "ddof": DDOF,
        "reference": reference,
        "methods": methods,
        "reduction": reductions,
        "decomposition": parts,
    }


# ------------------------------------------------------------------------ markdown


def _pm(stat: dict, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    if stat["mean"] is None:
        return "-"
    text = format(stat["mean"] * scale, fmt)
    if stat["std"] is not None:
        text += " ± " + format(stat["std"] * scale, fmt)
    return text + unit


def _seconds_format(stat: dict) -> str:
    """Whole seconds from 100 s up, else one or two decimals (short smoke runs)."""
    m = abs(stat["mean"] or 0.0)
    return ",.0f" if m >= 100 else (".1f" if m >= 10 else ".2f")


def _reached_cell(stat: dict, fmt: str, rounds: int) -> str:
    if not stat["reached"]:
        return f"not reached in {rounds} rounds"
    text = _pm(stat, fmt)
    if stat["reached"] < stat["seeds"]:
        missed = stat["seeds"] - stat["reached"]
        text += f" ({stat['reached']}/{stat['seeds']} seeds; {missed} not reached in {rounds})"
    return text


def _reduction_cell(red: dict) -> str:
    if red["n"] == 0:
        return f"- ({red['reason']})"
    return _pm(red, ".1f", 100.0, "%") + f" (n={red['n']})"


def format_markdown(report: dict) -> str:
    """``comparison.md``: the summary table, ComDML's reductions and the per-seed numbers.

    Args:
      report: from :func:`comparison_report`.

    Returns:
      Markdown text (no wall times).
    """
    rounds, target, ref = report["rounds"], report["target_accuracy"], report["reference"]
    methods = report["methods"]
    seeds = sorted({r["seed"] for m in methods.values() for r in m["seeds"]})
    lines = []
    title = report.get("config") or "comparison"
    lines.append(f"# {title}")
    lines.append("")
    lines.append(
        f"Target test accuracy {target:.1%}; {rounds} rounds; seeds {', '.join(map(str, seeds))}. "
        f"Mean ± std over seeds (numpy std, ddof={report['ddof']}); times are simulated "
        "seconds. Time and rounds to target are averaged over the seeds that reached it."
    )
    if report.get("command"):
        lines += ["", "```", report["command"], "```"]
    shared = report.get("shared_partition")
    if shared:
        same = all(shared.values())
        lines += [
            "",
            "Every method of a seed trained on the same partition (partition.json): "
            + ("yes." if same else "NO, seeds " + ", ".join(s for s, v in shared.items() if not v)),
        ]
    lines.append("")
    head = [
        "method",
        "time to target (s)",
        "rounds to target",
        "final accuracy",
        "best accuracy",
        "rounds",
        "simulated time (s)",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for m, entry in methods.items():
        s = entry["stats"]
        row = [
            m,
            _reached_cell(s["time_to_target_s"], _seconds_format(s["time_to_target_s"]), rounds),
            _reached_cell(s["rounds_to_target"], ".1f", rounds),
            _pm(s["final_test_accuracy"], ".2f", 100.0, "%"),
            _pm(s["best_test_accuracy"], ".2f", 100.0, "%"),
            _pm(s["rounds"], ".0f"),
            _pm(s["sim_time_s"], _seconds_format(s["sim_time_s"])),
        ]
        lines.append("| " + " | ".join(row) + " |")
    if report["reduction"]:
        lines += [
            "",
            f"## Time saved by {ref}",
            "",
            f"1 − t_{ref} / t_baseline per seed, mean ± std over the seeds where both reached "
            "the target (n).",
            "",
            "| baseline | reduction |",
            "|---|---|",
        ]
        for m, red in report["reduction"].items():
            lines.append(f"| {m} | {_reduction_cell(red)} |")
    parts = report.get("decomposition") or {}
    if parts:
        lines += [
            "",
            f"## Where {ref} gains and loses",
            "",
            f"Time-to-target ratio t_{ref} / t_baseline = per-round ratio × rounds-to-target "
            "ratio, per seed (per-round: simulated time to the target / rounds to it), mean ± "
            f"std over the seeds where both reached the target (n). Below 1: {ref} gains.",
            "",
            "| baseline | per-round ratio | rounds-to-target ratio | time-to-target ratio | n |",
            "|---|---|---|---|---|",
        ]
        for m, d in parts.items():
            if not d["per_seed"]:
                lines.append(f"| {m} | - | - | - | 0 |")
                continue
            cells = [_pm(d[k], ".3f") for k in ("per_round_ratio", "rounds_ratio", "time_ratio")]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {len(d['per_seed'])} |")
    lines += [
        "",
        "## Per seed",
        "",
        "| method | seed | time to target (s) | rounds to target "
        "| final accuracy | best accuracy | rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, entry in methods.items():
        for r in entry["seeds"]:
            ttt = r["time_to_target_s"]
            ttt_s = (
                format(ttt, _seconds_format({"mean": ttt}))
                if ttt is not None
                else f"not reached in {rounds} rounds"
            )
            rtt = r["rounds_to_target"]
            cells = [
                m,
                str(r["seed"]),
                ttt_s,
                str(rtt) if rtt is not None else "-",
                f"{r['final_test_accuracy']:.2%}" if r["final_test_accuracy"] is not None else "-",
                f"{r['best_test_accuracy']:.2%}" if r["best_test_accuracy"] is not None else "-",
                str(r["rounds"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plots: accuracy_vs_time.png (per method the mean test accuracy over seeds at each "
        "round, placed at the seeds' mean simulated time, with a min–max band over seeds) and "
        "time_to_target.png (mean ± std, one dot per seed).",
    ]
    pending = report.get("pending") or []
    if pending:
        lines += ["", "Not finished yet: " + ", ".join(pending) + "."]
    return "\n".join(lines) + "\n"
