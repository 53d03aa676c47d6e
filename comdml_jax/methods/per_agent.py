"""Shared behaviour of methods whose agents keep their own models (Gossip, BrainTorrent).

The method state holds every agent's model stacked [K, ...] (params and BN
statistics), checkpointed with the run state. When the agent mesh has several
devices and K is a multiple of their number, the stack is sharded over the
``agents`` axis; otherwise it lives on the first device. Auxiliary heads are
shared and never trained: these methods do not offload.

Evaluation (docs/timing_model.md, *The methods*): the consensus model is the
data-size-weighted average of the participants' models after the merge (of
every agent's, in a round without participants); each agent's own model is
evaluated every ``eval_agents_every`` rounds by the experiment.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from comdml_jax.distributed import home_device
from comdml_jax.methods.base import StatelessPlan
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train import aggregate
from comdml_jax.train.types import AgentModels, ModelVars, StartModels

PyTree = Any


def place(tree: PyTree, mesh) -> PyTree:
    """Shards a stacked [K, ...] pytree over the agent axis, or puts it on one device.

    With several processes every process keeps the whole stack on its first device
    (the merges run over the global mesh; checkpoints come from process 0 alone).
    """
    k = jax.tree.leaves(tree)[0].shape[0]
    n_dev = mesh.devices.size
    if n_dev > 1 and k % n_dev == 0 and jax.process_count() == 1:
        return jax.device_put(tree, NamedSharding(mesh, P(aggregate.AXIS)))
    return jax.device_put(tree, SingleDeviceSharding(home_device(mesh)))


def stack_copies(tree: PyTree, k: int) -> PyTree:
    """K copies of a model, stacked on a new leading axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *x.shape)).copy(), tree)


@jax.jit
def _set_rows(stacked: PyTree, rows, new: PyTree) -> PyTree:
    return jax.tree.map(lambda old, t: old.at[rows].set(t.astype(old.dtype)), stacked, new)


def current_models(params: PyTree, stats: PyTree, trained: AgentModels, mesh) -> tuple:
    """Every agent's model after local training: trained rows replace the stored ones.

    Args:
      params: stored params [K, ...].
      stats: stored BN statistics [K, ...].
      trained: the round's trained agents (rows in ``trained.order``).
      mesh: the agent mesh.

    Returns:
      (params, stats), [K, ...] on the first device.
    """
    home = SingleDeviceSharding(home_device(mesh))
    models = jax.device_put((params, stats), home)
    if not trained.order:
        return models
    rows = jnp.asarray(trained.order, jnp.int32)
    new = (trained.params, trained.batch_stats)
    if trained.rows is not None:  # assembled across processes: every trained row, here
        select = np.zeros((len(trained.order), trained.num_rows))
        select[np.arange(len(trained.order)), trained.rows] = 1.0
        new = aggregate.mix(new, select, mesh)
    return _set_rows(models, rows, jax.device_put(new, home))


def mix_rows(models: tuple, receivers, weights: np.ndarray, mesh, algorithm="psum") -> tuple:
    """Replaces the rows ``receivers`` by ``weights @ models`` (``aggregate.mix``).

    The mix always runs over all K rows (identity rows for everyone else), so
    its program has one shape per K whoever receives; it costs K² · model
    multiply-adds, small next to a round's training for the K of these methods.

    Args:
      models: (params, stats) stacked [K, ...].
      receivers: [R] the rows to replace.
      weights: [R, K] mixing weights, each row summing to one.
      mesh: the agent mesh the mix is sharded over.
      algorithm: the collective that sums across the mesh (``train.aggregation``).

    Returns:
      (params, stats) with the receivers' rows mixed, on the first device.
    """
    receivers = np.asarray(receivers, np.int64)
    if receivers.size == 0:
        return models
    k = weights.shape[1]
    w = np.eye(k)
    w[receivers] = weights
    home = SingleDeviceSharding(home_device(mesh))
    return jax.device_put(aggregate.mix(models, w, mesh, algorithm=algorithm), home)


class OwnModels(NamedTuple):
    """Every agent's own model, stacked [K, ...]; aux heads shared and unused (Gossip, D-PSGD)."""

    params: PyTree
    batch_stats: PyTree
    aux: dict


class PerAgentMethod(StatelessPlan):
    """Base of methods whose agents keep their own models.

    Subclasses define ``name``, :meth:`plan`, :meth:`price` and :meth:`merge`.
    One with more state than :class:`OwnModels` overrides :meth:`init` (its
    state a NamedTuple whose first fields are ``params``, ``batch_stats``,
    ``aux``); one whose plan reads its state also overrides the host-state
    hooks (:class:`~comdml_jax.methods.base.StatelessPlan`).
    """

    name = ""
    per_agent = True

    def init(self, model: ModelVars, num_agents: int) -> OwnModels:
        """K copies of the initial model (a method with more state overrides this)."""
        params, stats = stack_copies((model.params, model.batch_stats), num_agents)
        return OwnModels(params, stats, model.aux)

    def start(self, mstate, plan: RoundPlan) -> StartModels:
        del plan
        return StartModels(ModelVars(mstate.params, mstate.batch_stats, mstate.aux), True)

    def consensus(self, mstate, ctx) -> ModelVars:
        """The data-size-weighted average of the participants' models."""
        part = np.asarray(ctx.env.participants, bool)
        who = part if part.any() else np.ones_like(part)
        w = np.where(who, np.asarray(ctx.num_samples, np.float64), 0.0)
        params, stats = aggregate.weighted_average(
            (mstate.params, mstate.batch_stats), w, ctx.mesh, algorithm=ctx.aggregation
        )
        return ModelVars(params, stats, mstate.aux)

    def agent_models(self, mstate):
        return mstate.params, mstate.batch_stats
