"""Plots of a run: accuracy against simulated time, and a round's per-agent timeline.

Drawn on matplotlib's Agg canvas without pyplot, so they work headless and in
threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_accuracy_vs_time(
    runs: dict[str, Sequence[dict]], path: str | os.PathLike[str], target: float | None = None
) -> None:
    """Test accuracy against cumulative simulated time, one line per run.

    Args:
      runs: label -> the run's metrics records (``sim_time_s``, ``test_accuracy``).
      path: PNG path.
      target: a horizontal line at the target accuracy, if given.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, recs in runs.items():
        pts = [
            (r["sim_time_s"], r["test_accuracy"])
            for r in recs
            if r.get("test_accuracy") is not None
        ]
        if pts:
            t, a = zip(*pts, strict=True)
            ax.plot(np.asarray(t) / 3600.0, a, marker=".", label=label)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_round_timeline(record: dict, path: str | os.PathLike[str]) -> None:
    """A round's per-agent compute, communication and idle time as stacked bars.

    Args:
      record: one metrics record (``compute_s``, ``comm_s``, ``idle_s``,
        ``allreduce_time_s``, ``pairs``, ``round``).
      path: PNG path.
    """
    compute = np.asarray(record["compute_s"], float)
    comm = np.asarray(record["comm_s"], float)
    idle = np.asarray(record["idle_s"], float)
    k = len(compute)
    fig = Figure(figsize=(7, 0.35 * k + 1.5))
    ax = fig.add_subplot()
    y = np.arange(k)
    ax.barh(y, compute, color="tab:blue", label="compute")
    ax.barh(y, comm, left=compute, color="tab:orange", label="communication")
    ax.barh(y, idle, left=compute + comm, color="lightgrey", label="idle")
    ar = float(record.get("allreduce_time_s") or 0.0)
    end = float(np.max(compute + comm + idle)) if k else 0.0
    took_part = (compute + comm) > 0
    ax.barh(
        y[took_part],
        np.full(int(took_part.sum()), ar),
        left=end,
        color="tab:green",
        label="AllReduce",
    )
    for i in np.flatnonzero(~took_part):
        ax.annotate(
            "sat out", (0, i), xytext=(3, -3), textcoords="offset points", fontsize=7, color="grey"
        )
    for slow, fast, cut in record.get("pairs", []):
        ax.annotate(
            f"→{fast} (cut {cut})",
            (0, slow),
            xytext=(3, -3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_yticks(y)
    ax.set_ylabel("agent")
    ax.set_xlabel("simulated seconds")
    ax.set_title(f"round {record['round']}")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)
