"""The timing model: simulated seconds per round (docs/timing_model.md; the paper's eq. (4)).

Nothing here reads a clock. Every time is computed from the agents' profiles,
the split profile and a few parameters, so a run's simulated time is the same
on any host.

Compute. t_ref = ``full_step_flops / cpu_flops`` seconds is one full-model
training batch on one simulated CPU; agent i with ``cpu_i`` CPUs runs at the
effective speed s_i = cpu_i ** gamma (``system.cpu_gamma``), so a full batch
takes ``step_i = t_ref / s_i`` seconds.

Per-agent time of a planned round (eq. (4); Algorithm 1 line 18), with Ñ_i
batches, split profile (T_s^m, T_f^m, ν^m) and c_ij in Mbps:
  - alone:               τ_i = Ñ_i · step_i                           (= τ̂_i)
  - slow i at cut m:     τ_i = τ̂_i · T_s^m
  - its fast partner j:  τ_j = τ̂_j + Ñ_i · (ν^m / c_ij + T_f^m · step_j)
    (own full-model epoch + receiving i's activations + i's fast side).
Bytes over Mbps: ``bytes · 8 / (Mbps · 1e6)`` seconds; ν^m is kept in
megabits per batch. The slow agent sends while it computes, so its
communication overlaps its compute; the receive is charged to the partner.
Per agent ``compute_s + comm_s = tau_s`` and ``idle_s = max_k τ_k − τ_i`` over
the participants (non-participants: all zero).

AllReduce (:data:`ALLREDUCE`, ``system.allreduce``), K participants, b model
bytes, β the bottleneck bandwidth (Mbps), α = ``system.latency_s``, H the
route hop count (1 on a complete topology, see ``route_stats.route_stats``),
and X(n) = n · 8 / (β · 1e6) seconds to move n bytes:
  - ``halving_doubling`` (Thakur, Rabenseifner & Gropp 2005): with
    p = 2^⌊log2 K⌋ and r = K − p,
        T = 2·log2(p)·H·α + 2·(p−1)/p · X(b)  +  [r > 0]·(2·H·α + 2·X(b)).
    For K a power of two this is 2·log2(K)·α + 2(K−1)/K · X(b) (paper,
    Sec. IV-B). Otherwise the r extra agents first send their whole vector to
    a partner in the core of p (one step, b bytes), the core runs recursive
    halving/doubling, and the partners send the result back (one step, b bytes).
  - ``ring``: T = 2(K−1)·H·α + 2(K−1)/K · X(b).
  - K <= 1: T = 0.
Round time = max_i τ_i + T (all in simulated seconds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from ml_collections import ConfigDict

from comdml_jax.system.plan import RoundPlan
from comdml_jax.system.route_stats import route_stats
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.system.topology import Links, as_links

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[K]
BoolArray = np.ndarray  # bool[K]

MEGABIT = 1e6 / 8  # bytes per megabit


def transfer_s(num_bytes, mbps):
    """Seconds to move ``num_bytes`` over a ``mbps`` link: bytes · 8 / (Mbps · 1e6)."""
    return num_bytes * 8 / (mbps * 1e6)


def xfer_s(num_bytes, mbps, latency_s, hops=1):
    """One message: bytes · 8 / (Mbps · 1e6) + hops · α seconds (vectorised).

    ``mbps`` is the route's bottleneck and ``hops`` its length; a direct link is one hop.
    """
    return transfer_s(num_bytes, mbps) + np.asarray(hops) * latency_s


# --- Table I calibration (docs/timing_model.md, "Compute") ---

TABLE1_SETTING1 = {
    "fast_cpu": 2.0,  # the fast agent's CPUs
    "bandwidth_mbps": 50.0,
    "own_train_s": 5573.0,  # fast agent's training time, 0 layers offloaded
    "comm_s": 655.0,  # communication time, 1 layer offloaded
    "model_comm_s": 34.0,  # communication time, 0 layers offloaded (the model exchange)
}


def calibrate_cpu_flops(profile: SplitProfile, cpu_gamma: float, **table1) -> float:
    """The ``cpu_flops`` that reproduces Table I's compute-to-link ratio.

    In the paper's Table I, setting 1 (fast agent 2 CPUs, 50 Mbps, equal data
    on both agents), offloading one layer (cut 1, the head) costs 655 s of
    communication; with 0 layers the communication is 34 s, which is the model
    exchange present in every row. So the activations of cut 1 take
    655 − 34 = 621 s while the fast agent's own training takes 5,573 s.
    Both agents hold the same number of batches, so per batch

        t_ref / 2**gamma = (5573 / 621) · ν^1 · 8 / (50 · 1e6)   seconds,

    and ``cpu_flops = full_step_flops / t_ref``. With the analytic bottleneck
    ResNet-56 profile at B = 100 (full_step_flops ≈ 56.3 GFLOP, ν^1 = 100 ·
    8·8·256 · 4 + 400 bytes = 6,554,000 bytes, 1.049 s at 50 Mbps) this gives
    2.99 GFLOP/s for gamma = 1 and 3.89 GFLOP/s for gamma = 0.617. Note that
    t_ref itself depends only on ν^1 and gamma: the FLOP count cancels.

    Args:
      profile: the split profile (its cut 1 is "1 layer offloaded").
      cpu_gamma: the CPU scaling exponent in use.
      **table1: overrides of :data:`TABLE1_SETTING1`.

    Returns:
      FLOP/s of one simulated CPU.
    """
    t = {**TABLE1_SETTING1, **table1}
    comm_per_batch = transfer_s(float(profile.bytes_per_batch[1]), t["bandwidth_mbps"])
    fast_step = t["own_train_s"] / (t["comm_s"] - t["model_comm_s"]) * comm_per_batch
    t_ref = fast_step * t["fast_cpu"] ** cpu_gamma
    return float(profile.full_step_flops / t_ref)


CALIBRATIONS: dict[str, Callable[[SplitProfile, float], float]] = {"table1": calibrate_cpu_flops}


@dataclasses.dataclass(frozen=True)
class TimingParams:
    """Parameters of the timing model (``system.*`` in the config).

    Attributes:
      cpu_flops: FLOP/s of one simulated CPU.
      cpu_gamma: effective speed = cpu ** gamma.
      latency_s: α, the per-message latency of the AllReduce.
      allreduce: registry name in :data:`ALLREDUCE`.
      cpu_flops_calibration: '' to use ``cpu_flops`` as given, or a name in
        :data:`CALIBRATIONS` to derive it from the split profile instead.
      server_bandwidth_mbps: S, FedAvg's server link, shared fairly by the
        round's participants.
    """

    cpu_flops: float = 3.0e9
    cpu_gamma: float = 1.0
    latency_s: float = 1e-3
    allreduce: str = "halving_doubling"
    cpu_flops_calibration: str = ""
    server_bandwidth_mbps: float = 1000.0

    def __post_init__(self):
        if not self.cpu_flops > 0:
            raise ValueError(f"system.cpu_flops = {self.cpu_flops} must be > 0")
        if not self.cpu_gamma > 0:
            raise ValueError(f"system.cpu_gamma = {self.cpu_gamma} must be > 0")
        if not self.server_bandwidth_mbps > 0:
            raise ValueError(
                f"system.server_bandwidth_mbps = {self.server_bandwidth_mbps} must be > 0 "
                "(the FedAvg server's link; default 1000)"
            )
        if not self.latency_s >= 0:
            raise ValueError(f"system.latency_s = {self.latency_s} must be >= 0")
        if self.allreduce not in ALLREDUCE:
            raise ValueError(
                f"system.allreduce = {self.allreduce!r} is unknown; "
                f"choose one of {sorted(ALLREDUCE)}"
            )
        if self.cpu_flops_calibration and self.cpu_flops_calibration not in CALIBRATIONS:
            raise ValueError(
                f"system.cpu_flops_calibration = {self.cpu_flops_calibration!r} is unknown; "
                f"choose '' or one of {sorted(CALIBRATIONS)}"
            )

    @classmethod
    def from_config(cls, config: ConfigDict) -> TimingParams:
        s = config.system
        return cls(
            cpu_flops=float(s.cpu_flops),
            cpu_gamma=float(s.cpu_gamma),
            latency_s=float(s.latency_s),
            allreduce=str(s.allreduce),
            cpu_flops_calibration=str(s.get("cpu_flops_calibration", "")),
            server_bandwidth_mbps=float(s.get("server_bandwidth_mbps", 1000.0)),
        )


def effective_flops(profile: SplitProfile, params: TimingParams) -> float:
    """FLOP/s of one simulated CPU: ``cpu_flops`` or its calibrated value."""
    if params.cpu_flops_calibration:
        return CALIBRATIONS[params.cpu_flops_calibration](profile, params.cpu_gamma)
    return params.cpu_flops


def reference_step_s(profile: SplitProfile, params: TimingParams) -> float:
    """t_ref: seconds of one full-model training batch on one simulated CPU."""
    return float(profile.full_step_flops / effective_flops(profile, params))


def step_s(cpu: FloatArray, profile: SplitProfile, params: TimingParams) -> FloatArray:
    """[K] seconds per full-model batch: t_ref / cpu ** gamma."""
    cpu = np.asarray(cpu, np.float64)
    return reference_step_s(profile, params) / np.power(cpu, params.cpu_gamma)


def alone_s(
    cpu: FloatArray, num_batches, profile: SplitProfile, params: TimingParams
) -> FloatArray:
    """[K] τ̂_i = Ñ_i · t_ref / s_i: agent i's epoch when it trains alone."""
    return np.asarray(num_batches, np.float64) * step_s(cpu, profile, params)


