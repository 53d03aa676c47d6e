"""Quickstart: ComDML on real CIFAR-10, 10 heterogeneous agents, a small ResNet.

    python -m experiments.run --config=configs/quickstart.py --workdir=runs/quickstart \
        --config.data.data_dir=../shared/data/tfds

A 10,000-image training subset split IID over 10 agents with the paper's
five CPU and five link profiles (the two 0 Mbps agents sit out), the
basic-block ResNet-8, batch 50, 12 rounds. About 4 minutes on a 2-core CPU,
compile time included.
"""

from configs import default


def get_config(arg: str | None = None):
    c = default.get_config(arg)
    c.rounds = 12
    c.target_accuracy = 0.40
    c.model.name = "resnet8_basic"
    c.data.train_subset = 10000
    c.data.test_subset = 2000
    c.num_agents = 10
    c.train.batch_size = 50
    c.optim.lr = 0.05  # a small model on little data: the paper's 0.001 barely moves in 10 rounds
    c.optim.plateau_patience = 3
    c.system.dynamics_rounds = ()
    c.checkpoint_every = 5
    return c
