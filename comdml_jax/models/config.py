"""The model section of a run config: its validation.

:func:`validate_model` checks ``model.name``, ``model.conv_impl``, ``model.bn_impl``,
``model.init`` and ``model.aux_head`` against the registries' names. The names
come from the JAX-free :mod:`comdml_jax.catalog` (tests/test_registries.py keeps
it equal to the JAX-side registries), so this module imports neither JAX nor
Flax and a bad config is refused before JAX loads.
"""

from __future__ import annotations

import ml_collections

from comdml_jax.catalog import AUX_HEADS, BN_IMPLS, CONV_IMPLS, INITS, MODELS, added_field
from comdml_jax.errors import require


def validate_model(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.model``; raises :class:`~comdml_jax.errors.ConfigError` naming the field.

    Args:
      config: the run config.
    """
    m = config.model
    require(m.name in MODELS, "model.name", m.name, f"choose one of {sorted(MODELS)}")
    require(
        m.conv_impl in CONV_IMPLS,
        "model.conv_impl",
        m.conv_impl,
        f"choose one of {CONV_IMPLS}",
    )
    require(m.bn_impl in BN_IMPLS, "model.bn_impl", m.bn_impl, f"choose one of {BN_IMPLS}")
    require(m.init in INITS, "model.init", m.init, f"choose one of {INITS}")
    aux = added_field(config, "model.aux_head")
    require(aux in AUX_HEADS, "model.aux_head", aux, f"choose one of {AUX_HEADS}")
