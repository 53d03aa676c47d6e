"""CIFAR ResNets as sequences of pure stages (SPEC §2).

A model is a tuple of Flax modules, the *stages*. Stage 0 is the stem and the
last stage is the classifier head (global average pooling + Dense). Variables
are two flat dicts keyed by stage name (``s00``, ``s01``, ...): ``params`` and
``batch_stats``. Running stages [a, b) is the pure function
:meth:`StagedModel.apply_range`, so a model can be cut at any stage boundary
and the two sides joined again without loss.

Models:

* ``resnet56`` / ``resnet110``: the paper's bottleneck ResNets as the original
  ComDML code builds them: a 3x3/16 stem, then six groups of n bottleneck blocks
  (1x1, 3x3, 1x1, expansion 4) with planes 16, 16, 32 (stride 2), 32, 64 (stride
  2), 64; n = 3 or 6. 591,322 and 1,147,738 parameters at 10 classes. One stage
  per group, so 8 stages and 7 cuts.
* ``resnet{20,32,44,56,110}_basic``: He et al.'s basic-block CIFAR ResNets
  (3 groups of n = (depth - 2) / 6 blocks, widths 16/32/64). One stage per
  block. The shortcut option is ``A`` by default, as in the paper of He et al.
  for CIFAR: a parameter-free identity whose spatial size is halved by striding
  and whose missing channels are zero. Option ``B`` uses a 1x1 convolution + BN
  projection where the shape changes.
* ``resnet8_basic`` and ``tiny``: small variants for tests and quick runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from comdml_jax import catalog
from comdml_jax.models import norm
from comdml_jax.models.conv import Conv, resolve_impl
from comdml_jax.models.norm import BatchNormAct

Array = jax.Array
Params = dict[str, Any]  # stage name -> that stage's params pytree
BatchStats = dict[str, Any]  # stage name -> that stage's batch statistics ({} if none)

BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1
BN_EPS = 1e-5


def batch_norm(train: bool, name: str, impl: str, relu: bool = True) -> BatchNormAct:
    """``act(BN(x) + residual)`` in training or evaluation mode."""
    return BatchNormAct(
        use_running_average=not train,
        relu=relu,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPS,
        impl=impl,
        name=name,
    )


def dense_init(scale: float = 1.0 / 3.0):
    """PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(scale, "fan_in", "uniform")


class Stem(nn.Module):
    """conv3x3(16) + BN + ReLU, no max-pool."""

    width: int = 16
    conv_impl: str = "xla"
    bn_impl: str = "plain"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        x = Conv(self.width, 3, 1, self.conv_impl, name="conv")(x)
        return batch_norm(train, "bn", self.bn_impl)(x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4), projection shortcut when the shape changes."""

    planes: int
    stride: int = 1
    conv_impl: str = "xla"
    bn_impl: str = "plain"
    expansion: int = 4

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        out_ch = self.planes * self.expansion
        bn = functools.partial(batch_norm, train, impl=self.bn_impl)
        y = Conv(self.planes, 1, 1, self.conv_impl, name="conv1")(x)
        y = bn("bn1")(y)
        y = Conv(self.planes, 3, self.stride, self.conv_impl, name="conv2")(y)
        y = bn("bn2")(y)
        if self.stride != 1 or x.shape[-1] != out_ch:
            x = Conv(out_ch, 1, self.stride, self.conv_impl, name="down_conv")(x)
            x = bn("down_bn", relu=False)(x)
        y = Conv(out_ch, 1, 1, self.conv_impl, name="conv3")(y)
        return bn("bn3")(y, residual=x)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 with a shortcut of option A (zero-pad identity) or B (projection)."""

    planes: int
    stride: int = 1
    shortcut: str = "A"
    conv_impl: str = "xla"
    bn_impl: str = "plain"

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        bn = functools.partial(batch_norm, train, impl=self.bn_impl)
        y = Conv(self.planes, 3, self.stride, self.conv_impl, name="conv1")(x)
        y = bn("bn1")(y)
        if self.stride != 1 or x.shape[-1] != self.planes:
            if self.shortcut == "A":
                x = x[:, :: self.stride, :: self.stride, :]
                extra = self.planes - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
            else:
                x = Conv(self.planes, 1, self.stride, self.conv_impl, name="down_conv")(x)
                x = bn("down_bn", relu=False)(x)
        y = Conv(self.planes, 3, 1, self.conv_impl, name="conv2")(y)
        return bn("bn2")(y, residual=x)


