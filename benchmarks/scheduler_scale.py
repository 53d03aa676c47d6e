"""Scale of the simulated system: Algorithm 1, and one whole round on sparse topologies.

    python benchmarks/scheduler_scale.py [--part plan|round|both] [--huge]

Part "plan" (Algorithm 1 alone). ``scheduler.greedy_plan`` (vectorised) next to
``scheduler.greedy_plan_reference`` (the plain Python-loop transcription) on the
same instances, checks they return the same plan, and prints the ratio. The
loop is skipped where its K² extrapolation from the previous size exceeds 60 s.
Instances: the paper's profile sets with the default balanced draw (20% of
agents per CPU and per bandwidth profile, so 20% are disconnected), an 8-cut
bottleneck ResNet-56 profile (analytic FLOP shares), and
  - "full, equal N": complete topology, every agent 10 batches (IID);
  - "full, varied N": complete topology, 1..100 batches per agent (non-IID
    sizes; defeats the collapsing of identical candidates);
  - "random p=0.2": Erdős–Rényi topology, 1..100 batches (K <= 1,000).

Part "round" (issue 14). One round from nothing, as a run's first round costs:
  - build: the topology (``make_topology``);
  - state: the round's profiles, links and participants (``profiles_at``,
    ``link_capacities``, ``main_component``);
  - plan: Algorithm 1 (``greedy_plan``);
  - price: eq. (4) and the AllReduce with its route statistics (``price_round``);
  - next: plan + price of a second round with the same profiles and
    participants (the links and routes come from the caches).
Topologies: full, random p = 10/K, random p = 0.01 at K = 1,000, 2,000, 10,000
and 100,000, and the ring with every agent up at K = 800 and 2,000; the default
profile draw; 1..100 batches per agent. Seconds are wall time of one run.
Peak memory is tracemalloc's peak of the allocations (numpy buffers and Python
objects) made during a second, traced run of build + state + plan + price,
above what was allocated before it; the interpreter's baseline is not counted.
"H exact" says whether route_stats was exact or hit its work limit (bounds).

At K <= 2,000 the same round also runs with the previous code, kept below as
the OLD REFERENCE: ``networkx.gnp_random_graph`` (visits all K²/2 pairs),
component labels by one BFS per unlabelled component, a [K] row per agent in
Algorithm 1, and ``route_stats_reference`` (one BFS per participant). "old/new"
is the ratio of the two totals, measured in the same process. "same" checks the
numbers on the new code's topology: the old route statistics, plan and
AllReduce time equal the new ones.

K = 100,000 at p = 0.01 is 50M edges; it runs only with ``--huge`` and enough
free memory, and is otherwise skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc

import networkx as nx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine  # noqa: E402
from comdml_jax.streams import Purpose  # noqa: E402
from comdml_jax.system import profiles_at, scheduler, timing  # noqa: E402
from comdml_jax.system.pairing_inputs import PairingInputs  # noqa: E402
from comdml_jax.system.plan import RoundPlan  # noqa: E402
from comdml_jax.system.profiles import rng_for  # noqa: E402
from comdml_jax.system.route_stats import route_stats, route_stats_reference  # noqa: E402
from comdml_jax.system.routing import _bfs  # noqa: E402
from comdml_jax.system.scheduler import greedy_plan, greedy_plan_reference  # noqa: E402
from comdml_jax.system.split_profile import SplitProfile  # noqa: E402
from comdml_jax.system.timing import TimingParams, price_round  # noqa: E402
from comdml_jax.system.topology import (  # noqa: E402
    Topology,
    _link_capacities,
    link_capacities,
    make_topology,
)
from comdml_jax.system.world import main_component  # noqa: E402
from configs import default  # noqa: E402

LOOP_BUDGET_S = 60.0

# Bottleneck ResNet-56 at B = 100, cuts 0..7 (analytic FLOP shares, SPEC §2).
PROFILE = SplitProfile(
    model="resnet56",
    batch_size=100,
    cuts=np.arange(8),
    layers_offloaded=np.array([0, 1, 10, 19, 28, 37, 46, 55]),
    slow_rel_cost=np.array([1.0, 1.0, 0.8467, 0.6573, 0.5040, 0.3147, 0.1614, 0.0051]),
    fast_rel_cost=np.array([0.0, 0.00003, 0.1533, 0.3427, 0.4960, 0.6853, 0.8386, 0.9949]),
    bytes_per_batch=np.array(
        [0, 6554000, 6554000, 13107600, 13107600, 26214800, 26214800, 6554000]
    ),
    slow_param_bytes=np.zeros(8, np.int64),
    fast_param_bytes=np.zeros(8, np.int64),
    full_step_flops=56.3e9,
    model_bytes=2401256,
)


def config_for(k: int, seed: int = 0):
    c = default.get_config()
    c.num_agents, c.seed = k, seed
    return c


# --- part "plan": Algorithm 1, vectorised against the loop ---


def instance(k: int, kind: str, seed: int = 0):
    """(cpu, links, num_batches, participants, profile, params): a PairingInputs' fields."""
    cpu, bw = profiles_at(config_for(k, seed), 0)
    rng = np.random.default_rng(seed)
    nb = np.full(k, 10) if kind == "full, equal N" else rng.integers(1, 101, k)
    topo = make_topology("random" if kind.startswith("random") else "full", k, p=0.2, seed=seed)
    links = link_capacities(topo, bw)
    return cpu, links, nb, bw > 0, PROFILE, TimingParams()


