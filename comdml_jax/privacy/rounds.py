"""DP in the round: between the engine's training and the method's merge (DESIGN.md).

``run_round`` hands :class:`RoundPrivacy` every participant's starting and
trained model. Each agent's update is its whole model delta, one pytree: its
params and BN statistics (for a slow agent of a pair, its front joined with the
back its partner trained for it: both halves depend only on its data, so the
pair's row is clipped as one update of sensitivity C) and, for a slow agent,
its auxiliary head. :func:`comdml_jax.privacy.dp.privatize` clips (and, placed
``local``, noises) the stacked updates; the released models are start + update,
with BN variances clamped at >= 0 (post-processing). Placed ``central``, the
method's merge calls :meth:`RoundPrivacy.central_noise` on its aggregate, which
adds the noise once to the averaged update of every aggregate (the model, and
each cut's auxiliary head, each with its own weights).

Keys: agent i's noise in round r uses fold_in(fold_in(stream(seed, "dp"), r), i);
the central noise folds in ``streams.dp_central(K)`` = K instead of i (no agent
has index K); the padding rows of a release fold in ``streams.dp_padding(K)``
= K + 1 (their output is discarded).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from comdml_jax import rng, streams
from comdml_jax.privacy import dp
from comdml_jax.privacy.config import DpSpec, PrivacySpec
from comdml_jax.train.types import AgentModels, ModelVars, StartModels, row_bucket

PyTree = Any


@functools.partial(jax.jit, static_argnames=("spec",))
def _release(start: PyTree, trained: PyTree, keys, spec: DpSpec) -> PyTree:
    """start + privatize(trained − start), row by row, BN variances clamped."""
    updates = jax.tree.map(lambda t, s: t - s, trained, start)
    tx = dp.privatize(spec)
    private, _ = tx.update(updates, tx.init(updates), keys=keys)
    # Where DP left a coordinate's update as it was, release the trained value itself:
    # start + (trained - start) is not trained in floating point, and DP at zero noise
    # and infinite clip must change nothing, bit for bit.
    released = jax.tree.map(
        lambda t, s, u, v: jnp.where(u == v, t, s + v), trained, start, updates, private
    )
    return dp.clamp_variances(released)


@functools.partial(jax.jit, static_argnames=("spec",))
def _noised_mean(base: PyTree, mean: PyTree, weights, key, spec: DpSpec) -> PyTree:
    update = jax.tree.map(lambda m, b: m - b, mean, base)
    noisy = dp.central_noise(update, key, spec, weights)
    return dp.clamp_variances(jax.tree.map(lambda b, u: b + u, base, noisy))


@dataclasses.dataclass(frozen=True)
class RoundPrivacy:
    """The run's DP on model updates.

    Attributes:
      spec: the DP options (``privacy.dp``).
      seed: the run seed (the ``dp`` key stream).
      num_agents: K.
    """

    spec: DpSpec
    seed: int
    num_agents: int

    @classmethod
    def from_config(cls, config) -> RoundPrivacy | None:
        """None when ``privacy.dp.mechanism`` is ``none``."""
        spec = PrivacySpec.from_config(config).dp
        return cls(spec, int(config.seed), int(config.num_agents)) if spec.enabled else None

    def _key(self, round_: int):
        return jax.random.fold_in(rng.stream(self.seed, "dp"), round_)

    def release(self, start: StartModels, trained: AgentModels, round_: int) -> AgentModels:
        """Every trained agent's model as it leaves the agent: start + clipped (noised) update.

        Args:
          start: the participants' starting models.
          trained: the engine's trained agents.
          round_: the round r (keys the noise).

        Returns:
          ``trained`` with its models replaced by the released ones.
        """
        if not trained.order:
            return trained
        order = np.asarray(trained.order, np.int64)
        home = next(iter(jax.tree.leaves(trained.params)[0].devices()))
        start = dataclasses.replace(start, model=jax.device_put(start.model, home))
        rows = start.rows(order)
        p = len(order)
        # One compiled release per power-of-two bucket of rows, whatever the round's
        # participants and cuts: padded rows start and end at zero (a zero update, whose
        # release is discarded), and every aux head of the model has a slot (zero for the
        # agents, or the whole round, that did not use its cut).
        bucket = row_bucket(p)
        pad = lambda t: jax.tree.map(
            lambda x: jnp.concatenate([x, jnp.zeros((bucket - p, *x.shape[1:]), x.dtype)]), t
        )
        used = {f"m{m}": (heads, who) for m, (heads, who) in trained.aux.items()}
        heads_start, heads_trained = {}, {}
        for name, base in start.model.aux.items():
            full_start = jax.tree.map(lambda b: jnp.broadcast_to(b, (bucket, *b.shape)), base)
            heads_start[name] = full_start
            heads_trained[name] = full_start
            if name in used:
                heads, who = used[name]
                at = trained.rows_of(who)
                heads_trained[name] = jax.tree.map(
                    lambda s, h, at=at: s.at[at].set(h), full_start, heads
                )
        s_tree = {"params": pad(rows.params), "batch_stats": pad(rows.batch_stats)}
        t_tree = {"params": pad(trained.params), "batch_stats": pad(trained.batch_stats)}
        s_tree["aux"], t_tree["aux"] = heads_start, heads_trained
        ids = np.concatenate(
            [order, np.full(bucket - p, streams.dp_padding(self.num_agents), np.int64)]
        )
        keys = jax.vmap(lambda i: jax.random.fold_in(self._key(round_), i))(jnp.asarray(ids))
        s_tree, t_tree, keys = jax.device_put((s_tree, t_tree, keys), home)
        out = _release(s_tree, t_tree, keys, self.spec)
        aux = {}
        for m, (_, who) in trained.aux.items():
            at = trained.rows_of(who)
            aux[m] = (jax.tree.map(lambda x, at=at: x[at], out["aux"][f"m{m}"]), who)
        first = lambda t: jax.tree.map(lambda x: x[:p], t)
        return dataclasses.replace(
            trained, params=first(out["params"]), batch_stats=first(out["batch_stats"]), aux=aux
        )

    def central_noise(
        self, base: ModelVars, merged: ModelVars, trained: AgentModels, sizes, round_: int
    ) -> ModelVars:
        """Central DP: noise once on each averaged update (model, each used aux head)."""
        if self.spec.placement != "central":
            return merged
        sizes = np.asarray(sizes, np.float64)
        key = jax.random.fold_in(self._key(round_), streams.dp_central(self.num_agents))
        w = jnp.asarray(sizes[list(trained.order)], jnp.float32)
        params, stats = _noised_mean(
            (base.params, base.batch_stats),
            (merged.params, merged.batch_stats),
            w,
            jax.random.fold_in(key, 0),
            self.spec,
        )
        aux = dict(merged.aux)
        for m, (_, who) in trained.aux.items():
            name = f"m{m}"
            wm = jnp.asarray(sizes[list(who)], jnp.float32)
            aux[name] = _noised_mean(
                base.aux[name], merged.aux[name], wm, jax.random.fold_in(key, m), self.spec
            )
        return ModelVars(params, stats, aux)
