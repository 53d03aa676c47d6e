"""Listing the registries (comdml_jax.registries, experiments/list.py)."""

import json

from comdml_jax.registries import CONFIG_FIELDS, describe, registries


def test_every_registry_is_listed_with_all_its_keys():
    import comdml_jax.system  # noqa: F401  (registers "exact")
    from comdml_jax.data.datasets import DATASETS
    from comdml_jax.data.partition import PARTITIONS
    from comdml_jax.methods import METHODS
    from comdml_jax.models.resnet import MODELS
    from comdml_jax.system.scheduler import SCHEDULERS
    from comdml_jax.system.timing import ALLREDUCE
    from comdml_jax.system.topology import TOPOLOGIES

    tables = registries()
    expected = {
        "models": MODELS,
        "methods": METHODS,
        "schedulers": SCHEDULERS,
        "datasets": DATASETS,
        "partitions": PARTITIONS,
        "topologies": TOPOLOGIES,
        "allreduce": ALLREDUCE,
    }
    assert {k: sorted(v) for k, v in tables.items()} == {k: sorted(v) for k, v in expected.items()}
    assert set(CONFIG_FIELDS) == set(tables)
    assert {"resnet56", "resnet110", "tiny", "resnet8_basic"} <= set(tables["models"])
    assert {"comdml", "allreduce"} <= set(tables["methods"])


def test_descriptions_come_from_the_docstrings():
    tables = registries()
    assert tables["partitions"]["iid"] == "An equal, uniformly random split of the samples."
    assert tables["topologies"]["full"] == "every pair is an edge."  # the module's entry list
    assert tables["allreduce"]["ring"].startswith("Ring AllReduce")
    assert tables["methods"]["comdml"].startswith("ComDML (paper Sec. IV)")
    assert tables["models"]["resnet56"] == "bottleneck ResNet, 56 weight layers in 8 stages"
    assert tables["datasets"]["cifar100"].startswith("100 classes")

    def documented():
        """First line.

        More.
        """

    assert describe("x", documented) == "First line."


def test_list_command_prints_every_key():
    import pytest

    from experiments import list as list_cmd

    text = list_cmd.render([])
    for reg, entries in registries().items():
        assert f"{reg} (--config.{CONFIG_FIELDS[reg]}):" in text
        for k in entries:
            assert f"\n  {k} " in text
    assert json.loads(list_cmd.render(["methods"], as_json=True)) == {
        "methods": registries()["methods"]
    }
    with pytest.raises(ValueError, match="unknown registry"):
        list_cmd.render(["nope"])
