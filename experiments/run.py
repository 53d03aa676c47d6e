"""Runs one experiment: ``python -m experiments.run --config=configs/NAME.py --workdir=DIR``.

Override any config field with ``--config.x=y`` (e.g. ``--config.rounds=5``).
Writes config.json, metrics.jsonl, summary.json, plots and checkpoints to DIR.
On a terminal, progress bars count the rounds and the current round's batches
(``--progress=on|off`` forces them on or off; a log to a file or pipe has none).

Rerunning with the same DIR resumes from the last checkpoint, but only with the
config that made the run: any field that changes the numbers must be equal to
the one recorded in DIR/config.json (``rounds``, ``plots``,
``checkpoint_every``, ``data.data_dir`` and ``data.cache_dir`` may change;
comdml_jax/run_dir.py says why). Otherwise the run stops before touching a
file and lists the differing fields. ``--fresh`` discards the previous run's
files in DIR and starts over.

A bad config field, a missing config file, a bad workdir or missing data stop
the run before any work with a one-line message naming the field and the fix,
and exit code 2.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # the session's start-up counts from here (wall_time_s)

import os  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from comdml_jax import launch  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (.py, optionally :arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder (created; an existing run with the same config is resumed)."
)
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Discard a previous run's files in --workdir and start over."
)
_PROGRESS = flags.DEFINE_enum(
    "progress",
    "auto",
    ["auto", "on", "off"],
    "Progress bars of rounds and batches on stderr: auto (only when stderr is a terminal), "
    "on or off.",
)
_DISTRIBUTED = launch.define_distributed_flags()
flags.mark_flags_as_required(["config", "workdir"])

USAGE_ERROR = 2  # exit code of a bad flag, config, workdir or data path
DIVERGED = 3  # exit code of a run stopped by a non-finite loss or model


def fail(message: str) -> None:
    """Prints ``message`` alone (no traceback) to stderr and exits with :data:`USAGE_ERROR`."""
    sys.stderr.write(message.rstrip() + "\n")
    sys.exit(USAGE_ERROR)


def _config_arg(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (the last one wins, as in absl)."""
    value = None
    for i, a in enumerate(argv):
        if a in ("--", "-"):
            break
        if a.lstrip("-").startswith("config=") and a.startswith("-"):
            value = a.split("=", 1)[1]
        elif a in ("--config", "-config") and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that reports a bad flag in one line and exits with code 2.

    ml_collections defers a missing config file's error until the config is
    first read, and reports an unknown ``--config.x`` as a bare KeyError; both
    are caught here, before any work.

    Args:
      argv: the command line.

    Returns:
      The positional arguments that remain.
    """
    path = _config_arg(argv[1:])
    if path is not None:
        file = path.split(":", 1)[0]
        if not os.path.isfile(file):
            fail(
                f"--config={path}: no such config file {file!r} (relative to {os.getcwd()}); "
                "give a config file, e.g. --config=configs/smoke.py"
            )
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        key = str(e).strip("'\"")
        used = [
            a.split("=", 1)[0]
            for a in argv
            if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")
        ]
        where = used[0] if used else f"--config...{key}"
        fail(f"{where}: the config has no field {key!r}; see configs/default.py for the fields")
    except (flags.Error, TypeError, ValueError, OSError) as e:
        message = str(e)
        if "Error whilst parsing config file" in message:
            message = f"--config={path}: {_last_line(message)}"
        fail(f"{message}\nPass --helpshort or --helpfull to see help on flags.")
    return []  # not reached


def main(argv):
    del argv
    launch.prepare_process()  # glibc tunables (re-executes), compilation cache, quieter logs
    try:
        launch.init_distributed(_DISTRIBUTED)  # several processes: jax.distributed
    except ValueError as e:
        fail(str(e))
    from comdml_jax.config_check import ConfigError
    from comdml_jax.data.datasets import DatasetNotFoundError
    from comdml_jax.experiment import NonFiniteRunError, run

    try:
        summary = run(
            _CONFIG.value,
            _WORKDIR.value,
            fresh=_FRESH.value,
            progress=_PROGRESS.value,
            started=_STARTED,
        )
    except (ConfigError, DatasetNotFoundError) as e:  # run_dir.WorkdirError is a ConfigError
        fail(str(e))
    except NonFiniteRunError as e:  # the run diverged: its last good checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        sys.exit(DIVERGED)
    logging.info("summary: %s", summary)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
