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


# ------------------------------------------------------------------ comparison statistics

import json  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402

from comdml_jax.report import comparison as cmp  # noqa: E402
from comdml_jax.report import plots  # noqa: E402
from comdml_jax.report.writers import (  # noqa: E402
    JsonlWriter,
    MetricWriters,
    TensorBoardWriter,
    scalars,
)


def _seed(seed, ttt, final, best, rounds=20, rtt=None, sim=1000.0):
    return {
        "seed": seed,
        "rounds": rounds,
        "final_test_accuracy": final,
        "best_test_accuracy": best,
        "time_to_target_s": ttt,
        "rounds_to_target": rtt if rtt is not None else (None if ttt is None else 5 + seed),
        "sim_time_s": sim + seed,
    }


RUNS = {
    "comdml": [
        _seed(0, 100.0, 0.41, 0.43),
        _seed(1, 130.0, 0.40, 0.44),
        _seed(2, 90.0, 0.45, 0.45),
    ],
    "allreduce": [
        _seed(0, 300.0, 0.42, 0.42),
        _seed(1, 320.0, 0.39, 0.41),
        _seed(2, None, 0.35, 0.36),
    ],
    "gossip": [_seed(s, None, 0.2, 0.25) for s in range(3)],
}


def test_mean_std_is_numpys_with_the_stated_ddof():
    x = [3.0, 5.5, 10.25, 1.0]
    got = cmp.mean_std(x)
    assert got["mean"] == pytest.approx(np.mean(x)) and got["n"] == 4
    assert got["std"] == pytest.approx(np.std(x, ddof=1)) and cmp.DDOF == 1
    assert cmp.mean_std([2.0]) == {"mean": 2.0, "std": None, "n": 1}
    assert cmp.mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_method_stats_equal_numpy_over_the_per_seed_summaries():
    report = cmp.comparison_report(RUNS, target=0.4, rounds=20)
    assert report["ddof"] == 1 and report["rounds"] == 20 and report["target_accuracy"] == 0.4
    for m, seeds in RUNS.items():
        s = report["methods"][m]["stats"]
        for key in ("final_test_accuracy", "best_test_accuracy", "sim_time_s"):
            vals = [r[key] for r in seeds]
            assert s[key]["mean"] == pytest.approx(np.mean(vals))
            assert s[key]["std"] == pytest.approx(np.std(vals, ddof=1))
        hit = [r["time_to_target_s"] for r in seeds if r["time_to_target_s"] is not None]
        t = s["time_to_target_s"]
        assert (t["reached"], t["seeds"]) == (len(hit), 3)
        if len(hit) >= 2:
            assert t["mean"] == pytest.approx(np.mean(hit))
            assert t["std"] == pytest.approx(np.std(hit, ddof=1))
    assert report["methods"]["gossip"]["stats"]["time_to_target_s"]["mean"] is None


def test_reduction_is_per_seed_then_mean_over_seeds_where_both_reached():
    report = cmp.comparison_report(RUNS, target=0.4, rounds=20)
    red = report["reduction"]["allreduce"]
    per_seed = [1 - 100.0 / 300.0, 1 - 130.0 / 320.0]  # seed 2: allreduce missed the target
    assert red["n"] == 2 and [p["seed"] for p in red["per_seed"]] == [0, 1]
    assert red["mean"] == pytest.approx(np.mean(per_seed))
    assert red["std"] == pytest.approx(np.std(per_seed, ddof=1))
    # not the ratio of the means
    assert red["mean"] != pytest.approx(1 - np.mean([100, 130, 90]) / np.mean([300, 320]))
    gossip = report["reduction"]["gossip"]
    assert gossip["n"] == 0 and gossip["mean"] is None
    assert gossip["reason"] == "the baseline did not reach the target"
    assert set(report["reduction"]) == {"allreduce", "gossip"}  # not against itself


def test_markdown_says_not_reached_and_shows_mean_pm_std():
    report = cmp.comparison_report(RUNS, target=0.4, rounds=20, meta={"config": "test"})
    md = cmp.format_markdown(report)
    rows = {}
    for ln in md.splitlines():  # the summary table comes first: keep each method's first row
        if ln.startswith("| "):
            rows.setdefault(ln.split("|")[1].strip(), ln)
    assert "not reached in 20 rounds" in rows["gossip"]
    assert "not reached" not in rows["comdml"]
    ttt = [100.0, 130.0, 90.0]
    assert f"{np.mean(ttt):,.0f} ± {np.std(ttt, ddof=1):,.0f}" in rows["comdml"]
    assert "310 ± 14 (2/3 seeds; 1 not reached in 20)" in rows["allreduce"]  # 310, std 14.1
    red = [1 - 100 / 300, 1 - 130 / 320]
    assert f"{100 * np.mean(red):.1f} ± {100 * np.std(red, ddof=1):.1f}% (n=2)" in md
    assert "ddof=1" in md and "wall" not in md


