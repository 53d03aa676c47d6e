"""The run directory: checks before any work, the recorded config, resume and ``--fresh``.

:func:`prepare` runs first in :func:`comdml_jax.experiment.run`, before any data
is loaded or any file is written:

1. the config is validated (:func:`comdml_jax.config_check.validate_config`);
2. the paths are checked (:func:`check_paths`): the workdir is a directory, or
   can be created, and is writable; the data cache folder likewise (a
   read-only cache is fine when it already holds the data set);
3. if the workdir holds a previous run (any of :data:`RUN_FILES`,
   :data:`RUN_DIRS`), then
   - with ``fresh=True`` that run's files, and only those, are removed, and the
     run starts over (files that a run does not write are kept). This happens
     once the config and the paths are valid, before the data is loaded;
   - otherwise the config recorded in ``config.json`` is compared with the new
     one over every field except :data:`RESUMABLE_FIELDS`. Any difference
     stops the run with a :class:`WorkdirError` listing each differing field
     with its recorded and new value and offering ``--fresh`` or a new
     workdir, before any file is touched. So does a workdir with run files
     but no readable ``config.json``, and a ``rounds`` below the rounds the
     workdir's checkpoints already hold.

The recorded config is ``config.json``, ``config.to_dict()`` as JSON, which
``experiment.run`` writes once these checks pass; when a resume changes an
allowed field (say ``rounds``), it is rewritten then, so it always describes
the run that the workdir holds.

Which fields may change on resume (:data:`RESUMABLE_FIELDS`): only those that
cannot change a number of the run. Everything else is compared, including
fields that look harmless:
  - ``eval_every`` decides which rounds are evaluated, and the
    reduce-on-plateau schedule (the learning rate) sees exactly those
    evaluations, so it changes the training;
  - ``target_accuracy`` is part of the run state (``time_to_target_s`` is set
    the round the target is first reached);
  - ``eval_batch_size``, ``model.conv_impl``, ``model.bn_impl`` and
    ``train.backend`` give the same numbers only up to float rounding;
  - ``system.trace`` is compared as a path; a trace file edited in place is
    not detected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from comdml_jax.catalog import ADDED_FIELDS
from comdml_jax.config_check import validate_config
from comdml_jax.errors import ConfigError

RECORD = "config.json"
# Fields that may differ between the recorded config and a resumed run, and why.
RESUMABLE_FIELDS: dict[str, str] = {
    "rounds": "a run resumed with more rounds continues exactly like an uninterrupted one",
    "plots": "output only",
    "checkpoint_every": "when the run state is saved, not what it is",
    "data.data_dir": "a path: where the same data set is read from",
    "data.cache_dir": "a path: where its decoded arrays are cached",
}
# What a run writes into its workdir (experiment.run, report.writers); --fresh removes these.
RUN_FILES = (
    RECORD,
    "metrics.jsonl",
    "summary.json",
    "partition.json",
    "partition.png",
    "accuracy_vs_time.png",
    "timeline_last_round.png",
    # Temporary files of the atomic writers (report.writers), left by a crash.
    "config.json.tmp",
    "summary.json.tmp",
    "partition.json.tmp",
    "metrics.tmp",
)
RUN_DIRS = ("checkpoints",)
RUN_GLOBS = ("events.out.tfevents.*",)  # TensorBoard event files


class WorkdirError(ConfigError):
    """The workdir cannot hold this run; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class RunDir:
    """What :func:`prepare` found in the workdir.

    Attributes:
      path: the workdir.
      resumed: whether a previous run with a compatible config is there.
      rounds_done: the round of its latest checkpoint (0 if none).
      removed: the run files that ``fresh=True`` removed, relative to ``path``.
      system: the ``System`` that ``validate_config`` built (``experiment.build``
        takes it, so the config is validated once).
    """

    path: Path
    resumed: bool
    rounds_done: int = 0
    removed: tuple[str, ...] = ()
    system: Any = None


