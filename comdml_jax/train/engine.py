"""The round engine: trains a planned round and aggregates it (SPEC §3-4).

The engine is method-agnostic. A method hands it a :class:`RoundPlan` (who
takes part, who offloads to whom at which cut); the engine

1. groups agents by (role, cut): every participant that does not offload runs
   a ``full`` local epoch on its own data; every offloading pair runs a
   ``pair`` epoch (the slow step on the slow agent's data, then the fast step
   on the detached activations);
2. runs each group through an *agent backend* (as fedjax's
   ``for_each_client`` backends): ``loop`` calls one jitted step per batch from
   Python (fastest on XLA:CPU), ``vmap`` runs one jitted ``vmap`` over the
   group's agents with ``lax.scan`` over their padded, masked batches, sharded
   over the device mesh with ``shard_map`` (for GPU/TPU);
3. aggregates the agents' models, data-size weighted, with ``shard_map`` +
   ``psum`` (:mod:`comdml_jax.train.aggregate`); auxiliary heads are averaged
   per cut over the agents that used that cut.

Both backends derive every random number from
``fold_in(fold_in(fold_in(key, round), agent), batch)`` and give the same
numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from comdml_jax import rng
from comdml_jax.data.agents import AgentBatches
from comdml_jax.data.augment import augment, batch_key
from comdml_jax.models import split
from comdml_jax.models.resnet import StagedModel
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train import aggregate, steps

Array = jax.Array
PyTree = Any
BACKENDS = ("auto", "loop", "vmap")


class GlobalModel(NamedTuple):
    """The global model every agent starts a round from.

    Attributes:
      params: per-stage params.
      batch_stats: per-stage BN running statistics.
      aux: one auxiliary head per cut m >= 1, keyed ``"m{m}"``.
    """

    params: PyTree
    batch_stats: PyTree
    aux: dict[str, PyTree]


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The training set on device and how batches are augmented.

    Attributes:
      x: uint8 [N, H, W, C] training images.
      y: int32 [N] labels.
      mean: per-channel mean (normalisation).
      std: per-channel std.
      crop: random crop with 4-pixel padding.
      flip: random horizontal flip.
      cutout: Cutout side, 0 = off.
    """

    x: Array
    y: Array
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: bool = True
    flip: bool = True
    cutout: int = 0

    def batch(self, x_all: Array, y_all: Array, idx: Array, key: Array) -> tuple[Array, Array]:
        """Gathers and augments one batch (traceable)."""
        x = augment(
            key, x_all[idx], self.mean, self.std, crop=self.crop, flip=self.flip, cutout=self.cutout
        )
        return x, y_all[idx]


@dataclasses.dataclass(frozen=True)
class Group:
    """Agents that run the same program this round.

    Attributes:
      role: ``full`` or ``pair``.
      cut: the cut of a ``pair`` group (0 for ``full``).
      agents: the agents whose data is trained on (the slow agents of pairs).
      partners: the fast partners of a ``pair`` group (empty for ``full``).
    """

    role: str
    cut: int
    agents: tuple[int, ...]
    partners: tuple[int, ...] = ()


def groups_of(plan: RoundPlan) -> list[Group]:
    """Splits a plan into a ``full`` group and one ``pair`` group per cut, in a fixed order."""
    part = np.asarray(plan.participants, bool)
    partner = np.asarray(plan.partner)
    cut = np.asarray(plan.cut)
    slow = part & (partner >= 0)
    groups = []
    full = tuple(int(i) for i in np.flatnonzero(part & ~slow))
    if full:
        groups.append(Group("full", 0, full))
    for m in sorted(set(int(c) for c in cut[slow])):
        agents = tuple(int(i) for i in np.flatnonzero(slow & (cut == m)))
        groups.append(Group("pair", m, agents, tuple(int(partner[i]) for i in agents)))
    return groups


