"""Named random streams. Every random number derives from ``jax.random.key(seed)``.

Each consumer folds in its own stream id, then the round, then the agent (and
the batch), so streams never overlap and any host reproduces them:
``fold_in(fold_in(fold_in(stream(seed, name), round), agent), batch)``.
Host-side numpy draws of the simulated system use
:func:`comdml_jax.system.profiles.rng_for` on (seed, purpose, round). Every
stream, purpose and sub-stream is named in :mod:`comdml_jax.streams`.
"""

from __future__ import annotations

import jax

from comdml_jax.streams import STREAMS


def stream(seed: int, name: str) -> jax.Array:
    """The base key of a named stream."""
    return jax.random.fold_in(jax.random.key(seed), STREAMS[name])
