"""Weight-init schemes of ``model.init``: which distribution the initial kernels come from.

- ``paper`` (default): the models' own init, as the paper's PyTorch ResNets do
  it: convolutions Kaiming normal in fan-out mode with gain 2
  (``models.conv.Conv2d``), the classifier and the auxiliary heads PyTorch's
  default Linear init, U(±1/sqrt(fan_in)) for weight and bias
  (``models.resnet.Head``).
- ``lecun``: Flax's layer defaults: every kernel (convolutions and heads)
  LeCun normal, truncated, variance 1/fan_in with fan_in = k·k·C_in for a
  convolution; Dense biases zero.

Behind batch norm a convolution's scale does not change the function, but it
does change the step: at the same lr a larger weight moves less relative to
its size. For a 3x3 convolution with C_in = C_out the ``paper`` kernels have
twice the ``lecun`` variance (2/fan_out against 1/fan_in), which is what makes
the project learn slower than Flax's defaults in 10 short rounds
(docs/learning_vs_reference.md). BN scales stay 1 and BN biases 0 in both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from comdml_jax.catalog import INITS

PyTree = dict


def apply_init(params: PyTree, key: jax.Array, scheme: str) -> PyTree:
    """``params`` with its kernels redrawn by ``scheme`` (the module docstring).

    Args:
      params: a model's (or its auxiliary heads') freshly initialised params.
      key: the scheme's own key; leaf i (in flattening order) draws from
        ``fold_in(key, i)``.
      scheme: one of :data:`comdml_jax.catalog.INITS`.

    Returns:
      ``params`` itself for ``paper``; otherwise a tree of the same structure.

    Raises:
      ValueError: an unknown scheme.
    """
    if scheme not in INITS:
        raise ValueError(f"model.init={scheme!r} is unknown; choose one of {INITS}")
    if scheme == "paper":
        return params
    lecun = nn.initializers.lecun_normal()
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = []
    for i, (path, leaf) in enumerate(leaves):
        name = getattr(path[-1], "key", None)
        if name == "kernel":
            leaf = lecun(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
        elif name == "bias" and leaf.ndim == 1 and _is_dense(path):
            leaf = jnp.zeros_like(leaf)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _is_dense(path) -> bool:
    """True under a Dense layer (the heads' ``fc``): BN biases are zero already."""
    return any(getattr(p, "key", None) == "fc" for p in path)
