"""A comparison: every method × seed of one config, each run in its own resumable folder.

The library behind ``experiments/compare.py --config=...`` (SPEC §9 "How a
comparison is run and reported"). All methods of a seed share that seed, and
with it the partition, the profile draw, the dynamics, the sampling and the
topology; only ``method`` and ``seed`` differ between the runs' configs.

Layout of ``workdir``::

    workdir/
      METHOD/seedS/          one experiment.run folder per (method, seed)
      comparison.json        the numbers (comdml_jax.report.comparison), no wall times
      comparison.md          the same as tables
      comparison_wall.json   wall-clock seconds per run (kept apart: they vary run to run)
      accuracy_vs_time.png   mean test accuracy over seeds against simulated seconds, min–max band
      time_to_target.png     mean ± std simulated seconds to the target, per method

Runs go seed by seed (every method of seed 0, then of seed 1, ...), so an
interrupted comparison already holds complete seeds. A run is finished when
its ``summary.json`` exists and reports ``config.rounds`` rounds; finished runs
are not touched again. Any other run is handed to :func:`experiment.run`,
which resumes it from its last checkpoint. The report is rewritten after
every run, listing the runs not finished yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from comdml_jax import catalog
from comdml_jax.errors import ConfigError
from comdml_jax.report import comparison as report_lib
from comdml_jax.report.writers import JsonlWriter, write_json
from comdml_jax.run_dir import run_config


def validate_methods(methods: Sequence[str]) -> list[str]:
    """Checks ``--methods`` against the method registry.

    Args:
      methods: method names.

    Returns:
      The names, in order.

    Raises:
      ConfigError: an unknown or repeated name, or none at all; the message names
        the flag, the bad value and the registered methods.
    """
    METHODS = catalog.METHODS  # the registry's names, without importing JAX

    methods = list(methods)
    if not methods:
        raise ConfigError(f"--methods is empty: name one or more of {','.join(sorted(METHODS))}")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(
                f"--methods={','.join(methods)}: method {m!r} is unknown; "
                f"choose from {','.join(sorted(METHODS))}"
            )
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ConfigError(f"--methods={','.join(methods)} names {dup} twice: name each once")
    return methods


def all_methods() -> list[str]:
    """The paper's methods (``MethodFacts.paper``), the reference (ComDML) first, then by name.

    A comparison's default set; a method beyond the paper (D-PSGD) is named with ``--methods``.
    """
    METHODS = {m: f for m, f in catalog.METHODS.items() if f.paper}

    ref = report_lib.REFERENCE
    return ([ref] if ref in METHODS else []) + sorted(m for m in METHODS if m != ref)


def validate_seeds(seeds: Sequence[int]) -> list[int]:
    """Checks ``--seeds``: distinct non-negative integers, at least one.

    Raises:
      ConfigError: naming ``--seeds`` and the fix.
    """
    try:
        seeds = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ConfigError(
            f"--seeds={','.join(map(str, seeds))} is invalid: use distinct non-negative "
            "integers, e.g. --seeds=0,1,2"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"--seeds={','.join(map(str, seeds))} is invalid: use distinct non-negative "
            "integers, e.g. --seeds=0,1,2"
        )
    return seeds


def run_dir(workdir: str | os.PathLike[str], method: str, seed: int) -> Path:
    """The folder of one (method, seed) run: ``workdir/METHOD/seedS``."""
    return Path(workdir) / method / f"seed{seed}"


def _flat(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: Mapping, config: ml_collections.ConfigDict) -> list[str]:
    """Fields (dotted) whose value in a stored ``config.json`` differs from ``config``.

    The same comparison as a resume's (``run_dir.config_diff``: the fields that
    cannot change a number, ``run_dir.RESUMABLE_FIELDS``, are left out, and a
    stored config without one of ``catalog.ADDED_FIELDS`` has that field's
    old-behaviour value), so a run that may be resumed may also be reused.
    """
    from comdml_jax.run_dir import config_diff

    return [field for field, _, _ in config_diff(dict(stored), config)]


def is_finished(folder: Path, config: ml_collections.ConfigDict) -> bool:
    """Whether the run in ``folder`` is done: its summary reports ``config.rounds`` rounds.

    Raises:
      WorkdirError: the folder holds a run of a different config (it would not
        be comparable) or of more rounds; the message names the fields and the way out.
    """
    from comdml_jax.run_dir import WorkdirError

    cfg_path = folder / "config.json"
    if cfg_path.is_file():
        diff = config_differences(json.loads(cfg_path.read_text()), config)
        if diff:
            raise WorkdirError(
                f"{folder} holds a run of a different config (fields {', '.join(diff)} differ); "
                "use another --workdir, or delete that folder to run it again"
            )
    summary = folder / "summary.json"
    if not summary.is_file():
        return False
    done = int(json.loads(summary.read_text())["rounds"])
    if done > int(config.rounds):
        raise WorkdirError(
            f"{folder} holds a run of {done} rounds, more than --config.rounds={config.rounds}: "
            f"use --config.rounds={done} or more, or another --workdir"
        )
    return done == int(config.rounds)


def collect(
    workdir: str | os.PathLike[str],
    config: ml_collections.ConfigDict,
    methods: Sequence[str],
    seeds: Sequence[int],
    target: float | None = None,
) -> tuple[dict, list[str], dict]:
    """Reads the finished runs of a comparison folder.

    Args:
      workdir: the comparison folder.
      config: the comparison's config (its ``rounds`` and ``target_accuracy``).
      methods: methods, in report order.
      seeds: seeds.
      target: the accuracy the summaries measure time to (None: ``config.target_accuracy``).

    Returns:
      (runs, pending, wall): method -> per-seed summaries of its finished runs
      (:func:`comdml_jax.report.comparison.seed_summary`), the "METHOD/seedS"
      names of the runs not finished, and method -> {seed: wall seconds}.
    """
    goal = config.target_accuracy if target is None else target
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    pending, wall = [], {m: {} for m in methods}
    for m in methods:
        for s in seeds:
            folder = run_dir(workdir, m, s)
            cfg = run_config(config, m, s)
            if not is_finished(folder, cfg):
                pending.append(f"{m}/seed{s}")
                continue
            records = JsonlWriter(folder / "metrics.jsonl").read()
            runs[m].append(report_lib.seed_summary(s, records, goal))
            wall[m][str(s)] = json.loads((folder / "summary.json").read_text()).get("wall_time_s")
    return runs, pending, wall


def shared_partitions(
    workdir: str | os.PathLike[str], methods: Sequence[str], seeds: Sequence[int]
) -> dict[str, bool]:
    """Per seed, whether every method's run trained on the same partition (``partition.json``)."""
    out = {}
    for s in seeds:
        texts = [
            (run_dir(workdir, m, s) / "partition.json").read_text()
            for m in methods
            if (run_dir(workdir, m, s) / "partition.json").is_file()
        ]
        if texts:
            out[str(s)] = all(t == texts[0] for t in texts)
    return out


