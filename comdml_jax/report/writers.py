"""Metric writers: JSON lines, TensorBoard event files, and a fan-out over both.

Every writer takes the same per-round record dicts (``metrics.jsonl``'s schema)
and has ``write(record)``, ``truncate(keep_rounds_below)`` (for resume) and
``close()``. :class:`MetricWriters` fans one record out to several.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import uuid
from collections.abc import Iterable
from pathlib import Path


def to_jsonable(x):
    """numpy scalars/arrays to Python numbers/lists; NaN to None."""
    import numpy as np

    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x


class JsonlWriter:
    """Appends records to ``path``; :meth:`truncate` drops rounds after a checkpoint."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def truncate(self, keep_rounds_below: int) -> None:
        """Keeps only the records with ``round < keep_rounds_below`` (for resume)."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["round"] < keep_rounds_below]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept))
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]

    def close(self) -> None:
        """Nothing to release: every write opens and closes the file."""


def _number(x) -> float | None:
    """A finite real number as float, else None (bools, strings, None and NaN are skipped)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# Lists of agent ids (or of id tuples): their TensorBoard scalar is how many there are.
ID_LISTS = ("participants", "merged", "pairs", "transfers")
# Per-agent [K] lists whose entries of agents that sat out the round are 0, not a time.
PER_AGENT = ("compute_s", "comm_s", "idle_s", "exchange_s")


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one metrics record.

    Every finite numeric field except ``round`` becomes one scalar under its own
    name. A list of agent ids or id tuples (:data:`ID_LISTS`: ``participants``,
    ``merged``, ``pairs``, ``transfers``) becomes ``NAME/count``, its length. A
    per-agent list of times (:data:`PER_AGENT`: ``compute_s``, ``comm_s``,
    ``idle_s``, ``exchange_s``) becomes ``NAME/mean`` and ``NAME/max`` over the
    round's participants only (all agents when the record lists none); any
    other list of numbers becomes ``NAME/mean`` and ``NAME/max`` over its
    entries. Other lists, strings, None (a round without a test evaluation)
    and NaN are skipped.

    Args:
      record: one metrics record.

    Returns:
      tag -> value.
    """
    out = {}
    who = record.get("participants")
    for key, value in record.items():
        if key == "round":
            continue
        value = to_jsonable(value)  # numpy scalars and arrays to Python numbers and lists
        if key in ID_LISTS and isinstance(value, list):
            out[f"{key}/count"] = float(len(value))
            continue
        if isinstance(value, list):
            if key in PER_AGENT and isinstance(who, list | tuple):
                value = [value[int(i)] for i in to_jsonable(who) if int(i) < len(value)]
            nums = [_number(v) for v in value]
            if nums and all(v is not None for v in nums):
                out[f"{key}/mean"] = sum(nums) / len(nums)
                out[f"{key}/max"] = max(nums)
            continue
        v = _number(value)
        if v is not None:
            out[key] = v
    return out


class TensorBoardWriter:
    """TensorBoard event files (tensorboardX, no TensorFlow) in ``logdir``.

    Each record's :func:`scalars` are written at ``step = round``, the 0-based
    round index of ``metrics.jsonl`` and of the log, and flushed every round.
    On resume, :meth:`truncate` opens the next event file with tensorboardX's
    ``purge_step``, so TensorBoard hides the earlier file's events of the
    rounds that are run again.
    """

    def __init__(self, logdir: str | os.PathLike[str]):
        self.logdir = Path(logdir)
        self._writer = None
        self._purge_step = None

    @staticmethod
    def step(record: dict) -> int:
        """The TensorBoard step of a record: its 0-based round index, as in ``metrics.jsonl``."""
        return int(record["round"])

    def truncate(self, keep_rounds_below: int) -> None:
        """Hides events of rounds >= ``keep_rounds_below`` written by an earlier run."""
        self.close()
        self._purge_step = int(keep_rounds_below)

    def write(self, record: dict) -> None:
        if self._writer is None:
            from tensorboardX import SummaryWriter  # imported on first use

            self.logdir.mkdir(parents=True, exist_ok=True)
            # A unique suffix: the default name (time in seconds, host) repeats when a run
            # is resumed within the same second, and the new file would replace the old.
            self._writer = SummaryWriter(
                str(self.logdir),
                purge_step=self._purge_step,
                filename_suffix=f".{uuid.uuid4().hex[:8]}",
            )
        step = self.step(record)
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MetricWriters:
    """Fans each call out to several writers (e.g. JSON lines and TensorBoard).

    Usage in a run::

        writers = MetricWriters.for_workdir(workdir)  # metrics.jsonl + event files
        writers.truncate(start_round)
        writers.write(record)  # every round
        writers.close()
    """

    def __init__(self, writers: Iterable):
        self.writers = list(writers)

    @classmethod
    def for_workdir(
        cls, workdir: str | os.PathLike[str], tensorboard: bool = True
    ) -> MetricWriters:
        """``workdir/metrics.jsonl`` and, if ``tensorboard``, event files in ``workdir``.

        The event files sit beside ``metrics.jsonl``, so ``tensorboard
        --logdir=DIR`` over a comparison folder names each run by its subfolder
        (``comdml/seed0``).
        """
        workdir = Path(workdir)
        writers = [JsonlWriter(workdir / "metrics.jsonl")]
        if tensorboard:
            writers.append(TensorBoardWriter(workdir))
        return cls(writers)

    @property
    def jsonl(self) -> JsonlWriter:
        """The first JSON-lines writer (the one to :meth:`JsonlWriter.read` back)."""
        return next(w for w in self.writers if isinstance(w, JsonlWriter))

    def truncate(self, keep_rounds_below: int) -> None:
        for w in self.writers:
            w.truncate(keep_rounds_below)

    def write(self, record: dict) -> None:
        for w in self.writers:
            w.write(record)

    def read(self) -> list[dict]:
        return self.jsonl.read()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def write_json(path: str | os.PathLike[str], obj) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    tmp.replace(path)
