"""``python tests/fault_run.py SECONDS --config=... --workdir=...``: a run with a fault.

The crash test (tests/test_reliability.py) needs to SIGKILL a run while a
checkpoint is half written. This wrapper delays orbax's commit of every written
checkpoint (the rename of its temporary folder) by SECONDS, then runs
``experiments.run`` as ``__main__`` with the remaining arguments. The hook
lives here, outside the library, so no library import path can switch it on.
A re-execution of the process (``host_memory.reexec_with_tunables``) repeats
the wrapper's command line, so the hook survives it.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path


def _delay_commits(seconds: float) -> None:
    from orbax.checkpoint._src.checkpointers import async_checkpointer as ac

    commit = ac._on_commit_callback

    def delayed(*args, **kwargs):
        time.sleep(seconds)
        return commit(*args, **kwargs)

    ac._on_commit_callback = delayed


if __name__ == "__main__":
    seconds = float(sys.argv.pop(1))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/, configs/
    _delay_commits(seconds)
    runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
