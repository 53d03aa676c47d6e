"""Differential privacy on model updates: clip and noise as optax transforms (SPEC §8).

An agent's update is Δ_i = w_i after local training − w_i before it, the whole
model delta (params, BN statistics, auxiliary head) as one pytree. DP acts on
the updates between training and merging (DESIGN.md), as a chain of pure
``(init, update)`` transforms, exactly optax's ``GradientTransformation``: the
state is empty (keys come from the caller, folded from a named stream and the
round, never kept in state), and the per-agent keys travel as the extra
argument ``keys`` (``optax.GradientTransformationExtraArgs``).

Mechanisms (registry :data:`MECHANISMS`):

* ``gaussian``: clip Δ_i to L2 norm C (``jax_privacy.clipping.clip_pytree``), then
  add N(0, (σ·s)²) per coordinate (``jax_privacy.noise_addition.gaussian_privatizer``),
  where s is the L2 sensitivity.
* ``laplace``: clip Δ_i to L1 norm C, then add Laplace(s / ε_round) per coordinate,
  s the L1 sensitivity. Neither jax_privacy nor optax has an L1 clip or Laplace
  noise, so these two are written here, from ``optax.tree.norm(ord=1)`` and
  ``optax.tree.random_like(sampler=jax.random.laplace)``.

Placements (registry :data:`PLACEMENTS`), over stacked updates [P, ...] (leading
agent axis) and per-agent keys [P]:

* ``local``: every agent clips and noises its own update (s = C), before it
  leaves the agent: :func:`local_dp`.
* ``central``: every agent clips (:func:`clip_each_agent`); the aggregator adds
  noise once to the weighted mean: :func:`central_noise`.

Sensitivity and accounting. The unit of privacy is one agent's update, and
neighbouring means adding or removing one agent (dp_accounting's
``ADD_OR_REMOVE_ONE``; replacing one agent doubles every sensitivity). Local
noise is σC (or C/ε) per agent; central noise on Σ w_i Δ_i / Σ w_i uses the
sensitivity of that mean to one clipped update, C · max_i w_i / Σ w_i (the weights,
the agents' sample counts, are treated as public and fixed). Either way the noise
over the sensitivity is σ (or 1/ε_round), the per-round event of
:mod:`comdml_jax.privacy.accounting`. When one agent's update is split over several
aggregates (ComDML's model and its auxiliary heads are averaged over different
agent sets), clip the agent's whole update once and call :func:`central_noise` on
each aggregate with that aggregate's weights: the release is then at least as
private as one noised aggregate.

Identity. With no noise (σ = 0 or ε_round = inf) the noise is skipped, and with
C = inf the clip is skipped (it would multiply by exactly 1, but a norm that
overflows float32 would zero the update): the transforms are then the identity
bit for bit, -0.0 included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax_privacy import noise_addition
from jax_privacy.clipping import clip_pytree

from comdml_jax.privacy.config import DpSpec

Array = jax.Array
Update = Any  # one agent's update: a pytree of float arrays
StackedUpdates = Any  # the same pytree with a leading agent axis [P, ...]
Keys = Array  # [P] PRNG keys, one per agent


def _nan_to_zero(tree: Update) -> Update:
    return jax.tree.map(lambda x: jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), tree)


def clip_l2(update: Update, clip_norm: float) -> Update:
    """Scales ``update`` to L2 norm at most C (jax_privacy's clip, NaN/inf -> 0)."""
    return clip_pytree(update, clip_norm, nan_safe=True)[0]


def clip_l1(update: Update, clip_norm: float) -> Update:
    """Scales ``update`` to L1 norm (over all leaves) at most C; NaN/inf -> 0.

    Hand-written: no library has an L1 clip. The scale is min(1, C / |Δ|_1), so
    C = inf (or |Δ|_1 = 0) multiplies by exactly 1.
    """
    update = _nan_to_zero(update)
    l1 = optax.tree.norm(update, ord=1)
    scale = jnp.nan_to_num(jnp.minimum(1.0, clip_norm / l1), nan=0.0, posinf=0.0)
    return jax.tree.map(lambda x: scale.astype(x.dtype) * x, update)


def gaussian_noise(update: Update, key: Array, scale) -> Update:
    """``update`` + N(0, scale²) per coordinate (jax_privacy's Gaussian privatizer)."""
    privatizer = noise_addition.gaussian_privatizer(stddev=scale, prng_key=key)
    noisy, _ = privatizer.update(update, privatizer.init(update))
    return noisy


def laplace_noise(update: Update, key: Array, scale) -> Update:
    """``update`` + Laplace(0, scale) per coordinate (optax.tree.random_like + scale)."""
    noise = optax.tree.random_like(key, update, sampler=jax.random.laplace)
    return jax.tree.map(lambda u, n: (u + scale * n).astype(u.dtype), update, noise)


class Mechanism(NamedTuple):
    """How one mechanism clips and noises one agent's update.

    Attributes:
      norm_ord: the norm the clip bounds (2 or 1), i.e. the sensitivity's norm.
      clip: ``(update, C) -> update``.
      noise: ``(update, key, scale) -> update``, scale the std or the Laplace b.
    """

    norm_ord: int
    clip: Callable[[Update, float], Update]
    noise: Callable[[Update, Array, Any], Update]


MECHANISMS: dict[str, Mechanism] = {
    "gaussian": Mechanism(2, clip_l2, gaussian_noise),
    "laplace": Mechanism(1, clip_l1, laplace_noise),
}


def update_norms(updates: StackedUpdates, ord: int) -> Array:
    """[P] norm (``ord`` 1 or 2, over the whole pytree) of each agent's update."""
    return jax.vmap(lambda u: optax.tree.norm(u, ord=ord))(updates)


def clip_update(update: Update, spec: DpSpec) -> Update:
    """One agent's update clipped to the mechanism's norm C (identity for ``none``, C = inf)."""
    if not spec.enabled or math.isinf(spec.clip_norm):
        return update
    return MECHANISMS[spec.mechanism].clip(update, spec.clip_norm)


def noise_update(update: Update, key: Array, spec: DpSpec, sensitivity: Any) -> Update:
    """``update`` plus the mechanism's noise for ``sensitivity`` (skipped if it is 0)."""
    if not spec.enabled or spec.noise_multiplier_of_mechanism == 0.0:
        return update
    return MECHANISMS[spec.mechanism].noise(update, key, spec.noise_scale(1.0) * sensitivity)


def clip_each_agent(spec: DpSpec) -> optax.GradientTransformationExtraArgs:
    """Clips every agent's update of a stacked [P, ...] pytree to norm C; no state.

    Extra arguments (``keys``) are accepted and ignored, so it chains with
    :func:`add_local_noise`.
    """

    def update(updates, state, params=None, **extra):
        del params, extra
        return jax.vmap(lambda u: clip_update(u, spec))(updates), state

    return optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), update)


