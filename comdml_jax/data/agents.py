"""Per-agent batch indices as padded arrays with masks, for vmap/shard_map (SPEC §1, §3).

Agent i holds N_i samples. One local epoch trains ceil(N_i / B) batches of
exactly B samples (the timing model charges Ñ_i = N_i / B of them,
:func:`charged_batches`): every round the agent's indices are reshuffled, cut into
batches, and the last, partial batch is filled up by wrapping around to the
start of that round's shuffled order (so a few samples are seen twice in an
epoch, and no per-sample mask is needed). Agents have different Ñ_i, so the
batch axis is padded to max_i Ñ_i; padded batches have mask False and index 0,
and a train step must leave the state unchanged on them.

The shuffle of agent i in round r uses the key fold_in(fold_in(key, r), i)
(the project's RNG rule) and ``jax.random.permutation`` over the padded width
max_i Ñ_i * B (filtered to the agent's N_i entries), so it also depends on that
width. The whole construction is one jitted program over all agents, compiled
once per (K, B, max_i Ñ_i): pass the full partition every round and select the
participating agents from the result, rather than passing a different subset
of agents each round.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
PRNGKey = jax.Array


def charged_batches(sizes: Sequence[int], batch_size: int, local_epochs: int = 1) -> np.ndarray:
    """[K] Ñ_i = E · N_i / B: the batches the timing model charges agent i (SPEC §1, §5).

    The one count that a training run (``comdml_jax.rounds.Experiment.charged_batches``)
    and the plan CLI (``experiments/plan.py``) price with. An agent is charged
    for the samples it holds, also when N_i is not a multiple of B: the
    wrapped-around samples that fill up its last trained batch (module
    docstring; ⌈N_i / B⌉ batches trained) are duplicates and are not charged.

    Args:
      sizes: [K] N_i.
      batch_size: B.
      local_epochs: E.

    Returns:
      float64 [K].
    """
    return local_epochs * np.asarray(sizes, np.float64) / batch_size


class AgentBatches(NamedTuple):
    """One round's batches of all agents (a pytree of arrays).

    Attributes:
      idx: int32 [K, max_nb, B] indices into the training set; 0 in padding.
      mask: bool [K, max_nb]; True for real batches (the first num_batches[k]).
      num_batches: int32 [K], Ñ_k = ceil(N_k / B): the batches of one local epoch.
      num_samples: int32 [K], N_k.
    """

    idx: Array
    mask: Array
    num_batches: Array
    num_samples: Array

    @property
    def num_agents(self) -> int:
        return int(self.idx.shape[0])

    @property
    def max_batches(self) -> int:
        return int(self.idx.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.idx.shape[2])


@functools.partial(jax.jit, static_argnames=("batch_size", "max_batches"))
def _build(
    padded: Array, sizes: Array, key: PRNGKey, round_: Array, *, batch_size: int, max_batches: int
) -> AgentBatches:
    num_agents, width = padded.shape
    round_key = jax.random.fold_in(key, round_)

    def one(agent, row, n):
        # A uniform permutation of 0..width-1, with the entries >= n dropped
        # (stable partition), is a uniform permutation of 0..n-1.
        perm = jax.random.permutation(jax.random.fold_in(round_key, agent), width)
        perm = perm[jnp.argsort(perm >= n, stable=True)]
        nb = (n + batch_size - 1) // batch_size
        slot = jnp.arange(max_batches * batch_size, dtype=jnp.int32)
        pos = perm[slot % jnp.maximum(n, 1)]  # wrap-around fill
        idx = jnp.where(slot < nb * batch_size, row[pos], 0).reshape(max_batches, batch_size)
        mask = jnp.arange(max_batches) < nb
        return idx, mask, nb

    agents = jnp.arange(num_agents, dtype=jnp.int32)
    idx, mask, nb = jax.vmap(one)(agents, padded, sizes)
    return AgentBatches(idx, mask, nb.astype(jnp.int32), sizes)


def make_agent_batches(
    parts: Sequence[np.ndarray], batch_size: int, key: PRNGKey, round_: int | Array
) -> AgentBatches:
    """Shuffles every agent's samples for one round and cuts them into full batches.

    Args:
      parts: K arrays of training-set indices, one per agent (a partition).
      batch_size: B.
      key: the run's shuffle key, e.g. ``jax.random.key(seed)``.
      round_: the round r (a Python int or a traced scalar; changing it does not
        recompile).

    Returns:
      The batches; agent k's real batches are ``idx[k, :num_batches[k]]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = np.array([len(p) for p in parts], dtype=np.int32)
    # Round the padded width up to whole batches, so nearby partitions share a compile.
    max_batches = max(math.ceil(int(sizes.max(initial=0)) / batch_size), 1)
    width = max_batches * batch_size
    padded = np.zeros((len(parts), width), dtype=np.int32)
    for k, p in enumerate(parts):
        padded[k, : len(p)] = p
    return _build(
        jnp.asarray(padded),
        jnp.asarray(sizes),
        key,
        jnp.asarray(round_, jnp.int32),
        batch_size=batch_size,
        max_batches=max_batches,
    )


def make_epoch_batches(
    parts: Sequence[np.ndarray], batch_size: int, key: PRNGKey, round_: int, epochs: int
) -> AgentBatches:
    """``epochs`` local epochs, each reshuffled, with every agent's real batches first.

    Epoch e uses :func:`make_agent_batches` with ``fold_in(key, e)``; agent k's
    batches of all epochs are packed at the front of its row, so
    ``idx[k, :num_batches[k]]`` are its E * Ñ_k real batches in order and the
    rest is padding, as for a single epoch.

    Args:
      parts: K arrays of training-set indices (a partition).
      batch_size: B.
      key: the run's shuffle key.
      round_: the round r.
      epochs: local epochs per round (>= 1).

    Returns:
      The round's batches.
    """
    if epochs < 1:
        raise ValueError(f"train.local_epochs must be >= 1, got {epochs}")
    eps = [
        make_agent_batches(parts, batch_size, jax.random.fold_in(key, e), round_)
        for e in range(epochs)
    ]
    if epochs == 1:
        return eps[0]
    nb = np.asarray(eps[0].num_batches)
    k, width, b = eps[0].idx.shape
    idx = np.zeros((k, epochs * width, b), np.int32)
    for e, batches in enumerate(eps):
        src = np.asarray(batches.idx)
        for a in range(k):
            idx[a, e * nb[a] : (e + 1) * nb[a]] = src[a, : nb[a]]
    total = epochs * nb
    mask = np.arange(epochs * width)[None, :] < total[:, None]
    return AgentBatches(
        jnp.asarray(idx), jnp.asarray(mask), jnp.asarray(total, jnp.int32), eps[0].num_samples
    )


def pad_agents(batches: AgentBatches, multiple: int) -> AgentBatches:
    """Pads the agent axis to a multiple of ``multiple`` with fully masked agents.

    Padded agents have idx 0, mask False, num_batches 0 and num_samples 0, so
    they contribute nothing (weight N_k = 0 in the aggregation).

    Args:
      batches: the batches of K agents.
      multiple: e.g. the number of devices of the agent mesh axis.

    Returns:
      Batches of ceil(K / multiple) * multiple agents; the first K are unchanged.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    extra = -batches.num_agents % multiple
    if extra == 0:
        return batches
    return AgentBatches(*(jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1)) for a in batches))
