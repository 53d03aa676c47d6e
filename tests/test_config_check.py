"""Config validation before any work (issue 13): a table of bad configs, the data-free
size checks, the aggregation rule, the partition check and the path checks.

Every bad config goes through ``experiment.run`` with the data loader replaced by
one that fails the test, so each must be refused before any data is loaded, and
the workdir must not exist afterwards (nothing was written).
"""

import json
import logging

import ml_collections
import numpy as np
import pytest

from comdml_jax import experiment, run_dir
from comdml_jax.config_check import validate_config
from comdml_jax.data.config import largest_agent_bound
from comdml_jax.data.datasets import load_dataset
from comdml_jax.data.sources import DATASETS
from comdml_jax.errors import ConfigError
from comdml_jax.train.config import check_partition
from configs import smoke

K = 5  # agents in the smoke config; 300 training samples, so 60 per agent (IID)


def smoke_config(**overrides):
    c = smoke.get_config()
    c.data.data_dir = "/nonexistent"
    c.update_from_flattened_dict(overrides)
    return c


def with_lr_string(c):
    c.optim = ml_collections.ConfigDict({**c.optim.to_dict(), "lr": "0.1"})
    return c


def with_download_string(c):
    c.data = ml_collections.ConfigDict({**c.data.to_dict(), "download": "yes"})
    return c


def with_include_valid(c):
    c.data.include_valid = True
    return c


