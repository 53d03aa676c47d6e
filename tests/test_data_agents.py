"""Per-agent padded batches: counts and masks, coverage, wrap-around fill, shuffling, padding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from comdml_jax.data.agents import AgentBatches, make_agent_batches, pad_agents

KEY = jax.random.key(0)


def _parts(sizes, seed=0):
    """Disjoint index sets of the given sizes out of a shuffled 0..sum-1."""
    perm = np.random.default_rng(seed).permutation(sum(sizes))
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes)[:-1])]


def test_counts_and_masks_by_hand():
    # B = 4: 7 samples -> 2 batches, 3 -> 1, 15 -> 4, 0 -> 0, 8 -> 2; max 4.
    batches = make_agent_batches(_parts([7, 3, 15, 0, 8]), 4, KEY, 0)
    assert batches.idx.shape == (5, 4, 4) and batches.idx.dtype == jnp.int32
    assert np.array_equal(batches.num_batches, [2, 1, 4, 0, 2])
    assert np.array_equal(batches.num_samples, [7, 3, 15, 0, 8])
    assert np.array_equal(
        batches.mask,
        [
            [True, True, False, False],
            [True, False, False, False],
            [True, True, True, True],
            [False, False, False, False],
            [True, True, False, False],
        ],
    )
    idx, mask = np.asarray(batches.idx), np.asarray(batches.mask)
    assert not idx[~mask].any()  # padding batches are index 0


def _check_agent(idx_k, part, batch_size):
    """Coverage and wrap-around of one agent's real batches; returns its shuffled order."""
    n = len(part)
    nb = math.ceil(n / batch_size)
    flat = idx_k[:nb].reshape(-1)
    assert flat.shape == (nb * batch_size,)
    first = flat[:n]
    assert np.array_equal(np.sort(first), np.sort(part))  # every sample exactly once
    if n:  # the tail wraps around to the start (cyclically, when B > N)
        assert np.array_equal(flat, first[np.arange(nb * batch_size) % n])
    return first


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=3, max_size=3),
    batch_size=st.sampled_from([1, 7, 16]),
    round_=st.integers(0, 1000),
)
def test_every_agent_covers_its_samples_with_wraparound_fill(sizes, batch_size, round_):
    # A fourth agent of 40 samples pins the padded shape, so only 3 programs compile.
    sizes = [40, *sizes]
    parts = _parts(sizes, seed=sum(sizes))
    batches = make_agent_batches(parts, batch_size, KEY, round_)
    idx = np.asarray(batches.idx)
    assert np.array_equal(batches.num_batches, [math.ceil(n / batch_size) for n in sizes])
    for k, part in enumerate(parts):
        _check_agent(idx[k], part, batch_size)


def test_shuffle_is_the_documented_key_derivation():
    # Agent k in round r: permutation(fold_in(fold_in(key, r), k), width) of the
    # padded width (max batches * B), keeping the entries < N_k in their order.
    parts = _parts([10, 6, 3])
    batch_size, round_ = 4, 5
    width = 3 * batch_size  # ceil(10 / 4) = 3 batches
    batches = make_agent_batches(parts, batch_size, KEY, round_)
    for k, part in enumerate(parts):
        key = jax.random.fold_in(jax.random.fold_in(KEY, round_), k)
        perm = np.asarray(jax.random.permutation(key, width))
        order = perm[perm < len(part)]
        got = _check_agent(np.asarray(batches.idx[k]), part, batch_size)
        assert np.array_equal(got, part[order])


def test_reshuffles_across_rounds_and_agents_and_repeats_under_the_same_key():
    same = [np.arange(50), np.arange(50)]  # two agents holding the same indices
    r0 = make_agent_batches(same, 10, KEY, 0)
    r0_again = make_agent_batches(same, 10, jax.random.key(0), 0)
    r1 = make_agent_batches(same, 10, KEY, 1)
    other_key = make_agent_batches(same, 10, jax.random.key(1), 0)
    idx0 = np.asarray(r0.idx)
    assert np.array_equal(idx0, np.asarray(r0_again.idx))
    assert not np.array_equal(idx0[0], idx0[1])  # agents differ
    assert not np.array_equal(idx0, np.asarray(r1.idx))  # rounds differ
    assert not np.array_equal(idx0, np.asarray(other_key.idx))  # keys differ


def test_round_may_be_traced():
    parts = _parts([9, 4])
    traced = jax.jit(lambda r: make_agent_batches(parts, 4, KEY, r))(jnp.int32(3))
    direct = make_agent_batches(parts, 4, KEY, 3)
    for a, b in zip(traced, direct, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_pad_agents_to_a_device_multiple():
    batches = make_agent_batches(_parts([7, 3, 15]), 4, KEY, 0)
    padded = pad_agents(batches, 8)
    assert isinstance(padded, AgentBatches)
    assert padded.idx.shape == (8, 4, 4) and padded.mask.shape == (8, 4)
    for a, b in zip(padded, batches, strict=True):
        assert np.array_equal(np.asarray(a[:3]), np.asarray(b))
        assert not np.asarray(a[3:]).any()  # idx 0, mask False, 0 batches, 0 samples
    assert pad_agents(batches, 3) is batches
    assert pad_agents(batches, 1) is batches
    assert pad_agents(batches, 2).num_agents == 4


def test_several_epochs_are_packed_at_the_front_and_each_covers_the_agent():
    from comdml_jax.data.agents import make_epoch_batches

    parts = [np.arange(0, 7), np.arange(7, 10), np.arange(10, 22)]
    key = jax.random.key(5)
    got = make_epoch_batches(parts, 4, key, round_=3, epochs=2)
    one = [make_agent_batches(parts, 4, jax.random.fold_in(key, e), 3) for e in range(2)]
    nb = np.asarray(one[0].num_batches)  # ceil(7/4)=2, ceil(3/4)=1, ceil(12/4)=3
    np.testing.assert_array_equal(nb, [2, 1, 3])
    np.testing.assert_array_equal(got.num_batches, 2 * nb)
    idx, mask = np.asarray(got.idx), np.asarray(got.mask)
    for a, part in enumerate(parts):
        real = 2 * nb[a]
        assert mask[a, :real].all() and not mask[a, real:].any()
        for e in range(2):
            rows = idx[a, e * nb[a] : (e + 1) * nb[a]]
            np.testing.assert_array_equal(rows, np.asarray(one[e].idx)[a, : nb[a]])
            assert set(rows.ravel()) == set(part)  # each epoch sees every sample
    single = make_epoch_batches(parts, 4, key, round_=3, epochs=1)
    np.testing.assert_array_equal(
        single.idx, make_agent_batches(parts, 4, jax.random.fold_in(key, 0), 3).idx
    )
