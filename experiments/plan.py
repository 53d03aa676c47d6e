"""Plan only: each round's pairs, cuts and per-agent times, without training.

    python -m experiments.plan --config=configs/table1.py:1 [--json] [--rounds=N]

The split profile comes from ``comdml_jax.train.profile.split_profile`` (one
model compile, cached; ``comdml_jax.run_inputs``, shared with ``compare
--price_only``), or from ``--profile_json`` (the ``comdml-profile --json``
output) to skip the compile. Batches per agent are a training run's:
the config's data set (``data.train_subset``; only the labels are used, from
the decoded-array cache) split by ``data.partition`` exactly as
``experiment.build`` splits it (``data.partition.partition_for_run``), and
Ñ_i = local_epochs · N_i / B, the batches a run charges
(``data.agents.charged_batches``, the one function both call; SPEC §1: Ñ_i is
N_i samples in batches of B). A ``num_agents`` that leaves an agent without
samples is refused (as a training run refuses it). With ``system.sweep_cuts`` (configs/table1.py) it
also prices every cut forced on the planned pairs and names the cut the
scheduler picks.

--json prints one object per round: ``round``, ``pairs`` ([slow, fast, cut,
layers_offloaded] each), ``round_time_s``, ``alone_round_time_s``,
``allreduce_s``, ``agents`` (per-agent cpu, bandwidth_mbps, num_batches,
compute_s, comm_s, idle_s, tau_s lists) and, with the sweep, ``per_cut``
([{cut, layers_offloaded, round_time_s}, ...]).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from comdml_jax import launch, run_inputs

if TYPE_CHECKING:  # the system model loads after the flags parse, so a bad flag is answered fast
    from comdml_jax.system import RoundPlan, SplitProfile
    from comdml_jax.system.world import RoundEnv, System

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Rounds to plan (from round 0).")
_PROFILE_JSON = flags.DEFINE_string(
    "profile_json", "", "A SplitProfile JSON file (comdml-profile --json) instead of compiling."
)
_MAX_AGENTS = flags.DEFINE_integer("max_agents", 40, "Per-agent rows shown in text mode.")

# The split profile and the batches of a run: one library, shared with --price_only.
NUM_CLASSES, load_profile, run_batches = (
    run_inputs.NUM_CLASSES,
    run_inputs.load_profile,
    run_inputs.run_batches,
)


def _sweep_pairs(
    plan: RoundPlan, state: RoundEnv, num_batches, profile: SplitProfile, system: System
) -> RoundPlan:
    """The plan's pairs (at cut 1), or slowest -> fastest connected agent when it has none."""
    from comdml_jax.system import RoundPlan
    from comdml_jax.system.timing import alone_s

    if plan.pairs:
        return plan.with_cut(1)
    idx = np.flatnonzero(state.participants)
    if idx.size < 2:
        return plan
    tau = alone_s(state.cpu, num_batches, profile, system.timing)
    slow = int(idx[np.lexsort((idx, -tau[idx]))][0])
    row = state.links.row(slow)
    ok = idx[(tau[idx] < tau[slow]) & (row[idx] > 0)]
    if ok.size == 0:
        return plan
    fast = int(ok[np.lexsort((ok, tau[ok]))][0])
    partner = np.full(plan.num_agents, -1)
    cut = np.zeros(plan.num_agents, np.int64)
    partner[slow], cut[slow] = fast, 1
    return RoundPlan(state.participants, partner, cut)


def plan_round(system: System, r: int, num_batches, profile: SplitProfile, sweep: bool) -> dict:
    """Plans and prices round r; returns its JSON-ready record (module docstring).

    Args:
      system: the built system.
      r: the round.
      num_batches: [K] Ñ_i.
      profile: the split profile.
      sweep: also price every cut forced on the planned pairs.

    Returns:
      The record; with ``sweep`` it also holds ``per_cut`` and ``_per_cut_detail``
      (the forced pairing and each cut's timing; not printed in JSON).
    """
    from comdml_jax.methods.comdml import pairing_plan

    state = system.round_env(r)
    plan = pairing_plan(system, state, num_batches, profile)
    t = system.price(plan, state, num_batches, profile)
    lo = profile.layers_offloaded
    rec = {
        "round": r,
        "pairs": [[i, j, m, int(lo[m])] for i, j, m in plan.pairs],
        "round_time_s": t.round_time_s,
        "alone_round_time_s": t.alone_round_time_s,
        "allreduce_s": t.allreduce_s,
        "agents": {
            "cpu": state.cpu.tolist(),
            "bandwidth_mbps": state.bandwidth_mbps.tolist(),
            "num_batches": [float(x) for x in num_batches],
            "participant": state.participants.tolist(),
            "partner": plan.partner.tolist(),
            "compute_s": t.compute_s.tolist(),
            "comm_s": t.comm_s.tolist(),
            "idle_s": t.idle_s.tolist(),
            "tau_s": t.tau_s.tolist(),
        },
    }
    if sweep:
        base = _sweep_pairs(plan, state, num_batches, profile, system)
        detail = [
            system.price(base.with_cut(m), state, num_batches, profile)
            for m in range(profile.num_cuts)
        ]
        rec["per_cut"] = [
            {"cut": m, "layers_offloaded": int(lo[m]), "round_time_s": tm.round_time_s}
            for m, tm in enumerate(detail)
        ]
        rec["_per_cut_detail"] = (base, detail)
    return rec


