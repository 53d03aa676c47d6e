"""The greedy scheduler's gap to the exact optimum of problem (5) (docs/timing_model.md).

The only place that needs both Algorithm 1 (``scheduler``) and the exact
solver (``exact``), so neither of them imports the other.
"""

from __future__ import annotations

import dataclasses

from comdml_jax.system.exact import exact_plan
from comdml_jax.system.pairing_inputs import PairingInputs
from comdml_jax.system.scheduler import greedy_plan
from comdml_jax.system.timing import price_round


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


def greedy_gap(inputs: PairingInputs) -> GapReport:
    """Prices the greedy and the exact plan and reports the greedy's gap.

    Args:
      inputs: the round's scheduler inputs, as for ``scheduler.greedy_plan``.

    Returns:
      The gap report (makespans exclude the AllReduce, which both plans share).
    """
    x = inputs
    rest = (x.cpu, x.links, x.num_batches, x.profile, x.params)
    g = price_round(greedy_plan(x), *rest).makespan_s
    e = price_round(exact_plan(x), *rest).makespan_s
    return GapReport(g, e, (g - e) / e if e > 0 else 0.0)
