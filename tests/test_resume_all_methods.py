"""Resume and re-trace guards for every method, on synthetic data (default suite).

The smoke world (5 heterogeneous agents, the tiny model) on random images from
``data.datasets.synthetic_dataset``, so no CIFAR-10 is needed. Participation 0.6
samples 3 of the 5 agents a round, so participants (and pairs) change between
rounds.
"""

import collections

import chex
import jax
import numpy as np
import pytest

from comdml_jax import experiment, rounds
from comdml_jax.checkpoint import Checkpointer
from comdml_jax.methods import METHODS

ROUNDS = 3
PARTICIPATION = 0.6
WALL = ("wall_time_s", "startup_s")


def _comparable(state: rounds.RunState) -> rounds.RunState:
    return state._replace(**{k: 0.0 for k in WALL})


def _assert_records_equal(got: dict, want: dict):
    assert got.keys() == want.keys()
    for key in want.keys() - {"wall_time_s"}:
        np.testing.assert_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_resume_from_a_checkpoint_equals_the_straight_run(build_synthetic, tmp_path, method):
    """3 rounds straight == the state after round 1 saved, restored into a fresh build,
    then 2 more rounds."""
    kw = dict(rounds=ROUNDS, participation=PARTICIPATION, checkpoint_every=0)
    straight = build_synthetic(method, workdir=tmp_path / "straight", **kw)
    state = rounds.initial_state(straight)
    want = []
    for r in range(ROUNDS):
        state, rec = rounds.run_round(straight, state)
        want.append(rec)
        if r == 0:  # checkpointed before round 1 may donate its buffers
            ckpt = Checkpointer(tmp_path / "resumed")
            experiment.save_state(ckpt, state)
            ckpt.close()
    want_state = state
    participants = [tuple(r["participants"]) for r in want]
    assert len(set(participants)) > 1, participants  # the sample really changes
    assert all(len(p) == 3 for p in participants)  # round(0.6 * 5) of 5

    fresh = build_synthetic(method, workdir=tmp_path / "resumed", **kw)
    state = experiment.restore_state(fresh)
    assert state is not None and int(state.round) == 1
    got = []
    for _ in range(ROUNDS - 1):
        state, rec = rounds.run_round(fresh, state)
        got.append(rec)
    assert int(state.round) == int(want_state.round) == ROUNDS
    # Every piece of run state (models, optimiser, plateau, per-agent models, versions).
    chex.assert_trees_all_equal(_comparable(state), _comparable(want_state))
    for g, w in zip(got, want[1:], strict=True):
        _assert_records_equal(g, w)


def _shapes(args) -> tuple:
    """The shapes of a call's array leaves: what a trace of one program is specialised on."""
    leaves = jax.tree.leaves(args)
    return tuple(tuple(np.shape(x)) for x in leaves)


def test_the_engine_traces_each_program_once_per_shape_across_rounds(build_synthetic, monkeypatch):
    """4 rounds of changing participants: each (program, role, cut, shapes) traces once.

    A recorder wrapped around every program the engine builds notes the shapes of
    each trace, independently of the engine's own ``traces`` counter; a re-trace
    (a new jit object, a changed static/weak type, a cache miss) repeats a key.
    """
    from comdml_jax.train.engine import Engine

    seen: collections.Counter = collections.Counter()
    original = Engine._program

    def recording(self, kind, role, cut, build, **jit_kw):
        def build_recorded():
            fn = build()

            def traced(*args):
                seen[(kind, role, cut, _shapes(args))] += 1  # runs once per trace
                return fn(*args)

            return traced

        return original(self, kind, role, cut, build_recorded, **jit_kw)

    monkeypatch.setattr(Engine, "_program", recording)
    exp = build_synthetic(
        "comdml", rounds=4, participation=PARTICIPATION, checkpoint_every=0, eval_every=1
    )
    state = rounds.initial_state(exp)
    participants, cuts, new_per_round = set(), set(), []
    for _ in range(4):
        before = set(seen)
        state, rec = rounds.run_round(exp, state)
        participants.add(tuple(rec["participants"]))
        cuts |= {c for _, _, c in rec["pairs"]}
        new_per_round.append(set(seen) - before)
    assert len(participants) > 1, participants  # the participants change
    assert cuts, "the smoke world should offload"
    assert seen and set(seen.values()) == {1}, seen
    # The engine's own counter agrees: one trace per shape signature of each program.
    per_program = collections.Counter((k, r, c) for k, r, c, _ in seen)
    assert dict(exp.engine.traces) == dict(per_program)
    assert {("loop", "pair", c) for c in cuts} <= set(per_program)
    assert new_per_round[0], "round 0 traces the programs it uses"
    assert exp.evaluator.traces["eval"] <= 2  # the full test batch and one remainder at most
