"""Fig. 3: 50 agents on a random topology with 20% of the links, ComDML against the baselines.

Every method over three seeds, in one resumable command (SPEC §9):

    python -m experiments.compare --config=configs/fig3.py:cifar10 \
        --workdir=runs/fig3/cifar10 \
        --methods=comdml,allreduce,fedavg,gossip,braintorrent --seeds=0,1,2 \
        --config.data.data_dir=../shared/data/tfds

and the same on a 2-core CPU with the reduced setting (``small``, below):

    python -m experiments.compare --config=configs/fig3.py:cifar10,small \
        --workdir=runs/fig3_small/cifar10 \
        --methods=comdml,allreduce,fedavg,gossip,braintorrent --seeds=0,1,2 \
        --config.data.data_dir=../shared/data/tfds

The argument is ``DATASET[,small]`` with DATASET one of cifar10, cifar100,
cinic10 (default ``cifar10``).

Setting (paper Sec. V-B5): "agents are randomly connected through only 20% of
the links present in a full graph", mirroring the 50-agent experiments on the
IID data sets: 50 agents, an Erdős–Rényi topology with link probability 0.2
(``system.topology.kind = "random"``, seeded by the run seed, so every method
of a seed shares the graph), 20% of the agents sampled per round, the
bottleneck ResNet-56, IID split, batch 100, lr 0.001 cut by 0.5 on a plateau,
Table II's profiles and dynamics (20% redraw after round 100). The paper does
not state Fig. 3's targets; we take Table III's 80% for CIFAR-10 (its
50-agent setting) and Table II's IID targets for CIFAR-100 (65%) and
CINIC-10 (75%). 300 rounds, resumable with a larger ``--config.rounds``.

Runtime: as configs/table3.py's 50-agent ResNet-56 setting (days per run on
this CPU; use a GPU).

``small`` (configs/small.py ``shrink``, the values of configs/table3.py's
small setting): the same 50 agents, random topology, sampling, profiles and
dynamics, but the basic-block ResNet-8, a stratified 20,000-image training
subset (400 per agent) and 2,000 test images, batch 50, lr 0.05, plateau
patience 5, 30 rounds with the dynamics after round 10 instead of 100, and
the lower targets SMALL_TARGETS (30% on CIFAR-10). Measured here (CIFAR-10,
ComDML, seed 0, with a 10,000-image subset, i.e. half the local steps): 30%
first at round 21, 32% after 30; 5.8 minutes of wall time on the loaded
2-core machine (2.7 CPU-minutes). The CIFAR-100 and CINIC-10 targets are
guesses: those data sets are not on this machine. Budget as
configs/table3.py's small setting, 15-20 minutes for the five methods per seed.
"""

from ml_collections import ConfigDict

from configs import default, table3
from configs.small import shrink, split_small

NUM_AGENTS = 50
LINK_PROBABILITY = 0.2
TARGETS = {"cifar10": 0.80, "cifar100": 0.65, "cinic10": 0.75}
SMALL_TARGETS = {"cifar10": 0.30, "cifar100": 0.08, "cinic10": 0.25}
# The small setting mirrors configs/table3.py's small 50-agent one.
SMALL_ROUNDS = table3.SMALL_ROUNDS
SMALL_DYNAMICS_ROUND = table3.SMALL_DYNAMICS_ROUND
SMALL_TRAIN_SUBSET = table3.SMALL_TRAIN_SUBSET
SMALL_PATIENCE = table3.SMALL_PATIENCE


def parse_arg(arg: str | None) -> tuple[str, bool]:
    """``"cifar100,small"`` -> ``("cifar100", True)``; None -> ``("cifar10", False)``.

    Raises:
      ValueError: the argument is not ``DATASET[,small]`` with a known data set.
    """
    parts, small = split_small(arg or "cifar10")
    if len(parts) != 1 or parts[0] not in TARGETS:
        raise ValueError(
            f"configs/fig3.py:{arg} is not DATASET[,small]: DATASET is one of "
            f"{', '.join(TARGETS)}, e.g. configs/fig3.py:cifar10 or configs/fig3.py:cifar10,small"
        )
    return parts[0], small


def get_config(arg: str | None = None) -> ConfigDict:
    dataset, small = parse_arg(arg)
    c = default.get_config()
    c.method = "comdml"
    c.rounds = 300
    c.target_accuracy = TARGETS[dataset]

    c.model.name = "resnet56"
    c.data.name = dataset
    c.data.partition = "iid"
    c.data.train_subset = 0
    c.data.test_subset = 0
    c.data.augment = True

    c.num_agents = NUM_AGENTS
    c.participation = 0.2
    c.system.cpu_profiles = (4.0, 2.0, 1.0, 0.5, 0.2)
    c.system.bandwidth_profiles_mbps = (0.0, 10.0, 20.0, 50.0, 100.0)
    c.system.cpu = ()
    c.system.bandwidth_mbps = ()
    c.system.dynamics_rounds = (100,)
    c.system.dynamics_fraction = 0.2
    c.system.topology.kind = "random"
    c.system.topology.p = LINK_PROBABILITY
    c.system.scheduler = "greedy"

    c.optim.lr = 0.001
    c.optim.momentum = 0.9
    c.optim.plateau_factor = 0.5  # the paper's factor for 20 agents or more
    c.train.batch_size = 100
    c.train.local_epochs = 1
    c.eval_every = 1
    c.checkpoint_every = 10
    if small:
        shrink(
            c,
            rounds=SMALL_ROUNDS,
            dynamics_round=SMALL_DYNAMICS_ROUND,
            target=SMALL_TARGETS[dataset],
            train_subset=SMALL_TRAIN_SUBSET,
            plateau_patience=SMALL_PATIENCE,
        )
    return c