class Group(nn.Module):
    """n blocks of the same width; the first one may stride. One stage."""

    block: Callable[..., nn.Module]
    planes: int
    num_blocks: int
    stride: int

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        for b in range(self.num_blocks):
            x = self.block(planes=self.planes, stride=self.stride if b == 0 else 1, name=f"b{b}")(
                x, train
            )
        return x


class BlockStage(nn.Module):
    """A single block as one stage (basic-block models cut at block boundaries)."""

    block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        return self.block(name="block")(x, train)


class Head(nn.Module):
    """Global average pooling + Dense(classes). Also the auxiliary head of a cut."""

    num_classes: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        x = jnp.mean(x, axis=(1, 2))
        fan_in = x.shape[-1]
        bound = 1.0 / jnp.sqrt(fan_in)
        return nn.Dense(
            self.num_classes,
            kernel_init=dense_init(),
            bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound),
            name="fc",
        )(x)


class BatchMomentsNormAct(nn.Module):
    """``relu(BN(x))`` that always normalises with the batch's moments and keeps no running stats.

    The auxiliary heads' normalisation: a head trains only on the slow side and
    is never evaluated, so running averages would be dead state in every agent's
    model. Params are named as :class:`~comdml_jax.models.norm.BatchNormAct`'s.
    """

    epsilon: float = BN_EPS
    impl: str = "plain"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        y, _, _ = norm.bn_act(x, scale, bias, None, self.epsilon, True, self.impl == "materialize")
        return y


class ConvHead(nn.Module):
    """3x3 conv (at the input's width) -> BN -> ReLU -> :class:`Head`: the ``conv`` auxiliary head.

    The auxiliary network of decoupled greedy learning (Belilovsky, Eickenberg &
    Oyallon 2020) in its smallest form: one convolution lets the slow side's
    last block learn features that a linear probe of them alone would not
    need, so the front trains closer to what the full network wants from it.
    """

    num_classes: int
    conv_impl: str = "xla"
    bn_impl: str = "plain"

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        y = Conv(x.shape[-1], 3, 1, self.conv_impl, name="conv")(x)
        y = BatchMomentsNormAct(impl=self.bn_impl, name="bn")(y)
        return Head(self.num_classes, name="head")(y)


def stage_name(i: int) -> str:
    return f"s{i:02d}"


