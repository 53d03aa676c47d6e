"""Runs one experiment: ``python -m experiments.run --config=configs/NAME.py --workdir=DIR``.

Override any config field with ``--config.x=y`` (e.g. ``--config.rounds=5``).
Writes config.json, metrics.jsonl, summary.json, plots and checkpoints to DIR;
rerunning with the same DIR resumes from the last checkpoint.
"""

from __future__ import annotations

import logging as logging_std
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (.py, optionally :arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder (created; an existing run is resumed)."
)
flags.mark_flags_as_required(["config", "workdir"])


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
    """Hides orbax's per-checkpoint INFO lines; warnings still show."""

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv):
    del argv
    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # glibc tunables for XLA's scratch buffers; before JAX starts
    enable_compilation_cache()
    logging.get_absl_handler().addFilter(_DropLibraryChatter())
    from comdml_jax.experiment import run

    summary = run(_CONFIG.value, _WORKDIR.value)
    logging.info("summary: %s", summary)


if __name__ == "__main__":
    app.run(main)