@dataclasses.dataclass(frozen=True)
class CutTerms:
    """The split profile's per-cut factors as the timing formulas use them.

    Attributes:
      slow: [M] T_s^m.
      fast: [M] T_f^m.
      megabits: [M] ν^m · 8 / 1e6, megabits per batch.
    """

    slow: FloatArray
    fast: FloatArray
    megabits: FloatArray

    @classmethod
    def of(cls, profile: SplitProfile) -> CutTerms:
        return cls(
            np.asarray(profile.slow_rel_cost, np.float64),
            np.asarray(profile.fast_rel_cost, np.float64),
            np.asarray(profile.bytes_per_batch, np.float64) * 8 / 1e6,
        )


def slow_side_s(tau_hat_i, slow_rel):
    """Slow agent i at cut m: τ̂_i · T_s^m (eq. (4), second case)."""
    return tau_hat_i * slow_rel


def fast_side_s(tau_hat_j, n_i, megabits, c_ij, fast_rel, step_j, relay_s=0.0):
    """Fast partner j of i at cut m: τ̂_j + Ñ_i · (ν^m / c_ij + r_ij + T_f^m · step_j).

    r_ij (``relay_s``) is the relay latency of one transfer beyond a direct
    link's: 0 for a direct link, (h − 1)·α over a route of h hops
    (``system.pairing_links = routes``, :mod:`comdml_jax.system.pair_routes`).
    Adding 0.0 leaves every direct pair's value unchanged to the bit. The
    scheduler, the exact solver and :func:`price_round` all evaluate this one
    expression (scalars or broadcast arrays), so they agree to the bit.
    """
    return tau_hat_j + n_i * (megabits / c_ij + relay_s + fast_rel * step_j)


