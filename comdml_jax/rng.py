"""Named random streams. Every random number derives from ``jax.random.key(seed)``.

Each consumer folds in its own stream id, then the round, then the agent (and
the batch), so streams never overlap and any host reproduces them:
``fold_in(fold_in(fold_in(stream(seed, name), round), agent), batch)``.
Host-side numpy draws of the simulated system use
:func:`comdml_jax.system.profiles.rng_for` on (seed, purpose, round).
"""

from __future__ import annotations

import jax

STREAMS = {"init": 0, "shuffle": 1, "augment": 2, "mix": 3, "dp": 4, "init_scheme": 5}


def stream(seed: int, name: str) -> jax.Array:
    """The base key of a named stream."""
    return jax.random.fold_in(jax.random.key(seed), STREAMS[name])