EDGES = "system.topology.edges"
# (overrides or a function of the smoke config, the field, a fragment of its message)
BAD_CONFIGS = [
    ({"seed": -1}, "seed", "--config.seed=-1 is invalid"),
    ({"method": "nope"}, "method", "--config.method='nope' is invalid: choose one of"),
    ({"rounds": 0}, "rounds", "--config.rounds=0 is invalid"),
    ({"target_accuracy": 1.5}, "target_accuracy", "--config.target_accuracy=1.5 is invalid"),
    ({"model.name": "resnet9000"}, "model.name", "--config.model.name='resnet9000'"),
    ({"model.conv_impl": "fft"}, "model.conv_impl", "--config.model.conv_impl='fft'"),
    ({"model.bn_impl": "fused"}, "model.bn_impl", "--config.model.bn_impl='fused'"),
    (with_download_string, "data.download", "--config.data.download='yes' is invalid"),
    ({"train.aggregation": "ring"}, "train.aggregation", "--config.train.aggregation='ring'"),
    ({"train.on_nonfinite": "ignore"}, "train.on_nonfinite", "--config.train.on_nonfinite="),
    ({"eval_agents_every": -1}, "eval_agents_every", "--config.eval_agents_every=-1 is invalid"),
    ({"system.server_bandwidth_mbps": 0.0}, "system.server_bandwidth_mbps", "must be > 0"),
    ({"num_agents": 0}, "num_agents", "--config.num_agents=0 is invalid"),
    (
        {"num_agents": 1, "system.cpu": (1.0,), "system.bandwidth_mbps": (10.0,)},
        "num_agents",
        "--config.num_agents=1 is invalid: use an integer >= 2 (a single agent",
    ),
    ({"data.name": "mnist"}, "data.name", "--config.data.name='mnist' is invalid"),
    (with_include_valid, "data.include_valid", "cifar10 has no valid split"),
    ({"data.partition": "shards"}, "data.partition", "--config.data.partition='shards'"),
    ({"data.alpha": 0.0}, "data.alpha", "--config.data.alpha=0.0 is invalid"),
    (
        {"data.train_subset": 100000},
        "data.train_subset",
        "--config.data.train_subset=100000 is invalid: cifar10 has 50000 training samples; "
        "use 1..50000",
    ),
    (
        {"data.test_subset": 20000},
        "data.test_subset",
        "--config.data.test_subset=20000 is invalid: cifar10 has 10000 test samples",
    ),
    (
        {"data.train_subset": 40},
        "data.train_subset",
        "--config.data.train_subset=40 is invalid: 40 training samples cannot give each of the "
        "5 agents at least data.min_samples_per_agent=10",
    ),
    ({"data.cutout": -1}, "data.cutout", "--config.data.cutout=-1 is invalid"),
    (
        {"train.batch_size": 61},
        "train.batch_size",
        "--config.train.batch_size=61 is invalid: every agent holds at most 60 training samples",
    ),
    (
        # Dirichlet: 4 agents keep >= 10 samples each, so no agent can hold more than 260.
        {"data.partition": "dirichlet", "train.batch_size": 261},
        "train.batch_size",
        "--config.train.batch_size=261 is invalid: every agent holds at most 260",
    ),
    ({"model.init": "kaiming"}, "model.init", "--config.model.init='kaiming' is invalid"),
    ({"model.aux_head": "mlp"}, "model.aux_head", "--config.model.aux_head='mlp' is invalid"),
    (
        {"system.pairing_links": "multihop"},
        "system.pairing_links",
        "system.pairing_links = 'multihop' is unknown",
    ),
    ({"train.batch_size": 0}, "train.batch_size", "--config.train.batch_size=0 is invalid"),
    ({"train.local_epochs": 0}, "train.local_epochs", "--config.train.local_epochs=0"),
    ({"train.backend": "gpu"}, "train.backend", "--config.train.backend='gpu'"),
    (with_lr_string, "optim.lr", "--config.optim.lr='0.1' is invalid: the learning rate"),
    ({"optim.momentum": 1.0}, "optim.momentum", "--config.optim.momentum=1.0 is invalid"),
    ({"optim.plateau_factor": 1.5}, "optim.plateau_factor", "--config.optim.plateau_factor=1.5"),
    (
        # optax refuses 1.0 once the run has loaded its data: refused here, before any work.
        {"optim.plateau_factor": 1.0},
        "optim.plateau_factor",
        "--config.optim.plateau_factor=1.0 is invalid",
    ),
    ({"optim.min_lr": 1.0}, "optim.min_lr", "--config.optim.min_lr=1.0 is invalid: use a value"),
    ({"eval_every": 0}, "eval_every", "--config.eval_every=0 is invalid"),
    ({"eval_batch_size": 0}, "eval_batch_size", "--config.eval_batch_size=0 is invalid"),
    ({"checkpoint_every": -1}, "checkpoint_every", "--config.checkpoint_every=-1 is invalid"),
    ({"participation": 0.0}, "participation", r"participation = 0.0 must be in (0, 1]"),
    ({"participation": 1.5}, "participation", r"participation = 1.5 must be in (0, 1]"),
    (
        {"participation": 0.2},
        "participation",
        "--config.participation=0.2 is invalid: it samples 1 of the 5 agents per round",
    ),
    ({"system.latency_s": -1.0}, "system.latency_s", "system.latency_s = -1.0 must be >= 0"),
    ({"system.allreduce": "tree"}, "system.allreduce", "system.allreduce"),
    ({"system.cpu_gamma": 0.0}, "system.cpu_gamma", "system.cpu_gamma = 0.0 must be > 0"),
    ({"system.scheduler": "magic"}, "system.scheduler", "system.scheduler = 'magic' is unknown"),
    ({"system.topology.kind": "mesh"}, "system.topology.kind", "'mesh' is unknown"),
    (
        {"system.topology.kind": "random", "system.topology.p": 1.5},
        "system.topology.p",
        "system.topology.p = 1.5 must be a probability in [0, 1]",
    ),
    (
        {"system.topology.kind": "random", "system.topology.p": 0.0},
        "system.topology.p",
        "--config.system.topology.p=0.0 is invalid: with it no two agents with bandwidth > 0 "
        "are linked",
    ),
    (
        {"system.topology.kind": "edges", EDGES: ((0, 9),)},
        EDGES,
        "system.topology.edges[0] = (0, 9) names an agent outside 0..4",
    ),
    (
        # The only edge ends at agent 1, which has no link (bandwidth 0).
        {
            "system.topology.kind": "edges",
            EDGES: ((0, 1),),
            "system.bandwidth_mbps": (100.0, 0.0, 20.0, 50.0, 10.0),
        },
        EDGES,
        "--config.system.topology.edges=((0, 1),) is invalid: with it no two agents",
    ),
    (
        {"system.bandwidth_mbps": (0.0,) * K},
        "system.bandwidth_mbps",
        "--config.system.bandwidth_mbps=(0.0, 0.0, 0.0, 0.0, 0.0) is invalid: no agent has a link",
    ),
    (
        {"system.bandwidth_mbps": (100.0, 0.0, 0.0, 0.0, 0.0)},
        "system.bandwidth_mbps",
        "is invalid: only one agent has a link (bandwidth > 0) in rounds 0..1",
    ),
    (
        {"system.bandwidth_mbps": (), "system.bandwidth_profiles_mbps": (0.0,)},
        "system.bandwidth_profiles_mbps",
        "--config.system.bandwidth_profiles_mbps=(0.0,) is invalid: no agent has a link",
    ),
    (
        {"system.cpu": (1.0, 2.0)},
        "system.cpu",
        "system.cpu has 2 entries but num_agents = 5",
    ),
    ({"system.cpu": ("fast",) * K}, "system.cpu", "system.cpu must be a list of numbers"),
    (
        {"system.dynamics_fraction": 1.5},
        "system.dynamics_fraction",
        "system.dynamics_fraction = 1.5 must be in [0, 1]",
    ),
    ({"system.dynamics_rounds": (-1,)}, "system.dynamics_rounds", "must be non-negative"),
    (
        {"system.trace": "/nonexistent/trace.json"},
        "system.trace",
        "system.trace = '/nonexistent/trace.json' is not a file",
    ),
    # privacy options that act on the activation at the cut, on methods that never split
    (
        {"method": "allreduce", "privacy.nopeek": True},
        "privacy.nopeek",
        "method allreduce never splits a model",
    ),
    (
        {"method": "fedavg", "privacy.patch_shuffle": True},
        "privacy.patch_shuffle",
        "methods that split: comdml",
    ),
    (
        {"system.scheduler": "none", "privacy.nopeek": True},
        "privacy.nopeek",
        "system.scheduler='none' never pairs agents",
    ),
    ({"train.aux_front_weight": 1.5}, "train.aux_front_weight", "a number in [0, 1]"),
    ({"optim.warmup_rounds": 2}, "optim.warmup_rounds", "an integer in [0, rounds=2)"),
    ({"optim.warmup_rounds": -1}, "optim.warmup_rounds", "an integer in [0, rounds="),
    (
        {"method": "allreduce", "train.aux_front_weight": 0.5},
        "train.aux_front_weight",
        "never splits a model",
    ),
    (
        {"system.scheduler": "none", "train.aux_front_weight": 0.0},
        "train.aux_front_weight",
        "never splits a model",
    ),
    (
        {
            "train.aux_front_weight": 0.5,
            "privacy.dp.mechanism": "gaussian",
            "privacy.dp.placement": "central",
        },
        "train.aux_front_weight",
        "central DP calibrates its noise",
    ),
]


