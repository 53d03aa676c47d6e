"""Process set-up shared by the command-line programs (``experiments/*.py``).

The one refusal path of every CLI (run, compare, plan): :func:`parse_flags`
(absl's flag parser, with a bad flag or ``--config.x`` reported in one line),
:func:`refusals` (a :class:`~comdml_jax.errors.ConfigError`, a
``WorkdirError`` or a missing data set becomes one message on stderr) and
:func:`fail`, all exiting with :data:`USAGE_ERROR` (2), no traceback and no
usage text. A CLI checks its config (:func:`check_run`) before it imports a
JAX-heavy module, so a refusal takes about as long as Python, NumPy and absl
take to start (benchmarks/refusal_speed.py), not JAX's and the data stack's
several seconds.

:func:`prepare_process` is what a training launcher does next: glibc
tunables (re-executes the process), JAX's persistent compilation cache, and
quieter library logging.
"""

from __future__ import annotations

import contextlib
import logging as logging_std
import os
import re
import sys
from pathlib import Path

USAGE_ERROR = 2  # exit code of a bad flag, config, workdir or data path
DIVERGED = 3  # exit code of a run stopped by a non-finite loss or model (or a dead round)


def fail(message: str) -> None:
    """Prints ``message`` alone (no traceback) to stderr and exits with :data:`USAGE_ERROR`."""
    sys.stderr.write(str(message).rstrip() + "\n")
    sys.exit(USAGE_ERROR)


def config_arg(argv: list[str]) -> str | None:
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


def unknown_field_message(error: BaseException, argv: list[str]) -> str:
    """One line for ml_collections' error on a ``--config.x`` that names no field.

    ml_collections raises ``KeyError("'x'\\nDid you mean \"y\" instead of \"x\"?")``,
    sometimes wrapped in an ``AttributeError``; its ``str`` is the repr of that
    two-line text. This gives ``--config.a.x=V: the config has no field 'a.x';
    did you mean --config.a.y? ...``.

    Args:
      error: the KeyError or AttributeError.
      argv: the command line (to find the flag as it was typed).

    Returns:
      The message.
    """
    inner = error.args[0] if error.args else ""
    while isinstance(inner, BaseException):
        inner = inner.args[0] if inner.args else ""
    text = str(inner)
    key = text.splitlines()[0].strip().strip("'\"") if text.strip() else ""
    guess = re.search(r'Did you mean "([^"]+)"', text)
    flag, value = f"--config.{key}", None
    for a in argv:
        name = a.split("=", 1)[0]
        if name.startswith("--config.") and key in name[len("--config.") :].split("."):
            flag, value = name, (a.split("=", 1)[1] if "=" in a else None)
            break
    field = flag[len("--config.") :]
    shown = f"{flag}={value}" if value is not None else flag
    message = f"{shown}: the config has no field {field!r}"
    if guess:
        parts = field.split(".")
        parts[parts.index(key) if key in parts else -1] = guess.group(1)
        message += f"; did you mean --config.{'.'.join(parts)}?"
    return message + " (configs/default.py lists every field)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that reports a bad flag in one line and exits with code 2.

    Pass it to ``app.run(main, flags_parser=launch.parse_flags)``. ml_collections
    defers a missing config file's error until the config is first read, and
    reports an unknown ``--config.x`` as a KeyError; both are caught here, before
    any work, and so is a config file that fails to load.

    Args:
      argv: the command line.

    Returns:
      The positional arguments that remain.
    """
    from absl import flags

    path = config_arg(argv[1:])
    if path is not None:
        file = path.split(":", 1)[0]
        if not os.path.isfile(file):
            fail(
                f"--config={path}: no such config file {file!r} (relative to {os.getcwd()}); "
                "give a config file, e.g. --config=configs/smoke.py"
            )
    try:
        rest = flags.FLAGS(argv)
        if path is not None and "config" in flags.FLAGS:
            flags.FLAGS["config"].value  # noqa: B018  (loads the file: its errors surface here)
        return rest
    except (AttributeError, KeyError) as e:
        fail(unknown_field_message(e, argv))
    except (flags.Error, TypeError, ValueError, OSError, SyntaxError, ImportError) as e:
        message = str(e)
        if "Error whilst parsing config file" in message or isinstance(e, SyntaxError):
            message = f"--config={path}: {_last_line(message)}"
        fail(_last_line(message) if "\n" in message else message)
    return []  # not reached


@contextlib.contextmanager
def refusals():
    """Turns a refused config, flag, folder or data path into :func:`fail`'s one line.

    Catches :class:`~comdml_jax.errors.ConfigError` (``run_dir.WorkdirError``
    is one) and ``data.sources.DatasetNotFoundError``; anything else propagates.
    """
    from comdml_jax.data.sources import DatasetNotFoundError
    from comdml_jax.errors import ConfigError

    try:
        yield
    except (ConfigError, DatasetNotFoundError) as e:
        fail(str(e))


def check_run(config, workdir, *, fresh: bool = False):
    """``experiments.run``'s checks (``run_dir.prepare``: config, paths, resume), no JAX.

    Also a data set that is missing where no download can fetch it
    (``data.datasets.check_source``).

    Refuses (:func:`fail`, exit code 2) what they refuse. ``fresh`` only checks here;
    the previous run is removed when the run itself starts.

    Returns:
      The ``System`` that ``validate_config`` built, for ``experiment.run`` (so the
      config is validated once per session).
    """
    from comdml_jax import run_dir
    from comdml_jax.data.datasets import check_source

    with refusals():
        system = run_dir.validate_config(config)
        check_source(config.data)
        run_dir.check_paths(config, workdir)
        if not fresh and run_dir.run_files(Path(workdir).expanduser()):
            run_dir.check_resume(config, Path(workdir).expanduser())
    return system


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
