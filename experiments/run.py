"""Runs one experiment: ``python -m experiments.run --config=configs/NAME.py --workdir=DIR``.

Override any config field with ``--config.x=y`` (e.g. ``--config.rounds=5``).
Writes config.json, metrics.jsonl, summary.json, plots and checkpoints to DIR.

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

import logging as logging_std
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (.py, optionally :arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder (created; an existing run with the same config is resumed)."
)
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Discard a previous run's files in --workdir and start over."
)
flags.mark_flags_as_required(["config", "workdir"])

USAGE_ERROR = 2  # exit code of a bad flag, config, workdir or data path


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


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache.

    In ``$COMDML_JAX_CACHE``, else ``$JAX_COMPILATION_CACHE_DIR``, else
    ``~/.cache/comdml_jax/jax_cache``.
    """
    import jax

    path = (
        os.environ.get("COMDML_JAX_CACHE")
        or os.environ.get("JAX_COMPILATION_CACHE_DIR")
        or os.path.expanduser("~/.cache/comdml_jax/jax_cache")
    )
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


class _DropLibraryChatter(logging_std.Filter):
    """Hides orbax's per-checkpoint INFO lines and JAX's backend-probe INFO lines.

    JAX probes every backend it knows (TPU too) and logs each that it cannot
    start at INFO: ``Unable to initialize backend 'tpu'`` on every CPU-only
    machine. When an accelerator is present but its backend fails, JAX says so
    again at WARNING (``xla_bridge._suggest_missing_backends``), and warnings
    still show.
    """

    def filter(self, record: logging_std.LogRecord) -> bool:
        if record.levelno >= logging_std.WARNING:
            return True
        if "/orbax/" in record.pathname:
            return False
        return not (
            record.name == "jax._src.xla_bridge"
            and str(record.msg).startswith("Unable to initialize backend")
        )


def main(argv):
    del argv
    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # glibc tunables for XLA's scratch buffers; before JAX starts
    enable_compilation_cache()
    logging.get_absl_handler().addFilter(_DropLibraryChatter())
    from comdml_jax.config_check import ConfigError
    from comdml_jax.data.datasets import DatasetNotFoundError
    from comdml_jax.experiment import run

    try:
        summary = run(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value)
    except (ConfigError, DatasetNotFoundError) as e:  # run_dir.WorkdirError is a ConfigError
        fail(str(e))
    logging.info("summary: %s", summary)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