# ------------------------------------------------------------------------ paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _usable_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as a writable folder, or None if it can."""
    if path.exists():
        if not path.is_dir():
            return "it is a file, not a directory; give a folder (it is created if missing)"
        if not os.access(path, os.W_OK | os.X_OK):
            return "it is not writable; give a folder you can write to"
        return None
    parent = _nearest_existing(path)
    if not parent.is_dir():
        return f"it cannot be created: {parent} is a file; give a folder path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"it cannot be created: {parent} is not writable; give a folder you can write to"
    return None


def _has_cache_entry(cache: Path, config: ml_collections.ConfigDict) -> bool:
    from comdml_jax.data.sources import DATASETS

    spec = DATASETS[config.data.name]
    suffix = "-trainvalid" if config.data.get("include_valid", False) else ""
    return cache.is_dir() and any(cache.glob(f"{spec.name}-{spec.version}{suffix}-*/meta.json"))


def check_paths(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> None:
    """Checks the workdir and the data cache folder without creating or writing anything.

    Args:
      config: a validated run config.
      workdir: the run's output folder.

    Raises:
      WorkdirError: naming ``--workdir`` or ``--config.data.cache_dir``.
    """
    from comdml_jax.data.cache import CACHE_DIR_ENV, resolve_cache_dir

    workdir = Path(workdir).expanduser()
    problem = _usable_dir_problem(workdir)
    if problem:
        raise WorkdirError(f"--workdir={os.fspath(workdir)} is invalid: {problem}")
    cache = resolve_cache_dir(config.data.cache_dir)
    if _has_cache_entry(cache, config):
        return  # only read: a read-only shared cache is fine
    problem = _usable_dir_problem(cache)
    if problem:
        if config.data.cache_dir:
            where = f"--config.data.cache_dir={config.data.cache_dir!r}"
        elif os.environ.get(CACHE_DIR_ENV):
            where = f"${CACHE_DIR_ENV}={os.environ[CACHE_DIR_ENV]}"
        else:
            where = f"the default data cache {cache} (set --config.data.cache_dir)"
        raise WorkdirError(f"{where} is invalid: {problem} (the decoded data set is cached there)")


# ------------------------------------------------------------------ previous run


def run_files(workdir: str | os.PathLike[str]) -> list[str]:
    """The files and folders of a run found in ``workdir`` (relative names, sorted).

    Args:
      workdir: a folder (need not exist).

    Returns:
      The names, empty when there is no previous run.
    """
    path = Path(workdir)
    if not path.is_dir():
        return []
    found = [n for n in RUN_FILES if (path / n).is_file()]
    found += [n for n in RUN_DIRS if (path / n).is_dir()]
    for g in RUN_GLOBS:
        found += [p.name for p in path.glob(g) if p.is_file()]
    return sorted(set(found))


def latest_round(workdir: str | os.PathLike[str]) -> int:
    """The step of the newest finished checkpoint in ``workdir/checkpoints`` (0 if none).

    Orbax names a finished checkpoint by its step (``checkpoints/2``); unfinished
    ones carry a temporary suffix and are ignored.

    Args:
      workdir: the run's output folder.

    Returns:
      The number of rounds that the checkpoints hold.
    """
    ckpts = Path(workdir) / "checkpoints"
    if not ckpts.is_dir():
        return 0
    steps = [int(p.name) for p in ckpts.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, default=0)


def config_record(config: ml_collections.ConfigDict) -> dict:
    """The config as ``config.json`` records it (JSON types: tuples become lists)."""
    from comdml_jax.report.writers import to_jsonable

    return json.loads(json.dumps(to_jsonable(config.to_dict())))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_ABSENT = object()


def _same(a, b) -> bool:
    """JSON values equal, without True == 1 (ints and floats compare by value)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def config_diff(recorded: dict, config: ml_collections.ConfigDict) -> list[tuple[str, Any, Any]]:
    """The fields, other than :data:`RESUMABLE_FIELDS`, where two configs differ.

    Args:
      recorded: a previous run's ``config.json``.
      config: the new run config.

    Returns:
      Sorted ``(field, recorded value, new value)``; a field missing on one side
      has the value ``"<absent>"`` there, except that a recorded config without
      one of ``catalog.ADDED_FIELDS`` has that field's old-behaviour value.
    """
    old, new = _flatten(recorded), _flatten(config_record(config))
    out = []
    for key in sorted(old.keys() | new.keys()):
        if key in RESUMABLE_FIELDS:
            continue
        a = old.get(key, ADDED_FIELDS.get(key, _ABSENT))
        b = new.get(key, _ABSENT)
        if a is _ABSENT or b is _ABSENT or not _same(a, b):
            out.append((key, "<absent>" if a is _ABSENT else a, "<absent>" if b is _ABSENT else b))
    return out


def _start_over(workdir: Path) -> str:
    return (
        f"Rerun with --fresh to discard that run and start over in {workdir}, "
        "or give a new --workdir."
    )


def check_resume(config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]) -> int:
    """Checks that ``config`` may resume the previous run in ``workdir``.

    Args:
      config: the new run config.
      workdir: a folder holding a previous run's files.

    Returns:
      The rounds that its checkpoints hold.

    Raises:
      WorkdirError: the recorded config is missing, unreadable or differs in a
        field outside :data:`RESUMABLE_FIELDS`, or ``rounds`` is below the
        rounds already done. Nothing is written.
    """
    workdir = Path(workdir)
    record = workdir / RECORD
    try:
        recorded = json.loads(record.read_text())
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        found = ", ".join(run_files(workdir))
        raise WorkdirError(
            f"--workdir={workdir} holds a run ({found}) without a readable {RECORD} "
            f"({e}), so it cannot be checked for resuming. {_start_over(workdir)}"
        ) from e
    diff = config_diff(recorded, config)
    if diff:
        rows = "\n".join(f"  {k}: {a!r} (recorded) -> {b!r} (now)" for k, a, b in diff)
        allowed = ", ".join(RESUMABLE_FIELDS)
        raise WorkdirError(
            f"--workdir={workdir} holds a run made with another config, and a run resumes "
            f"only when every field that changes its numbers is equal. Differing fields:\n"
            f"{rows}\n{_start_over(workdir)} (Fields that may change on resume: {allowed}.)"
        )
    done = latest_round(workdir)
    if config.rounds < done:
        raise WorkdirError(
            f"--config.rounds={config.rounds!r} is invalid: --workdir={workdir} already holds "
            f"{done} rounds of this run; use rounds >= {done} to resume it. "
            f"{_start_over(workdir)}"
        )
    return done


def remove_run(workdir: str | os.PathLike[str]) -> tuple[str, ...]:
    """Removes a previous run's files from ``workdir`` (``--fresh``), keeping any others.

    Args:
      workdir: the run's output folder.

    Returns:
      The names removed.
    """
    path = Path(workdir)
    found = run_files(path)
    for name in found:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    return tuple(found)


def prepare(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    *,
    fresh: bool = False,
    system=None,
) -> RunDir:
    """Everything a run checks before any work; see the module docstring.

    Args:
      config: the run config.
      workdir: the run's output folder (created later by the run, not here).
      fresh: discard a previous run in ``workdir`` and start over.
      system: the ``System`` a caller's ``validate_config(config)`` already
        returned (``launch.check_run``); None validates here.

    Returns:
      What was found (and, with ``fresh``, removed).

    Raises:
      ConfigError: a bad config field (nothing is touched).
      WorkdirError: a bad path, or a previous run that this config may not
        resume (nothing is touched).
    """
    system = validate_config(config) if system is None else system
    check_paths(config, workdir)
    path = Path(workdir).expanduser()
    if not run_files(path):
        return RunDir(path, resumed=False, system=system)
    if fresh:
        removed = remove_run(path)
        logging.info("--fresh: removed the previous run in %s (%s)", path, ", ".join(removed))
        return RunDir(path, resumed=False, removed=removed, system=system)
    done = check_resume(config, path)
    logging.info("resuming the run in %s (%d rounds done)", path, done)
    return RunDir(path, resumed=True, rounds_done=done, system=system)


def run_config(
    config: ml_collections.ConfigDict, method: str, seed: int
) -> ml_collections.ConfigDict:
    """``config`` with ``method`` and ``seed`` overridden (a copy; ``config`` is unchanged).

    One comparison run's config (``comdml_jax.comparison``, ``price_only``, ``reprice``).
    """
    import copy

    c = copy.deepcopy(config)
    c.method = method
    c.seed = int(seed)
    return c
