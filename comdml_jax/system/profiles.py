"""Agent compute and link profiles, round by round (docs/timing_model.md, "Profiles").

Every agent has a compute speed ``cpu`` (simulated CPUs, default set
{4, 2, 1, 0.5, 0.2}) and a link speed ``bandwidth_mbps`` (default set
{0, 10, 20, 50, 100}; 0 means the agent is disconnected this round). The paper
(Sec. V-A) assigns one profile per agent at the start and lets profiles shift
during training.

Where round r's profiles come from, first match wins:

1. ``system.trace``: a JSON trace file (format below). Dynamics do not apply.
2. Otherwise the base profiles, then the dynamics:
   - base cpu: ``system.cpu`` if given (one entry per agent), else a balanced
     draw from ``system.cpu_profiles``: each profile gets ``K // P`` agents, the
     ``K % P`` left-over agents go to distinct profiles picked at random, and
     the assignment is shuffled. The same for the bandwidth, independently.
   - dynamics: at each round d in ``system.dynamics_rounds`` with d <= r (in
     increasing order), ``round(system.dynamics_fraction * K)`` agents chosen at
     random redraw their cpu and bandwidth uniformly from the profile sets. The
     change lasts until a later dynamics round changes it again.

Randomness. Every draw uses its own generator
``np.random.default_rng(np.random.SeedSequence([seed, purpose, round]))``, with
``purpose`` one of :class:`comdml_jax.streams.Purpose` and ``round`` 0 for draws that do not
depend on the round. So :func:`profiles_at` is a pure function of
(config, round): no state is carried between rounds, and asking for round 250
first gives the same answer as stepping through rounds 0..250.

Trace format (``system.trace``, JSON)::

    {"rounds": [
        {"round": 0,   "cpu": [4, 2, 0.5], "bandwidth_mbps": [100, 50, 0]},
        {"round": 100, "bandwidth_mbps": [100, 10, 20]}
    ]}

Entries are sorted by strictly increasing ``round``; the first is round 0 and
holds both lists; a later entry may leave one list out to keep the previous
one. Round r uses the last entry whose ``round`` is at or before r. Each list
has one value per agent (``num_agents``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
from ml_collections import ConfigDict

from comdml_jax.streams import Purpose

FloatArray = np.ndarray  # float64[K]
IntArray = np.ndarray  # int64[K]


def rng_for(seed: int, purpose: Purpose, round_: int = 0) -> np.random.Generator:
    """The generator for one (seed, purpose, round); see the module docstring.

    Args:
      seed: the config's ``seed`` (non-negative).
      purpose: what the draw is for.
      round_: the round, or 0 for draws that do not depend on it.

    Returns:
      A fresh ``np.random.Generator``.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(purpose), int(round_)]))


@dataclasses.dataclass(frozen=True, eq=False)
class ProfileTrace:
    """A parsed ``system.trace``: full cpu and bandwidth lists per entry.

    Attributes:
      rounds: [T] int, strictly increasing, ``rounds[0] == 0``.
      cpu: [T, K] float, CPUs per agent from ``rounds[t]`` on.
      bandwidth_mbps: [T, K] float, Mbps per agent from ``rounds[t]`` on.
    """

    rounds: IntArray
    cpu: np.ndarray
    bandwidth_mbps: np.ndarray

    def at(self, round_: int) -> tuple[FloatArray, FloatArray]:
        t = int(np.searchsorted(self.rounds, round_, side="right")) - 1
        return self.cpu[t].copy(), self.bandwidth_mbps[t].copy()