@dataclasses.dataclass
class AgentModels:
    """Every participant's model after its local epoch, stacked on a leading axis.

    Attributes:
      params: per-stage params, [P, ...] leaves, in the order of ``order``.
      batch_stats: per-stage BN statistics, likewise.
      order: the agent of each row.
      aux: cut -> (stacked aux heads of that cut's slow agents, those agents).
      train_loss: [K] mean local loss per agent (NaN for agents that sat out).
    """

    params: PyTree
    batch_stats: PyTree
    order: tuple[int, ...]
    aux: dict[int, tuple[PyTree, tuple[int, ...]]]
    train_loss: np.ndarray


@dataclasses.dataclass
class RoundResult:
    """What a trained round produced, before it is priced.

    Attributes:
      model: the new global model.
      train_loss: [K] mean training loss of each agent's local epoch (the real
        head's loss, i.e. the fast side's for offloading agents); NaN for agents
        that sat out.
    """

    model: GlobalModel
    train_loss: np.ndarray


def resolve_backend(backend: str, platform: str | None = None) -> str:
    """``auto``: ``loop`` on CPU (measured faster there), ``vmap`` on GPU/TPU."""
    if backend not in BACKENDS:
        raise ValueError(f"train.backend={backend!r} is not one of {BACKENDS}")
    if backend != "auto":
        return backend
    return "loop" if (platform or jax.default_backend()) == "cpu" else "vmap"


