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

USAGE_ERROR = launch.USAGE_ERROR  # exit code of a bad flag, config, workdir or data path
DIVERGED = launch.DIVERGED  # exit code of a run stopped by a non-finite loss or model
fail = launch.fail
parse_flags = launch.parse_flags


def main(argv):
    del argv
    # Every check before JAX loads: a refusal takes well under 2 s (no JAX, no data stack).
    system = launch.check_run(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value)
    launch.prepare_process()  # glibc tunables (re-executes), compilation cache, quieter logs
    try:
        launch.init_distributed(_DISTRIBUTED)  # several processes: jax.distributed
    except ValueError as e:
        fail(str(e))
    from comdml_jax.data.sources import DatasetNotFoundError
    from comdml_jax.errors import ConfigError
    from comdml_jax.experiment import run
    from comdml_jax.rounds import NonFiniteRunError

    try:
        summary = run(
            _CONFIG.value,
            _WORKDIR.value,
            fresh=_FRESH.value,
            progress=_PROGRESS.value,
            started=_STARTED,
            system=system,
        )
    except (ConfigError, DatasetNotFoundError) as e:  # run_dir.WorkdirError is a ConfigError
        fail(str(e))
    except NonFiniteRunError as e:  # the run diverged: its last good checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        sys.exit(DIVERGED)
    logging.info("summary: %s", summary)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
