"""Config validation, run before any work starts.

Every check names the config field and says how to fix it, so a bad
``--config.x=y`` fails in a second instead of after the data has loaded and
the model has compiled. The ``system.*`` fields are checked by
:func:`comdml_jax.system.world.build_system`, which this module calls too.
"""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def _require(ok: bool, field: str, value, fix: str) -> None:
    if not ok:
        raise ConfigError(f"--config.{field}={value!r} is invalid: {fix}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks a run config; raises :class:`ConfigError` naming the bad field.

    Args:
      config: the run config (``configs/default.py`` schema).
    """
    # Registries are imported here so that this module stays cheap to import.
    from comdml_jax.data.datasets import DATASETS
    from comdml_jax.data.partition import PARTITIONS
    from comdml_jax.methods import METHODS
    from comdml_jax.models.conv import IMPLS
    from comdml_jax.models.norm import IMPLS as BN_IMPLS
    from comdml_jax.models.resnet import MODELS
    from comdml_jax.system.world import build_system
    from comdml_jax.train.engine import BACKENDS

    c = config
    _require(_is_int(c.seed) and c.seed >= 0, "seed", c.seed, "use a non-negative integer")
    _require(c.method in METHODS, "method", c.method, f"choose one of {sorted(METHODS)}")
    _require(_is_int(c.rounds) and c.rounds >= 1, "rounds", c.rounds, "use an integer >= 1")
    _require(
        0.0 < c.target_accuracy <= 1.0,
        "target_accuracy",
        c.target_accuracy,
        "use a fraction in (0, 1]",
    )
    _require(c.model.name in MODELS, "model.name", c.model.name, f"choose one of {sorted(MODELS)}")
    _require(
        c.model.conv_impl in IMPLS, "model.conv_impl", c.model.conv_impl, f"choose one of {IMPLS}"
    )
    _require(
        c.model.bn_impl in BN_IMPLS, "model.bn_impl", c.model.bn_impl, f"choose one of {BN_IMPLS}"
    )
    d = c.data
    _require(d.name in DATASETS, "data.name", d.name, f"choose one of {sorted(DATASETS)}")
    _require(
        d.partition in PARTITIONS,
        "data.partition",
        d.partition,
        f"choose one of {sorted(PARTITIONS)}",
    )
    _require(
        d.alpha > 0, "data.alpha", d.alpha, "the Dirichlet concentration must be > 0 (paper: 0.5)"
    )
    _require(
        _is_int(d.min_samples_per_agent) and d.min_samples_per_agent >= 1,
        "data.min_samples_per_agent",
        d.min_samples_per_agent,
        "use an integer >= 1",
    )
    for f in ("train_subset", "test_subset"):
        v = d[f]
        _require(_is_int(v) and v >= 0, f"data.{f}", v, "use 0 (everything) or a positive count")
    _require(
        _is_int(d.cutout) and d.cutout >= 0, "data.cutout", d.cutout, "use 0 (off) or a side length"
    )
    if d.train_subset:
        _require(
            d.train_subset >= c.num_agents * d.min_samples_per_agent,
            "data.train_subset",
            d.train_subset,
            f"it must give each of the {c.num_agents} agents at least "
            f"data.min_samples_per_agent={d.min_samples_per_agent} samples",
        )
    _require(
        _is_int(c.num_agents) and c.num_agents >= 1,
        "num_agents",
        c.num_agents,
        "use an integer >= 1",
    )
    o = c.optim
    _require(o.lr > 0, "optim.lr", o.lr, "the learning rate must be > 0 (paper: 0.001)")
    _require(
        0.0 <= o.momentum < 1.0, "optim.momentum", o.momentum, "use a value in [0, 1) (paper: 0.9)"
    )
    _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "use a value >= 0")
    _require(
        0.0 < o.plateau_factor <= 1.0,
        "optim.plateau_factor",
        o.plateau_factor,
        "use a factor in (0, 1] (paper: 0.2 for 10 agents, 0.5 for more)",
    )
    _require(
        _is_int(o.plateau_patience) and o.plateau_patience >= 1,
        "optim.plateau_patience",
        o.plateau_patience,
        "use an integer number of rounds >= 1",
    )
    _require(0.0 < o.min_lr <= o.lr, "optim.min_lr", o.min_lr, "use a value in (0, optim.lr]")
    t = c.train
    _require(
        _is_int(t.batch_size) and t.batch_size >= 1,
        "train.batch_size",
        t.batch_size,
        "use an integer >= 1",
    )
    _require(
        _is_int(t.local_epochs) and t.local_epochs >= 1,
        "train.local_epochs",
        t.local_epochs,
        "use an integer >= 1",
    )
    _require(t.backend in BACKENDS, "train.backend", t.backend, f"choose one of {BACKENDS}")
    _require(
        _is_int(c.eval_batch_size) and c.eval_batch_size >= 1,
        "eval_batch_size",
        c.eval_batch_size,
        "use >= 1",
    )
    _require(
        _is_int(c.eval_every) and c.eval_every >= 1,
        "eval_every",
        c.eval_every,
        "use an integer >= 1",
    )
    _require(
        _is_int(c.checkpoint_every) and c.checkpoint_every >= 0,
        "checkpoint_every",
        c.checkpoint_every,
        "use 0 (no checkpoints) or a number of rounds",
    )
    try:
        build_system(c)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(str(e)) from e
