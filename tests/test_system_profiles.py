"""Profiles, topology and config validation (docs/timing_model.md)."""

import json

import numpy as np
import pytest

from comdml_jax.system import build_system, make_topology, profiles_at
from comdml_jax.system.topology import as_links, link_capacities
from configs import default


def cfg(**system):
    c = default.get_config()
    for k, v in system.items():
        if k in ("num_agents", "seed", "participation"):
            setattr(c, k, v)
        elif k.startswith("topology_"):
            setattr(c.system.topology, k[len("topology_") :], v)
        else:
            setattr(c.system, k, v)
    return c


@pytest.mark.parametrize("k", [10, 7, 1000])
def test_default_draw_is_balanced(k):
    cpu, bw = profiles_at(cfg(num_agents=k), 0)
    for values, profile_set in ((cpu, (4, 2, 1, 0.5, 0.2)), (bw, (0, 10, 20, 50, 100))):
        counts = [int(np.sum(values == v)) for v in profile_set]
        assert sum(counts) == k
        assert set(counts) <= {k // 5, k // 5 + 1}


def test_profiles_are_pure_in_seed_and_round():
    c = cfg(num_agents=200)
    a = profiles_at(c, 150)
    b = profiles_at(c, 150)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = profiles_at(cfg(num_agents=200, seed=1), 150)
    assert not np.array_equal(a[0], other[0])


def test_dynamics_redraw_a_fraction_at_round_100():
    c = cfg(num_agents=1000)
    base = profiles_at(c, 0)
    before = profiles_at(c, 99)
    after = profiles_at(c, 100)
    later = profiles_at(c, 250)
    assert np.array_equal(base[0], before[0]) and np.array_equal(base[1], before[1])
    changed = (after[0] != base[0]) | (after[1] != base[1])
    # 200 agents redraw; a redraw can land on the same values, so at most 200 change
    assert 100 < changed.sum() <= 200
    assert np.array_equal(after[0], later[0]) and np.array_equal(after[1], later[1])
    assert set(after[0]) <= {4, 2, 1, 0.5, 0.2}


def test_explicit_profiles_and_disconnection():
    c = cfg(
        num_agents=3, cpu=(1.0, 2.0, 0.25), bandwidth_mbps=(10.0, 0.0, 50.0), dynamics_rounds=()
    )
    cpu, bw = profiles_at(c, 7)
    assert cpu.tolist() == [1.0, 2.0, 0.25] and bw.tolist() == [10.0, 0.0, 50.0]
    state = build_system(c).round_env(0)
    assert state.participants.tolist() == [True, False, True]


def test_trace_last_entry_at_or_before_round(tmp_path):
    trace = {
        "rounds": [
            {"round": 0, "cpu": [1, 2], "bandwidth_mbps": [10, 20]},
            {"round": 5, "bandwidth_mbps": [0, 100]},
            {"round": 9, "cpu": [4, 4]},
        ]
    }
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    c = cfg(num_agents=2, trace=str(path))
    assert [x.tolist() for x in profiles_at(c, 4)] == [[1, 2], [10, 20]]
    assert [x.tolist() for x in profiles_at(c, 5)] == [[1, 2], [0, 100]]
    assert [x.tolist() for x in profiles_at(c, 100)] == [[4, 4], [0, 100]]


def test_c_is_min_bandwidth_on_edges():
    bw = np.array([10.0, 50.0, 0.0, 100.0])
    c = link_capacities(make_topology("full", 4), bw).dense()
    assert c.tolist() == [
        [0, 10, 0, 10],
        [10, 0, 0, 50],
        [0, 0, 0, 0],
        [10, 50, 0, 0],
    ]
    ring = link_capacities(make_topology("ring", 4), bw)
    assert ring.dense().tolist() == [
        [0, 10, 0, 10],
        [10, 0, 0, 0],
        [0, 0, 0, 0],
        [10, 0, 0, 0],
    ]
    assert ring.capacity([0, 1, 3], [3, 3, 0]).tolist() == [10, 0, 10]
    assert np.array_equal(as_links(ring.dense()).dense(), ring.dense())


def test_random_topology_is_seeded():
    a = make_topology("random", 30, p=0.2, seed=3).graph
    b = make_topology("random", 30, p=0.2, seed=3).graph
    assert sorted(a.edges()) == sorted(b.edges())
    assert make_topology("random", 30, p=0.0).graph.number_of_edges() == 0
    assert make_topology("random", 30, p=1.0).graph.number_of_edges() == 30 * 29 // 2


def test_non_complete_topology_keeps_the_main_component():
    # 0-1-2 connected, 3-4 connected elsewhere: the bigger group takes part
    c = cfg(
        num_agents=5,
        cpu=(1.0,) * 5,
        bandwidth_mbps=(10.0,) * 5,
        topology_kind="edges",
        topology_edges=((0, 1), (1, 2), (3, 4)),
    )
    assert build_system(c).round_env(0).participants.tolist() == [True, True, True, False, False]


def test_participation_samples_a_fraction():
    c = cfg(num_agents=50, participation=0.2, bandwidth_mbps=(10.0,) * 50)
    s = build_system(c)
    p0, p1 = s.round_env(0).participants, s.round_env(1).participants
    assert p0.sum() == 10 and p1.sum() == 10 and not np.array_equal(p0, p1)
    assert np.array_equal(p0, build_system(c).round_env(0).participants)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"num_agents": 3, "cpu": (1.0, 2.0)}, "system.cpu"),
        ({"num_agents": 2, "cpu": (1.0, 0.0)}, r"system.cpu\[1\]"),
        ({"num_agents": 2, "bandwidth_mbps": (10.0, -5.0)}, r"system.bandwidth_mbps\[1\]"),
        ({"cpu_profiles": ()}, "system.cpu_profiles"),
        ({"dynamics_fraction": 1.5}, "system.dynamics_fraction"),
        ({"trace": "/nonexistent/trace.json"}, "system.trace"),
        ({"topology_kind": "star"}, "system.topology.kind"),
        ({"topology_kind": "random", "topology_p": 1.5}, "system.topology.p"),
        (
            {"num_agents": 3, "topology_kind": "edges", "topology_edges": ((0, 3),)},
            r"system.topology.edges\[0\]",
        ),
        ({"participation": 0.0}, "participation"),
        ({"scheduler": "fastest"}, "system.scheduler"),
        ({"allreduce": "tree"}, "system.allreduce"),
        ({"cpu_flops": -1.0}, "system.cpu_flops"),
        ({"cpu_flops_calibration": "table9"}, "system.cpu_flops_calibration"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        build_system(cfg(**overrides))


def test_trace_errors_name_the_entry(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"rounds": [{"round": 0, "cpu": [1, 2], "bandwidth_mbps": [1]}]}))
    with pytest.raises(ValueError, match=r"rounds\[0\].bandwidth_mbps has 1 entries"):
        build_system(cfg(num_agents=2, trace=str(path)))
    path.write_text(json.dumps({"rounds": [{"round": 3, "cpu": [1, 2], "bandwidth_mbps": [1, 2]}]}))
    with pytest.raises(ValueError, match="first entry must be round 0"):
        build_system(cfg(num_agents=2, trace=str(path)))
