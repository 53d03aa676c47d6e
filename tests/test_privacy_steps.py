"""NoPeek and patch shuffling inside the slow/pair steps (comdml_jax.train.steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from comdml_jax.models import split
from comdml_jax.models.resnet import build_model
from comdml_jax.privacy.config import DpSpec, PrivacySpec
from comdml_jax.privacy.nopeek import distance_correlation
from comdml_jax.privacy.shuffle import shuffle_patches
from comdml_jax.train import steps

CUT = 3  # tiny: the activation at this cut is [B, 16, 16, 32]
NOPEEK = PrivacySpec(nopeek=True, nopeek_alpha=0.5)
SHUFFLE = PrivacySpec(patch_shuffle=True, patch_size=2)


@pytest.fixture(scope="module")
def setup():
    model = build_model("tiny", conv_impl="xla")
    params, stats = model.init(jax.random.key(0))
    aux = split.init_all_aux(model, jax.random.key(1))
    tx = steps.make_optimizer(0.1)
    sp, fp = split.split_tree(model, params, CUT)
    ss, fs = split.split_tree(model, stats, CUT)
    sp = {**sp, split.AUX: aux[split.aux_key(CUT)]}
    states = (steps.init_state(sp, ss, tx), steps.init_state(fp, fs, tx))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=8), jnp.int32)
    return model, tx, states, x, y


@pytest.fixture(scope="module")
def plain(setup):
    """The plain (no privacy) pair and slow steps' outputs, computed once."""
    model, tx, states, x, y = setup
    pair = jax.jit(steps.pair_step_fn(model, tx, CUT))(states, x, y)
    slow = jax.jit(steps.slow_step_fn(model, tx, CUT))(states[0], x, y)
    return pair, slow


