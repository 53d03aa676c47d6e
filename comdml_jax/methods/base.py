"""What a method is: a planner and a pricer over the shared engine.

A method decides, each round, who trains what (a :class:`RoundPlan`) and what
that round costs in simulated time (a :class:`RoundTiming`). The engine trains
and aggregates any plan, so methods stay small and comparable under one timing
model (SPEC §7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import RoundTiming
from comdml_jax.system.world import RoundState, System


class Method(Protocol):
    """A training method under the common timing model."""

    name: str

    def plan(
        self, system: System, state: RoundState, num_batches: np.ndarray, profile: SplitProfile
    ) -> RoundPlan:
        """The round's plan: participants, pairs and cuts."""

    def price(
        self,
        system: System,
        state: RoundState,
        plan: RoundPlan,
        num_batches: np.ndarray,
        profile: SplitProfile,
    ) -> RoundTiming:
        """The round's simulated times."""


METHODS: dict[str, Callable[[], Method]] = {}


def register(name: str):
    def deco(cls):
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> Method:
    """Builds a registered method by name."""
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; choose one of {sorted(METHODS)}")
    return METHODS[name]()