def best_time(fn, args, repeats: int) -> tuple[float, object]:
    """Best wall seconds of ``fn(PairingInputs(*args))`` (building the inputs included)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(PairingInputs(*args))
        best = min(best, time.perf_counter() - t0)
    return best, out


def plan_part():
    print(
        f"{'instance':<16} {'K':>7} {'pairs':>6} {'vectorised_s':>13} {'loop_s':>9} "
        f"{'loop/vec':>9} {'same plan':>9}"
    )
    sizes = {
        "full, equal N": (100, 1000, 10000, 100000),
        "full, varied N": (100, 1000, 10000, 100000),
        "random p=0.2": (100, 1000),
    }
    for kind, ks in sizes.items():
        loop_prev = None
        for k in ks:
            args = instance(k, kind)
            vec_s, vec = best_time(greedy_plan, args, 3 if k <= 1000 else 1)
            est = None if loop_prev is None else loop_prev[1] * (k / loop_prev[0]) ** 2
            if est is not None and est > LOOP_BUDGET_S:
                loop_col, ratio, same = f"~{est:.0f} (skip)", "", ""
            else:
                loop_s, ref = best_time(greedy_plan_reference, args, 1)
                loop_prev = (k, loop_s)
                loop_col, ratio = f"{loop_s:.3f}", f"{loop_s / vec_s:.0f}x"
                same = str(ref.pairs == vec.pairs)
            print(
                f"{kind:<16} {k:>7} {len(vec.pairs):>6} {vec_s:>13.4f} {loop_col:>9} "
                f"{ratio:>9} {same:>9}"
            )


# --- OLD REFERENCE: the round as the code before issue 14 computed it ---


def old_make_topology(kind: str, k: int, p: float, seed: int) -> Topology:
    """OLD REFERENCE: networkx builds (gnp visits all K²/2 pairs), then CSR."""
    if kind == "full":
        return Topology(kind, k)
    if kind == "random":
        nx_seed = int(rng_for(seed, Purpose.TOPOLOGY).integers(2**31 - 1))
        g = nx.gnp_random_graph(k, float(p), seed=nx_seed)
    else:
        g = nx.empty_graph(k)
        g.add_edges_from((i, (i + 1) % k) for i in range(k))
    e = np.asarray(list(g.edges()), np.int64).reshape(-1, 2)
    e = e[e[:, 0] != e[:, 1]]
    src = np.concatenate([e[:, 0], e[:, 1]])
    dst = np.concatenate([e[:, 1], e[:, 0]])
    keys = np.unique(src * k + dst)
    indptr = np.searchsorted(keys // k, np.arange(k + 1)).astype(np.int64)
    return Topology(kind, k, indptr, keys % k)


def old_main_component(links, candidates):
    """OLD REFERENCE: one BFS per unlabelled candidate's component."""
    part = np.asarray(candidates, bool) & True
    if links.complete or not part.any():
        return part
    k = links.num_agents
    labels = np.full(k, -1, np.int64)
    indptr, indices, caps = links.csr()
    seen = np.zeros(k, bool)
    for s in np.flatnonzero(part):
        if seen[s]:
            continue
        dist, _ = _bfs(indptr, indices, caps, int(s))
        reach = dist >= 0
        seen |= reach
        labels[reach & part] = s
    counts = np.bincount(labels[part], minlength=k)
    return part & (labels == int(np.argmax(counts)))


