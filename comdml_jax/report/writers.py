"""Metric writers: one JSON object per line, flushed every round."""

from __future__ import annotations

import json
import os
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


def write_json(path: str | os.PathLike[str], obj) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
    tmp.replace(path)