def write_report(
    workdir: str | os.PathLike[str],
    config: ml_collections.ConfigDict,
    methods: Sequence[str],
    seeds: Sequence[int],
    meta: Mapping | None = None,
    target: float | None = None,
) -> dict:
    """Writes comparison.json/.md, comparison_wall.json and the two plots from the finished runs.

    Args:
      workdir: the comparison folder.
      config: the comparison's config.
      methods: methods, in report order.
      seeds: seeds.
      meta: extra JSON-able fields for the report (``config``: its name, ``command``).
      target: report the time to this accuracy instead of ``config.target_accuracy``
        (``--report_only --target``). Training never reads the target, and every
        time to target is recomputed from the runs' records, so the runs stay
        those of ``config``.

    Returns:
      The report dict (``comparison.json``).
    """
    workdir = Path(workdir)
    runs, pending, wall = collect(workdir, config, methods, seeds, target)
    runs = {m: rs for m, rs in runs.items() if rs}  # a method with no finished run is pending
    goal = float(config.target_accuracy if target is None else target)
    report = report_lib.comparison_report(
        runs,
        target=goal,
        rounds=int(config.rounds),
        meta={
            **(dict(meta) if meta else {}),
            "methods_requested": list(methods),
            "seeds_requested": list(seeds),
            "shared_partition": shared_partitions(workdir, methods, seeds),
            "pending": pending,
        },
    )
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "comparison.json", report)
    (workdir / "comparison.md").write_text(report_lib.format_markdown(report))
    write_json(workdir / "comparison_wall.json", {"wall_time_s": wall})
    curves = {
        m: [JsonlWriter(run_dir(workdir, m, r["seed"]) / "metrics.jsonl").read() for r in rs]
        for m, rs in runs.items()
    }
    from comdml_jax.report import plots

    plots.plot_accuracy_bands(curves, workdir / "accuracy_vs_time.png", goal)
    plots.plot_time_to_target(report, workdir / "time_to_target.png")
    return report