def _old_pair_rows(order, avail, partner, cut, links, n, step, tau_hat, terms):
    """OLD REFERENCE: Algorithm 1 with a [K] row of c per agent."""
    for i in order:
        if not avail[i]:
            continue
        row = links.row(i)
        cand = np.flatnonzero(avail & (tau_hat < tau_hat[i]) & (row > 0))
        if cand.size == 0:
            continue
        v, j, m = scheduler._best_partner(
            tau_hat[i], n[i], cand, row[cand], tau_hat[cand], step[cand], terms
        )
        if v < tau_hat[i]:
            partner[i], cut[i] = j, m
            avail[i] = avail[j] = False


def old_greedy_plan(cpu, links, num_batches, participants, profile, params) -> RoundPlan:
    """OLD REFERENCE: greedy_plan with the row-per-agent pairing on sparse links."""
    k = links.num_agents
    part = np.asarray(participants, bool)
    n = np.asarray(num_batches, np.float64)
    step = timing.step_s(cpu, profile, params)
    tau_hat = n * step
    terms = timing.CutTerms.of(profile)
    partner, cut = np.full(k, -1, np.int64), np.zeros(k, np.int64)
    order = scheduler._slowest_first(tau_hat, part)
    if profile.num_cuts >= 2 and order.size >= 2:
        pairing = scheduler._pair_complete if links.complete else _old_pair_rows
        pairing(order, part.copy(), partner, cut, links, n, step, tau_hat, terms)
    return RoundPlan(part, partner, cut)


def old_price_round(*args):
    """OLD REFERENCE: price_round with route_stats_reference (one BFS per participant)."""
    saved = timing.route_stats
    timing.route_stats = route_stats_reference
    try:
        return price_round(*args)
    finally:
        timing.route_stats = saved


# --- part "round" ---