def _apply(case):
    return case(smoke_config()) if callable(case) else smoke_config(**case)


@pytest.fixture
def no_data(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the config was validated")

    monkeypatch.setattr(experiment, "dataset_from_config", fail)


def test_the_table_covers_at_least_25_distinct_fields():
    assert len(BAD_CONFIGS) >= 25
    assert len({field for _, field, _ in BAD_CONFIGS}) >= 25


@pytest.mark.parametrize("case, field, message", BAD_CONFIGS, ids=[f for _, f, _ in BAD_CONFIGS])
def test_bad_config_is_refused_before_any_work(case, field, message, tmp_path, no_data):
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        experiment.run(_apply(case), workdir)
    text = str(err.value)
    assert field in text, text
    assert message in text, text
    assert not workdir.exists()


def test_the_smoke_config_itself_passes():
    validate_config(smoke_config())


# ------------------------------------------------------------------ sizes


def test_registered_split_sizes_match_the_loaded_data(cifar10_dir):
    ds = load_dataset("cifar10", cifar10_dir)
    spec = DATASETS["cifar10"]
    assert (spec.num_train, spec.num_test) == (ds.num_train, ds.num_test) == (50000, 10000)


def test_cinic10_train_size_counts_valid_only_when_included():
    spec = DATASETS["cinic10"]
    assert spec.train_size(False) == 90000 and spec.train_size(True) == 180000
    c = smoke_config(**{"data.name": "cinic10", "data.train_subset": 0})
    assert largest_agent_bound(c) == 90000 // K
    c.data.include_valid = True
    assert largest_agent_bound(c) == 180000 // K
    validate_config(c)  # cinic10 has a valid split
    c.data.train_subset = 150000  # more than train alone (90,000), less than train + valid
    validate_config(c)


def test_eval_every_beyond_the_plateau_patience_is_warned_about(caplog):
    """The plateau schedule reads the scheduled evaluations (issue 24 item 11)."""
    with caplog.at_level(logging.WARNING):
        validate_config(smoke_config(**{"eval_every": 1, "optim.plateau_patience": 1}))
        validate_config(smoke_config(**{"eval_every": 3, "optim.plateau_patience": 3}))
    assert "eval_every" not in caplog.text
    with caplog.at_level(logging.WARNING):
        validate_config(smoke_config(rounds=30, **{"eval_every": 3, "optim.plateau_patience": 2}))
    assert "eval_every=3 is larger than optim.plateau_patience=2" in caplog.text
    assert "lowered only after 6 rounds without a better accuracy instead of 2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        validate_config(smoke_config(rounds=3, **{"eval_every": 10}))  # smoke: patience 1
    assert "this run of 3 rounds has no scheduled evaluation, so the lr never changes" in (
        caplog.text
    )


def test_batch_larger_than_some_iid_agents_is_only_a_warning(caplog):
    # 302 samples over 5 agents: 61, 61, 60, 60, 60.
    c = smoke_config(**{"data.train_subset": 302, "train.batch_size": 61})
    with caplog.at_level(logging.WARNING):
        validate_config(c)
    assert "larger than the 60 samples of some agents" in caplog.text
    c.train.batch_size = 62
    with pytest.raises(ConfigError, match="every agent holds at most 61"):
        validate_config(c)


def test_check_partition_refuses_a_batch_larger_than_every_agent(caplog):
    c = smoke_config(**{"train.batch_size": 6})
    parts = [np.arange(5), np.arange(5, 8)]
    with pytest.raises(ConfigError) as err:
        check_partition(c, parts)
    text = str(err.value)
    assert "--config.train.batch_size=6 is invalid: every agent holds at most 5" in text
    assert "num_agents" in text and "data.train_subset" in text
    c.train.batch_size = 4
    with caplog.at_level(logging.WARNING):
        check_partition(c, parts)  # agent 0 has a full batch
    assert "larger than the data of 1 of 2 agents (smallest: 3 samples, agent 1)" in caplog.text


# ------------------------------------------------------------------ aggregation rule


def only_agent_0_connected_until_round_1(rounds):
    """Round 0: only agent 0 has a link; at round 1 every agent redraws a 50 Mbps link."""
    return smoke_config(
        rounds=rounds,
        **{
            "system.bandwidth_mbps": (100.0, 0.0, 0.0, 0.0, 0.0),
            "system.bandwidth_profiles_mbps": (50.0,),
            "system.dynamics_rounds": (1,),
            "system.dynamics_fraction": 1.0,
        },
    )


def test_rounds_that_cannot_aggregate_are_warned_about_when_later_rounds_can(caplog):
    with caplog.at_level(logging.WARNING):
        system = validate_config(only_agent_0_connected_until_round_1(rounds=3))
    assert "round 0: at most one agent can take part" in caplog.text
    assert system.participants_at(0).sum() == 1 and system.participants_at(1).sum() == K


def test_a_run_that_ends_before_the_redraw_is_refused():
    with pytest.raises(ConfigError, match="only one agent has a link .* in round 0,"):
        validate_config(only_agent_0_connected_until_round_1(rounds=1))


def test_trace_segments_decide_the_rule(tmp_path):
    trace = tmp_path / "trace.json"
    rounds = [
        {"round": 0, "cpu": [1.0] * K, "bandwidth_mbps": [10.0, 0.0, 0.0, 0.0, 0.0]},
        {"round": 5, "bandwidth_mbps": [10.0] * K},
    ]
    trace.write_text(json.dumps({"rounds": rounds}))
    validate_config(smoke_config(rounds=6, **{"system.trace": str(trace)}))
    with pytest.raises(ConfigError, match=r"--config\.system\.trace="):
        validate_config(smoke_config(rounds=5, **{"system.trace": str(trace)}))


def test_a_ring_with_alternate_agents_disconnected_cannot_aggregate():
    # Agents 0, 2 have links, but their ring neighbours 1, 3 (and 4) do not.
    c = smoke_config(
        **{
            "system.topology.kind": "ring",
            "system.bandwidth_mbps": (10.0, 0.0, 10.0, 0.0, 0.0),
        }
    )
    with pytest.raises(ConfigError, match="--config.system.topology.kind='ring' is invalid"):
        validate_config(c)
    c.system.bandwidth_mbps = (10.0, 10.0, 0.0, 0.0, 0.0)  # 0 -- 1 is a usable ring edge
    validate_config(c)


def test_fedavg_needs_no_peer_links_but_the_peer_methods_do():
    # p = 0: no agent is linked to another. FedAvg's agents reach the server
    # whatever the peer topology (docs/timing_model.md), so it runs with all 5 taking part;
    # the methods that exchange with peers are refused.
    from comdml_jax.methods import get_method

    over = {"system.topology.kind": "random", "system.topology.p": 0.0}
    system = validate_config(smoke_config(method="fedavg", **over))
    state = system.round_env(0, get_method("fedavg").take_part)
    assert state.participants.tolist() == [True] * K
    for method in ("allreduce", "comdml", "gossip", "braintorrent"):
        with pytest.raises(ConfigError, match="no two agents with bandwidth > 0 are linked"):
            validate_config(smoke_config(method=method, **over))


# ------------------------------------------------------------------ paths


def test_a_workdir_that_is_a_file_is_refused_untouched(tmp_path, no_data):
    workdir = tmp_path / "run"
    workdir.write_text("not a folder")
    with pytest.raises(run_dir.WorkdirError, match="--workdir=.*run is invalid: it is a file"):
        experiment.run(smoke_config(), workdir)
    assert workdir.read_text() == "not a folder"


def test_a_workdir_below_a_file_is_refused(tmp_path, no_data):
    (tmp_path / "f").write_text("")
    with pytest.raises(run_dir.WorkdirError, match="cannot be created: .*f is a file"):
        experiment.run(smoke_config(), tmp_path / "f" / "run")


def test_an_unwritable_workdir_is_refused(tmp_path, monkeypatch, no_data):
    # The tests may run as root, who may write anywhere: deny through os.access.
    locked = tmp_path / "locked"
    locked.mkdir()
    real = run_dir.os.access
    monkeypatch.setattr(run_dir.os, "access", lambda p, m: str(p) != str(locked) and real(p, m))
    with pytest.raises(run_dir.WorkdirError, match="cannot be created: .*locked is not writable"):
        experiment.run(smoke_config(), locked / "run")
    with pytest.raises(run_dir.WorkdirError, match="locked is invalid: it is not writable"):
        experiment.run(smoke_config(), locked)
    assert list(locked.iterdir()) == []


def test_an_unusable_cache_dir_is_refused(tmp_path, no_data):
    cache = tmp_path / "cache"
    cache.write_text("")
    c = smoke_config(**{"data.cache_dir": str(cache)})
    with pytest.raises(run_dir.WorkdirError, match=r"--config\.data\.cache_dir=.* it is a file"):
        experiment.run(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_read_only_cache_that_holds_the_data_set_is_fine(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "cifar10-3.0.2-0123456789abcdef").mkdir(parents=True)
    (cache / "cifar10-3.0.2-0123456789abcdef" / "meta.json").write_text("{}")
    real = run_dir.os.access
    monkeypatch.setattr(run_dir.os, "access", lambda p, m: str(p) != str(cache) and real(p, m))
    c = smoke_config(**{"data.cache_dir": str(cache)})
    run_dir.check_paths(c, tmp_path / "run")
    c.data.name = "cifar100"  # no entry for it: it would have to be written
    with pytest.raises(run_dir.WorkdirError, match="cache.* is not writable"):
        run_dir.check_paths(c, tmp_path / "run")