def test_rounds_to_target_counts_rounds_as_the_log_does():
    recs = [
        {"round": i, "sim_time_s": 10.0 * (i + 1), "test_accuracy": a}
        for i, a in enumerate([0.1, None, 0.5, 0.6])
    ]
    assert cmp.rounds_to_target(recs, 0.5) == 3  # a count: round 2 is the third round run
    assert cmp.rounds_to_target(recs, 0.7) is None
    s = cmp.seed_summary(4, recs, 0.5)
    assert (s["seed"], s["time_to_target_s"], s["rounds_to_target"], s["rounds"]) == (4, 30.0, 3, 4)
    assert "wall_time_s" not in s


# ------------------------------------------------------------------------- plots


def test_accuracy_band_is_mean_min_max_over_seeds_at_rounds_all_evaluated():
    a = [
        {"round": i, "sim_time_s": 10.0 * (i + 1), "test_accuracy": x}
        for i, x in enumerate([0.1, 0.3, None, 0.5])
    ]
    b = [
        {"round": i, "sim_time_s": 20.0 * (i + 1), "test_accuracy": x}
        for i, x in enumerate([0.2, 0.1, 0.4, 0.7, 0.9])
    ]
    band = plots.accuracy_band([a, b])
    np.testing.assert_array_equal(band["round"], [0, 1, 3])
    np.testing.assert_allclose(band["time"], [15.0, 30.0, 60.0])
    np.testing.assert_allclose(band["mean"], [0.15, 0.2, 0.6])
    np.testing.assert_allclose(band["min"], [0.1, 0.1, 0.5])
    np.testing.assert_allclose(band["max"], [0.2, 0.3, 0.7])


def _axes_texts(path_png):
    """The PNG exists and is an image (matplotlib's text is not readable back)."""
    from PIL import Image

    with Image.open(path_png) as img:
        assert img.format == "PNG"
        return img.size


def test_comparison_plots_are_written(tmp_path):
    report = cmp.comparison_report(RUNS, target=0.4, rounds=20)
    plots.plot_time_to_target(report, tmp_path / "ttt.png")
    runs = {"m": [_recs([0.1, 0.5], 10.0), _recs([0.2, 0.4], 12.0)], "one": [_recs([0.3], 5.0)]}
    plots.plot_accuracy_bands(runs, tmp_path / "acc.png", 0.4)
    for p in ("ttt.png", "acc.png"):
        w, h = _axes_texts(tmp_path / p)
        assert w > 300 and h > 200


