"""Numbers read off metrics records (comdml_jax.report.tables)."""

import pytest

from comdml_jax.report.tables import comparison_rows, time_to_target


def _recs(accs, round_time):
    out, t = [], 0.0
    for i, a in enumerate(accs):
        t += round_time
        out.append({"round": i, "sim_time_s": t, "test_accuracy": a})
    return out


def test_time_to_target_is_the_first_evaluated_round_reaching_it():
    recs = _recs([0.1, None, 0.52, 0.49, 0.6], 10.0)
    assert time_to_target(recs, 0.5) == 30.0
    assert time_to_target(recs, 0.6) == 50.0
    assert time_to_target(recs, 0.61) is None
    assert time_to_target([], 0.1) is None


def test_comparison_rows_speedup_against_the_slowest_run():
    runs = {
        "fast": _recs([0.2, 0.5, 0.7], 10.0),
        "slow": _recs([0.1, 0.3, 0.5, 0.55], 25.0),
        "never": _recs([0.1], 5.0),
    }
    rows = {r["run"]: r for r in comparison_rows(runs, 0.5)}
    assert rows["fast"]["time_to_target_s"] == 20.0 and rows["slow"]["time_to_target_s"] == 75.0
    assert rows["fast"]["speedup"] == pytest.approx(75.0 / 20.0)
    assert rows["slow"]["speedup"] == pytest.approx(1.0)
    assert rows["never"]["speedup"] is None and rows["never"]["time_to_target_s"] is None
    assert (
        rows["slow"]["best_test_accuracy"] == 0.55 and rows["slow"]["final_test_accuracy"] == 0.55
    )
    assert rows["fast"]["rounds"] == 3 and rows["fast"]["sim_time_s"] == 30.0
