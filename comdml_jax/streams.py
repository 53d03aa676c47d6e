"""Every random stream of a run, in one registry: no bare numbers in the code that draws.

Every random number derives from the config's ``seed``, through a name here:

- **JAX key streams** (:data:`STREAMS`): ``rng.stream(seed, name)`` is
  ``fold_in(key(seed), STREAMS[name])``; a consumer then folds in the round,
  the agent and the batch, so streams never overlap and any host reproduces
  them.
- **Host-side NumPy draws** of the simulated system (:class:`Purpose`):
  ``system.profiles.rng_for(seed, purpose, round)`` seeds
  ``SeedSequence([seed, purpose, round])``.
- **Sub-streams**, folded into a stream's key beside indices that never reach
  them (below).

JAX-free, so the system layer can use it.
"""

from __future__ import annotations

import enum

STREAMS: dict[str, int] = {
    "init": 0,  # the model's initial weights (stage i folds in i) and the aux heads
    "shuffle": 1,  # each agent's batch order per round
    "augment": 2,  # each batch's crops and flips
    "mix": 3,  # the methods' merge (e.g. Gossip's receivers' order)
    "dp": 4,  # DP noise: round, then agent (or the central / padding ids below)
    "init_scheme": 5,  # model.init's redrawn kernels (models.init.apply_init)
}


class Purpose(enum.IntEnum):
    """The second word of every host-side seed sequence: one independent stream per use."""

    CPU = 1
    BANDWIDTH = 2
    DYNAMICS = 3
    PARTICIPATION = 4
    TOPOLOGY = 5
    GOSSIP = 6  # Gossip Learning's targets (per round and agent)
    AGGREGATOR = 7  # BrainTorrent's aggregator (per round)


# --- sub-streams ---

AUX_HEADS = 1 << 20
"""In ``init``: the auxiliary heads' key (the model's stages fold in 0..S-1, far below)."""

INIT_SCHEME_MODEL, INIT_SCHEME_AUX = 0, 1
"""In ``init_scheme``: the model's and the auxiliary heads' redrawn kernels."""

PATCH_SHUFFLE = 0x5EED
"""In a batch's key: its patch permutations (``privacy.patch_shuffle``)."""


def dp_central(num_agents: int) -> int:
    """In a round's ``dp`` key: the central noise (agents fold in 0..K-1, so K is free)."""
    return num_agents


def dp_padding(num_agents: int) -> int:
    """In a round's ``dp`` key: the padding rows of a release (their output is discarded)."""
    return num_agents + 1
