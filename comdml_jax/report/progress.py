"""What a run shows on a terminal: its rounds numbered as the files number them, and tqdm bars.

Rounds are 0-based everywhere a run reports them: ``round`` in
``metrics.jsonl``, the TensorBoard step, the log line, the timeline plot's
title and the progress bar all call the first round 0 (:func:`round_label`).
Checkpoint steps are the number of rounds done, which is the index of the
next round to run.

Two tqdm bars, on stderr, only when stderr is a terminal (:func:`progress_enabled`;
``--progress=on`` forces them, ``off`` hides them): one over the run's rounds
and, under it, one over the batches of the round in progress (fed by the
engine's ``progress`` callback). A log written to a file or a pipe has no bar
in it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO

MODES = ("auto", "on", "off")


def round_label(round_: int, rounds: int | None = None) -> str:
    """``round r`` or, given the run's length R, ``round r of 0-(R-1)`` (r 0-based).

    Args:
      round_: the 0-based round index (``metrics.jsonl``'s ``round``).
      rounds: the run's number of rounds, or None.

    Returns:
      The label the log line and the timeline plot use.
    """
    r = int(round_)
    return f"round {r} of 0-{int(rounds) - 1}" if rounds else f"round {r}"


def progress_enabled(mode: str = "auto", stream: IO | None = None) -> bool:
    """Whether to draw progress bars: ``on``, ``off``, or ``auto`` (when ``stream`` is a tty).

    Args:
      mode: one of :data:`MODES`.
      stream: the stream the bars would go to (default ``sys.stderr``).

    Returns:
      True to draw the bars.
    """
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode == "on"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class RunProgress:
    """A bar over a run's rounds and one over the batches of the current round.

    Disabled, every method does nothing (and tqdm is not imported).

    Args:
      rounds: the run's number of rounds.
      start_round: the first round this session runs (a resumed run starts later).
      enabled: draw the bars (:func:`progress_enabled`).
      file: the stream to draw on (default ``sys.stderr``).
    """

    def __init__(self, rounds: int, start_round: int, enabled: bool, file: IO | None = None):
        self.enabled = bool(enabled)
        self.file = file
        self._round_bar = None
        self._batch_bar = None
        if self.enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._round_bar = tqdm(
                total=int(rounds),
                initial=int(start_round),
                desc="rounds",
                unit="round",
                file=file,
                position=0,
                dynamic_ncols=True,
            )

    def round_started(self, round_: int, num_batches: int) -> Callable[[int], None] | None:
        """Opens the batch bar of round ``round_``; returns its update callback (or None)."""
        if not self.enabled:
            return None
        self._close_batches()
        self._batch_bar = self._tqdm(
            total=int(num_batches),
            desc=round_label(round_),
            unit="batch",
            leave=False,
            file=self.file,
            position=1,
            dynamic_ncols=True,
        )
        return self._batch_bar.update

    def round_done(self, record: dict) -> None:
        """Closes the batch bar and advances the round bar, showing accuracy and simulated time."""
        if not self.enabled:
            return
        self._close_batches()
        post = {"sim": f"{float(record.get('sim_time_s', 0.0)):.1f}s"}
        acc = record.get("test_accuracy")
        if acc is not None and acc == acc:  # NaN on a round without an evaluation
            post["acc"] = f"{float(acc):.4f}"
        self._round_bar.set_postfix(post, refresh=False)
        self._round_bar.update(1)

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Clears the bars while a log line is written, and draws them again after."""
        if not self.enabled:
            yield
            return
        with self._tqdm.external_write_mode(file=self.file or sys.stderr):
            yield

    def _close_batches(self) -> None:
        if self._batch_bar is not None:
            self._batch_bar.close()
            self._batch_bar = None

    def close(self) -> None:
        """Closes both bars."""
        self._close_batches()
        if self._round_bar is not None:
            self._round_bar.close()
            self._round_bar = None
