"""The reduced CPU setting behind the ``small`` argument of table2.py, table3.py and fig3.py.

SPEC §9: a reduced setting keeps the paper's heterogeneity (the CPU and link
profiles, the profile dynamics, the sampling, the topology) and shrinks only
the model, the data and the rounds, with a target that the reduced model
reaches. :func:`shrink` does exactly that to a paper config:

- model: the paper's bottleneck ResNet-56 becomes the basic-block ResNet-8,
  ResNet-110 the basic-block ResNet-20 (``SMALL_MODELS``);
- data: a seeded, stratified subset of ``train_subset`` training and
  ``test_subset`` test images (the whole set split over the same number of
  agents, IID or Dirichlet(0.5) as in the paper);
- optimisation: batch 50 and lr 0.05 (the paper's 0.001 barely moves a small
  model in a few dozen rounds, as in configs/quickstart.py), a plateau
  patience of a few rounds; the paper's plateau factor is kept;
- rounds: ``rounds`` rounds, and the profile dynamics (20% of the agents
  redraw after round 100 of the paper's run) move to the same third of the
  shortened run, ``dynamics_round``;
- a checkpoint every 5 rounds, so an interrupted comparison loses little.
"""

from ml_collections import ConfigDict

# The paper's model -> the smaller ResNet that replaces it in the small setting.
SMALL_MODELS = {"resnet56": "resnet8_basic", "resnet110": "resnet20_basic"}


def shorten(
    c: ConfigDict,
    rounds: int,
    dynamics_round: int,
    target: float,
    train_subset: int,
    test_subset: int,
) -> None:
    """What every reduced setting changes, in place: the data subsets, the rounds, the
    target, and the profile dynamics moved to ``dynamics_round`` (if the paper has them)."""
    c.data.train_subset = train_subset
    c.data.test_subset = test_subset
    c.rounds = rounds
    c.target_accuracy = target
    if tuple(c.system.dynamics_rounds):
        c.system.dynamics_rounds = (dynamics_round,)


def shrink(
    c: ConfigDict,
    *,
    rounds: int,
    dynamics_round: int,
    target: float,
    train_subset: int = 10_000,
    test_subset: int = 2_000,
    plateau_patience: int = 3,
) -> ConfigDict:
    """Turns a paper config into its small CPU version, in place (module docstring).

    Args:
      c: the paper config.
      rounds: rounds of the small run.
      dynamics_round: the round at which 20% of the agents redraw their profiles
        (kept only if the paper config has dynamics).
      target: the small run's target test accuracy.
      train_subset: training images.
      test_subset: test images.
      plateau_patience: rounds without a better test accuracy before the lr is
        cut (the paper's 10 is most of a short run).

    Returns:
      ``c``.
    """
    c.model.name = SMALL_MODELS[c.model.name]
    shorten(c, rounds, dynamics_round, target, train_subset, test_subset)
    c.train.batch_size = 50
    c.optim.lr = 0.05
    c.optim.plateau_patience = plateau_patience
    c.eval_batch_size = 1000
    c.checkpoint_every = 5
    return c


def split_small(arg: str | None) -> tuple[list[str], bool]:
    """``"a,b,small"`` -> (["a", "b"], True); the word ``small`` may stand anywhere."""
    parts = [p.strip().lower() for p in (arg or "").split(",") if p.strip()]
    small = "small" in parts
    return [p for p in parts if p != "small"], small
