"""The round engine: trains every participant's local epoch (SPEC §3).

The engine is method-agnostic. A method hands it a :class:`RoundPlan` (who
takes part, who offloads to whom at which cut) and each participant's starting
model (:class:`StartModels`: one shared model, or one per agent); the engine

1. groups agents by (role, cut): every participant that does not offload runs
   a ``full`` local epoch on its own data; every offloading pair runs a
   ``pair`` epoch (the slow step on the slow agent's data, then the fast step
   on the detached activations);
2. runs each group through an *agent backend* (as fedjax's
   ``for_each_client`` backends): ``loop`` calls one jitted step per batch from
   Python (fastest on XLA:CPU), ``vmap`` runs one jitted ``vmap`` over the
   group's agents with ``lax.scan`` over their padded, masked batches, sharded
   over the device mesh with ``shard_map`` (for GPU/TPU);
3. returns every participant's trained model, stacked (:class:`AgentModels`),
   and checks each group for non-finite losses and parameters.

Merging the trained models is the method's business (``Method.merge``, with
the averaging primitives of :mod:`comdml_jax.train.aggregate`).

Both backends derive every random number from
``fold_in(fold_in(fold_in(key, round), agent), batch)`` and give the same
numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from comdml_jax import catalog, rng, streams
from comdml_jax.data.agents import AgentBatches
from comdml_jax.data.augment import augment, batch_key
from comdml_jax.models import split
from comdml_jax.models.resnet import StagedModel
from comdml_jax.privacy.config import PrivacySpec, step_privacy
from comdml_jax.system.plan import RoundPlan
from comdml_jax.train import aggregate, steps
from comdml_jax.train.types import AgentModels, ModelVars, StartModels, row_bucket

Array = jax.Array
PyTree = Any


BACKENDS = catalog.BACKENDS  # ("auto", "loop", "vmap")


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


def groups_of(plan: RoundPlan, owned: np.ndarray | None = None) -> list[Group]:
    """Splits a plan into a ``full`` group and one ``pair`` group per cut, in a fixed order.

    Args:
      plan: the round's plan.
      owned: [K] bool, the agents this process trains (a pair goes with its slow
        agent); None: every agent (one process).

    Returns:
      The groups, each agent in increasing order.
    """
    part = np.asarray(plan.participants, bool)
    if owned is not None:
        part = part & np.asarray(owned, bool)
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


def resolve_backend(backend: str, platform: str | None = None) -> str:
    """``auto``: ``loop`` on CPU (measured faster there), ``vmap`` on GPU/TPU."""
    if backend not in BACKENDS:
        raise ValueError(f"train.backend={backend!r} is not one of {BACKENDS}")
    if backend != "auto":
        return backend
    return "loop" if (platform or jax.default_backend()) == "cpu" else "vmap"


ON_NONFINITE = catalog.ON_NONFINITE  # ("stop", "skip")


class Engine:
    """Trains every participant's local epoch, for any method.

    Args:
      model: the staged model.
      tx: the optimiser (SGD with momentum, learning rate in its state).
      data: the training data on device.
      backend: ``loop``, ``vmap`` or ``auto``.
      mesh: the 1-D ``agents`` mesh of this process's devices (used by ``vmap``;
        methods merge over the global mesh).
      seed: the run seed; augmentation keys derive from ``rng.stream(seed, "augment")``.
      privacy: the run's privacy options; NoPeek and patch shuffling change the
        slow side of pair steps (``train.steps``), DP acts outside the engine.
      owned: [K] bool, the agents this process trains (``distributed.owned_agents``);
        None: all of them.

    The engine keeps one cache of compiled programs, :attr:`programs`, keyed by
    (program, role, cut) plus the step privacy where it changes the program
    (``StepPrograms.key``); :attr:`traces` counts how often each was traced, so a
    test can check that rounds never re-trace.
    """

    def __init__(
        self,
        model: StagedModel,
        tx,
        data: TrainData,
        backend: str,
        mesh,
        seed: int,
        privacy: PrivacySpec | None = None,
        owned: np.ndarray | None = None,
    ):
        self.model = model
        self.tx = tx
        self.data = data
        self.backend = resolve_backend(backend)
        self.mesh = mesh
        self.owned = None if owned is None else np.asarray(owned, bool)
        self.home = SingleDeviceSharding(mesh.devices.flat[0])
        self.key = rng.stream(seed, "augment")
        self.privacy = step_privacy(privacy)
        self.steps = steps.StepPrograms(model, tx)
        self.programs: dict[tuple[str, str, int], Callable] = {}
        self.traces: collections.Counter = collections.Counter()

    def _program(self, kind: str, role: str, cut: int, build: Callable[[], Callable], **jit_kw):
        """The jitted program ``kind`` for (role, cut), built and jitted once."""
        k = (kind, *steps.StepPrograms.key(role, cut, self.privacy))
        if k not in self.programs:
            fn = build()

            @functools.wraps(fn)
            def counted(*args):
                self.traces[k] += 1  # runs once per trace, never per call
                return fn(*args)

            self.programs[k] = jax.jit(counted, compiler_options=self.steps.xla_options, **jit_kw)
        return self.programs[k]

    # -- states ---------------------------------------------------------------

    def _start_states(self, params, stats, head, lr, role: str, cut: int):
        """Fresh optimiser state(s) from a starting model (new buffers, safe to donate).

        ``head`` is the cut's auxiliary head (pair roles) or None.
        """
        copy = lambda t: jax.tree.map(jnp.copy, t)
        if role == "full":
            return steps.set_lr(steps.init_state(copy(params), copy(stats), self.tx), lr)
        sp, fp = split.split_tree(self.model, copy(params), cut)
        ss, fs = split.split_tree(self.model, copy(stats), cut)
        sp = {**sp, split.AUX: copy(head)}
        slow = steps.set_lr(steps.init_state(sp, ss, self.tx), lr)
        fast = steps.set_lr(steps.init_state(fp, fs, self.tx), lr)
        return slow, fast

    @staticmethod
    def _head(g: ModelVars, role: str, cut: int):
        return g.aux[split.aux_key(cut)] if role == "pair" else None

    def _start(self, g: ModelVars, lr, role: str, cut: int):
        def build():
            return lambda p, s, h, lr: self._start_states(p, s, h, lr, role, cut)

        fn = self._program("start", role, cut, build)
        return fn(g.params, g.batch_stats, self._head(g, role, cut), lr)

    def _agent_start(self, start: StartModels, agent: int, lr, role: str, cut: int):
        """The optimiser state(s) agent ``agent`` starts its local epoch from."""
        if not start.per_agent:
            return self._start(start.model, lr, role, cut)

        def build():
            def fn(params, stats, head, i, lr):
                row = lambda t: jax.tree.map(lambda x: x[i], t)
                return self._start_states(row(params), row(stats), head, lr, role, cut)

            return fn

        fn = self._program("agent_start", role, cut, build)
        m = start.model
        return fn(m.params, m.batch_stats, self._head(m, role, cut), np.int32(agent), lr)

    def _rows_buffer(self, state, n: int):
        """A zero [row_bucket(n), ...] buffer for a group's final states."""
        return jax.tree.map(lambda x: jnp.zeros((row_bucket(n), *x.shape), x.dtype), state)

    def _put_row(self, role: str, cut: int):
        """``(buffer, i, state) -> buffer`` with row i set, the buffer donated."""

        def build():
            return lambda buf, i, st: jax.tree.map(lambda b, x: b.at[i].set(x), buf, st)

        return self._program("put_row", role, cut, build, donate_argnums=(0,))

    # -- the per-batch program ---------------------------------------------------

    def _data_step(self, role: str, cut: int):
        """``(state, x_all, y_all, idx, key) -> (state, loss)``: gather, augment, step."""
        step = self.steps.pure(role, cut, self.privacy)
        data = self.data
        shuffles = role == "pair" and self.privacy is not None and self.privacy.patch_shuffle

        def run(state, x_all, y_all, idx, key):
            x, y = data.batch(x_all, y_all, idx, key)
            # The patch shuffle's key: the batch's key on its own stream (SPEC §8).
            args = (jax.random.fold_in(key, streams.PATCH_SHUFFLE),) if shuffles else ()
            state, aux = step(state, x, y, *args)
            loss = aux[1] if role == "pair" else aux  # the real head's loss
            return state, loss

        return run

    def _loop_step(self, role: str, cut: int):
        def build():
            run = self._data_step(role, cut)
            base = self.key

            def step(state, x_all, y_all, idx, rab):
                key = batch_key(base, rab[0], rab[1], rab[2])
                return run(state, x_all, y_all, idx, key)

            return step

        return self._program("loop", role, cut, build, donate_argnums=(0,))

    def _vmap_epoch(self, role: str, cut: int):
        def build():
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
            return jax.shard_map(
                jax.vmap(epoch, in_axes=(0, None, None, 0, 0, None, 0)),
                mesh=self.mesh,
                in_specs=(agent_axis, P(), P(), agent_axis, agent_axis, P(), agent_axis),
                out_specs=(agent_axis, agent_axis),
            )

        return self._program("vmap", role, cut, build, donate_argnums=(0,))

    # -- backends -------------------------------------------------------------------

    def round_batches(self, plan: RoundPlan, batches: AgentBatches) -> int:
        """The batches this process trains in the round of ``plan`` (what ``progress`` counts)."""
        nbs = np.asarray(batches.num_batches)
        return int(sum(int(nbs[list(g.agents)].sum()) for g in groups_of(plan, self.owned)))

    def _run_loop(
        self, group: Group, start: StartModels, batches: AgentBatches, round_, lr, progress=None
    ):
        role, cut = group.role, group.cut
        step = self._loop_step(role, cut)
        put = self._put_row(role, cut)
        idx = np.asarray(batches.idx)
        nbs = np.asarray(batches.num_batches)
        buf, losses = None, []
        for row, a in enumerate(group.agents):
            state = self._agent_start(start, a, lr, role, cut)
            agent_losses = []
            for b in range(int(nbs[a])):
                rab = np.array([round_, a, b], np.int32)
                state, loss = step(state, self.data.x, self.data.y, idx[a, b], rab)
                agent_losses.append(loss)
            if buf is None:
                buf = self._rows_buffer(state, len(group.agents))
            buf = put(buf, np.int32(row), state)
            losses.append(agent_losses)
            if progress is not None:
                if agent_losses:
                    agent_losses[-1].block_until_ready()
                progress(int(nbs[a]))
        # One transfer for every loss of the group, and the means on the host.
        host = jax.device_get(losses)
        means = [float(np.mean(x)) if len(x) else np.nan for x in host]
        n = len(group.agents)
        return jax.tree.map(lambda x: x[:n], buf), np.asarray(means)

    def _run_vmap(
        self, group: Group, start: StartModels, batches: AgentBatches, round_, lr, progress=None
    ):
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
        if start.per_agent:
            role, cut = group.role, group.cut

            def build():
                one = lambda p, st, h, lr: self._start_states(p, st, h, lr, role, cut)
                return jax.vmap(one, in_axes=(0, 0, None, None))

            init = self._program("vstart", role, cut, build)
            m = jax.device_put(start.rows(rows), self.home)
            states = init(m.params, m.batch_stats, self._head(m, role, cut), lr)
        else:
            one = self._start(start.model, lr, role=group.role, cut=group.cut)
            states = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_pad, *x.shape)), one)
        sharding = NamedSharding(self.mesh, P(aggregate.AXIS))
        states, idx_d, mask_d, agents_d = jax.device_put((states, idx, mask, rows), sharding)
        epoch = self._vmap_epoch(group.role, group.cut)
        states, losses = epoch(
            states, self.data.x, self.data.y, idx_d, mask_d, jnp.int32(round_), agents_d
        )
        if progress is not None:
            losses.block_until_ready()
            progress(int(np.asarray(batches.num_batches)[agents].sum()))
        return jax.tree.map(lambda x: x[:n], states), losses[:n]

    # -- a round ----------------------------------------------------------------------

    def train_agents(
        self,
        start: StartModels | ModelVars,
        plan: RoundPlan,
        batches: AgentBatches,
        round_: int,
        lr: float,
        progress: Callable[[int], None] | None = None,
    ) -> AgentModels:
        """Trains every group of ``plan``, each agent from its starting model.

        Args:
          start: each participant's starting model (a :class:`ModelVars` means
            the same model for everyone).
          plan: the method's plan for this round.
          batches: every agent's batches for this round.
          round_: the round index r (keys the augmentation).
          lr: the learning rate of this round.
          progress: called with a number of batches as they are trained: after
            each agent's local epoch on the ``loop`` backend (which then waits
            for that agent's last step, so the count is honest), after each
            group on ``vmap``. The counts of a round add up to
            :meth:`round_batches`. Used for the terminal's progress bar.

        Returns:
          Every participant's model after its local epoch, stacked.

        A group whose loss or parameters are not finite is left out of the
        returned models and listed in ``skipped`` with what was not finite; the
        caller decides whether that stops the run (``train.on_nonfinite``),
        once every process has reported.
        """
        if isinstance(start, ModelVars):
            start = StartModels(start)
        run = self._run_loop if self.backend == "loop" else self._run_vmap
        # Every round starts from one placement of the starting model, whatever it was (fresh
        # init, restored checkpoint, or replicated over the mesh by a merge); otherwise every
        # cached program compiles again for the new input shardings.
        start = StartModels(jax.device_put(start.model, self.home), start.per_agent)
        lr = jnp.float32(lr)
        models, order, aux, skipped = [], [], {}, []
        losses = np.full(len(plan.participants), np.nan)
        for group in groups_of(plan, self.owned):
            more = {"progress": progress} if progress is not None else {}
            states, group_losses = run(group, start, batches, round_, lr, **more)
            group_losses = np.asarray(group_losses)
            losses[list(group.agents)] = group_losses
            if group.role == "full":
                params, stats, heads = states.params, states.batch_stats, None
            else:
                slow, fast = states
                params = split.join_tree(slow.params, fast.params)
                stats = split.join_tree(slow.batch_stats, fast.batch_stats)
                heads = slow.params[split.AUX]
            bad = _nonfinite(group_losses, (params, stats, heads))
            if bad:
                skipped.append((group.role, group.cut, group.agents, bad))
                losses[list(group.agents)] = np.nan
            else:
                models.append((params, stats))
                if heads is not None:
                    aux[group.cut] = (heads, group.agents)
                order.extend(group.agents)
        if models:
            stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *models)
        else:
            stacked = (None, None)
        return AgentModels(stacked[0], stacked[1], tuple(order), aux, losses, skipped)


def _nonfinite(losses: np.ndarray, trees) -> str:
    """'' when every loss and leaf is finite, else what was not."""
    if not np.all(np.isfinite(losses)):
        return "training loss"
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trees)]
    if finite and not bool(jnp.all(jnp.stack(finite))):
        return "parameter or batch statistic"
    return ""