@dataclasses.dataclass(frozen=True)
class StagedModel:
    """A model as a sequence of stages, the last one the classifier head.

    Attributes:
      name: registry name.
      stages: the stage modules, stem first and head last.
      stage_layers: how many weight layers (conv or dense) each stage holds; the
        paper counts "layers offloaded" with these.
      num_classes: classifier outputs.
      input_shape: (H, W, C) of one example.
      aux_head: the auxiliary head of every cut (``model.aux_head``, one of
        :data:`comdml_jax.catalog.AUX_HEADS`): ``linear`` is the paper's
        GAP + Dense (:class:`Head`), ``conv`` puts one 3x3 conv-BN-ReLU
        before it (:class:`ConvHead`).
      conv_impl, bn_impl: the resolved lowerings the ``conv`` head uses.
    """

    name: str
    stages: tuple[nn.Module, ...]
    stage_layers: tuple[int, ...]
    num_classes: int
    input_shape: tuple[int, int, int] = (32, 32, 3)
    aux_head: str = "linear"
    conv_impl: str = "xla"
    bn_impl: str = "plain"

    def aux_head_module(self) -> nn.Module:
        """The auxiliary head module of a cut (its width comes from its input)."""
        if self.aux_head == "linear":
            return Head(self.num_classes)
        if self.aux_head == "conv":
            return ConvHead(self.num_classes, self.conv_impl, self.bn_impl)
        raise ValueError(
            f"model.aux_head={self.aux_head!r} is unknown; choose one of {catalog.AUX_HEADS}"
        )

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage_name(i) for i in range(self.num_stages))

    def init(self, key: Array) -> tuple[Params, BatchStats]:
        """Initialises every stage; returns (params, batch_stats) keyed by stage."""
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        params, stats = {}, {}
        for i, stage in enumerate(self.stages):
            name = stage_name(i)
            variables = stage.init(jax.random.fold_in(key, i), x, train=False)
            params[name] = variables["params"]
            stats[name] = variables.get("batch_stats", {})
            x = stage.apply(variables, x, train=False)
        return params, stats

    def apply_range(
        self,
        params: Params,
        batch_stats: BatchStats,
        x: Array,
        a: int,
        b: int,
        train: bool,
    ) -> tuple[Array, BatchStats]:
        """Runs stages [a, b) on ``x``.

        Args:
          params: params of (at least) stages a..b-1.
          batch_stats: batch statistics of (at least) stages a..b-1.
          x: the input of stage a.
          a: first stage.
          b: one past the last stage.
          train: batch statistics mode (and their update) if True.

        Returns:
          The output of stage b-1 and the updated batch statistics of stages
          [a, b) (unchanged copies when ``train`` is False).
        """
        new_stats = {}
        for i in range(a, b):
            name = stage_name(i)
            variables = {"params": params[name], "batch_stats": batch_stats[name]}
            if train and batch_stats[name]:
                x, mutated = self.stages[i].apply(variables, x, train=True, mutable=["batch_stats"])
                new_stats[name] = mutated["batch_stats"]
            else:
                x = self.stages[i].apply(variables, x, train=train)
                new_stats[name] = batch_stats[name]
        return x, new_stats

    def apply(self, params: Params, batch_stats: BatchStats, x: Array, train: bool):
        """The whole model: logits and updated batch statistics."""
        return self.apply_range(params, batch_stats, x, 0, self.num_stages, train)

    def stage_output_shapes(self, batch_size: int = 1) -> list[tuple[int, ...]]:
        """The output shape of every stage for a batch, by abstract evaluation."""
        params, stats = jax.eval_shape(self.init, jax.random.key(0))
        x = jax.ShapeDtypeStruct((batch_size, *self.input_shape), jnp.float32)
        shapes = []
        for i in range(self.num_stages):
            x, _ = jax.eval_shape(
                lambda p, s, v, i=i: self.apply_range(p, s, v, i, i + 1, False), params, stats, x
            )
            shapes.append(tuple(x.shape))
        return shapes


# ---------------------------------------------------------------------------
# Builders and the registry.

ModelBuilder = Callable[..., StagedModel]
MODELS: dict[str, ModelBuilder] = {}


def register(name: str):
    def deco(fn: ModelBuilder) -> ModelBuilder:
        MODELS[name] = fn
        return fn

    return deco


def _bottleneck_model(
    name: str, n: int, num_classes: int, conv_impl: str, bn_impl: str, widths: Sequence[int]
) -> StagedModel:
    impls = {"conv_impl": resolve_impl(conv_impl), "bn_impl": norm.resolve_impl(bn_impl)}
    strides = (1, 1, 2, 1, 2, 1)
    block = lambda **kw: Bottleneck(**impls, **kw)
    stages = [Stem(width=widths[0], **impls)]
    for planes, stride in zip(widths, strides, strict=True):
        stages.append(Group(block=block, planes=planes, num_blocks=n, stride=stride))
    stages.append(Head(num_classes))
    layers = (1,) + (3 * n,) * len(widths) + (1,)
    return StagedModel(name, tuple(stages), layers, num_classes)