def _reference_slow(model, tx, cut):
    """The slow step as it was before privacy (a copy of the pre-privacy code)."""

    def step(state, x, y):
        def loss_fn(params):
            logits, z, new_stats = split.slow_forward(
                model, params, state.batch_stats, x, cut, True
            )
            return steps.cross_entropy(logits, y), (z, new_stats)

        (loss, (z, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = steps.TrainState(optax.apply_updates(state.params, updates), new_stats, opt_state)
        return new, (jax.lax.stop_gradient(z), y, loss)

    return step


def _reference_fast(model, tx, cut):
    def step(state, z, y):
        def loss_fn(params):
            logits, new_stats = split.fast_forward(model, params, state.batch_stats, z, cut, True)
            return steps.cross_entropy(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return steps.TrainState(
            optax.apply_updates(state.params, updates), new_stats, opt_state
        ), loss

    return step


def _reference_pair(model, tx, cut):
    slow, fast = _reference_slow(model, tx, cut), _reference_fast(model, tx, cut)

    def step(states, x, y):
        s, f = states
        s, (z, y, sl) = slow(s, x, y)
        f, fl = fast(f, z, y)
        return (s, f), (sl, fl)

    return step


def _bits_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(
        np.asarray(u).dtype == np.asarray(v).dtype
        and np.shape(u) == np.shape(v)
        and np.asarray(u).tobytes() == np.asarray(v).tobytes()
        for u, v in zip(la, lb, strict=True)
    )


def _patch_rows(z, p):
    b, h, w, c = z.shape
    t = np.asarray(z).reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, (h // p) * (w // p), -1)


@pytest.mark.parametrize("privacy", [None, PrivacySpec(), PrivacySpec(dp=DpSpec("laplace"))])
def test_privacy_off_traces_the_plain_program(setup, privacy):
    model, tx, states, x, y = setup
    ref = _reference_pair(model, tx, CUT)
    new = steps.pair_step_fn(model, tx, CUT, privacy)
    assert str(jax.make_jaxpr(new)(states, x, y)) == str(jax.make_jaxpr(ref)(states, x, y))
    slow_new = steps.slow_step_fn(model, tx, CUT, privacy)
    slow_ref = _reference_slow(model, tx, CUT)
    assert str(jax.make_jaxpr(slow_new)(states[0], x, y)) == str(
        jax.make_jaxpr(slow_ref)(states[0], x, y)
    )


def test_privacy_off_gives_the_plain_numbers_bit_for_bit(setup, plain):
    model, tx, states, x, y = setup
    want = jax.jit(_reference_pair(model, tx, CUT))(states, x, y)
    assert _bits_equal(plain[0], want)
    got = jax.jit(steps.pair_step_fn(model, tx, CUT, PrivacySpec()))(
        states, x, y, jax.random.key(5)
    )
    assert _bits_equal(got, want)


def test_step_key_holds_only_the_step_privacy_that_changes_the_program():
    """Off and DP-only share the plain key; NoPeek and shuffling each get their own;
    full and fast programs never depend on it (the engine compiles once per key)."""
    key = steps.StepPrograms.key
    plain = key("pair", CUT)
    assert plain == ("pair", CUT)
    assert key("pair", CUT, PrivacySpec()) == plain
    assert key("pair", CUT, PrivacySpec(dp=DpSpec("gaussian"))) == plain
    assert key("pair", CUT, NOPEEK) == ("pair", CUT, NOPEEK) != plain
    assert key("pair", CUT, SHUFFLE) not in (plain, key("pair", CUT, NOPEEK))
    assert key("full", 0, NOPEEK) == key("full", 3) == ("full", 0)
    assert key("fast", CUT, SHUFFLE) == ("fast", CUT)
    assert key("slow", CUT, PrivacySpec(dp=DpSpec("laplace"))) == ("slow", CUT)


def test_nopeek_with_alpha_zero_is_plain_cross_entropy(setup, plain):
    model, tx, states, x, y = setup
    zero = jax.jit(steps.pair_step_fn(model, tx, CUT, PrivacySpec(nopeek=True, nopeek_alpha=0.0)))(
        states, x, y
    )
    (ps, pf), (pl, pfl) = plain[0]
    (zs, zf), (zl, zfl) = zero
    assert float(zl) == float(pl) and float(zfl) == float(pfl)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), zs, ps)
    assert _bits_equal(zf, pf)


def test_nopeek_loss_and_update_follow_the_formula(setup, plain):
    model, tx, states, x, y = setup
    slow_state, fast_state = states
    alpha = NOPEEK.nopeek_alpha

    def objective(params):
        logits, z, new_stats = split.slow_forward(
            model, params, slow_state.batch_stats, x, CUT, True
        )
        ce = steps.cross_entropy(logits, y)
        return (1 - alpha) * ce + alpha * distance_correlation(x, z), (ce, z)

    (want_loss, (ce, z)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
        slow_state.params
    )
    updates, _ = tx.update(grads, slow_state.opt_state, slow_state.params)
    want_params = optax.apply_updates(slow_state.params, updates)

    (new_slow, new_fast), (loss, _) = jax.jit(steps.pair_step_fn(model, tx, CUT, NOPEEK))(
        states, x, y
    )
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert float(loss) != pytest.approx(float(ce), rel=1e-3)  # dCor really enters
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        new_slow.params,
        want_params,
    )
    # NoPeek changes the slow side only: z is the pre-update activation either way
    assert _bits_equal(new_fast, plain[0][0][1])


def test_shuffled_activation_is_a_patch_permutation_of_the_plain_one(setup, plain):
    model, tx, states, x, y = setup
    key = jax.random.fold_in(jax.random.key(3), 17)
    plain_state, (z, _, plain_loss) = plain[1]
    shuffled_step = jax.jit(steps.slow_step_fn(model, tx, CUT, SHUFFLE))
    shuf_state, (zs, _, shuf_loss) = shuffled_step(states[0], x, y, key)
    rows, rows_s = _patch_rows(z, 2), _patch_rows(zs, 2)
    for i in range(z.shape[0]):
        assert sorted(r.tobytes() for r in rows[i]) == sorted(r.tobytes() for r in rows_s[i])
        assert not np.array_equal(rows[i], rows_s[i])
    np.testing.assert_array_equal(zs, shuffle_patches(z, key, 2))
    # the slow side trains exactly as without shuffling (its aux head pools globally)
    assert _bits_equal(shuf_state, plain_state) and float(shuf_loss) == float(plain_loss)
    # another step's key gives another permutation
    _, (zs2, _, _) = shuffled_step(states[0], x, y, jax.random.fold_in(jax.random.key(3), 18))
    assert not np.array_equal(zs, zs2)


def test_the_fast_side_trains_on_the_shuffled_activation(setup, plain):
    model, tx, states, x, y = setup
    key = jax.random.key(11)
    (_, fast), (_, fast_loss) = jax.jit(steps.pair_step_fn(model, tx, CUT, SHUFFLE))(
        states, x, y, key
    )
    _, (z, _, _) = plain[1]
    want, want_loss = jax.jit(steps.fast_step_fn(model, tx, CUT))(
        states[1], shuffle_patches(z, key, 2), y
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), fast, want)
    assert float(fast_loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert not _bits_equal(fast, plain[0][0][1])


def test_shuffling_needs_a_key_and_masked_steps_pass_it(setup):
    model, tx, states, x, y = setup
    with pytest.raises(ValueError, match="patch_shuffle needs the step's key"):
        steps.pair_step_fn(model, tx, CUT, SHUFFLE)(states, x, y)
    masked = jax.jit(steps.masked(steps.pair_step_fn(model, tx, CUT, SHUFFLE)))
    kept, _ = masked(states, jnp.bool_(False), x, y, jax.random.key(0))
    assert _bits_equal(kept, states)