class Engine:
    """Trains and aggregates rounds for any method.

    Args:
      model: the staged model.
      tx: the optimiser (SGD with momentum, learning rate in its state).
      data: the training data on device.
      backend: ``loop``, ``vmap`` or ``auto``.
      mesh: the 1-D ``agents`` mesh used for aggregation (and by ``vmap``).
      seed: the run seed; augmentation keys derive from ``jax.random.key(seed)``.
    """

    def __init__(self, model: StagedModel, tx, data: TrainData, backend: str, mesh, seed: int):
        self.model = model
        self.tx = tx
        self.data = data
        self.backend = resolve_backend(backend)
        self.mesh = mesh
        self.home = SingleDeviceSharding(mesh.devices.flat[0])
        self.key = rng.stream(seed, "augment")
        self.steps = steps.StepCache(model, tx)
        self._loop_steps: dict[tuple[str, int], Callable] = {}
        self._vmap_epochs: dict[tuple[str, int], Callable] = {}
        self._start = jax.jit(self._start_states, static_argnames=("role", "cut"))

    # -- states ---------------------------------------------------------------

    def _start_states(self, g: GlobalModel, lr, role: str, cut: int):
        """Fresh optimiser state(s) from the global model (new buffers, safe to donate)."""
        copy = lambda t: jax.tree.map(jnp.copy, t)
        if role == "full":
            return steps.set_lr(steps.init_state(copy(g.params), copy(g.batch_stats), self.tx), lr)
        sp, fp = split.split_tree(self.model, copy(g.params), cut)
        ss, fs = split.split_tree(self.model, copy(g.batch_stats), cut)
        sp = {**sp, split.AUX: copy(g.aux[split.aux_key(cut)])}
        slow = steps.set_lr(steps.init_state(sp, ss, self.tx), lr)
        fast = steps.set_lr(steps.init_state(fp, fs, self.tx), lr)
        return slow, fast

    # -- the per-batch program ---------------------------------------------------

    def _data_step(self, role: str, cut: int):
        """``(state, x_all, y_all, idx, key) -> (state, loss)``: gather, augment, step."""
        step = self.steps.pure(role, cut)
        data = self.data

        def run(state, x_all, y_all, idx, key):
            x, y = data.batch(x_all, y_all, idx, key)
            state, aux = step(state, x, y)
            loss = aux[1] if role == "pair" else aux  # the real head's loss
            return state, loss

        return run

    def _loop_step(self, role: str, cut: int):
        k = (role, cut)
        if k not in self._loop_steps:
            run = self._data_step(role, cut)
            base = self.key

            def step(state, x_all, y_all, idx, rab):
                key = batch_key(base, rab[0], rab[1], rab[2])
                return run(state, x_all, y_all, idx, key)

            self._loop_steps[k] = jax.jit(
                step, donate_argnums=(0,), compiler_options=self.steps.xla_options
            )
        return self._loop_steps[k]

    def _vmap_epoch(self, role: str, cut: int):
        k = (role, cut)
        if k not in self._vmap_epochs:
            run = self._data_step(role, cut)
            masked = steps.masked(run)
            base = self.key

            def epoch(state, x_all, y_all, idx, mask, round_, agent):
                def body(state, xs):
                    b, idx_b, mask_b = xs
                    key = batch_key(base, round_, agent, b)
                    state, loss = masked(state, mask_b, x_all, y_all, idx_b, key)
                    return state, jnp.where(mask_b, loss, 0.0)

                nb = idx.shape[0]
                xs = (jnp.arange(nb, dtype=jnp.int32), idx, mask)
                state, losses = jax.lax.scan(body, state, xs)
                return state, losses.sum() / jnp.maximum(mask.sum(), 1)

            agent_axis = P(aggregate.AXIS)
            sharded = jax.shard_map(
                jax.vmap(epoch, in_axes=(0, None, None, 0, 0, None, 0)),
                mesh=self.mesh,
                in_specs=(agent_axis, P(), P(), agent_axis, agent_axis, P(), agent_axis),
                out_specs=(agent_axis, agent_axis),
            )
            self._vmap_epochs[k] = jax.jit(
                sharded, donate_argnums=(0,), compiler_options=self.steps.xla_options
            )
        return self._vmap_epochs[k]

    # -- backends -------------------------------------------------------------------

    def _run_loop(self, group: Group, g: GlobalModel, batches: AgentBatches, round_: int, lr):
        step = self._loop_step(group.role, group.cut)
        idx = np.asarray(batches.idx)
        nbs = np.asarray(batches.num_batches)
        finals, losses = [], []
        for a in group.agents:
            state = self._start(g, lr, role=group.role, cut=group.cut)
            agent_losses = []
            for b in range(int(nbs[a])):
                rab = np.array([round_, a, b], np.int32)
                state, loss = step(state, self.data.x, self.data.y, idx[a, b], rab)
                agent_losses.append(loss)
            finals.append(state)
            losses.append(jnp.mean(jnp.stack(agent_losses)) if agent_losses else jnp.nan)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *finals)
        return stacked, jnp.stack(losses)

    def _run_vmap(self, group: Group, g: GlobalModel, batches: AgentBatches, round_: int, lr):
        n = len(group.agents)
        n_dev = self.mesh.devices.size
        n_pad = n + (-n) % n_dev
        agents = np.asarray(group.agents, np.int32)
        rows = np.concatenate([agents, np.full(n_pad - n, agents[0], np.int32)])
        idx = np.asarray(batches.idx)[rows]
        mask = np.asarray(batches.mask)[rows].copy()
        mask[n:] = False  # padded agents make no update
        nb_max = max(int(np.asarray(batches.num_batches)[agents].max()), 1)
        idx, mask = idx[:, :nb_max], mask[:, :nb_max]
        start = self._start(g, lr, role=group.role, cut=group.cut)
        states = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_pad, *x.shape)), start)
        sharding = NamedSharding(self.mesh, P(aggregate.AXIS))
        states, idx_d, mask_d, agents_d = jax.device_put((states, idx, mask, rows), sharding)
        epoch = self._vmap_epoch(group.role, group.cut)
        states, losses = epoch(
            states, self.data.x, self.data.y, idx_d, mask_d, jnp.int32(round_), agents_d
        )
        return jax.tree.map(lambda x: x[:n], states), losses[:n]

    # -- a round ----------------------------------------------------------------------

    def train_agents(
        self,
        g: GlobalModel,
        plan: RoundPlan,
        batches: AgentBatches,
        round_: int,
        lr: float,
    ) -> AgentModels:
        """Trains every group of ``plan`` from the global model ``g``.

        Args:
          g: the global model at the start of the round.
          plan: the method's plan for this round.
          batches: every agent's batches for this round.
          round_: the round index r (keys the augmentation).
          lr: the learning rate of this round.

        Returns:
          Every participant's model after its local epoch, stacked.
        """
        run = self._run_loop if self.backend == "loop" else self._run_vmap
        # Every round starts from one placement of the global model, whatever it was (fresh
        # init, restored checkpoint, or replicated over the mesh by the aggregation);
        # otherwise every cached step compiles again for the new input shardings.
        g = jax.device_put(g, self.home)
        lr = jnp.float32(lr)
        models, order, aux = [], [], {}
        losses = np.full(len(plan.participants), np.nan)
        for group in groups_of(plan):
            states, group_losses = run(group, g, batches, round_, lr)
            losses[list(group.agents)] = np.asarray(group_losses)
            if group.role == "full":
                models.append((states.params, states.batch_stats))
            else:
                slow, fast = states
                models.append(
                    (
                        split.join_tree(slow.params, fast.params),
                        split.join_tree(slow.batch_stats, fast.batch_stats),
                    )
                )
                aux[group.cut] = (slow.params[split.AUX], group.agents)
            order.extend(group.agents)
        stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *models)
        return AgentModels(stacked[0], stacked[1], tuple(order), aux, losses)

    def aggregate(self, g: GlobalModel, agents: AgentModels, num_samples) -> GlobalModel:
        """The data-size-weighted average of the agents' models (SPEC §4).

        Args:
          g: the round's starting global model (aux heads of unused cuts are kept).
          agents: the trained agents.
          num_samples: [K] N_i.

        Returns:
          The new global model.
        """
        sizes = np.asarray(num_samples, np.float64)
        params, stats = aggregate.weighted_average(
            (agents.params, agents.batch_stats), sizes[list(agents.order)], self.mesh
        )
        aux = dict(g.aux)
        for m, (heads, who) in agents.aux.items():
            aux[split.aux_key(m)] = aggregate.weighted_average(heads, sizes[list(who)], self.mesh)
        # The average comes back replicated over the mesh; training and evaluation
        # run on one device (the vmap backend shards its own inputs).
        return jax.device_put(GlobalModel(params, stats, aux), self.home)

    def train_round(
        self, g: GlobalModel, plan: RoundPlan, batches: AgentBatches, round_: int, lr: float
    ) -> RoundResult:
        """:meth:`train_agents` then :meth:`aggregate`."""
        agents = self.train_agents(g, plan, batches, round_, lr)
        return RoundResult(self.aggregate(g, agents, batches.num_samples), agents.train_loss)


