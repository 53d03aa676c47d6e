"""Numbers read off a run's metrics records: time to target, comparison rows."""

from __future__ import annotations

from collections.abc import Sequence


def time_to_target(records: Sequence[dict], target: float) -> float | None:
    """Simulated seconds at the first evaluated round whose test accuracy reaches ``target``.

    Args:
      records: a run's ``metrics.jsonl`` records, in round order.
      target: the target test accuracy (a fraction).

    Returns:
      The record's cumulative ``sim_time_s``, or None if no round reached it.
    """
    for r in records:
        acc = r.get("test_accuracy")
        if acc is not None and acc >= target:
            return r["sim_time_s"]
    return None


def run_summary(records: Sequence[dict], target: float) -> dict:
    """Rounds, best and final test accuracy, time to ``target`` and total simulated time."""
    accs = [r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    return {
        "rounds": len(records),
        "final_test_accuracy": accs[-1] if accs else None,
        "best_test_accuracy": max(accs) if accs else None,
        "time_to_target_s": time_to_target(records, target),
        "sim_time_s": records[-1]["sim_time_s"] if records else 0.0,
    }


def comparison_rows(runs: dict[str, Sequence[dict]], target: float) -> list[dict]:
    """One row per run: :func:`run_summary` and the speed-up.

    The speed-up of a run is the slowest time to target among the runs that
    reached it, divided by this run's.
    """
    rows = [{"run": label, **run_summary(recs, target)} for label, recs in runs.items()]
    reached = [r["time_to_target_s"] for r in rows if r["time_to_target_s"] is not None]
    slowest = max(reached) if reached else None
    for r in rows:
        t = r["time_to_target_s"]
        r["speedup"] = slowest / t if t is not None and slowest else None
    return rows
