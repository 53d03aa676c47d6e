"""Local-loss training steps, one pure function per (cut, role) (SPEC §3).

Every step is a pure function ``(state, inputs, labels, key=None) -> (state, aux)``
over a :class:`TrainState` pytree (params, batch statistics, optimiser state), so
it can be jitted, vmapped over an agent axis and scanned over batches. Roles:

* ``full``: the whole model on the agent's own data.
* ``slow``: stages [0, S - m) + the auxiliary head, trained on the local loss
  CE(aux(z), y). Returns ``stop_gradient(z)`` and y, the message to the partner.
* ``fast``: stages [S - m, S) trained on the received (detached) activations.
* ``pair``: ``slow`` followed by ``fast`` on its output, one program for both
  agents of a pair; no gradient crosses the cut.

Privacy (SPEC §8). The slow and pair steps take a
:class:`~comdml_jax.privacy.config.PrivacySpec`:

* NoPeek: the slow-side loss becomes (1 - α) CE(aux(z), y) + α dCor(x, z), x the
  slow agent's input batch and z the unshuffled activation at the cut; the step
  reports this objective as its loss.
* Patch shuffling: the detached z is patch-shuffled before it leaves the slow
  step (:func:`comdml_jax.privacy.shuffle.shuffle_patches`, keyed by the step's
  trailing ``key``), so the fast side trains on shuffled activations. The aux
  head pools globally, so it is blind to the shuffle; evaluation runs the
  unshuffled model.

``key`` is the step's trailing argument in every role so that callers need not
branch; only a shuffling step reads it (and needs it). With no option on (None,
or a spec with only DP), every step is traced exactly as without privacy.

:class:`StepPrograms` gives each (role, cut, step privacy) step and its key;
the engine jits each key once and reuses the compiled function afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from comdml_jax.models import split
from comdml_jax.models.conv import compiler_options
from comdml_jax.models.resnet import BatchStats, Params, StagedModel
from comdml_jax.privacy.config import PrivacySpec, step_privacy
from comdml_jax.privacy.nopeek import nopeek_loss
from comdml_jax.privacy.shuffle import shuffle_patches

Array = jax.Array
StepFn = Callable[..., tuple[Any, Any]]


class TrainState(NamedTuple):
    """What one side of one agent carries between batches."""

    params: Params
    batch_stats: BatchStats
    opt_state: optax.OptState


def make_optimizer(lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    """SGD with momentum (paper Sec. V-A); the learning rate is a state entry.

    The learning rate lives in ``opt_state.hyperparams['learning_rate']`` so the
    reduce-on-plateau schedule changes it without recompiling.
    """

    def sgd(learning_rate):
        parts = []
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay))
        parts.append(optax.sgd(learning_rate, momentum=momentum))
        return optax.chain(*parts)

    return optax.inject_hyperparams(sgd)(learning_rate=lr)


def init_state(params: Params, batch_stats: BatchStats, tx) -> TrainState:
    return TrainState(params, batch_stats, tx.init(params))


def set_lr(state: TrainState, lr) -> TrainState:
    """A copy of ``state`` whose optimiser uses learning rate ``lr``."""
    hyper = dict(state.opt_state.hyperparams)
    hyper["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return state._replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def cross_entropy(logits: Array, labels: Array) -> Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _apply_grads(tx, state: TrainState, grads, new_stats) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), new_stats, opt_state)


def full_step_fn(model: StagedModel, tx) -> StepFn:
    """One full-model SGD step: ``(state, x, y, key=None) -> (state, loss)``; ``key`` unused."""

    def step(state: TrainState, x: Array, y: Array, key: Array | None = None):
        del key

        def loss_fn(params):
            logits, new_stats = model.apply(params, state.batch_stats, x, train=True)
            return cross_entropy(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _apply_grads(tx, state, grads, new_stats), loss

    return step


def slow_step_fn(model: StagedModel, tx, cut: int, privacy: PrivacySpec | None = None) -> StepFn:
    """Slow side at ``cut``: ``(state, x, y, key=None) -> (state, (z, y, loss))``.

    The loss is the local loss CE(aux(z), y) (paper eq. (2)), or NoPeek's
    (1 - α) CE + α dCor(x, z) when ``privacy.nopeek``; z is returned through
    ``stop_gradient``, so nothing flows back from the partner, and patch-shuffled
    with ``key`` when ``privacy.patch_shuffle``.

    Args:
      model: the staged model.
      tx: the optimiser.
      cut: the cut m >= 1.
      privacy: NoPeek and patch shuffling options; None (or neither on): plain step.

    Returns:
      The pure step.
    """
    opts = step_privacy(privacy)
    nopeek = opts is not None and opts.nopeek
    shuffle = opts is not None and opts.patch_shuffle

    def step(state: TrainState, x: Array, y: Array, key: Array | None = None):
        if shuffle and key is None:
            raise ValueError("privacy.patch_shuffle needs the step's key argument")

        def loss_fn(params):
            logits, z, new_stats = split.slow_forward(
                model, params, state.batch_stats, x, cut, True
            )
            loss = cross_entropy(logits, y)
            if nopeek:
                loss = nopeek_loss(loss, x, z, opts.nopeek_alpha)
            return loss, (z, new_stats)

        (loss, (z, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = _apply_grads(tx, state, grads, new_stats)
        z = jax.lax.stop_gradient(z)
        if shuffle:
            z = shuffle_patches(z, key, opts.patch_size)
        return new_state, (z, y, loss)

    return step


def fast_step_fn(model: StagedModel, tx, cut: int) -> StepFn:
    """Fast side at ``cut`` on received activations: ``(state, z, y, key=None) -> (state, loss)``
    (paper eq. (3)); ``key`` unused."""

    def step(state: TrainState, z: Array, y: Array, key: Array | None = None):
        del key

        def loss_fn(params):
            logits, new_stats = split.fast_forward(model, params, state.batch_stats, z, cut, True)
            return cross_entropy(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _apply_grads(tx, state, grads, new_stats), loss

    return step


def pair_step_fn(model: StagedModel, tx, cut: int, privacy: PrivacySpec | None = None) -> StepFn:
    """A pair's step: the slow step, then the fast step on its detached (shuffled) output.

    ``((slow_state, fast_state), x, y, key=None) ->
    ((slow_state, fast_state), (slow_loss, fast_loss))``; ``key`` keys the patch
    shuffle (see :func:`slow_step_fn`).
    """
    slow = slow_step_fn(model, tx, cut, privacy)
    fast = fast_step_fn(model, tx, cut)

    def step(states, x: Array, y: Array, key: Array | None = None):
        slow_state, fast_state = states
        slow_state, (z, y, slow_loss) = slow(slow_state, x, y, key)
        fast_state, fast_loss = fast(fast_state, z, y)
        return (slow_state, fast_state), (slow_loss, fast_loss)

    return step


def masked(step: StepFn) -> StepFn:
    """Wraps a step so that ``mask == False`` leaves the state bit-identical.

    Used under ``lax.scan`` over padded batches: a padded batch makes no
    parameter, batch-statistic or optimiser update.
    """

    def wrapped(state, mask: Array, *inputs):
        new_state, aux = step(state, *inputs)
        keep = lambda new, old: jnp.where(mask, new, old)
        return jax.tree.map(keep, new_state, state), aux

    return wrapped


# role -> (model, tx, cut, privacy) -> step; full and fast ignore the privacy options.
ROLES: dict[str, Callable[..., StepFn]] = {
    "full": lambda model, tx, cut, privacy=None: full_step_fn(model, tx),
    "slow": slow_step_fn,
    "fast": lambda model, tx, cut, privacy=None: fast_step_fn(model, tx, cut),
    "pair": pair_step_fn,
}

# Roles whose program the privacy step options change.
PRIVATE_ROLES = ("slow", "pair")


class StepPrograms:
    """The un-jitted steps of a model and optimiser, and the key each compiles under.

    The engine jits and caches them itself (``train.engine``, keyed by
    :meth:`key`, guarded against re-tracing).

    Args:
      model: the model.
      tx: the optimiser.
      xla_options: compiler options; default :func:`compiler_options` of the platform.
    """

    def __init__(self, model: StagedModel, tx, xla_options: dict | None = None):
        self.model = model
        self.tx = tx
        self.xla_options = compiler_options() if xla_options is None else xla_options

    def pure(self, role: str, cut: int = 0, privacy: PrivacySpec | None = None) -> StepFn:
        """The un-jitted step, for composing under vmap/scan."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
        return ROLES[role](self.model, self.tx, cut, privacy)

    @staticmethod
    def key(role: str, cut: int = 0, privacy: PrivacySpec | None = None) -> tuple:
        """The cache key: ``(role, cut)``, plus the step privacy when it changes the step.

        The key is also :meth:`pure`'s arguments. Privacy that does not change the
        role's program (off, DP only, or a full/fast role) adds nothing, so those
        share one compiled step.
        """
        opts = step_privacy(privacy) if role in PRIVATE_ROLES else None
        base = (role, 0 if role == "full" else cut)
        return base if opts is None else (*base, opts)