def pair_time_s(tau_hat_i, tau_hat_j, n_i, c_ij, step_j, terms: CutTerms, relay_s=0.0):
    """τ̂_ij^m for every cut m >= 1: max(slow side, fast side) (Algorithm 1, line 18).

    The one kernel of a pair's finishing time that the greedy scheduler, its
    class tables and the exact solver evaluate. The arguments broadcast against
    each other; the cuts are a new last axis, so ``[P]`` arrays give ``[P, M-1]``
    (entry m-1 is cut m).
    """

    def e(x):
        return np.asarray(x)[..., None]

    return np.maximum(
        slow_side_s(e(tau_hat_i), terms.slow[1:]),
        fast_side_s(
            e(tau_hat_j), e(n_i), terms.megabits[1:], e(c_ij), terms.fast[1:], e(step_j), e(relay_s)
        ),
    )


# --- AllReduce ---


def serialised_sends_s(edges, links, model_bytes: float, latency_s: float):
    """Each receiver's exchange phase when models go over direct links, one per edge.

    A receiver's incoming transfers are serialised on its link:
    exchange_j = Σ_{(i, j) ∈ edges} xfer(b, c_ij) (Gossip, D-PSGD).

    Args:
      edges: [E, 2] (sender, receiver), in the order the seconds are returned.
      links: the round's c_ij.
      model_bytes: b.
      latency_s: α.

    Returns:
      ([K] exchange seconds per agent, [E] seconds of each transfer).
    """
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    exchange = np.zeros(links.num_agents)
    if not len(edges):
        return exchange, np.zeros(0)
    src, dst = edges.T
    secs = xfer_s(model_bytes, links.capacity(src, dst), latency_s)
    np.add.at(exchange, dst, secs)
    return exchange, secs


