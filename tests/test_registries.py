"""Listing the registries (comdml_jax.registries, experiments/list.py)."""

import json

from comdml_jax.registries import CONFIG_FIELDS, describe, registries


def test_every_registry_is_listed_with_all_its_keys():
    import comdml_jax.system  # noqa: F401  (registers "exact")
    from comdml_jax.data.partition import PARTITIONS
    from comdml_jax.data.sources import DATASETS
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


def test_the_jax_free_catalog_matches_every_jax_side_registry():
    """config_check reads comdml_jax.catalog; the registries it mirrors must agree with it."""
    from comdml_jax import catalog
    from comdml_jax.methods import METHODS
    from comdml_jax.models import conv, norm
    from comdml_jax.models.resnet import MODELS
    from comdml_jax.train import engine
    from comdml_jax.train.aggregate import ALGORITHMS

    assert sorted(catalog.METHODS) == sorted(METHODS)
    for name, facts in catalog.METHODS.items():
        method = METHODS[name]()
        assert (facts.per_agent, facts.exchange) == (method.per_agent, method.exchange), name
    # Only ComDML plans slow/fast pairs (system.plan); the others train every agent alone.
    assert catalog.SPLITTING_METHODS == ("comdml",)
    assert sorted(catalog.MODELS) == sorted(MODELS)
    assert catalog.CONV_IMPLS == conv.IMPLS and catalog.BN_IMPLS == norm.IMPLS
    assert catalog.BACKENDS == engine.BACKENDS and catalog.ON_NONFINITE == engine.ON_NONFINITE
    assert sorted(catalog.AGGREGATIONS) == sorted(ALGORITHMS)


def test_config_check_imports_neither_jax_nor_the_data_stack():
    """A bad config is refused before JAX loads (issue 24 item 6): checked in a fresh process."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from comdml_jax import config_check, launch, run_dir, comparison\n"
        "from configs.smoke import get_config\n"
        "c = get_config(); c.data.data_dir = '/nonexistent'\n"
        "config_check.validate_config(c)\n"
        "bad = [m for m in ('jax', 'flax', 'optax', 'tensorflow', 'tensorflow_datasets',\n"
        "                   'matplotlib') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"imported by the config check: {out.stdout.strip()}"
