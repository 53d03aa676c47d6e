"""Local-loss training steps, one pure function per (cut, role) (SPEC §3).

Every step is a pure function ``(state, inputs, labels) -> (state, aux)`` over
a :class:`TrainState` pytree (params, batch statistics, optimiser state), so it
can be jitted, vmapped over an agent axis and scanned over batches. Roles:

* ``full``: the whole model on the agent's own data.
* ``slow``: stages [0, S - m) + the auxiliary head, trained on the local loss
  CE(aux(z), y). Returns ``stop_gradient(z)`` and y, the message to the partner.
* ``fast``: stages [S - m, S) trained on the received (detached) activations.
* ``pair``: ``slow`` followed by ``fast`` on its output, one program for both
  agents of a pair; no gradient crosses the cut.

:class:`StepCache` jits each (role, cut) once and hands back the same compiled
function afterwards.
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
    """One full-model SGD step: ``(state, x, y) -> (state, loss)``."""

    def step(state: TrainState, x: Array, y: Array):
        def loss_fn(params):
            logits, new_stats = model.apply(params, state.batch_stats, x, train=True)
            return cross_entropy(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _apply_grads(tx, state, grads, new_stats), loss

    return step


def slow_step_fn(model: StagedModel, tx, cut: int) -> StepFn:
    """Slow side at ``cut``: ``(state, x, y) -> (state, (z, y, loss))``.

    The loss is the local loss CE(aux(z), y) (paper eq. (2)); z is returned
    through ``stop_gradient``, so nothing flows back from the partner.
    """

    def step(state: TrainState, x: Array, y: Array):
        def loss_fn(params):
            logits, z, new_stats = split.slow_forward(
                model, params, state.batch_stats, x, cut, True
            )
            return cross_entropy(logits, y), (z, new_stats)

        (loss, (z, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _apply_grads(tx, state, grads, new_stats), (jax.lax.stop_gradient(z), y, loss)

    return step


def fast_step_fn(model: StagedModel, tx, cut: int) -> StepFn:
    """Fast side at ``cut`` on received activations: ``(state, z, y) -> (state, loss)``
    (paper eq. (3))."""

    def step(state: TrainState, z: Array, y: Array):
        def loss_fn(params):
            logits, new_stats = split.fast_forward(model, params, state.batch_stats, z, cut, True)
            return cross_entropy(logits, y), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return _apply_grads(tx, state, grads, new_stats), loss

    return step


def pair_step_fn(model: StagedModel, tx, cut: int) -> StepFn:
    """A pair's step: the slow step, then the fast step on its detached output.

    ``((slow_state, fast_state), x, y) -> ((slow_state, fast_state), (slow_loss, fast_loss))``.
    """
    slow = slow_step_fn(model, tx, cut)
    fast = fast_step_fn(model, tx, cut)

    def step(states, x: Array, y: Array):
        slow_state, fast_state = states
        slow_state, (z, y, slow_loss) = slow(slow_state, x, y)
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


ROLES: dict[str, Callable[..., StepFn]] = {
    "full": lambda model, tx, cut: full_step_fn(model, tx),
    "slow": slow_step_fn,
    "fast": fast_step_fn,
    "pair": pair_step_fn,
}


class StepCache:
    """Jitted steps, one per (role, cut), traced and compiled once each.

    Args:
      model: the model.
      tx: the optimiser.
      donate: donate the state argument (the engine never reuses it).
      xla_options: compiler options; default :func:`compiler_options` of the platform.
    """

    def __init__(
        self, model: StagedModel, tx, donate: bool = True, xla_options: dict | None = None
    ):
        self.model = model
        self.tx = tx
        self.donate = donate
        self.xla_options = compiler_options() if xla_options is None else xla_options
        self._jitted: dict[tuple[str, int], StepFn] = {}

    def pure(self, role: str, cut: int = 0) -> StepFn:
        """The un-jitted step, for composing under vmap/scan."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
        return ROLES[role](self.model, self.tx, cut)

    def get(self, role: str, cut: int = 0) -> StepFn:
        """The jitted step for (role, cut), compiled on first use."""
        key = (role, 0 if role == "full" else cut)
        if key not in self._jitted:
            donate = (0,) if self.donate else ()
            self._jitted[key] = jax.jit(
                self.pure(*key), donate_argnums=donate, compiler_options=self.xla_options
            )
        return self._jitted[key]
