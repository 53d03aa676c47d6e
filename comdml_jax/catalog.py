"""The registries' names and facts, without JAX: what config checking reads.

The registries themselves (``methods.METHODS``, ``models.resnet.MODELS``, ...)
live with what they hold, in modules that import JAX and Flax. Checking a
config needs only their names and a few facts about each method, so those are
written here once; the config checks (``comdml_jax.config_check`` and the
layers' ``models.config`` and ``train.config``) read this module and a bad
``--config.x=y`` is refused before JAX loads (experiments/run.py). Each
JAX-side registry is checked against this catalog by tests/test_registries.py,
so the two cannot drift apart.

The data set and partition registries (``data.sources``, ``data.partition``)
import no JAX themselves and are read directly.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MethodFacts:
    """What config checking knows about one method.

    Attributes:
      per_agent: the agents keep their own models across rounds (no single
        aggregate: central DP has nothing to noise).
      exchange: what follows training: allreduce | server | gossip | pull | mix.
      paper: the method is one of the paper's comparison (a comparison's default set).
      splits: the method can split a model between a slow and a fast agent
        (the only case in which ``privacy.nopeek`` and ``privacy.patch_shuffle``
        act: they work on the activation sent at the cut).
      trains_as: the method trains exactly this other method's models whenever the
        two take the same participants (same start, same merge, same streams): a
        comparison with both may reprice that method's finished run instead of
        training again (``comdml_jax.reprice``); None for every other method.
    """

    per_agent: bool
    exchange: str
    splits: bool
    paper: bool = True
    trains_as: str | None = None


METHODS: dict[str, MethodFacts] = {
    "allreduce": MethodFacts(per_agent=False, exchange="allreduce", splits=False),
    "braintorrent": MethodFacts(per_agent=True, exchange="pull", splits=False),
    "comdml": MethodFacts(per_agent=False, exchange="allreduce", splits=True),
    "dpsgd": MethodFacts(per_agent=True, exchange="mix", splits=False, paper=False),
    "fedavg": MethodFacts(per_agent=False, exchange="server", splits=False, trains_as="allreduce"),
    "gossip": MethodFacts(per_agent=True, exchange="gossip", splits=False),
}

SPLITTING_METHODS: tuple[str, ...] = tuple(m for m, f in sorted(METHODS.items()) if f.splits)

MODELS: tuple[str, ...] = (
    "resnet110",
    "resnet110_basic",
    "resnet20_basic",
    "resnet32_basic",
    "resnet44_basic",
    "resnet56",
    "resnet56_basic",
    "resnet8_basic",
    "tiny",
)
"""``model.name``: the keys of ``models.resnet.MODELS``."""

INITS: tuple[str, ...] = ("paper", "lecun")
"""``model.init``: the weight-init schemes of ``models.init``."""

AUX_HEADS: tuple[str, ...] = ("linear", "conv")
"""``model.aux_head``: ``linear`` (the paper's GAP + Dense) or ``conv`` (one 3x3 conv-BN-ReLU
before it; ``models.resnet.ConvHead``)."""

ADDED_FIELDS: dict[str, object] = {
    "model.aux_head": "linear",
    "system.pairing_links": "direct",
    "train.aux_front_weight": 1.0,
    "optim.warmup_rounds": 0,
}
"""Config fields added after runs were recorded, each with the value that behaves as the
code before it did: a recorded ``config.json`` without the field reads as that value, so
resuming or reusing such a run is not refused (``run_dir.config_diff``,
``comparison.config_differences``), and code reading such a config gets it
(:func:`added_field`)."""


def added_field(config, dotted: str):
    """``config``'s value of one of :data:`ADDED_FIELDS`, its old-behaviour value if absent."""
    section, _, name = dotted.rpartition(".")
    node = config
    for part in section.split(".") if section else ():
        node = node[part]
    return node.get(name, ADDED_FIELDS[dotted])


CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "matmul")
"""``model.conv_impl`` (``models.conv.IMPLS``)."""

BN_IMPLS: tuple[str, ...] = ("auto", "plain", "materialize")
"""``model.bn_impl`` (``models.norm.IMPLS``)."""

BACKENDS: tuple[str, ...] = ("auto", "loop", "vmap")
"""``train.backend`` (``train.engine.BACKENDS``)."""

ON_NONFINITE: tuple[str, ...] = ("stop", "skip")
"""``train.on_nonfinite`` (``train.engine.ON_NONFINITE``)."""

AGGREGATIONS: tuple[str, ...] = ("psum", "halving_doubling")
"""``train.aggregation``: the keys of ``train.collectives.ALGORITHMS``."""
