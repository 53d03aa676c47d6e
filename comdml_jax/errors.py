"""The config error and its small predicates: a leaf module that every layer may import.

Each layer checks its own config section and raises :class:`ConfigError`
with the field and the fix; ``config_check.validate_config`` runs them all
before any work. Keeping the error here, with no imports of the project,
means a layer never has to import ``config_check`` (which imports the
layers) to raise it.
"""

from __future__ import annotations

import math

import numpy as np


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


def require(ok: bool, field: str, value, fix: str) -> None:
    """Raises ``--config.FIELD=VALUE is invalid: FIX`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"--config.{field}={value!r} is invalid: {fix}")


def is_int(x) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_num(x) -> bool:
    """A finite real number (not a bool)."""
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, (bool, np.bool_))
        and math.isfinite(x)
    )


def is_bool(x) -> bool:
    return isinstance(x, (bool, np.bool_))
