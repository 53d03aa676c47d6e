"""experiments.plan plans with a training run's per-agent batches (issue 14)."""

import os

import numpy as np
import pytest

from comdml_jax import experiment
from comdml_jax.data.agents import make_epoch_batches
from comdml_jax.data.partition import partition_for_run
from comdml_jax.errors import ConfigError
from comdml_jax.rng import stream
from configs import smoke
from experiments import plan as plan_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dirichlet_config(data_dir: str, **overrides):
    """The smoke config (tiny model, 300 images) with a label-skewed split and 2 local epochs."""
    c = smoke.get_config()
    c.data.data_dir = data_dir
    c.data.partition = "dirichlet"
    c.data.alpha = 0.3
    c.data.min_samples_per_agent = 10
    c.train.local_epochs = 2
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture(scope="module")
def training_batches(cifar10_dir, tmp_path_factory):
    """[K] batches of round 0 as a training run charges them (experiment.build), and trains them."""
    config = dirichlet_config(cifar10_dir)
    exp = experiment.build(config, tmp_path_factory.mktemp("run"))
    batches = make_epoch_batches(
        exp.parts,
        config.train.batch_size,
        stream(int(config.seed), "shuffle"),
        0,
        config.train.local_epochs,
    )
    trained = np.asarray(batches.num_batches)
    return config, exp.parts, np.asarray(exp.charged_batches), exp.profile, trained


def test_plan_batches_equal_a_training_run(training_batches):
    config, parts, charged, _, trained = training_batches
    sizes = [len(p) for p in parts]
    assert len(set(sizes)) > 1  # dirichlet: not an equal split
    assert any(n % 20 for n in sizes)  # and not multiples of B
    planned, classes = plan_cli.run_batches(config)
    assert planned.tolist() == charged.tolist() and classes == 10
    # and by hand: 2 epochs of N_i / 20 charged (issue 24; SPEC §1), while the engine
    # trains 2 epochs of ceil(N_i / 20) batches, the last one filled up by wrapping around
    assert planned.tolist() == pytest.approx([2 * n / 20 for n in sizes], rel=1e-15)
    assert trained.tolist() == [2 * -(-n // 20) for n in sizes]


def test_plan_cli_json_uses_the_training_batches(training_batches, plan_json):
    config, _, charged, profile, _ = training_batches
    (rec,) = plan_json(
        config.data.data_dir,
        profile,
        "--config.data.partition=dirichlet",
        "--config.data.alpha=0.3",
        "--config.train.local_epochs=2",
    )
    assert rec["agents"]["num_batches"] == charged.tolist()


@pytest.mark.parametrize("k", [301, 1000])
def test_more_agents_than_samples_is_refused(cifar10_dir, k):
    # 300 training images cannot give 301 agents one each
    config = dirichlet_config(cifar10_dir, num_agents=k, **{"data.partition": "iid"})
    with pytest.raises(ConfigError, match=rf"num_agents={k}.*300 training samples"):
        plan_cli.run_batches(config)
    with pytest.raises(ConfigError, match=rf"num_agents={k}"):
        partition_for_run(config, np.zeros(300, np.int32))


def test_an_empty_agent_is_refused_where_partitions_are_built():
    # a Dirichlet draw with min_samples_per_agent = 0 can leave agents empty; 2 samples, 3 agents
    # cannot avoid it, and K <= N holds, so the refusal comes from the partition itself
    config = smoke.get_config()
    config.num_agents = 3
    config.data.partition = "iid"
    labels = np.zeros(3, np.int32)
    assert [len(p) for p in partition_for_run(config, labels)] == [1, 1, 1]
    config.data.partition = "dirichlet"
    config.data.min_samples_per_agent = 0
    with pytest.raises(ConfigError, match="without samples"):
        for seed in range(20):  # some draw leaves an agent out (alpha 0.5 over 3 samples)
            config.seed = seed
            partition_for_run(config, labels)


def test_training_refuses_more_agents_than_the_training_set(cifar10_dir, tmp_path):
    # train_subset = 0 (all 50,000 images) passes validate_config; the partition refuses
    config = dirichlet_config(cifar10_dir, num_agents=50_001, **{"data.partition": "iid"})
    config.data.train_subset = 0
    config.system.cpu, config.system.bandwidth_mbps = (), ()  # drawn from the profile sets
    with pytest.raises(ConfigError, match=r"num_agents=50001.*50000 training samples"):
        experiment.build(config, tmp_path)