def halving_doubling_s(k: int, model_bytes: float, beta_mbps: float, latency_s: float) -> float:
    """Recursive halving/doubling AllReduce with the non-power-of-two fold (module docstring)."""
    if k <= 1:
        return 0.0
    p = 1 << (int(k).bit_length() - 1)
    r = k - p
    x = transfer_s(model_bytes, beta_mbps)
    t = 2 * math.log2(p) * latency_s + 2 * (p - 1) / p * x
    if r:
        t += 2 * latency_s + 2 * x
    return float(t)


def ring_s(k: int, model_bytes: float, beta_mbps: float, latency_s: float) -> float:
    """Ring AllReduce: 2(K−1) steps, 2(K−1)/K · b bytes per agent."""
    if k <= 1:
        return 0.0
    return float(2 * (k - 1) * latency_s + 2 * (k - 1) / k * transfer_s(model_bytes, beta_mbps))


AllReduceFn = Callable[[int, float, float, float], float]
ALLREDUCE: dict[str, AllReduceFn] = {"halving_doubling": halving_doubling_s, "ring": ring_s}


def allreduce_s(participants: BoolArray, links, model_bytes: float, params: TimingParams) -> float:
    """The AllReduce of one round over its participants, on their routes.

    Args:
      participants: [K] who takes part.
      links: :class:`Links`, a bandwidth vector or a c matrix.
      model_bytes: b.
      params: timing parameters (``allreduce``, ``latency_s``).

    Returns:
      Seconds; 0 for fewer than two participants.
    """
    participants = np.asarray(participants, bool)
    k = int(participants.sum())
    if k <= 1:
        return 0.0
    routes = route_stats(as_links(links), participants)
    fn = ALLREDUCE[params.allreduce]
    return fn(k, float(model_bytes), routes.bottleneck_mbps, routes.hops * params.latency_s)


# --- The price of a plan ---


@dataclasses.dataclass(frozen=True, eq=False)
class RoundTiming:
    """The priced round, all in simulated seconds.

    Every method's round has two phases: the training phase, in which agent i
    is busy for τ_i = compute_s + comm_s, and the exchange phase after it (the
    AllReduce, the Gossip sends, BrainTorrent's pulls), in which agent i is
    busy for exchange_s. Round time = max_i τ_i + max_i exchange_s over the
    participants.

    Attributes:
      compute_s: [K] training compute (fast partners: own epoch + partner's fast side).
      comm_s: [K] communication inside the training phase (a fast partner's
        receive of activations; FedAvg's download and upload).
      idle_s: [K] max_k τ_k − τ_i over the participants.
      tau_s: [K] τ_i = compute_s + comm_s (0 for non-participants).
      exchange_s: [K] each agent's part of the exchange phase.
      exchange_time_s: the exchange phase, max_i exchange_s.
      round_time_s: max_i τ_i + exchange_time_s.
      alone_round_time_s: the same round with nobody offloading.
      makespan_s: max_i τ_i, the objective of problem (5).
      detail: what a method's formula needs beyond the per-agent times, so
        that the round's time can be re-derived from its metrics record
        (e.g. FedAvg's per-agent rates, each transfer's seconds).
    """

    compute_s: FloatArray
    comm_s: FloatArray
    idle_s: FloatArray
    tau_s: FloatArray
    exchange_s: FloatArray
    exchange_time_s: float
    round_time_s: float
    alone_round_time_s: float
    makespan_s: float
    detail: dict = dataclasses.field(default_factory=dict)

    @property
    def allreduce_s(self) -> float:
        """The exchange phase of AllReduce-based methods (ComDML, AllReduce)."""
        return self.exchange_time_s


