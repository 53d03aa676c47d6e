"""Table II: 10 agents, ResNet-56, time to a target accuracy, ComDML against the baselines.

Every method over three seeds, in one resumable command (SPEC §9):

    python -m experiments.compare --config=configs/table2.py:cifar10,noniid \
        --workdir=runs/table2/cifar10_noniid \
        --methods=comdml,allreduce,fedavg,gossip,braintorrent --seeds=0,1,2 \
        --config.data.data_dir=../shared/data/tfds

and the same on a 2-core CPU with the reduced setting (``small``, below):

    python -m experiments.compare --config=configs/table2.py:cifar10,iid,small \
        --workdir=runs/table2_small/cifar10_iid \
        --methods=comdml,allreduce,fedavg,gossip,braintorrent --seeds=0,1,2 \
        --config.data.data_dir=../shared/data/tfds

One run alone: ``python -m experiments.run --config=configs/table2.py:cifar10,iid
--workdir=DIR --config.method=allreduce --config.data.data_dir=../shared/data/tfds``.
Without ``--config.data.data_dir`` (or ``$COMDML_DATA_DIR``) CIFAR-10/100 is
downloaded (README, *Data*).

The argument is ``DATASET,SPLIT[,small]`` with DATASET one of cifar10,
cifar100, cinic10 and SPLIT one of iid, noniid (default ``cifar10,iid``).

Setting (paper Sec. V-A and V-B2): 10 agents, the bottleneck ResNet-56, batch
100, one local epoch per round, SGD with momentum 0.9 at lr 0.001, the lr cut
by 0.2 on a plateau of the test accuracy, the whole training set split IID or
by Dirichlet(0.5) over labels. Each agent draws one of the five CPU profiles
(4, 2, 1, 0.5, 0.2) and one of the five link profiles (0, 10, 20, 50, 100
Mbps), 20% of the agents per profile, and 20% of the agents redraw both after
round 100. An agent at 0 Mbps is disconnected and sits that round out (SPEC
§6). Targets (Table II): CIFAR-10 90% IID / 85% non-IID, CIFAR-100 65% / 60%,
CINIC-10 75% / 65%. 300 rounds, a checkpoint every 10; the paper does not
give its round count, and a run that has not reached its target by then can
be resumed with a larger ``--config.rounds`` in the same workdir.

Runtime. On a CPU a run of 300 ResNet-56 rounds takes days; use a GPU (the
engine picks its ``vmap`` backend there). The times measured on this
machine's CPU: (docs/cpu_speed_experiments.md, *Table II runtime*).

``small`` (configs/small.py ``shrink``): the same 10 agents, profiles, split
and profile dynamics, but the basic-block ResNet-8 instead of ResNet-56, a
stratified 10,000-image training subset (1,000 per agent) and 2,000 test
images, batch 50, lr 0.05, plateau patience 3, SMALL_ROUNDS = 20 rounds with
the dynamics after round 7 instead of 100, and lower targets
(SMALL_TARGETS) that the small model reaches in those rounds. The
CIFAR-100 and CINIC-10 targets are guesses: those data sets are not on this
machine. The first CIFAR-10 result and the CPU budget of a run:
(docs/cpu_speed_experiments.md, *Table II runtime*).

``medium`` (configs/medium.py ``to_medium``, CIFAR-10 only): the paper's
bottleneck ResNet-56 at batch 100 with its real cuts, agents, profiles and
split, on a stratified 6,000-image training subset (600 per agent) and 2,000
test images, lr 0.02, patience 3, MEDIUM_ROUNDS = 24 rounds with the dynamics
after round 8, and the targets MEDIUM_TARGETS that AllReduce reaches by about
two thirds of the run. A five-method seed takes about 85 minutes on a quiet
2-core CPU:

    python -m experiments.compare --config=configs/table2.py:cifar10,iid,medium \
        --workdir=runs/table2_medium/cifar10_iid --seeds=0,1 \
        --config.data.data_dir=../shared/data/tfds
"""

from ml_collections import ConfigDict

from configs import default
from configs.medium import to_medium
from configs.small import shrink, split_small