@dataclasses.dataclass(frozen=True, eq=False)
class ProfileSpec:
    """Everything needed to compute any round's profiles (built once per run).

    Attributes:
      seed: the run's seed.
      cpu_profiles: [P] the compute profile set.
      bandwidth_profiles_mbps: [Q] the link profile set.
      base_cpu: [K] round-0 CPUs (explicit or drawn).
      base_bandwidth_mbps: [K] round-0 Mbps (explicit or drawn).
      dynamics_rounds: sorted rounds at which a fraction of agents redraws.
      dynamics_fraction: that fraction.
      trace: a parsed trace; when set it decides every round on its own.
    """

    seed: int
    cpu_profiles: FloatArray
    bandwidth_profiles_mbps: FloatArray
    base_cpu: FloatArray
    base_bandwidth_mbps: FloatArray
    dynamics_rounds: tuple[int, ...] = ()
    dynamics_fraction: float = 0.0
    trace: ProfileTrace | None = None

    @property
    def num_agents(self) -> int:
        return int(self.base_cpu.shape[0])


def balanced_draw(values: Sequence[float], num_agents: int, rng: np.random.Generator) -> FloatArray:
    """Assigns profile values to agents with balanced counts, shuffled.

    Args:
      values: the P profile values.
      num_agents: K.
      rng: the generator to draw from.

    Returns:
      [K] float: every value appears ``K // P`` or ``K // P + 1`` times; the
      values that get the extra agent are picked at random.
    """
    values = np.asarray(values, np.float64)
    p = len(values)
    counts = np.full(p, num_agents // p)
    counts[rng.choice(p, num_agents % p, replace=False)] += 1
    return rng.permutation(np.repeat(values, counts))


def _field_values(
    raw, field: str, num_agents: int | None, *, positive: bool, allow_empty: bool = True
) -> FloatArray:
    """Validates a list of speeds from the config, naming ``field`` in errors."""
    try:
        arr = np.asarray(tuple(raw), np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{field} must be a list of numbers, got {raw!r}") from e
    if arr.ndim != 1:
        raise ValueError(f"{field} must be a flat list of numbers, got shape {arr.shape}")
    if arr.size == 0 and allow_empty:
        return arr
    if arr.size == 0:
        raise ValueError(f"{field} is empty; give at least one value")
    if num_agents is not None and arr.size != num_agents:
        raise ValueError(
            f"{field} has {arr.size} entries but num_agents = {num_agents}; give one value "
            f"per agent, or leave {field} empty to draw from the profile set"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{field} holds a non-finite value: {arr.tolist()}")
    bad = np.flatnonzero(arr <= 0) if positive else np.flatnonzero(arr < 0)
    if bad.size:
        i = int(bad[0])
        rule = "> 0 (a CPU count)" if positive else ">= 0 (Mbps; 0 = disconnected)"
        raise ValueError(f"{field}[{i}] = {arr[i]} must be {rule}")
    return arr


def parse_trace(obj, num_agents: int, source: str = "system.trace") -> ProfileTrace:
    """Validates a decoded trace (see the module docstring for the format).

    Args:
      obj: the decoded JSON object.
      num_agents: K; every list must have K entries.
      source: how to name the trace in error messages.

    Returns:
      The trace with every entry's lists filled in.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("rounds"), list) or not obj["rounds"]:
        raise ValueError(f'{source} must be a JSON object {{"rounds": [{{"round": 0, ...}}, ...]}}')
    rounds, cpus, bws = [], [], []
    for t, entry in enumerate(obj["rounds"]):
        where = f"{source} rounds[{t}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("round"), int):
            raise ValueError(f'{where} needs an integer "round"')
        r = entry["round"]
        if t == 0 and r != 0:
            raise ValueError(f"{where} has round {r}; the first entry must be round 0")
        if t > 0 and r <= rounds[-1]:
            raise ValueError(f"{where} has round {r}; rounds must strictly increase")
        for key, out, positive in (("cpu", cpus, True), ("bandwidth_mbps", bws, False)):
            if key in entry:
                out.append(
                    _field_values(
                        entry[key],
                        f"{where}.{key}",
                        num_agents,
                        positive=positive,
                        allow_empty=False,
                    )
                )
            elif t == 0:
                raise ValueError(f'{where} (the first entry) must give "{key}"')
            else:
                out.append(out[-1])
        rounds.append(r)
    return ProfileTrace(np.asarray(rounds, np.int64), np.stack(cpus), np.stack(bws))


def load_trace(path: str, num_agents: int) -> ProfileTrace:
    """Reads and validates a trace file (``system.trace``).

    Args:
      path: the JSON file.
      num_agents: K.

    Returns:
      The parsed trace.
    """
    if not os.path.isfile(path):
        raise ValueError(f"system.trace = {path!r} is not a file; give a JSON trace or ''")
    with open(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"system.trace = {path!r} is not valid JSON: {e}") from e
    return parse_trace(obj, num_agents, source=f"system.trace ({path})")


def profile_spec_from_config(config: ConfigDict) -> ProfileSpec:
    """Validates the config's profile fields and draws the base profiles.

    Reads ``seed``, ``num_agents`` and ``system.{cpu_profiles,
    bandwidth_profiles_mbps, cpu, bandwidth_mbps, trace, dynamics_rounds,
    dynamics_fraction}``.

    Args:
      config: a run config (see ``configs/default.py``).

    Returns:
      The spec that :func:`profiles_at` evaluates.
    """
    k = config.num_agents
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"num_agents = {k!r} must be a positive integer")
    seed = config.seed
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed = {seed!r} must be a non-negative integer")
    s = config.system
    cpu_set = _field_values(
        s.cpu_profiles, "system.cpu_profiles", None, positive=True, allow_empty=False
    )
    bw_set = _field_values(
        s.bandwidth_profiles_mbps,
        "system.bandwidth_profiles_mbps",
        None,
        positive=False,
        allow_empty=False,
    )
    cpu = _field_values(s.cpu, "system.cpu", k, positive=True)
    bw = _field_values(s.bandwidth_mbps, "system.bandwidth_mbps", k, positive=False)
    if cpu.size == 0:
        cpu = balanced_draw(cpu_set, k, rng_for(seed, Purpose.CPU))
    if bw.size == 0:
        bw = balanced_draw(bw_set, k, rng_for(seed, Purpose.BANDWIDTH))
    frac = float(s.dynamics_fraction)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"system.dynamics_fraction = {frac} must be in [0, 1]")
    rounds = tuple(s.dynamics_rounds)
    if any(not isinstance(r, int) or r < 0 for r in rounds):
        raise ValueError(f"system.dynamics_rounds = {rounds!r} must be non-negative integers")
    trace = load_trace(s.trace, k) if s.trace else None
    return ProfileSpec(
        seed=seed,
        cpu_profiles=cpu_set,
        bandwidth_profiles_mbps=bw_set,
        base_cpu=cpu,
        base_bandwidth_mbps=bw,
        dynamics_rounds=tuple(sorted(set(rounds))),
        dynamics_fraction=frac,
        trace=trace,
    )


def profiles_at(source: ConfigDict | ProfileSpec, round_: int) -> tuple[FloatArray, FloatArray]:
    """Round r's profiles: a pure function of (config, round).

    Args:
      source: a run config, or the :class:`ProfileSpec` built from it once
        (faster when called every round; a config with a trace re-reads it).
      round_: the round r >= 0.

    Returns:
      ``(cpu, bandwidth_mbps)``, two fresh float64[K] arrays.
    """
    spec = source if isinstance(source, ProfileSpec) else profile_spec_from_config(source)
    if round_ < 0:
        raise ValueError(f"round {round_} must be >= 0")
    if spec.trace is not None:
        return spec.trace.at(round_)
    cpu, bw = spec.base_cpu.copy(), spec.base_bandwidth_mbps.copy()
    k = spec.num_agents
    n = int(round(spec.dynamics_fraction * k))
    for d in spec.dynamics_rounds:
        if d > round_ or n == 0:
            break
        rng = rng_for(spec.seed, Purpose.DYNAMICS, d)
        idx = rng.choice(k, n, replace=False)
        cpu[idx] = rng.choice(spec.cpu_profiles, n)
        bw[idx] = rng.choice(spec.bandwidth_profiles_mbps, n)
    return cpu, bw
