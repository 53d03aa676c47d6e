"""Plots of runs and comparisons: accuracy against simulated time, time to target, a round.

Drawn on matplotlib's Agg canvas without pyplot, so they work headless and in
threads. Every time axis is in simulated seconds, the unit of the metrics log
and the tables. Rounds are numbered as ``metrics.jsonl`` and the log number them,
from 0: the record of ``round`` r is "round r of 0-(R-1)"
(:func:`comdml_jax.report.progress.round_label`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from comdml_jax.report.progress import round_label

Records = Sequence[dict]  # one run's metrics.jsonl records, in round order

_SECONDS = FuncFormatter(lambda v, _: f"{v:,.0f}")


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def accuracy_band(seed_runs: Sequence[Records]) -> dict[str, np.ndarray]:
    """Accuracy over seeds, round by round: the numbers behind the comparison plot's band.

    Only rounds that every seed evaluated (``test_accuracy`` not None) and ran
    are kept; the seeds share the evaluation schedule, so this drops only the
    tail of a run that ran longer than the others.

    Args:
      seed_runs: one record list per seed.

    Returns:
      ``round`` (0-based), ``time`` (mean simulated seconds over the seeds at that
      round), ``mean``, ``min`` and ``max`` test accuracy over the seeds; empty
      arrays when no round qualifies.
    """
    per_seed = [
        {int(r["round"]): r for r in recs if r.get("test_accuracy") is not None}
        for recs in seed_runs
    ]
    common = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
    acc = np.array([[p[r]["test_accuracy"] for r in common] for p in per_seed], float)
    time = np.array([[p[r]["sim_time_s"] for r in common] for p in per_seed], float)
    if not common:
        empty = np.zeros(0)
        return {
            "round": empty.astype(int),
            "time": empty,
            "mean": empty,
            "min": empty,
            "max": empty,
        }
    return {
        "round": np.asarray(common, int),
        "time": time.mean(axis=0),
        "mean": acc.mean(axis=0),
        "min": acc.min(axis=0),
        "max": acc.max(axis=0),
    }


def plot_accuracy_bands(
    runs: Mapping[str, Sequence[Records]],
    path: str | os.PathLike[str],
    target: float | None = None,
) -> None:
    """Test accuracy against simulated time: per method the mean over seeds and a min–max band.

    At every evaluated round the line sits at the seeds' mean simulated time
    and mean accuracy; the shaded band spans the lowest to the highest seed's
    accuracy at that round (:func:`accuracy_band`). A single seed draws the line only.

    Args:
      runs: label -> one record list per seed.
      path: PNG path.
      target: a horizontal line at the target accuracy, if given.
    """
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    many = False
    for i, (label, seed_runs) in enumerate(runs.items()):
        band = accuracy_band(seed_runs)
        if not band["round"].size:
            continue
        color = f"C{i % 10}"
        n = len(seed_runs)
        ax.plot(
            band["time"],
            band["mean"],
            marker=".",
            ms=3,
            color=color,
            label=label if n == 1 else f"{label} (mean of {n} seeds)",
        )
        if n > 1:
            many = True
            ax.fill_between(band["time"], band["min"], band["max"], color=color, alpha=0.2, lw=0)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy")
    ax.xaxis.set_major_formatter(_SECONDS)
    ax.grid(alpha=0.3)
    if many:
        ax.set_title("band: min–max over seeds", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_accuracy_vs_time(
    runs: Mapping[str, Records], path: str | os.PathLike[str], target: float | None = None
) -> None:
    """Test accuracy against cumulative simulated time (s), one line per run.

    Args:
      runs: label -> the run's metrics records (``sim_time_s``, ``test_accuracy``).
      path: PNG path.
      target: a horizontal line at the target accuracy, if given.
    """
    plot_accuracy_bands({label: [recs] for label, recs in runs.items()}, path, target)


def plot_time_to_target(report: dict, path: str | os.PathLike[str]) -> None:
    """Bars of the mean simulated time to target per method, ± std, with each seed as a dot.

    A method that no seed brought to the target gets an empty, hatched bar
    labelled "not reached in R rounds"; one that only some seeds did is
    labelled with how many.

    Args:
      report: :func:`comdml_jax.report.comparison.comparison_report`'s dict.
      path: PNG path.
    """
    methods = list(report["methods"])
    rounds = report["rounds"]
    fig = Figure(figsize=(max(4.0, 1.1 * len(methods) + 2.0), 4.0))
    ax = fig.add_subplot()
    stats = [report["methods"][m]["stats"]["time_to_target_s"] for m in methods]
    reached_max = [
        max([r["time_to_target_s"] or 0.0 for r in report["methods"][m]["seeds"]], default=0.0)
        for m in methods
    ]
    top = max([0.0] + [(s["mean"] or 0.0) + (s["std"] or 0.0) for s in stats] + reached_max)
    top = top or 1.0
    x = np.arange(len(methods))
    for i, (m, s) in enumerate(zip(methods, stats, strict=True)):
        color = f"C{i % 10}"
        if not s["reached"]:
            ax.bar(i, top, color="none", edgecolor="grey", hatch="//", lw=0.8)
            ax.text(
                i,
                top * 0.5,
                f"not reached\nin {rounds} rounds",
                ha="center",
                va="center",
                fontsize=8,
                rotation=90,
                color="dimgrey",
            )
            continue
        ax.bar(
            i,
            s["mean"],
            color=color,
            alpha=0.8,
            yerr=s["std"] if s["std"] is not None else None,
            capsize=4,
        )
        seeds = [r["time_to_target_s"] for r in report["methods"][m]["seeds"]]
        hit = [t for t in seeds if t is not None]
        ax.plot(np.full(len(hit), i), hit, "k.", ms=4, zorder=3)
        label = f"{s['mean']:,.0f} s"
        if s["reached"] < s["seeds"]:
            label += f"\n{s['reached']}/{s['seeds']} seeds reached"
        ax.annotate(
            label,
            (i, s["mean"] + (s["std"] or 0.0)),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(x, methods)
    ax.set_ylabel("simulated time to target (s)")
    ax.yaxis.set_major_formatter(_SECONDS)
    ax.set_ylim(0, top * 1.12)
    ax.set_title(
        f"time to {report['target_accuracy']:.0%} test accuracy "
        f"(mean ± std over seeds, dots: seeds)",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


# What each method's exchange phase is, for the timeline's legend.
EXCHANGE_LABELS = {
    "comdml": "AllReduce",
    "allreduce": "AllReduce",
    "gossip": "gossip receives",
    "braintorrent": "aggregator's pulls",
}


def plot_round_timeline(
    record: dict, path: str | os.PathLike[str], total_rounds: int | None = None
) -> None:
    """A round's per-agent compute, communication and idle time as stacked bars.

    Paired agents are marked at the end of their bars: the slow agent i with
    "→ fast j (cut m)" (it sends its activations to the fast agent j) and the fast
    agent j with "← slow i (cut m)". The legend sits below the axes, off the bars.

    Args:
      record: one metrics record (``compute_s``, ``comm_s``, ``idle_s``,
        ``exchange_s`` (or ``allreduce_time_s``), ``pairs`` as (slow, fast, cut),
        ``method``, ``round`` 0-based).
      path: PNG path.
      total_rounds: R, for the title "round r of 0-(R-1)" (the log's numbering).
    """
    compute = np.asarray(record["compute_s"], float)
    comm = np.asarray(record["comm_s"], float)
    idle = np.asarray(record["idle_s"], float)
    k = len(compute)
    fig = Figure(figsize=(7.5, 0.35 * k + 2.0))
    ax = fig.add_subplot()
    y = np.arange(k)
    ax.barh(y, compute, color="tab:blue", label="compute")
    ax.barh(y, comm, left=compute, color="tab:orange", label="communication")
    ax.barh(y, idle, left=compute + comm, color="lightgrey", label="idle")
    end = float(np.max(compute + comm + idle)) if k else 0.0
    took_part = (compute + comm) > 0
    if record.get("exchange_s") is not None:  # each agent's part of the exchange phase
        exchange = np.asarray(record["exchange_s"], float)
    else:
        exchange = np.where(took_part, float(record.get("allreduce_time_s") or 0.0), 0.0)
    ar = float(exchange.max()) if k else 0.0
    if ar > 0:
        ax.barh(
            y[took_part],
            exchange[took_part],
            left=end,
            color="tab:green",
            label=EXCHANGE_LABELS.get(record.get("method", ""), "exchange"),
        )
    marks: dict[int, list[str]] = {}
    for slow, fast, cut in record.get("pairs", []):
        marks.setdefault(int(slow), []).append(f"→ fast {fast} (cut {cut})")
        marks.setdefault(int(fast), []).append(f"← slow {slow} (cut {cut})")
    for i in np.flatnonzero(~took_part):
        marks.setdefault(int(i), []).append("sat out")
    for i, texts in marks.items():
        x = end + ar if took_part[i] else 0.0
        ax.annotate(
            ", ".join(texts),
            (x, i),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
            color="grey" if not took_part[i] else "black",
        )
    ax.set_xlim(0, (end + ar) * 1.35 if end + ar > 0 else 1.0)
    ax.set_yticks(y)
    ax.set_ylabel("agent")
    ax.set_xlabel("simulated time (s)")
    ax.xaxis.set_major_formatter(_SECONDS)
    title = round_label(record["round"], total_rounds)
    if "round_time_s" in record:
        title += f": {float(record['round_time_s']):,.1f} s simulated"
    ax.set_title(title, pad=20)
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=7, frameon=False)
    _save(fig, path)
