"""Trained agents spread over processes, as one global stack per merge (``distributed``).

With several processes each one trains only its own agents. Before a
method's merge their models become one global array per leaf, ``[D · B, ...]``
over the D devices of the agent mesh: device d's block holds, in the round's
group order, the agents whose owner is d (``distributed.agent_owners``),
padded with zero rows to B, the largest block. The method's weights are zero
on padding rows (``AgentModels.weights``), so the merge over the mesh is the
same sum as one process computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from comdml_jax.distributed import agent_owners, allgather
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train.aggregate import AXIS
from comdml_jax.train.engine import groups_of
from comdml_jax.train.types import AgentModels, ModelVars, StartModels

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RoundReport:
    """What every process trained this round, gathered from all of them.

    Attributes:
      train_loss: [K] every agent's mean local loss (NaN where none).
      skipped: every process's non-finite groups, ``(role, cut, agents, what)``.
    """

    train_loss: np.ndarray
    skipped: list


def gather_report(trained: AgentModels, num_agents: int, max_groups: int) -> RoundReport:
    """Every process's losses and non-finite groups (one allgather each).

    Args:
      trained: this process's trained agents.
      num_agents: K.
      max_groups: an upper bound on a round's groups (the model's cuts).

    Returns:
      The round's report, the same on every process.
    """
    losses = allgather(np.asarray(trained.train_loss, np.float64))
    merged = np.full(num_agents, np.nan)
    for row in losses:  # every agent is trained by one process: take its finite value
        merged = np.where(np.isnan(merged), row, merged)
    # Skipped groups as fixed-size arrays: role (0 full, 1 pair), cut, [K] agents, what.
    code = np.full((max_groups, 3 + num_agents), -1, np.int64)
    whats = ("training loss", "parameter or batch statistic")
    for g, (role, cut, agents, what) in enumerate(trained.skipped):
        code[g, 0] = 0 if role == "full" else 1
        code[g, 1] = cut
        code[g, 2] = whats.index(what)
        code[g, 3 + np.asarray(agents)] = 1
    skipped = []
    for proc in allgather(code):
        for row in proc:
            if row[0] >= 0:
                agents = tuple(int(a) for a in np.flatnonzero(row[3:] == 1))
                skipped.append(
                    ("full" if row[0] == 0 else "pair", int(row[1]), agents, whats[row[2]])
                )
    return RoundReport(merged, skipped)


def _global_order(agents: list[int], owners: np.ndarray, n_dev: int):
    """Rows grouped by owner device: (row of each agent, block size B)."""
    by_dev = [[a for a in agents if owners[a] == d] for d in range(n_dev)]
    block = max(1, max(len(b) for b in by_dev))
    rows = {a: d * block + i for d, b in enumerate(by_dev) for i, a in enumerate(b)}
    return np.asarray([rows[a] for a in agents], np.int64), block, by_dev


def _assemble_stack(local, local_order, by_dev, block: int, mesh, like: PyTree) -> PyTree:
    """One global [D · B, ...] array per leaf from this process's rows.

    ``like`` is one model's pytree (shapes and dtypes of a row), so a process
    without rows of its own still supplies its (zero) blocks.
    """
    pos = {a: i for i, a in enumerate(local_order)}
    me = jax.process_index()
    sharding = NamedSharding(mesh, P(AXIS))
    devices = list(mesh.devices.flat)
    n = len(devices) * block
    local_leaves = jax.tree.leaves(local) if local is not None else None
    like_leaves, treedef = jax.tree.flatten(like)

    def leaf(i, t):
        shape, dtype = tuple(np.shape(t)), jnp.asarray(t).dtype
        blocks = []
        for d, dev in enumerate(devices):
            if dev.process_index != me:
                continue
            idx = [pos[a] for a in by_dev[d]]
            rows = jnp.zeros((block, *shape), dtype)
            if idx:
                x = local_leaves[i]
                rows = rows.at[: len(idx)].set(jnp.take(x, jnp.asarray(idx, jnp.int32), axis=0))
            blocks.append(jax.device_put(rows, dev))
        return jax.make_array_from_single_device_arrays((n, *shape), sharding, blocks)

    return jax.tree.unflatten(treedef, [leaf(i, t) for i, t in enumerate(like_leaves)])


def gather_agents(
    trained: AgentModels, plan: RoundPlan, start: StartModels, mesh, max_groups: int
) -> AgentModels:
    """Every process's trained agents in one global stack to merge; this process's as they
    are when there is one process.

    Args:
      trained: this process's trained agents.
      plan: the round's plan.
      start: the round's starting models (the shapes of a row).
      mesh: the global agent mesh.
      max_groups: the most (role, cut) groups a round can have (cuts + 1).
    """
    if jax.process_count() == 1:
        return trained
    report = gather_report(trained, plan.num_agents, max_groups)
    return assemble(trained, plan, report, mesh, _row_model(start))


def _row_model(start: StartModels) -> ModelVars:
    """One model's variables (the shape of a row of the stacks)."""
    if not start.per_agent:
        return start.model
    m = start.model
    first = lambda t: jax.tree.map(lambda x: x[0], t)
    return ModelVars(first(m.params), first(m.batch_stats), m.aux)


def assemble(trained: AgentModels, plan: RoundPlan, report: RoundReport, mesh, like) -> AgentModels:
    """This process's trained agents as part of the round's global stacks (module docstring).

    Args:
      trained: this process's trained agents (local arrays).
      plan: the round's plan (the same on every process).
      report: the gathered report (its ``skipped`` groups are left out everywhere).
      mesh: the global agent mesh.
      like: one model's ModelVars (the shapes of a row and of every aux head).

    Returns:
      :class:`AgentModels` over every process's agents, with ``rows`` set.
    """
    n_dev = mesh.devices.size
    owners = agent_owners(plan.num_agents, mesh)
    dropped = {a for _, _, agents, _ in report.skipped for a in agents}
    groups = groups_of(plan)
    order = [a for g in groups for a in g.agents if a not in dropped]
    rows, block, by_dev = _global_order(order, owners, n_dev)
    params, stats = _assemble_stack(
        (trained.params, trained.batch_stats) if trained.order else None,
        trained.order,
        by_dev,
        block,
        mesh,
        (like.params, like.batch_stats),
    )
    aux, aux_rows = {}, {}
    for g in groups:
        who = [a for a in g.agents if a not in dropped]
        if g.role != "pair" or not who:
            continue
        r, b, dev_blocks = _global_order(who, owners, n_dev)
        heads, local_who = trained.aux.get(g.cut, (None, ()))
        stacked = _assemble_stack(heads, local_who, dev_blocks, b, mesh, like.aux[f"m{g.cut}"])
        aux[g.cut] = (stacked, tuple(who))
        aux_rows[g.cut] = (r, n_dev * b)
    return dataclasses.replace(
        trained,
        params=params,
        batch_stats=stats,
        order=tuple(order),
        aux=aux,
        train_loss=report.train_loss,
        skipped=report.skipped,
        rows=rows,
        num_rows=n_dev * block,
        aux_rows=aux_rows,
    )