def format_round(rec: dict, max_agents: int) -> str:
    """The text form of one round's record."""
    a = rec["agents"]
    saving = 1 - rec["round_time_s"] / rec["alone_round_time_s"] if rec["alone_round_time_s"] else 0
    lines = [
        f"round {rec['round']}: {sum(a['participant'])} participants, {len(rec['pairs'])} pair(s), "
        f"round {rec['round_time_s']:.1f} s (alone {rec['alone_round_time_s']:.1f} s, "
        f"saving {100 * saving:.1f}%), allreduce {rec['allreduce_s']:.3f} s"
    ]
    for i, j, m, lo in rec["pairs"]:
        lines.append(f"  pair: slow {i} -> fast {j}, cut {m} ({lo} layers offloaded)")
    lines.append(
        f"  {'agent':>6} {'cpu':>5} {'Mbps':>6} {'batches':>7} {'role':>12} "
        f"{'compute_s':>10} {'comm_s':>9} {'idle_s':>10} {'tau_s':>10}"
    )
    fast_of = {j: i for i, j, _, _ in rec["pairs"]}
    k = len(a["cpu"])
    for n in range(min(k, max_agents)):
        if not a["participant"][n]:
            role = "out"
        elif a["partner"][n] >= 0:
            role = f"slow->{a['partner'][n]}"
        elif n in fast_of:
            role = f"fast<-{fast_of[n]}"
        else:
            role = "alone"
        lines.append(
            f"  {n:>6} {a['cpu'][n]:>5.2f} {a['bandwidth_mbps'][n]:>6.1f} "
            f"{a['num_batches'][n]:>7.4g} {role:>12} {a['compute_s'][n]:>10.1f} "
            f"{a['comm_s'][n]:>9.1f} {a['idle_s'][n]:>10.1f} {a['tau_s'][n]:>10.1f}"
        )
    if k > max_agents:
        lines.append(f"  ... {k - max_agents} more agents (--max_agents)")
    if "_per_cut_detail" in rec:
        lines.append("  every cut forced on the planned pairs:")
        lines.append(
            f"  {'cut':>4} {'layers':>6} {'fast_train_s':>12} {'comm_s':>8} {'idle_s':>8} "
            f"{'round_s':>9} {'vs alone':>8}"
        )
        alone = rec["alone_round_time_s"]
        base, detail = rec["_per_cut_detail"]
        fast = base.partner[base.partner >= 0]
        for m, (t, row) in enumerate(zip(detail, rec["per_cut"], strict=True)):
            lines.append(
                f"  {m:>4} {row['layers_offloaded']:>6} {t.compute_s[fast].sum():>12.1f} "
                f"{t.comm_s.sum():>8.1f} {t.idle_s.sum():>8.1f} {t.round_time_s:>9.1f} "
                f"{100 * (t.round_time_s / alone - 1):>+7.1f}%"
            )
        picked = sorted({m for _, _, m, _ in rec["pairs"]})
        lines.append(f"  scheduler picks cut(s) {picked or [0]}")
    return "\n".join(lines)


def main(argv):
    del argv
    from comdml_jax.config_check import validate_config

    config = _CONFIG.value
    if _ROUNDS.value < 1:
        launch.fail(f"--rounds={_ROUNDS.value} is invalid: plan at least one round")
    if _PROFILE_JSON.value and not os.path.isfile(_PROFILE_JSON.value):
        launch.fail(
            f"--profile_json={_PROFILE_JSON.value}: no such file; give the output of "
            "comdml-profile --json, or leave it empty to compile the model"
        )
    with launch.refusals():  # experiments.run's config checks and one-line refusals
        system = validate_config(config)  # the System it checked
        batches, num_classes = run_batches(config)
    profile = load_profile(config, _PROFILE_JSON.value, num_classes)
    sweep = bool(config.system.get("sweep_cuts", False))
    for r in range(_ROUNDS.value):
        rec = plan_round(system, r, batches, profile, sweep)
        if _JSON.value:
            print(json.dumps({k: v for k, v in rec.items() if not k.startswith("_")}))
        else:
            print(format_round(rec, _MAX_AGENTS.value))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=launch.parse_flags)