def _basic_model(
    name: str,
    n: int,
    num_classes: int,
    conv_impl: str,
    bn_impl: str,
    shortcut: str,
    widths: Sequence[int] = (16, 32, 64),
) -> StagedModel:
    if shortcut not in ("A", "B"):
        raise ValueError(
            f"shortcut={shortcut!r}: use 'A' (identity + zero pad) or 'B' (projection)"
        )
    impls = {"conv_impl": resolve_impl(conv_impl), "bn_impl": norm.resolve_impl(bn_impl)}
    stages = [Stem(width=widths[0], **impls)]
    for g, planes in enumerate(widths):
        for b in range(n):
            stride = 2 if (g > 0 and b == 0) else 1
            block = lambda planes=planes, stride=stride, **kw: BasicBlock(
                planes=planes, stride=stride, shortcut=shortcut, **impls, **kw
            )
            stages.append(BlockStage(block=block))
    stages.append(Head(num_classes))
    layers = (1,) + (2,) * (n * len(widths)) + (1,)
    return StagedModel(name, tuple(stages), layers, num_classes)


PAPER_WIDTHS = (16, 16, 32, 32, 64, 64)


@register("resnet56")
def resnet56(num_classes: int = 10, conv_impl: str = "auto", bn_impl: str = "auto") -> StagedModel:
    return _bottleneck_model("resnet56", 3, num_classes, conv_impl, bn_impl, PAPER_WIDTHS)


@register("resnet110")
def resnet110(num_classes: int = 10, conv_impl: str = "auto", bn_impl: str = "auto") -> StagedModel:
    return _bottleneck_model("resnet110", 6, num_classes, conv_impl, bn_impl, PAPER_WIDTHS)


@register("tiny")
def tiny(num_classes: int = 10, conv_impl: str = "auto", bn_impl: str = "auto") -> StagedModel:
    """A bottleneck model with the same 8-stage structure, 1 block per group, width 4."""
    return _bottleneck_model("tiny", 1, num_classes, conv_impl, bn_impl, (4, 4, 8, 8, 8, 8))


for _depth in (8, 20, 32, 44, 56, 110):

    def _make(
        num_classes: int = 10,
        conv_impl: str = "auto",
        bn_impl: str = "auto",
        shortcut: str = "A",
        _d=_depth,
    ):
        n = (_d - 2) // 6
        return _basic_model(f"resnet{_d}_basic", n, num_classes, conv_impl, bn_impl, shortcut)

    register(f"resnet{_depth}_basic")(_make)


def build_model(
    name: str,
    num_classes: int = 10,
    conv_impl: str = "auto",
    bn_impl: str = "auto",
    aux_head: str = "linear",
    **kwargs,
) -> StagedModel:
    """Builds a registered model by name.

    Args:
      name: a key of :data:`MODELS`.
      num_classes: classifier outputs.
      conv_impl: convolution lowering, see :mod:`comdml_jax.models.conv`.
      bn_impl: batch-norm lowering, see :mod:`comdml_jax.models.norm`.
      aux_head: the cuts' auxiliary head, ``linear`` or ``conv``
        (:attr:`StagedModel.aux_head`).
      **kwargs: model-specific options (``shortcut`` for basic-block models).

    Returns:
      The :class:`StagedModel`.
    """
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; choose one of {sorted(MODELS)}")
    if aux_head not in catalog.AUX_HEADS:
        raise ValueError(
            f"model.aux_head={aux_head!r} is unknown; choose one of {catalog.AUX_HEADS}"
        )
    model = MODELS[name](num_classes=num_classes, conv_impl=conv_impl, bn_impl=bn_impl, **kwargs)
    return dataclasses.replace(
        model,
        aux_head=aux_head,
        conv_impl=resolve_impl(conv_impl),
        bn_impl=norm.resolve_impl(bn_impl),
    )


def count_params(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
