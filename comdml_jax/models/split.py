"""Cuts, auxiliary heads and the split profile (SPEC §2, paper Sec. IV-B).

Cut convention: cut ``m`` offloads the last ``m`` stages to the fast agent.
The slow side runs stages [0, S - m) plus an auxiliary head (global average
pooling + Dense) on their output; the fast side runs stages [S - m, S), the last
of which is the real head. ``m = 0`` means no split. For the bottleneck
ResNet-56 the cuts m = 0..7 offload {0, 1, 10, 19, 28, 37, 46, 55} layers, the
rows of the paper's Table I.

Params and batch statistics are dicts keyed by stage name, so splitting is a
partition of the keys and joining is their union: no copy, no loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from comdml_jax.models.resnet import BatchStats, Head, Params, StagedModel, build_model, stage_name
from comdml_jax.system.split_profile import SplitProfile

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


def aux_head(model: StagedModel) -> Head:
    return Head(model.num_classes)


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


# ---------------------------------------------------------------------------
# The split profile.


def _nbytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def step_flops(fn, *args) -> float:
    """FLOPs of ``fn(*args)`` from XLA's HLO cost analysis of the lowered module.

    The analysis runs on the unoptimised HLO, so it depends only on the program,
    not on the host or the backend's fusion decisions.
    """
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX returned one dict per module
        analysis = analysis[0]
    return float(analysis["flops"])


@functools.lru_cache(maxsize=32)
def split_profile(model_name: str, batch_size: int, num_classes: int = 10) -> SplitProfile:
    """Profiles every cut of a registered model at one batch size (SPEC §2).

    T_s^m and T_f^m are FLOPs of the slow-side training step (with its aux head)
    and the fast-side training step, relative to the full-model training step,
    all from XLA's cost analysis with the reference lowerings, so
    they are deterministic and the same on every host. A training step is
    forward + backward + the SGD-with-momentum update.

    Args:
      model_name: a registered model name.
      batch_size: B.
      num_classes: classifier outputs.

    Returns:
      The :class:`SplitProfile`, one row per cut m = 0..M-1.
    """
    # Imported here: steps depends on this module.
    from comdml_jax.train import steps as steps_lib

    model = build_model(model_name, num_classes=num_classes, conv_impl="xla", bn_impl="plain")
    tx = steps_lib.make_optimizer(lr=0.1, momentum=0.9)
    params, stats = jax.eval_shape(model.init, jax.random.key(0))
    shapes = model.stage_output_shapes(batch_size)
    x = jax.ShapeDtypeStruct((batch_size, *model.input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    label_bytes = batch_size * np.dtype(np.int32).itemsize

    full_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), params, stats)
    full = step_flops(steps_lib.full_step_fn(model, tx), full_state, x, y)
    rows = {k: [] for k in ("slow", "fast", "nu", "slow_bytes", "fast_bytes")}
    for m in range(num_cuts(model)):
        if m == 0:
            rows["slow"].append(1.0)
            rows["fast"].append(0.0)
            rows["nu"].append(0)
            rows["slow_bytes"].append(_nbytes(params))
            rows["fast_bytes"].append(0)
            continue
        sp, fp = split_tree(model, params, m)
        ss, fs = split_tree(model, stats, m)
        sp = {**sp, AUX: jax.eval_shape(functools.partial(init_aux, model, m), jax.random.key(0))}
        z = jax.ShapeDtypeStruct(shapes[boundary(model, m) - 1], jnp.float32)
        s_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), sp, ss)
        f_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), fp, fs)
        rows["slow"].append(step_flops(steps_lib.slow_step_fn(model, tx, m), s_state, x, y) / full)
        rows["fast"].append(step_flops(steps_lib.fast_step_fn(model, tx, m), f_state, z, y) / full)
        rows["nu"].append(int(np.prod(z.shape)) * 4 + label_bytes)
        rows["slow_bytes"].append(_nbytes(sp))
        rows["fast_bytes"].append(_nbytes(fp))
    cuts = np.arange(num_cuts(model))
    return SplitProfile(
        model=model_name,
        batch_size=batch_size,
        cuts=cuts,
        layers_offloaded=np.array([layers_offloaded(model, m) for m in cuts]),
        slow_rel_cost=np.array(rows["slow"]),
        fast_rel_cost=np.array(rows["fast"]),
        bytes_per_batch=np.array(rows["nu"]),
        slow_param_bytes=np.array(rows["slow_bytes"]),
        fast_param_bytes=np.array(rows["fast_bytes"]),
        full_step_flops=full,
        model_bytes=_nbytes(params) + _nbytes(stats),
    )
