"""Time-to-target ratio = per-round ratio × rounds-to-target ratio (issue 22 item 3).

Hand-made metrics records, two seeds, ComDML against one baseline; the
factors are computed by hand from the records.
"""

import numpy as np
import pytest

from comdml_jax.report import comparison as cmp

TARGET = 0.5


def records(round_times, accs):
    """One record per round: cumulative sim time and the test accuracy."""
    out, t = [], 0.0
    for r, (dt, a) in enumerate(zip(round_times, accs, strict=True)):
        t += dt
        out.append({"round": r, "sim_time_s": t, "round_time_s": dt, "test_accuracy": a})
    return out


# comdml: short rounds, more of them; allreduce: long rounds, fewer.
RECORDS = {
    "comdml": {
        0: records([2.0, 3.0, 2.0, 1.0, 4.0], [0.1, 0.2, 0.3, 0.55, 0.6]),  # 4 rounds, 8 s
        1: records([1.0, 1.5, 2.5, 3.0], [0.2, 0.3, 0.4, 0.5]),  # 4 rounds, 8 s
    },
    "allreduce": {
        0: records([10.0, 12.0, 9.0], [0.3, 0.6, 0.7]),  # 2 rounds, 22 s
        1: records([8.0, 8.0, 11.0], [0.2, 0.4, 0.51]),  # 3 rounds, 27 s
    },
}


def report():
    runs = {
        m: [cmp.seed_summary(s, recs, TARGET) for s, recs in by_seed.items()]
        for m, by_seed in RECORDS.items()
    }
    return cmp.comparison_report(runs, target=TARGET, rounds=5)


def test_factors_by_hand():
    d = report()["decomposition"]["allreduce"]
    # by hand, seed 0: per round 8/4 = 2 s vs 22/2 = 11 s; rounds 4 vs 2; time 8 vs 22
    # seed 1: per round 8/4 = 2 s vs 27/3 = 9 s; rounds 4 vs 3; time 8 vs 27
    want = {
        0: (2.0 / 11.0, 4 / 2, 8.0 / 22.0),
        1: (2.0 / 9.0, 4 / 3, 8.0 / 27.0),
    }
    assert [p["seed"] for p in d["per_seed"]] == [0, 1]
    for p in d["per_seed"]:
        per_round, rounds, time = want[p["seed"]]
        assert p["per_round_ratio"] == pytest.approx(per_round, rel=1e-12)
        assert p["rounds_ratio"] == pytest.approx(rounds, rel=1e-12)
        assert p["time_ratio"] == pytest.approx(time, rel=1e-12)
        assert p["per_round_ratio"] * p["rounds_ratio"] == pytest.approx(p["time_ratio"], rel=1e-12)
    for k, i in (("per_round_ratio", 0), ("rounds_ratio", 1), ("time_ratio", 2)):
        vals = [want[0][i], want[1][i]]
        assert d[k]["mean"] == pytest.approx(np.mean(vals))
        assert d[k]["std"] == pytest.approx(np.std(vals, ddof=cmp.DDOF))
        assert d[k]["n"] == 2
    # ComDML gains per round (ratio < 1) and loses in rounds (ratio > 1)
    assert d["per_round_ratio"]["mean"] < 1 < d["rounds_ratio"]["mean"]
    # the time ratio agrees with the reported reduction, seed by seed
    red = report()["reduction"]["allreduce"]["per_seed"]
    for p, r in zip(d["per_seed"], red, strict=True):
        assert 1 - p["time_ratio"] == pytest.approx(r["reduction"], rel=1e-12)


def test_markdown_gives_both_factors():
    md = cmp.format_markdown(report())
    assert "## Where comdml gains and loses" in md
    d = report()["decomposition"]["allreduce"]
    row = [ln for ln in md.splitlines() if ln.startswith("| allreduce | 0.")][0]
    assert f"{d['per_round_ratio']['mean']:.3f}" in row
    assert f"{d['rounds_ratio']['mean']:.3f}" in row
    assert f"{d['time_ratio']['mean']:.3f}" in row and row.endswith("| 2 |")


def test_a_baseline_that_missed_the_target_has_no_factors():
    runs = {
        "comdml": [cmp.seed_summary(0, RECORDS["comdml"][0], TARGET)],
        "gossip": [cmp.seed_summary(0, records([1.0, 1.0], [0.1, 0.2]), TARGET)],
    }
    rep = cmp.comparison_report(runs, target=TARGET, rounds=2)
    d = rep["decomposition"]["gossip"]
    assert d["per_seed"] == [] and d["time_ratio"]["mean"] is None
    assert "| gossip | - | - | - | 0 |" in cmp.format_markdown(rep)