def phase_timing(
    participants: BoolArray,
    compute_s: FloatArray,
    comm_s: FloatArray,
    exchange_s: FloatArray,
    alone_tau_s: FloatArray | None = None,
    tau_s: FloatArray | None = None,
    detail: dict | None = None,
) -> RoundTiming:
    """Assembles a :class:`RoundTiming` from its per-agent phases (every method's last step).

    Args:
      participants: [K] who takes part.
      compute_s: [K] training compute.
      comm_s: [K] communication in the training phase.
      exchange_s: [K] each agent's part of the exchange phase.
      alone_tau_s: [K] τ̂_i, the training phase without offloading (default: τ_i).
      tau_s: [K] τ_i when the caller evaluated it as one expression (eq. (4)'s
        fast side, bit-identical to the scheduler's); default compute_s + comm_s.
      detail: the method's pricing details (:attr:`RoundTiming.detail`).

    Returns:
      The timing; non-participants' entries are 0, and a round without
      participants costs 0 s.
    """
    part = np.asarray(participants, bool)
    compute = np.where(part, compute_s, 0.0)
    comm = np.where(part, comm_s, 0.0)
    exchange = np.where(part, exchange_s, 0.0)
    tau = np.where(part, compute + comm if tau_s is None else tau_s, 0.0)
    if not part.any():
        z = np.zeros_like(tau)
        return RoundTiming(compute, comm, z, tau, exchange, 0.0, 0.0, 0.0, 0.0, dict(detail or {}))
    alone = tau if alone_tau_s is None else np.asarray(alone_tau_s, np.float64)
    makespan = float(tau[part].max())
    ex = float(exchange[part].max())
    return RoundTiming(
        compute_s=compute,
        comm_s=comm,
        idle_s=np.where(part, makespan - tau, 0.0),
        tau_s=tau,
        exchange_s=exchange,
        exchange_time_s=ex,
        round_time_s=makespan + ex,
        alone_round_time_s=float(alone[part].max()) + ex,
        makespan_s=makespan,
        detail=dict(detail or {}),
    )


def price_round(
    plan: RoundPlan,
    cpu: FloatArray,
    links,
    num_batches,
    profile: SplitProfile,
    params: TimingParams,
    pair_links: Links | None = None,
) -> RoundTiming:
    """Prices one planned round with eq. (4) and the AllReduce.

    Args:
      plan: the round's plan.
      cpu: [K] CPUs per agent this round.
      links: :class:`Links`, a [K] bandwidth vector (complete topology) or a
        [K, K] c matrix.
      num_batches: [K] Ñ_i, batches per agent in the local epoch.
      profile: the split profile.
      params: timing parameters.
      pair_links: the c_ij and relay latencies the pairs send over, when they
        are not ``links`` (``system.pairing_links = routes``); the AllReduce
        is always priced on ``links``.

    Returns:
      The round's :class:`RoundTiming`.
    """
    links = as_links(links)
    pair_links = links if pair_links is None else pair_links
    k = plan.num_agents
    cpu = np.asarray(cpu, np.float64)
    n = np.asarray(num_batches, np.float64)
    if cpu.shape != (k,) or n.shape != (k,) or links.num_agents != k:
        raise ValueError(f"cpu, num_batches and links must describe the plan's {k} agents")
    part = plan.participants
    step = step_s(cpu, profile, params)
    tau_hat = n * step
    terms = CutTerms.of(profile)
    compute = np.where(part, tau_hat, 0.0)
    comm = np.zeros(k)
    tau = compute.copy()  # fast_side_s's τ_j, kept for its bit-exact agreement with the scheduler
    s = np.flatnonzero(plan.partner >= 0)
    if s.size:
        f, m = plan.partner[s], plan.cut[s]
        cap = pair_links.capacity(s, f)
        relay = pair_links.relay(s, f)
        if np.any(cap <= 0):
            bad = int(np.flatnonzero(cap <= 0)[0])
            raise ValueError(f"pair ({int(s[bad])}, {int(f[bad])}) has no link (c = 0)")
        tau[s] = compute[s] = slow_side_s(tau_hat[s], terms.slow[m])
        compute[f] = tau_hat[f] + n[s] * (terms.fast[m] * step[f])
        comm[f] = n[s] * (terms.megabits[m] / cap + relay)
        tau[f] = fast_side_s(
            tau_hat[f], n[s], terms.megabits[m], cap, terms.fast[m], step[f], relay
        )
    ar = allreduce_s(part, links, profile.model_bytes, params)
    return phase_timing(part, compute, comm, np.full(k, ar), tau_hat, tau)
