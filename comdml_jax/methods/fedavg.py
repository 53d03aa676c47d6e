"""FedAvg (McMahan et al. 2017) with a server under the common timing model (docs/timing_model.md).

A server (not a peer) with its own link of S Mbps (``system.server_bandwidth_mbps``,
default 1,000) is reached directly by every agent, whatever the peer topology.
P is every sampled agent with a link > 0, also when the peer graph splits
(docs/timing_model.md). The server link is shared fairly by the round's participants P, so agent i
moves data at r_i = min(bw_i, S / |P|).

Time formula, with b the model bytes, α the per-message latency and
xfer(b, r) = b · 8 / (r · 1e6) + α:
  t_i = xfer(b, r_i) + τ_i + xfer(b, r_i)      (download, train, upload),
  round = max_{i∈P} t_i.
In the metrics, ``compute_s`` is τ_i, ``comm_s`` the two transfers, and
``rate_mbps`` each participant's r_i.

Merge: the server's data-size-weighted average of the participants' models,
exactly as AllReduce's; only the time differs.
"""

from __future__ import annotations

import numpy as np

from comdml_jax.methods.base import GlobalModelMethod, every_candidate, register
from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.timing import alone_s, phase_timing, xfer_s


@register("fedavg")
class FedAvg(GlobalModelMethod):
    name = "fedavg"
    exchange = "server"
    on_split = (
        "it reaches its server directly, so every sampled, connected agent trains whatever "
        "the peer topology (docs/timing_model.md)"
    )
    take_part = staticmethod(every_candidate)

    def plan(self, ctx, mstate):
        del mstate
        return RoundPlan.alone(ctx.env.participants)

    def price(self, ctx, plan):
        env, timing = ctx.env, ctx.system.timing
        part = plan.participants
        tau = alone_s(env.cpu, ctx.num_batches, ctx.profile, timing)
        share = timing.server_bandwidth_mbps / max(int(part.sum()), 1)
        rate = np.where(part, np.minimum(np.asarray(env.bandwidth_mbps, np.float64), share), 0.0)
        safe = np.where(part, rate, 1.0)
        comm = np.where(part, 2 * xfer_s(ctx.profile.model_bytes, safe, timing.latency_s), 0.0)
        detail = {"rate_mbps": rate.tolist(), "server_share_mbps": share}
        return phase_timing(part, tau, comm, np.zeros_like(tau), detail=detail)
