"""The round plan: the contract between methods, scheduler, engine and timing model.

A method's ``plan`` returns one :class:`RoundPlan` per round. The engine reads
it to decide who trains what from which model, the method's ``merge`` reads it
to decide whose models meet, and the method's ``price`` reads the same plan to
charge the round in simulated seconds, so training and pricing can never
disagree about who sent what to whom. Host-side numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BoolArray = np.ndarray  # bool[K]
IntArray = np.ndarray  # int64[K]


def frozen_array(a, dtype) -> np.ndarray:
    """A read-only copy of ``a`` as ``dtype`` (a plan's and a scheduler input's arrays)."""
    a = np.array(a, dtype=dtype)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class RoundPlan:
    """Who trains, who offloads to whom, and whose model goes where this round.

    Attributes:
      participants: [K] bool, the agents that train this round.
      partner: [K] int, the fast partner j of a slow agent i, −1 otherwise.
      cut: [K] int, the cut m of a slow agent (>= 1), 0 otherwise.
      edges: [E, 2] int, the round's model transfers as (sender, receiver)
        rows, sorted and without repeats: a Gossip target, a BrainTorrent pull
        (the pulled agent sends to the aggregator), D-PSGD's sends to every
        neighbour. Collective exchanges (AllReduce, FedAvg's server) leave it
        empty: every participant takes part. Whatever a method's merge mixes
        and its price charges is read from these edges.
    """

    participants: BoolArray
    partner: IntArray
    cut: IntArray
    edges: IntArray | None = None

    def __post_init__(self):
        part = frozen_array(self.participants, bool)
        k = part.shape[0]
        partner = frozen_array(self.partner, np.int64)
        cut = frozen_array(self.cut, np.int64)
        raw = np.zeros((0, 2)) if self.edges is None else np.asarray(self.edges).reshape(-1, 2)
        edges = np.unique(raw.astype(np.int64), axis=0)  # sorted by (sender, receiver)
        edges.flags.writeable = False
        object.__setattr__(self, "participants", part)
        object.__setattr__(self, "partner", partner)
        object.__setattr__(self, "cut", cut)
        object.__setattr__(self, "edges", edges)
        if part.ndim != 1 or partner.shape != (k,) or cut.shape != (k,):
            raise ValueError("participants, partner and cut must all have shape [K]")
        if len(edges) != len(raw):
            raise ValueError("edges must not repeat a (sender, receiver) pair")
        if np.any(edges < 0) or np.any(edges >= k):
            raise ValueError("edges must join agent indices in [0, K)")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise ValueError("an agent cannot send its model to itself")
        if not np.all(part[edges]):
            raise ValueError("both ends of a model transfer must be participants")
        slow = np.flatnonzero(partner >= 0)
        if np.any(partner < -1) or np.any(partner >= k):
            raise ValueError("partner must be −1 or an agent index")
        if np.any(partner[slow] == slow):
            raise ValueError("an agent cannot be its own partner")
        if np.any(cut[partner < 0] != 0) or np.any(cut[slow] < 1):
            raise ValueError("cut must be >= 1 exactly for slow agents (partner >= 0)")
        fast = partner[slow]
        if not (np.all(part[slow]) and np.all(part[fast])):
            raise ValueError("both agents of a pair must be participants")
        if len(np.unique(fast)) != len(fast) or np.any(partner[fast] >= 0):
            raise ValueError("each agent can be in at most one pair")

    @classmethod
    def alone(cls, participants: BoolArray) -> RoundPlan:
        """The plan with no offloading."""
        k = len(participants)
        return cls(participants, np.full(k, -1), np.zeros(k, np.int64))

    @property
    def num_agents(self) -> int:
        return int(self.participants.shape[0])

    @property
    def pairs(self) -> list[tuple[int, int, int]]:
        """[(slow, fast, cut), ...] in increasing slow index."""
        slow = np.flatnonzero(self.partner >= 0)
        return [(int(i), int(self.partner[i]), int(self.cut[i])) for i in slow]

    @property
    def transfers(self) -> list[tuple[int, int]]:
        """[(sender, receiver), ...] of the model exchange, sorted (the rows of ``edges``)."""
        return [(int(i), int(j)) for i, j in self.edges]

    def with_cut(self, cut: int) -> RoundPlan:
        """The same pairs forced to one cut (cut 0: nobody offloads)."""
        c = np.where(self.partner >= 0, cut, 0)
        partner = self.partner if cut else np.full(self.num_agents, -1)
        return dataclasses.replace(self, partner=partner, cut=c)
