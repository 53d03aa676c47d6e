"""``train.aggregation``: the ppermute halving/doubling AllReduce against lax.psum in whole runs
(issue 12). The tests fake 8 devices, so on the full mesh every merge really sums across it."""

import dataclasses

import chex
import jax
import numpy as np
import pytest

from comdml_jax import experiment
from comdml_jax.train import aggregate
from configs import smoke


def _runs(cifar10_dir, tmp_path, method, devices, rounds=2):
    out = {}
    for algo in ("psum", "halving_doubling"):
        c = smoke.get_config()
        c.data.data_dir = cifar10_dir
        c.method = method
        c.train.aggregation = algo
        exp = experiment.build(c, tmp_path / f"{algo}{len(devices)}")
        exp = dataclasses.replace(exp, mesh=aggregate.make_mesh(devices))
        state = rounds.initial_state(exp)
        recs = []
        for _ in range(rounds):
            state, rec = rounds.run_round(exp, state)
            recs.append({k: v for k, v in rec.items() if k != "wall_time_s"})
        out[algo] = (state, recs)
    return out["psum"], out["halving_doubling"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["comdml", "gossip"])
def test_on_one_device_both_settings_give_identical_runs(cifar10_dir, tmp_path, method):
    (sa, ra), (sb, rb) = _runs(cifar10_dir, tmp_path, method, jax.devices()[:1])
    for a, b in zip(ra, rb, strict=True):
        for k in a:
            np.testing.assert_equal(a[k], b[k], err_msg=k)
    chex.assert_trees_all_equal(sa.method, sb.method)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["comdml", "gossip"])
def test_on_eight_devices_both_settings_agree_to_float_rounding(cifar10_dir, tmp_path, method):
    assert jax.device_count() == 8
    (sa, ra), (sb, rb) = _runs(cifar10_dir, tmp_path, method, jax.devices(), rounds=1)
    a, b = ra[0], rb[0]
    for k in ("sim_time_s", "round_time_s", "compute_s", "comm_s", "exchange_s", "pairs"):
        np.testing.assert_equal(a[k], b[k], err_msg=k)  # the timing model ignores the collective
    assert a["train_loss"] == b["train_loss"]  # the same training from the same start
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
    # One merge: the two collectives add the same partial sums in different orders.
    for x, y in zip(jax.tree.leaves(sa.method), jax.tree.leaves(sb.method), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