def new_round(kind, k, p, config, nb):
    out = {}
    t = time.perf_counter()
    topo = make_topology(kind, k, p=p, seed=config.seed)
    out["build"] = time.perf_counter() - t
    t = time.perf_counter()
    cpu, bw = profiles_at(config, 0)
    if kind == "ring":
        bw = np.where(bw > 0, bw, 10.0)  # everyone up: the ring stays a cycle
    links = link_capacities(topo, bw)
    part = main_component(links, bw > 0)
    out["state"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = greedy_plan(PairingInputs(cpu, links, nb, part, PROFILE, TimingParams()))
    out["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    tm = price_round(plan, cpu, links, nb, PROFILE, TimingParams())
    out["price"] = time.perf_counter() - t
    t = time.perf_counter()
    plan2 = greedy_plan(
        PairingInputs(cpu, link_capacities(topo, bw), nb, part, PROFILE, TimingParams())
    )
    price_round(plan2, cpu, link_capacities(topo, bw), nb, PROFILE, TimingParams())
    out["next"] = time.perf_counter() - t
    return out, (topo, cpu, bw, links, part, plan, tm)


def old_round(kind, k, p, config, nb):
    out = {}
    t = time.perf_counter()
    topo = old_make_topology(kind, k, p, config.seed)
    out["build"] = time.perf_counter() - t
    t = time.perf_counter()
    cpu, bw = profiles_at(config, 0)
    if kind == "ring":
        bw = np.where(bw > 0, bw, 10.0)
    links = _link_capacities(topo, np.array(bw))
    part = old_main_component(links, bw > 0)
    out["state"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = old_greedy_plan(cpu, links, nb, part, PROFILE, TimingParams())
    out["plan"] = time.perf_counter() - t
    t = time.perf_counter()
    old_price_round(plan, cpu, links, nb, PROFILE, TimingParams())
    out["price"] = time.perf_counter() - t
    return out


def same_numbers(new, nb) -> bool:
    """The old code on the new topology: route statistics, plan and AllReduce are equal."""
    topo, cpu, bw, _, part, plan, tm = new
    links = _link_capacities(topo, np.array(bw))  # uncached
    if old_main_component(links, bw > 0).tolist() != part.tolist():
        return False
    new_rs, old_rs = route_stats(links, part), route_stats_reference(links, part)
    old_plan = old_greedy_plan(cpu, links, nb, part, PROFILE, TimingParams())
    old_tm = old_price_round(old_plan, cpu, links, nb, PROFILE, TimingParams())
    return (
        (new_rs.hops, new_rs.bottleneck_mbps) == (old_rs.hops, old_rs.bottleneck_mbps)
        and old_plan.pairs == plan.pairs
        and old_tm.allreduce_s == tm.allreduce_s
        and old_tm.round_time_s == tm.round_time_s
    )


def peak_mb(kind, k, p, config, nb) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    topo = make_topology(kind, k, p=p, seed=config.seed)
    cpu, bw = profiles_at(config, 0)
    if kind == "ring":
        bw = np.where(bw > 0, bw, 10.0)
    links = _link_capacities(topo, np.array(bw))
    part = main_component(links, bw > 0)
    plan = greedy_plan(PairingInputs(cpu, links, nb, part, PROFILE, TimingParams()))
    price_round(plan, cpu, links, nb, PROFILE, TimingParams())
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2**20


def free_mb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        return float("inf")


def round_part(huge: bool):
    cases = []
    for k in (1000, 2000, 10000, 100000):
        cases += [("full", k, 0.0, "full"), ("random", k, 10 / k, "random p=10/K")]
        cases.append(("random", k, 0.01, "random p=0.01"))
    cases += [("ring", 800, 0.0, "ring, all up"), ("ring", 2000, 0.0, "ring, all up")]
    head = (
        f"{'topology':<14} {'K':>7} {'E':>10} {'build':>7} {'state':>7} {'plan':>7} "
        f"{'price':>7} {'total':>7} {'next':>7} {'peak MB':>8} {'H':>3} {'exact':>5} "
        f"{'old total':>10} {'old/new':>8} {'same':>5}"
    )
    print(head)
    for kind, k, p, name in cases:
        edges = k * (k - 1) / 2 * p if kind == "random" else (k if kind == "ring" else 0)
        if kind == "random" and edges > 20e6:
            need = edges * 200 / 2**20  # ~200 B per edge at the peak (CSR, links, routing)
            if not huge or free_mb() < 1.5 * need:
                why = "--huge not given" if not huge else f"{free_mb():.0f} MB free"
                print(f"{name:<14} {k:>7} {edges:>10.0f}  skipped: ~{need:.0f} MB needed; {why}")
                continue
        config = config_for(k)
        nb = np.random.default_rng(0).integers(1, 101, k)
        times, new = new_round(kind, k, p, config, nb)
        total = sum(times[s] for s in ("build", "state", "plan", "price"))
        rs = route_stats(new[3], new[4])
        mem = peak_mb(kind, k, p, config, nb)
        old_col = ratio = same = ""
        if k <= 2000:
            old = old_round(kind, k, p, config, nb)
            old_total = sum(old.values())
            old_col, ratio = f"{old_total:.3f}", f"{old_total / total:.0f}x"
            same = str(same_numbers(new, nb))
        print(
            f"{name:<14} {k:>7} {new[0].num_edges if kind != 'full' else 0:>10} "
            f"{times['build']:>7.3f} {times['state']:>7.3f} {times['plan']:>7.3f} "
            f"{times['price']:>7.3f} {total:>7.3f} {times['next']:>7.3f} {mem:>8.1f} "
            f"{rs.hops:>3} {str(rs.exact):>5} {old_col:>10} {ratio:>8} {same:>5}",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("plan", "round", "both"), default="both")
    ap.add_argument("--huge", action="store_true", help="also K = 100,000 at p = 0.01")
    args = ap.parse_args()
    print(f"machine: {json.dumps(machine())}, numpy {np.__version__}, load {os.getloadavg()}")
    if args.part in ("plan", "both"):
        plan_part()
    if args.part in ("round", "both"):
        round_part(args.huge)


if __name__ == "__main__":
    main()
