"""The greedy scheduler's gap to the exact optimum of problem (5) (docs/timing_model.md).

The only place that needs both Algorithm 1 (``scheduler``) and the exact
solver (``exact``), so neither of them imports the other.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from comdml_jax.system.exact import exact_plan
from comdml_jax.system.scheduler import greedy_plan
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.timing import TimingParams, price_round

FloatArray = np.ndarray  # float64[K]
BoolArray = np.ndarray  # bool[K]


@dataclasses.dataclass(frozen=True)
class GapReport:
    """The greedy's makespan against the optimum of problem (5).

    Attributes:
      greedy_s: max_i τ_i of the greedy (Algorithm 1) plan.
      exact_s: max_i τ_i of the exact plan.
      gap: (greedy − exact) / exact.
    """

    greedy_s: float
    exact_s: float
    gap: float


def greedy_gap(
    cpu: FloatArray,
    links,
    num_batches,
    participants: BoolArray,
    profile: SplitProfile,
    params: TimingParams,
) -> GapReport:
    """Prices the greedy and the exact plan and reports the greedy's gap.

    Args:
      cpu, links, num_batches, participants, profile, params: as for
        ``scheduler.greedy_plan``.

    Returns:
      The gap report (makespans exclude the AllReduce, which both plans share).
    """
    args = (cpu, links, num_batches, participants, profile, params)
    g = price_round(greedy_plan(*args), cpu, links, num_batches, profile, params).makespan_s
    e = price_round(exact_plan(*args), cpu, links, num_batches, profile, params).makespan_s
    return GapReport(g, e, (g - e) / e if e > 0 else 0.0)
