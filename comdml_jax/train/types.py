"""The data contract between the engine, the methods, privacy and the layout (SPEC §3).

What a round's models look like on their way through it: the variables of one
model (:class:`ModelVars`), each participant's starting model
(:class:`StartModels`, what ``Method.start`` returns and the engine trains
from) and every participant's trained model, stacked (:class:`AgentModels`,
what the engine returns and ``Method.merge`` reads). Methods, privacy and the
layout import these types from here, not from the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def row_bucket(n: int) -> int:
    """n rounded up to a power of two (1 for n <= 1): the row count of a stacked buffer,
    so that groups and rounds of changing size share a few compiled shapes."""
    return 1 << max(int(n) - 1, 0).bit_length()


class ModelVars(NamedTuple):
    """A model's variables: what an agent starts a round from and what methods merge.

    Attributes:
      params: per-stage params.
      batch_stats: per-stage BN running statistics.
      aux: one auxiliary head per cut m >= 1, keyed ``"m{m}"``.
    """

    params: PyTree
    batch_stats: PyTree
    aux: dict[str, PyTree]


@dataclasses.dataclass(frozen=True)
class StartModels:
    """Each participant's model at the start of its local epoch (``Method.start``).

    Attributes:
      model: one model every participant starts from, or (``per_agent``) params
        and BN statistics stacked [K, ...] with row i agent i's model; aux heads
        are shared either way.
      per_agent: whether ``model`` holds one model per agent.
    """

    model: ModelVars
    per_agent: bool = False

    def rows(self, agents) -> ModelVars:
        """The starting models of ``agents``, stacked [len(agents), ...]."""
        m = self.model
        idx = np.asarray(agents, np.int32)
        if self.per_agent:
            take = lambda x: x[idx]
        else:
            take = lambda x: jnp.broadcast_to(x, (len(idx), *x.shape))
        return ModelVars(jax.tree.map(take, m.params), jax.tree.map(take, m.batch_stats), m.aux)


@dataclasses.dataclass
class AgentModels:
    """Every participant's model after its local epoch, stacked on a leading axis.

    Attributes:
      params: per-stage params, [P, ...] leaves, in the order of ``order``.
      batch_stats: per-stage BN statistics, likewise.
      order: the agent of each row.
      aux: cut -> (stacked aux heads of that cut's slow agents, those agents).
      train_loss: [K] mean local loss per agent (NaN for agents that sat out).
      skipped: the groups left out because a loss or parameter was not finite,
        as ``(role, cut, agents, what)``; their agents are not in ``order``.
      rows: the row of each agent of ``order`` in the stacks, when they were
        assembled across processes (``distributed``); None: row i is order[i].
      num_rows: the stacks' length when ``rows`` is set.
      aux_rows: cut -> (rows, num_rows) of the aux stacks, likewise.
    """

    params: PyTree
    batch_stats: PyTree
    order: tuple[int, ...]
    aux: dict[int, tuple[PyTree, tuple[int, ...]]]
    train_loss: np.ndarray
    skipped: list[tuple] = dataclasses.field(default_factory=list)
    rows: np.ndarray | None = None
    num_rows: int = 0
    aux_rows: dict = dataclasses.field(default_factory=dict)

    def rows_of(self, agents) -> np.ndarray:
        """The stack row of each agent in ``agents`` (all must be in ``order``)."""
        pos = {a: i for i, a in enumerate(self.order)}
        idx = np.asarray([pos[int(a)] for a in agents], np.int64)
        return idx if self.rows is None else np.asarray(self.rows)[idx]

    def weights(self, per_agent) -> np.ndarray:
        """[rows] ``per_agent[a]`` at each agent's row, 0 on padding rows (merge weights)."""
        per_agent = np.asarray(per_agent, np.float64)
        vals = per_agent[list(self.order)]
        if self.rows is None:
            return vals
        out = np.zeros(self.num_rows)
        out[self.rows] = vals
        return out

    def aux_weights(self, cut: int, per_agent) -> np.ndarray:
        """:meth:`weights` of the aux heads of ``cut``."""
        per_agent = np.asarray(per_agent, np.float64)
        who = self.aux[cut][1]
        if cut not in self.aux_rows:
            return per_agent[list(who)]
        rows, n = self.aux_rows[cut]
        out = np.zeros(n)
        out[rows] = per_agent[list(who)]
        return out