def test_timeline_titles_the_round_as_the_log_numbers_it(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles, notes = [], []
    monkeypatch.setattr(Axes, "set_title", lambda self, t, *a, **k: titles.append(t))
    orig = Axes.annotate
    monkeypatch.setattr(
        Axes,
        "annotate",
        lambda self, text, xy, *a, **k: (
            notes.append((text, xy[1])) or orig(self, text, xy, *a, **k)
        ),
    )
    record = {
        "round": 11,
        "round_time_s": 50.0,
        "compute_s": [10.0, 30.0, 0.0, 12.0],
        "comm_s": [5.0, 2.0, 0.0, 1.0],
        "idle_s": [17.0, 0.0, 0.0, 19.0],
        "allreduce_time_s": 1.0,
        "pairs": [[1, 3, 2]],
    }
    plots.plot_round_timeline(record, tmp_path / "t.png", total_rounds=12)
    assert titles == ["round 11 of 0-11: 50.0 s simulated"]
    assert ("→ fast 3 (cut 2)", 1) in notes and ("← slow 1 (cut 2)", 3) in notes
    assert ("sat out", 2) in notes


# ------------------------------------------------------------------- TensorBoard


def _events(path):
    """The events of a TFRecord-framed event file, parsed with tensorboardX's own protos."""
    from tensorboardX.proto import event_pb2

    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        pos += 12  # length and its masked crc32
        out.append(event_pb2.Event.FromString(data[pos : pos + length]))
        pos += length + 4  # payload and its crc32
    return out


def _read_events(path):
    """Scalars of an event file: {tag: [(step, value)]}."""
    out = {}
    for event in _events(path):
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


RECORDS = [
    {
        "round": 0,
        "method": "comdml",
        "sim_time_s": 12.5,
        "test_accuracy": None,
        "train_loss": 2.25,
        "pairs": [[1, 0, 3]],
        "compute_s": [1.0, 3.0],
        "flag": True,
    },
    {
        "round": 1,
        "method": "comdml",
        "sim_time_s": 25.0,
        "test_accuracy": 0.375,
        "train_loss": 2.0,
        "pairs": [],
        "compute_s": [2.0, 5.0],
        "flag": False,
    },
]


def test_scalars_of_a_record():
    assert scalars(RECORDS[0]) == {
        "sim_time_s": 12.5,
        "train_loss": 2.25,
        "pairs/count": 1.0,
        "compute_s/mean": 2.0,
        "compute_s/max": 3.0,
    }
    assert scalars({"round": 3, "x": float("nan"), "y": np.float32(0.5)}) == {"y": 0.5}


def test_scalars_count_id_lists_and_average_times_over_participants_only():
    """Agents 1 and 3 of 5 sat out: their zeros must not pull the means down."""
    record = {
        "round": 4,
        "participants": [0, 2, 4],
        "merged": [0, 4],
        "pairs": [[2, 0, 3]],
        "transfers": [],
        "num_participants": 3,
        "compute_s": [2.0, 0.0, 4.0, 0.0, 9.0],
        "comm_s": [1.0, 0.0, 0.0, 0.0, 0.5],
        "idle_s": [7.0, 0.0, 5.0, 0.0, 0.0],
        "exchange_s": [0.25, 0.0, 0.25, 0.0, 0.25],
        "other": [1.0, 0.0, 2.0],  # not per agent: every entry counts
    }
    assert scalars(record) == {
        "participants/count": 3.0,
        "merged/count": 2.0,
        "pairs/count": 1.0,
        "transfers/count": 0.0,
        "num_participants": 3.0,
        "compute_s/mean": (2.0 + 4.0 + 9.0) / 3,
        "compute_s/max": 9.0,
        "comm_s/mean": (1.0 + 0.0 + 0.5) / 3,
        "comm_s/max": 1.0,
        "idle_s/mean": (7.0 + 5.0 + 0.0) / 3,
        "idle_s/max": 7.0,
        "exchange_s/mean": 0.25,
        "exchange_s/max": 0.25,
        "other/mean": 1.0,
        "other/max": 2.0,
    }
    # A skipped round: nobody took part, so there are no per-agent times to average.
    assert scalars({"round": 5, "participants": [], "skipped": True, "round_time_s": 0.0}) == {
        "participants/count": 0.0,
        "round_time_s": 0.0,
    }


def test_tensorboard_events_hold_the_records_at_step_round(tmp_path):
    writers = MetricWriters.for_workdir(tmp_path)
    for r in RECORDS:
        writers.write(r)
    writers.close()
    files = sorted(tmp_path.glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = _read_events(files[0])
    expected = {}
    for r in RECORDS:
        for tag, v in scalars(r).items():
            expected.setdefault(tag, []).append((r["round"], v))
    assert events == expected  # the values are exact in float32 (simple_value)
    assert events["test_accuracy"] == [(1, 0.375)]  # the unevaluated round 0 has no point
    assert events["pairs/count"] == [(0, 1.0), (1, 0.0)]
    assert [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        json.loads(json.dumps(r)) for r in RECORDS
    ]


def test_tensorboard_resume_purges_the_rounds_run_again(tmp_path):
    from tensorboardX.proto import event_pb2

    w = TensorBoardWriter(tmp_path)
    for r in RECORDS:
        w.write(r)
    w.close()
    w = TensorBoardWriter(tmp_path)
    w.truncate(1)  # resumed from the checkpoint after round 0: round 1 runs again
    w.write(RECORDS[1])
    w.close()
    files = sorted(tmp_path.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 2
    start = event_pb2.SessionLog.START
    starts = [e.step for e in _events(files[1]) if e.session_log.status == start]
    assert starts == [1]  # TensorBoard hides the first file's events at steps >= 1
    assert _read_events(files[1])["train_loss"] == [(1, 2.0)]
    assert _read_events(files[0])["train_loss"] == [(0, 2.25), (1, 2.0)]  # the old file is kept
    assert JsonlWriter(tmp_path / "none.jsonl").read() == []