def check_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    methods: Sequence[str],
    seeds: Sequence[int],
) -> None:
    """Every check a comparison's runs make, before any of them starts (no JAX).

    ``--methods`` and ``--seeds``, then for each (method, seed) what
    ``experiments.run`` checks (:func:`comdml_jax.run_dir.prepare`: the config,
    the paths, and whether an earlier run in its folder may be resumed; the data
    source, ``data.datasets.check_source``), and that a folder's earlier run is
    of this comparison (:func:`is_finished`).

    Raises:
      ConfigError: the first bad flag, field or folder (a WorkdirError for a folder).
      DatasetNotFoundError: the data set is missing and no download can fetch it.
    """
    from comdml_jax import run_dir as run_dir_lib
    from comdml_jax.data.datasets import check_source

    methods, seeds = validate_methods(methods), validate_seeds(seeds)
    check_source(config.data)  # every run reads the same data
    for s in seeds:
        for m in methods:
            cfg = run_config(config, m, s)
            folder = run_dir(workdir, m, s)
            run_dir_lib.validate_config(cfg)
            if not is_finished(folder, cfg):
                run_dir_lib.prepare(cfg, folder)


def run_comparison(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    meta: Mapping | None = None,
    reuse: bool = True,
) -> dict:
    """Runs (or resumes) every method × seed, then writes the report.

    Args:
      config: the shared config; each run gets it with ``method`` and ``seed``
        overridden (:func:`run_config`).
      workdir: the comparison folder (module docstring).
      methods: registered method names (:func:`validate_methods`).
      seeds: seeds (:func:`validate_seeds`).
      meta: extra JSON-able fields for the report, e.g. ``{"config":
        "configs/table2.py:cifar10,iid,small", "command": "..."}``; no paths
        that differ between machines, no wall times.
      reuse: a method that trains exactly another compared method's models
        (FedAvg: AllReduce's, ``catalog.MethodFacts.trains_as``) gets that
        method's finished run repriced (``comdml_jax.reprice``) instead of
        being trained, where every round has the same participants; a run of
        it already under way (a checkpoint in its folder) is resumed instead.
        Single-process runs only.

    Returns:
      The report dict, as written to ``comparison.json``.
    """
    from comdml_jax import distributed, experiment

    check_comparison(config, workdir, methods, seeds)
    methods, seeds = validate_methods(methods), validate_seeds(seeds)
    import jax

    reuse = reuse and jax.process_count() == 1
    todo = []
    for s in seeds:  # seed-major: an interrupted comparison holds complete seeds
        # within a seed, a method that may be repriced goes after the run it is repriced from
        for m in sorted(methods, key=lambda m: reuse and _source(m, methods) is not None):
            cfg = run_config(config, m, s)
            folder = run_dir(workdir, m, s)
            # Under jax.distributed process 0's folder decides, for every process.
            done = distributed.broadcast_tree(
                np.asarray(is_finished(folder, cfg)), np.asarray(False)
            )
            todo.append((m, s, cfg, folder, bool(done)))
    n = len(todo)
    main = distributed.is_main()
    for i, (m, s, cfg, folder, done) in enumerate(todo, 1):
        if done:
            logging.info("comparison run %d/%d: %s seed %d is finished, kept", i, n, m, s)
            continue
        if reuse and _repriced(config, workdir, methods, m, s, cfg, folder):
            logging.info("comparison run %d/%d: %s seed %d repriced", i, n, m, s)
        else:
            how = "resuming" if (folder / "checkpoints").is_dir() else "starting"
            logging.info("comparison run %d/%d: %s %s seed %d in %s", i, n, how, m, s, folder)
            experiment.run(cfg, folder)
        if main:
            write_report(workdir, config, methods, seeds, meta)
    if not main:  # only process 0 writes the report
        return {"pending": []}
    return write_report(workdir, config, methods, seeds, meta)


def _source(method: str, methods: Sequence[str]) -> str | None:
    src = catalog.METHODS[method].trains_as
    return src if src is not None and src in methods else None


def _repriced(config, workdir, methods, m: str, s: int, cfg, folder: Path) -> bool:
    """Reprices ``m``'s run of seed ``s`` from its source's finished run, where it may be."""
    src = _source(m, methods)
    if src is None or (folder / "checkpoints").is_dir():
        return False
    src_folder = run_dir(workdir, src, s)
    if not is_finished(src_folder, run_config(config, src, s)):
        return False
    from comdml_jax import reprice

    done, why = reprice.reprice_run(cfg, src_folder, folder)
    if not done:
        logging.info("%s seed %d is trained, not repriced from %s: %s", m, s, src, why)
    return done