# (dataset, split) -> target test accuracy, the paper's Table II caption.
TARGETS = {
    ("cifar10", "iid"): 0.90,
    ("cifar10", "noniid"): 0.85,
    ("cifar100", "iid"): 0.65,
    ("cifar100", "noniid"): 0.60,
    ("cinic10", "iid"): 0.75,
    ("cinic10", "noniid"): 0.65,
}
# The small setting's targets: what the basic-block ResNet-8 on 10,000 images reaches in
# SMALL_ROUNDS rounds (see the docstring).
SMALL_TARGETS = {
    ("cifar10", "iid"): 0.40,
    ("cifar10", "noniid"): 0.35,
    ("cifar100", "iid"): 0.10,
    ("cifar100", "noniid"): 0.08,
    ("cinic10", "iid"): 0.35,
    ("cinic10", "noniid"): 0.30,
}
SMALL_ROUNDS = 20
SMALL_DYNAMICS_ROUND = 7  # a third of the run, as round 100 of the paper's 300
# The medium setting (configs/medium.py): the paper's ResNet-56 on a 6,000-image subset.
# Its targets: what AllReduce reaches in both seeds, by about half to two thirds of
# MEDIUM_ROUNDS (CIFAR-10 only: the other data sets are not on this machine). IID, at lr
# 0.02: AllReduce first reached 18% after 12 (seed 0) and 13 (seed 1) of its 24 rounds;
# seed 1 never reached 19% (best 18.3%; run on 2026-12-04). Non-IID: 15%, where AllReduce
# plateaued at the first medium lr (0.05, seed 0); not yet recalibrated at lr 0.02.
MEDIUM_TARGETS = {
    ("cifar10", "iid"): 0.18,
    ("cifar10", "noniid"): 0.15,
}
MEDIUM_ROUNDS = 24
MEDIUM_DYNAMICS_ROUND = 8
REGIMES = ("small", "medium")
DATASETS = ("cifar10", "cifar100", "cinic10")
SPLITS = {"iid": "iid", "noniid": "dirichlet"}  # argument -> data.partition


def parse_arg(arg: str | None) -> tuple[str, str, str]:
    """``"cifar10,noniid,small"`` -> ``("cifar10", "noniid", "small")``.

    The third value is the regime: ``paper`` (no word), ``small`` or ``medium``.
    None -> cifar10, iid, paper.

    Raises:
      ValueError: the argument is not ``DATASET,SPLIT[,small|medium]`` with known
        values, or asks for a medium setting that has no target.
    """
    parts, small = split_small(arg or "cifar10,iid")
    medium = "medium" in parts
    parts = [p for p in parts if p != "medium"]
    if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in SPLITS or small and medium:
        raise ValueError(
            f"configs/table2.py:{arg} is not DATASET,SPLIT[,small|medium]: DATASET is one of "
            f"{', '.join(DATASETS)} and SPLIT one of {', '.join(SPLITS)}, "
            f"e.g. configs/table2.py:cifar10,noniid or configs/table2.py:cifar10,iid,small"
        )
    if medium and (parts[0], parts[1]) not in MEDIUM_TARGETS:
        raise ValueError(
            f"configs/table2.py:{arg}: the medium setting has targets only for "
            f"{', '.join(f'{d},{s}' for d, s in MEDIUM_TARGETS)}; use one of them, or ',small'"
        )
    return parts[0], parts[1], "small" if small else "medium" if medium else "paper"


def get_config(arg: str | None = None) -> ConfigDict:
    dataset, split, regime = parse_arg(arg)
    c = default.get_config()
    c.method = "comdml"
    c.rounds = 300
    c.target_accuracy = TARGETS[(dataset, split)]

    c.model.name = "resnet56"
    c.data.name = dataset
    c.data.partition = SPLITS[split]
    c.data.alpha = 0.5
    c.data.train_subset = 0
    c.data.test_subset = 0
    c.data.augment = True
    c.data.cutout = 0

    c.num_agents = 10
    c.participation = 1.0
    c.system.cpu_profiles = (4.0, 2.0, 1.0, 0.5, 0.2)
    c.system.bandwidth_profiles_mbps = (0.0, 10.0, 20.0, 50.0, 100.0)
    c.system.cpu = ()
    c.system.bandwidth_mbps = ()
    c.system.dynamics_rounds = (100,)
    c.system.dynamics_fraction = 0.2
    c.system.topology.kind = "full"
    c.system.scheduler = "greedy"

    c.optim.lr = 0.001
    c.optim.momentum = 0.9
    c.optim.plateau_factor = 0.2  # the paper's factor for 10 agents
    c.train.batch_size = 100
    c.train.local_epochs = 1
    c.eval_every = 1  # the paper evaluates the global model after every round
    c.checkpoint_every = 10
    if regime == "medium":
        to_medium(
            c,
            rounds=MEDIUM_ROUNDS,
            dynamics_round=MEDIUM_DYNAMICS_ROUND,
            target=MEDIUM_TARGETS[(dataset, split)],
        )
    if regime == "small":
        shrink(
            c,
            rounds=SMALL_ROUNDS,
            dynamics_round=SMALL_DYNAMICS_ROUND,
            target=SMALL_TARGETS[(dataset, split)],
        )
    return c
