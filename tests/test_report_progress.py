"""Progress bars and round labels (comdml_jax.report.progress)."""

import io

import pytest

from comdml_jax.report.progress import RunProgress, progress_enabled, round_label


class _Tty(io.StringIO):
    def isatty(self):
        return True


class _Closed:
    def isatty(self):
        raise ValueError("I/O operation on closed file")


def test_progress_is_on_for_a_terminal_off_for_a_file_and_forced_by_mode():
    assert progress_enabled("auto", _Tty()) is True
    assert progress_enabled("auto", io.StringIO()) is False  # a log file or a pipe
    assert progress_enabled("auto", _Closed()) is False
    assert progress_enabled("auto", object()) is False  # no isatty at all
    assert progress_enabled("on", io.StringIO()) is True
    assert progress_enabled("off", _Tty()) is False
    with pytest.raises(ValueError, match="auto, on, off"):
        progress_enabled("yes")


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    bars = RunProgress(rounds=3, start_round=0, enabled=False, file=out)
    assert bars.round_started(0, 10) is None
    bars.round_done({"round": 0, "sim_time_s": 1.0, "test_accuracy": 0.5})
    with bars.suspended():
        pass
    bars.close()
    assert out.getvalue() == ""


def test_forced_progress_counts_rounds_and_batches():
    out = io.StringIO()
    bars = RunProgress(rounds=3, start_round=1, enabled=True, file=out)  # resumed at round 1
    tick = bars.round_started(1, 10)
    tick(4)
    tick(6)
    assert bars._batch_bar.n == 10 and bars._batch_bar.total == 10
    bars.round_done({"round": 1, "sim_time_s": 12.5, "test_accuracy": float("nan")})
    assert bars._batch_bar is None and bars._round_bar.n == 2 and bars._round_bar.total == 3
    bars.round_started(2, 5)(5)
    bars.round_done({"round": 2, "sim_time_s": 25.0, "test_accuracy": 0.375})
    bars.close()
    text = out.getvalue()
    assert "rounds" in text and "3/3" in text and "round 2" in text
    assert "acc=0.3750" in text and "sim=25.0s" in text


def test_round_labels_are_zero_based():
    assert round_label(0) == "round 0"
    assert round_label(11, 12) == "round 11 of 0-11"
