"""The links a pairing may use: direct neighbours (the paper), or routes (``system.pairing_links``).

Algorithm 1 pairs a slow agent only with a direct neighbour. On a sparse
topology (Fig. 3: 20% of links, 10 of 50 agents sampled) that leaves most
slow agents without a faster neighbour. With ``routes``, a slow agent may pair
with any participant it can reach, over the same route the AllReduce pricing
uses (``routing.routes_from``: fewest hops, then the widest; relays may be any
connected agent, sampled or not), as SPEC §7, *Routing*, prices a transfer
between non-neighbours:

  - c_ij = the route's bottleneck bandwidth (its slowest link);
  - each transfer pays α = ``system.latency_s`` for every hop beyond the
    first, r_ij = (h_ij − 1)·α. The paper prices a direct transfer by its
    bandwidth alone, so a one-hop route costs exactly the direct link, and
    ``routes`` on a complete topology is ``direct``.

The result is a :class:`~comdml_jax.system.topology.Links` over the
participants' pairs with ``relay_s`` set, which every scheduler and
``timing.price_round`` read as they read direct links; the AllReduce stays
priced on the real links.
"""

from __future__ import annotations

import numpy as np

from comdml_jax.system.cache import LRU, digest
from comdml_jax.system.routing import routes_from
from comdml_jax.system.topology import Links

PAIRING_LINKS = ("direct", "routes")
"""``system.pairing_links``."""

MAX_ROUTED_PARTICIPANTS = 4000
"""Participants above which ``routes`` is refused: its links are all P² routed pairs."""

_CACHE_SIZE = 4  # routed Links kept per real Links, keyed by the participants and α


def pairing_links(links: Links, participants, mode: str, latency_s: float) -> Links:
    """The links the round's pairing uses (module docstring).

    Args:
      links: the round's real links.
      participants: [K] bool, who takes part.
      mode: ``direct`` or ``routes``.
      latency_s: α, the per-hop latency.

    Returns:
      ``links`` itself for ``direct`` or a complete topology; otherwise the
      participants' routes as links, with their relay latencies.

    Raises:
      ValueError: an unknown mode, or too many participants for ``routes``.
    """
    if mode not in PAIRING_LINKS:
        raise ValueError(
            f"system.pairing_links = {mode!r} is unknown; choose one of {PAIRING_LINKS}"
        )
    if mode == "direct" or links.complete:
        return links
    part = np.asarray(participants, bool)
    idx = np.flatnonzero(part)
    if idx.size > MAX_ROUTED_PARTICIPANTS:
        raise ValueError(
            f"system.pairing_links = 'routes' with {idx.size} participants: its links are all "
            f"participant pairs, so it is limited to {MAX_ROUTED_PARTICIPANTS}; use "
            "system.pairing_links='direct' or fewer participants"
        )
    if "pairing_links" not in links.cache:
        links.cache["pairing_links"] = LRU(_CACHE_SIZE)
    key = digest(part, np.float64(latency_s))
    return links.cache["pairing_links"].get(key, lambda: _routed(links, idx, float(latency_s)))


def _routed(links: Links, idx: np.ndarray, latency_s: float) -> Links:
    k = links.num_agents
    rows, cols, caps, relay = [], [], [], []
    for i in idx:
        r = routes_from(links, int(i))
        hops = r.hops[idx]
        ok = (hops > 0) & (idx != i)
        j = idx[ok]
        rows.append(np.full(j.size, i, np.int64))
        cols.append(j)
        caps.append(r.bottleneck_mbps[j])
        relay.append((hops[ok] - 1) * latency_s)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    indptr = np.searchsorted(rows, np.arange(k + 1)).astype(np.int64)
    return Links(
        k,
        False,
        indptr=indptr,
        indices=cols.astype(np.int64),
        caps=np.concatenate(caps).astype(np.float64) if caps else np.zeros(0),
        relay_s=np.concatenate(relay).astype(np.float64) if relay else np.zeros(0),
    )
