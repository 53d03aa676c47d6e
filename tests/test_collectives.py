"""The AllReduce collectives and the aggregation algorithms (issue 12)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from comdml_jax.system import timing
from comdml_jax.train import aggregate, collectives

DEVICE_COUNTS = (2, 3, 4, 6, 8)
# Odd sizes, so the flattened vector is never a multiple of the core size.
SHAPES = {"w": (3, 5, 7), "b": (11,), "s": (), "m": (1, 13)}


def _per_device_trees(d: int, seed: int):
    """[d, *shape] float32 leaves: device i's partial pytree is row i."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(d, *s)).astype(np.float32) for k, s in SHAPES.items()}


def _allreduce_on(d: int, algorithm: str, tree):
    """Runs the named collective on the first ``d`` devices; returns every device's copy."""
    mesh = aggregate.make_mesh(jax.devices()[:d])
    allreduce = collectives.get(algorithm)

    def local(t):
        out = allreduce(jax.tree.map(lambda x: x[0], t), aggregate.AXIS)
        return jax.tree.map(lambda x: x[None], out)  # [1, ...] per device: keeps every copy

    fn = jax.shard_map(
        local, mesh=mesh, in_specs=P(aggregate.AXIS), out_specs=P(aggregate.AXIS), check_vma=False
    )
    return jax.tree.map(np.asarray, jax.jit(fn)(tree))


@pytest.mark.parametrize("d", DEVICE_COUNTS)
def test_halving_doubling_equals_psum_on_every_device(d):
    assert jax.device_count() >= d
    tree = _per_device_trees(d, seed=d)
    hd = _allreduce_on(d, "halving_doubling", tree)
    ps = _allreduce_on(d, "psum", tree)
    for k, shape in SHAPES.items():
        want = tree[k].astype(np.float64).sum(0)  # the hand sum, independent of both
        assert hd[k].shape == ps[k].shape == (d, *shape)
        assert hd[k].dtype == np.float32
        for i in range(d):  # every device holds the whole sum, the extra ones too
            np.testing.assert_allclose(hd[k][i], ps[k][i], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(hd[k][i], want, rtol=1e-5, atol=1e-6)


def test_halving_doubling_on_one_device_is_the_identity():
    tree = _per_device_trees(1, seed=0)
    out = _allreduce_on(1, "halving_doubling", tree)
    for k in SHAPES:
        np.testing.assert_array_equal(out[k], tree[k])


def _ppermute_sizes(d: int, n: int) -> list[int]:
    """Element counts of the ppermutes that the collective traces for an [n] vector."""
    mesh = aggregate.make_mesh(jax.devices()[:d])
    fn = jax.shard_map(
        lambda x: collectives.halving_doubling_allreduce(x[0], aggregate.AXIS)[None],
        mesh=mesh,
        in_specs=P(aggregate.AXIS),
        out_specs=P(aggregate.AXIS),
        check_vma=False,
    )
    jaxpr = jax.make_jaxpr(fn)(jnp.zeros((d, n), jnp.float32))
    sizes = []

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "ppermute":
                sizes.append(int(np.prod(eqn.invars[0].aval.shape)))
            for value in eqn.params.values():  # sub-jaxprs: shard_map's body, pjit's
                for item in value if isinstance(value, tuple | list) else (value,):
                    sub = getattr(item, "jaxpr", item)
                    if hasattr(sub, "eqns"):
                        walk(sub)

    walk(jaxpr.jaxpr)
    return sizes


@pytest.mark.parametrize("d", (2, 3, 4, 5, 6, 8))
def test_steps_and_bytes_are_what_the_timing_model_prices(d):
    """The messages the collective sends are the ones halving_doubling_s charges for."""
    n = 8 * 105  # a multiple of every core size here, so no padding enters the count
    sizes = _ppermute_sizes(d, n)
    bytes_ = 4 * n
    # halving_doubling_s with alpha = 1 s and no bytes counts the steps; with alpha = 0 and
    # beta = 8e-6 Mbps, X(b) = b seconds, so it returns the bytes each device moves.
    steps = timing.halving_doubling_s(d, 0.0, 1.0, 1.0)
    priced_bytes = timing.halving_doubling_s(d, bytes_, 8e-6, 0.0)
    assert len(sizes) == pytest.approx(steps)
    assert 4 * sum(sizes) == pytest.approx(priced_bytes, rel=1e-9)


def _numpy_mix(stacked, w):
    return {k: np.tensordot(w, v.astype(np.float64), axes=(1, 0)) for k, v in stacked.items()}


@pytest.mark.parametrize("algorithm", tuple(aggregate.ALGORITHMS))
def test_mix_and_weighted_average_match_numpy_with_either_algorithm(algorithm):
    rng = np.random.default_rng(3)
    k = 7
    stacked = {k_: rng.normal(size=(k, *s)).astype(np.float32) for k_, s in SHAPES.items()}
    w = rng.uniform(size=(3, k))
    w[2, :4] = 0.0  # a sparse row
    sizes = np.array([3.0, 0.0, 1.0, 7.0, 2.0, 5.0, 4.0])
    for d in (1, 3, 6, 8):
        mesh = aggregate.make_mesh(jax.devices()[:d])
        got = aggregate.mix(stacked, w, mesh, algorithm)
        want = _numpy_mix(stacked, w)
        avg = aggregate.weighted_average(stacked, sizes, mesh, algorithm)
        want_avg = _numpy_mix(stacked, (sizes / sizes.sum())[None])
        for key in SHAPES:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(avg[key], want_avg[key][0], rtol=1e-5, atol=1e-6)
            assert avg[key].dtype == np.float32


def test_unknown_algorithm_names_the_config_field():
    mesh = aggregate.make_mesh(jax.devices()[:2])
    with pytest.raises(ValueError, match="train.aggregation='ring'"):
        aggregate.weighted_average({"a": np.ones((2, 3), np.float32)}, [1.0, 1.0], mesh, "ring")
