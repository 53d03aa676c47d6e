"""Process set-up shared by the command-line programs (``experiments/*.py``).

:func:`prepare_process` is what a training launcher does first: glibc
tunables (re-executes the process), JAX's persistent compilation cache, and
quieter library logging.
"""

from __future__ import annotations

import logging as logging_std
import os


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


class DropLibraryChatter(logging_std.Filter):
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


def define_distributed_flags():
    """``--coordinator_address``, ``--num_processes``, ``--process_id`` (comdml_jax.distributed).

    Call it at import time of a launcher module, once.

    Returns:
      The three flag holders.
    """
    from absl import flags

    return (
        flags.DEFINE_string(
            "coordinator_address", "", "host:port of process 0 (with --num_processes > 1)."
        ),
        flags.DEFINE_integer("num_processes", 1, "Processes of a jax.distributed run."),
        flags.DEFINE_integer("process_id", 0, "This process's index, 0..num_processes-1."),
    )


def init_distributed(holders) -> None:
    """``jax.distributed.initialize`` from the flags of :func:`define_distributed_flags`."""
    from comdml_jax import distributed

    address, count, index = holders
    distributed.initialize(address.value, count.value, index.value)


def prepare_process() -> None:
    """glibc tunables (may re-execute the process), compilation cache, log filter.

    Call it first thing in a launcher's ``main``, before JAX starts.
    """
    from absl import logging

    from comdml_jax.host_memory import reexec_with_tunables

    reexec_with_tunables()  # glibc tunables for XLA's scratch buffers; before JAX starts
    enable_compilation_cache()
    logging.get_absl_handler().addFilter(DropLibraryChatter())
