"""What every pairing scheduler reads: one round's :class:`PairingInputs`.

A scheduler (``system.scheduler``: ``greedy``, ``greedy_ls``, ``exact``,
``none``) is a function ``plan = scheduler(inputs)`` from these inputs to a
:class:`~comdml_jax.system.plan.RoundPlan`. The inputs also hold the derived
per-agent quantities the schedulers share (step, τ̂, the per-cut terms),
computed once with the same float expressions the timing model uses
(``timing.step_s``, ``timing.CutTerms``), so every scheduler sees them to the
bit alike. Host-side numpy only; the arrays are read-only copies.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from comdml_jax.system.plan import frozen_array
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import CutTerms, TimingParams, step_s
from comdml_jax.system.topology import Links, as_links

FloatArray = np.ndarray  # float64[K]
BoolArray = np.ndarray  # bool[K]


@dataclasses.dataclass(frozen=True, eq=False)
class PairingInputs:
    """One round's inputs to a pairing scheduler.

    Attributes:
      cpu: [K] float64, CPUs per agent this round.
      links: the round's :class:`Links`; a [K] bandwidth vector (complete
        topology) or a [K, K] c matrix is accepted too and normalised with
        :func:`~comdml_jax.system.topology.as_links` (a :class:`Links` is kept
        as given, with its cache).
      num_batches: [K] float64, Ñ_i.
      participants: [K] bool, the agents that train this round.
      profile: the split profile.
      params: timing parameters.
    """

    cpu: FloatArray
    links: Links
    num_batches: FloatArray
    participants: BoolArray
    profile: SplitProfile
    params: TimingParams

    def __post_init__(self):
        links = as_links(self.links)
        object.__setattr__(self, "links", links)
        object.__setattr__(self, "cpu", frozen_array(self.cpu, np.float64))
        object.__setattr__(self, "num_batches", frozen_array(self.num_batches, np.float64))
        object.__setattr__(self, "participants", frozen_array(self.participants, bool))
        k = links.num_agents
        for name in ("cpu", "num_batches", "participants"):
            shape = getattr(self, name).shape
            if shape != (k,):
                raise ValueError(f"{name} must have shape [K] = ({k},), got {shape}")

    @property
    def num_agents(self) -> int:
        """K."""
        return self.links.num_agents

    @functools.cached_property
    def step(self) -> FloatArray:
        """[K] seconds per full-model batch, ``timing.step_s``: t_ref / cpu ** gamma."""
        return frozen_array(step_s(self.cpu, self.profile, self.params), np.float64)

    @functools.cached_property
    def tau_hat(self) -> FloatArray:
        """[K] τ̂_i = Ñ_i · step_i, each agent's epoch alone."""
        return frozen_array(self.num_batches * self.step, np.float64)

    @functools.cached_property
    def terms(self) -> CutTerms:
        """The split profile's per-cut factors (``timing.CutTerms``)."""
        return CutTerms.of(self.profile)
