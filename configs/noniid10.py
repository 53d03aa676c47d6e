"""A longer CPU run: 10 agents, non-IID CIFAR-10 (Dirichlet 0.5), the whole training set.

    python -m experiments.run --config=configs/noniid10.py --workdir=runs/noniid10_comdml \
        --config.data.data_dir=../shared/data/tfds
    python -m experiments.run --config=configs/noniid10.py --workdir=runs/noniid10_allreduce \
        --config.data.data_dir=../shared/data/tfds --config.method=allreduce

The paper's heterogeneous agents (five CPU and five link profiles, 20% each,
20% redraw after round 100), the basic-block ResNet-8 so that a round of
50,000 images takes about half a minute on a 2-core CPU; 30 rounds take about
20 minutes per method. lr 0.05 instead of the paper's 0.001: the small model
and few rounds need a larger step to leave chance in that time.
"""

from configs import default


def get_config(arg: str | None = None):
    c = default.get_config(arg)
    c.rounds = 30
    c.target_accuracy = 0.55
    c.model.name = "resnet8_basic"
    c.data.partition = "dirichlet"
    c.data.alpha = 0.5
    c.num_agents = 10
    c.train.batch_size = 100
    c.optim.lr = 0.05
    c.optim.plateau_factor = 0.2
    c.optim.plateau_patience = 5
    c.checkpoint_every = 5
    return c