def add_local_noise(spec: DpSpec) -> optax.GradientTransformationExtraArgs:
    """Adds each agent's own noise (sensitivity C) to stacked updates; ``keys`` [P] required."""

    def update(updates, state, params=None, *, keys: Keys, **extra):
        del params, extra
        noisy = jax.vmap(lambda u, k: noise_update(u, k, spec, spec.clip_norm))(updates, keys)
        return noisy, state

    return optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), update)


def local_dp(spec: DpSpec) -> optax.GradientTransformationExtraArgs:
    """Local DP: clip each agent's update, then noise it (sensitivity C)."""
    return optax.chain(clip_each_agent(spec), add_local_noise(spec))


def central_dp(spec: DpSpec) -> optax.GradientTransformationExtraArgs:
    """Central DP, the agents' half: clip only; noise the aggregate with :func:`central_noise`."""
    return optax.chain(clip_each_agent(spec))


PLACEMENTS: dict[str, Callable[[DpSpec], optax.GradientTransformationExtraArgs]] = {
    "local": local_dp,
    "central": central_dp,
}


def privatize(spec: DpSpec) -> optax.GradientTransformationExtraArgs:
    """The per-agent transform of ``spec`` over stacked updates.

    Usage (stateless, so ``init`` can be called every round)::

        tx = privatize(spec)
        updates, _ = tx.update(updates, tx.init(updates), keys=keys)   # keys: [P]

    ``none`` gives the identity. For ``central``, also call :func:`central_noise`
    on the aggregate.

    Args:
      spec: the DP spec.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an empty state.
    """
    if not spec.enabled:
        return optax.chain(optax.identity())
    return PLACEMENTS[spec.placement](spec)


def mean_sensitivity(spec: DpSpec, weights: Array) -> Array:
    """Sensitivity of Σ w_i Δ_i / Σ w_i to one clipped Δ_i: C · max_i w_i / Σ w_i."""
    w = jnp.asarray(weights, jnp.float32)
    return spec.clip_norm * jnp.max(w) / jnp.sum(w)


def central_noise(mean_update: Update, key: Array, spec: DpSpec, weights: Array) -> Update:
    """Central DP: noise once on the weighted mean of the clipped updates.

    Args:
      mean_update: Σ w_i Δ_i / Σ w_i of the clipped updates (one pytree, no agent axis).
      key: the round's DP key.
      spec: the DP spec; a no-op unless ``placement == "central"``.
      weights: [P] the aggregation weights w_i (zeros for padded agents).

    Returns:
      ``mean_update`` + noise of std σ·s (gaussian) or Laplace scale s/ε_round
      (laplace), with s = :func:`mean_sensitivity`.
    """
    if not spec.enabled or spec.placement != "central":
        return mean_update
    return noise_update(mean_update, key, spec, mean_sensitivity(spec, weights))


def clamp_variances(tree: Any, floor: float = 0.0) -> Any:
    """Clamps every leaf named ``var`` (BN running variances) at >= ``floor``.

    Post-processing, so it keeps every DP guarantee. Apply it to the merged model
    (start + noisy update, or its batch statistics), not to the update: the
    variance must be non-negative, its update need not be.

    Args:
      tree: model variables or batch statistics (dicts keyed down to ``mean``/``var``).
      floor: the smallest variance kept.

    Returns:
      ``tree`` with ``var`` leaves clamped; every other leaf is the same object.
    """

    def clamp(path, x):
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        return jnp.maximum(x, floor).astype(x.dtype) if name == "var" else x

    return jax.tree_util.tree_map_with_path(clamp, tree)
