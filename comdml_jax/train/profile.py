"""The split profile of a model: per-cut costs from XLA's cost analysis (SPEC §2).

Paper Sec. IV-B, "split model profiling": for every cut m, the relative
training cost of the slow side (with its auxiliary head) and of the fast side,
the bytes sent per batch and the parameter bytes per side. The costs are FLOPs
of the compiled training steps, so this lives with the steps (``train``),
not with the models; the result is the plain-numpy
:class:`comdml_jax.system.split_profile.SplitProfile` that the timing model reads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from comdml_jax.models import split
from comdml_jax.models.resnet import build_model
from comdml_jax.system.split_profile import SplitProfile
from comdml_jax.train import steps as steps_lib


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
def split_profile(
    model_name: str, batch_size: int, num_classes: int = 10, aux_head: str = "linear"
) -> SplitProfile:
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
      aux_head: the slow side's auxiliary head (``model.aux_head``); its
        training FLOPs are part of T_s^m and its params of the slow bytes.

    Returns:
      The :class:`SplitProfile`, one row per cut m = 0..M-1.
    """
    model = build_model(
        model_name, num_classes=num_classes, conv_impl="xla", bn_impl="plain", aux_head=aux_head
    )
    tx = steps_lib.make_optimizer(lr=0.1, momentum=0.9)
    params, stats = jax.eval_shape(model.init, jax.random.key(0))
    shapes = model.stage_output_shapes(batch_size)
    x = jax.ShapeDtypeStruct((batch_size, *model.input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    label_bytes = batch_size * np.dtype(np.int32).itemsize

    full_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), params, stats)
    full = step_flops(steps_lib.full_step_fn(model, tx), full_state, x, y)
    rows = {k: [] for k in ("slow", "fast", "nu", "slow_bytes", "fast_bytes")}
    for m in range(split.num_cuts(model)):
        if m == 0:
            rows["slow"].append(1.0)
            rows["fast"].append(0.0)
            rows["nu"].append(0)
            rows["slow_bytes"].append(_nbytes(params))
            rows["fast_bytes"].append(0)
            continue
        sp, fp = split.split_tree(model, params, m)
        ss, fs = split.split_tree(model, stats, m)
        sp = {
            **sp,
            split.AUX: jax.eval_shape(
                functools.partial(split.init_aux, model, m), jax.random.key(0)
            ),
        }
        z = jax.ShapeDtypeStruct(shapes[split.boundary(model, m) - 1], jnp.float32)
        s_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), sp, ss)
        f_state = jax.eval_shape(lambda p, s: steps_lib.init_state(p, s, tx), fp, fs)
        rows["slow"].append(step_flops(steps_lib.slow_step_fn(model, tx, m), s_state, x, y) / full)
        rows["fast"].append(step_flops(steps_lib.fast_step_fn(model, tx, m), f_state, z, y) / full)
        rows["nu"].append(int(np.prod(z.shape)) * 4 + label_bytes)
        rows["slow_bytes"].append(_nbytes(sp))
        rows["fast_bytes"].append(_nbytes(fp))
    cuts = np.arange(split.num_cuts(model))
    return SplitProfile(
        model=model_name,
        batch_size=batch_size,
        cuts=cuts,
        layers_offloaded=np.array([split.layers_offloaded(model, m) for m in cuts]),
        slow_rel_cost=np.array(rows["slow"]),
        fast_rel_cost=np.array(rows["fast"]),
        bytes_per_batch=np.array(rows["nu"]),
        slow_param_bytes=np.array(rows["slow_bytes"]),
        fast_param_bytes=np.array(rows["fast_bytes"]),
        full_step_flops=full,
        model_bytes=_nbytes(params) + _nbytes(stats),
        aux_head=aux_head,
    )
