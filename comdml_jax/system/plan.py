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


def _frozen(a, dtype) -> np.ndarray:
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
      sends: [K] int, the agent that receives i's model in a pairwise exchange
        (a Gossip target, or the BrainTorrent aggregator for a pulled
        participant), −1 for none. Collective exchanges (AllReduce, FedAvg's server) leave it at −1:
        every participant takes part.
      aggregator: the BrainTorrent aggregator of the round, −1 for none.
    """

    participants: BoolArray
    partner: IntArray
    cut: IntArray
    sends: IntArray | None = None
    aggregator: int = -1

    def __post_init__(self):
        part = _frozen(self.participants, bool)
        k = part.shape[0]
        partner = _frozen(self.partner, np.int64)
        cut = _frozen(self.cut, np.int64)
        sends = _frozen(np.full(k, -1) if self.sends is None else self.sends, np.int64)
        object.__setattr__(self, "participants", part)
        object.__setattr__(self, "partner", partner)
        object.__setattr__(self, "cut", cut)
        object.__setattr__(self, "sends", sends)
        object.__setattr__(self, "aggregator", int(self.aggregator))
        if part.ndim != 1 or partner.shape != (k,) or cut.shape != (k,) or sends.shape != (k,):
            raise ValueError("participants, partner, cut and sends must all have shape [K]")
        senders = np.flatnonzero(sends >= 0)
        if np.any(sends < -1) or np.any(sends >= k):
            raise ValueError("sends must be −1 or an agent index")
        if np.any(sends[senders] == senders):
            raise ValueError("an agent cannot send its model to itself")
        if not np.all(part[sends[senders]]):
            raise ValueError("the receiver of a model transfer must be a participant")
        if not (-1 <= self.aggregator < k) or (self.aggregator >= 0 and not part[self.aggregator]):
            raise ValueError("aggregator must be −1 or a participant")
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
        """[(sender, receiver), ...] of the pairwise model exchange, by increasing sender."""
        s = np.flatnonzero(self.sends >= 0)
        return [(int(i), int(self.sends[i])) for i in s]

    def with_cut(self, cut: int) -> RoundPlan:
        """The same pairs forced to one cut (cut 0: nobody offloads)."""
        c = np.where(self.partner >= 0, cut, 0)
        partner = self.partner if cut else np.full(self.num_agents, -1)
        return dataclasses.replace(self, partner=partner, cut=c)
