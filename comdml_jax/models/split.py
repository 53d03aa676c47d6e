"""Cuts and auxiliary heads (SPEC §2, paper Sec. IV-B).

Cut convention: cut ``m`` offloads the last ``m`` stages to the fast agent.
The slow side runs stages [0, S - m) plus an auxiliary head (global average
pooling + Dense, or with ``model.aux_head = conv`` a 3x3 conv-BN-ReLU before
them) on their output; the fast side runs stages [S - m, S), the last
of which is the real head. ``m = 0`` means no split. For the bottleneck
ResNet-56 the cuts m = 0..7 offload {0, 1, 10, 19, 28, 37, 46, 55} layers, the
rows of the paper's Table I.

Params and batch statistics are dicts keyed by stage name, so splitting is a
partition of the keys and joining is their union: no copy, no loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from comdml_jax.models.resnet import BatchStats, Params, StagedModel, stage_name

AUX = "aux"  # key of the auxiliary head in slow-side params


def num_cuts(model: StagedModel) -> int:
    """M: cuts 0..M-1; the stem always stays with the slow agent."""
    return model.num_stages


def boundary(model: StagedModel, cut: int) -> int:
    """The first fast-side stage of ``cut``."""
    if not 0 <= cut < num_cuts(model):
        raise ValueError(f"cut={cut} is outside 0..{num_cuts(model) - 1} for {model.name}")
    return model.num_stages - cut


def layers_offloaded(model: StagedModel, cut: int) -> int:
    """The paper's "layers offloaded" for ``cut``: weight layers on the fast side."""
    return int(sum(model.stage_layers[boundary(model, cut) :]))


def aux_head(model: StagedModel) -> nn.Module:
    """The cuts' auxiliary head (``model.aux_head``: linear GAP + Dense, or conv before it)."""
    return model.aux_head_module()


def init_aux(model: StagedModel, cut: int, key: jax.Array) -> Params:
    """Params of the auxiliary head for ``cut`` (sized by the cut's channels)."""
    b = boundary(model, cut)
    c = model.stage_output_shapes(1)[b - 1][-1]
    return aux_head(model).init(key, jnp.zeros((1, 1, 1, c)))["params"]


def init_all_aux(model: StagedModel, key: jax.Array) -> dict[str, Params]:
    """One auxiliary head per cut m >= 1, keyed ``"m{cut}"``."""
    return {
        aux_key(m): init_aux(model, m, jax.random.fold_in(key, m))
        for m in range(1, num_cuts(model))
    }


def aux_key(cut: int) -> str:
    return f"m{cut}"


def split_tree(model: StagedModel, tree: dict, cut: int) -> tuple[dict, dict]:
    """Partitions a per-stage dict into (slow side, fast side) at ``cut``."""
    b = boundary(model, cut)
    slow = {stage_name(i): tree[stage_name(i)] for i in range(b)}
    fast = {stage_name(i): tree[stage_name(i)] for i in range(b, model.num_stages)}
    return slow, fast


def join_tree(slow: dict, fast: dict) -> dict:
    """The inverse of :func:`split_tree` (aux entries are dropped)."""
    out = {k: v for k, v in slow.items() if k != AUX}
    out.update(fast)
    return out


def slow_forward(model: StagedModel, params: Params, stats: BatchStats, x, cut: int, train: bool):
    """Slow side at ``cut``: (aux logits, activation z, new stats)."""
    z, new_stats = model.apply_range(params, stats, x, 0, boundary(model, cut), train)
    logits = aux_head(model).apply({"params": params[AUX]}, z)
    return logits, z, new_stats


def fast_forward(model: StagedModel, params: Params, stats: BatchStats, z, cut: int, train: bool):
    """Fast side at ``cut``: (logits, new stats)."""
    return model.apply_range(params, stats, z, boundary(model, cut), model.num_stages, train)