def evaluate(model: StagedModel, g: GlobalModel, x: Array, y: Array, mean, std, batch_size: int):
    """Test loss and accuracy of the global model (no augmentation).

    Args:
      model: the staged model.
      g: the global model.
      x: uint8 [N, H, W, C] test images (on device).
      y: int32 [N] labels.
      mean: normalisation mean.
      std: normalisation std.
      batch_size: evaluation batch.

    Returns:
      (loss, accuracy) as Python floats.
    """
    fn = _eval_fn(model, tuple(mean), tuple(std))
    n = int(x.shape[0])
    loss_sum = correct = 0.0
    parts = []
    for s in range(0, n, batch_size):
        parts.append(fn(g.params, g.batch_stats, x[s : s + batch_size], y[s : s + batch_size]))
    sums = np.asarray(jnp.stack([jnp.stack(p) for p in parts])).sum(0)
    loss_sum, correct = float(sums[0]), float(sums[1])
    return loss_sum / n, correct / n


_EVAL_CACHE: dict = {}


def _eval_fn(model: StagedModel, mean: Sequence[float], std: Sequence[float]):
    key = (id(model), mean, std)
    if key not in _EVAL_CACHE:
        from comdml_jax.data.augment import normalize

        def fn(params, stats, xb, yb):
            logits, _ = model.apply(params, stats, normalize(xb, mean, std), train=False)
            loss = steps.cross_entropy(logits, yb) * yb.shape[0]
            return loss, jnp.sum(jnp.argmax(logits, -1) == yb).astype(jnp.float32)

        _EVAL_CACHE[key] = (model, jax.jit(fn))
    return _EVAL_CACHE[key][1]
