"""The setting of the independent FedAvg reference (../shared/reference/ref_fedavg.py).

    python -m experiments.run --config=configs/reference_setting.py --workdir=runs/ref_s0 \
        --config.data.data_dir=../shared/data/tfds --config.seed=0

10 IID agents x 500 real CIFAR-10 training images (a seeded, stratified
5,000-image subset), the whole 10,000-image test set, the basic-block
ResNet-8, SGD lr 0.05 with momentum 0.9, batch 50 (10 steps per agent and
round), one local epoch, no augmentation, equal profiles (every agent CPU 1,
100 Mbps, no dynamics), no lr plateau decay, AllReduce (a data-weighted
average of every agent's model every round), a test evaluation every round,
10 rounds. docs/learning_vs_reference.md compares it with the reference.
"""

from ml_collections import ConfigDict

from configs import default


def get_config(arg: str | None = None) -> ConfigDict:
    c = default.get_config(arg)
    c.method = "allreduce"
    c.rounds = 10
    c.target_accuracy = 0.40
    c.model.name = "resnet8_basic"
    c.data.name = "cifar10"
    c.data.partition = "iid"
    c.data.train_subset = 5000
    c.data.test_subset = 0
    c.data.augment = False
    c.data.cutout = 0
    c.num_agents = 10
    c.participation = 1.0
    c.system.cpu = (1.0,) * 10
    c.system.bandwidth_mbps = (100.0,) * 10
    c.system.dynamics_rounds = ()
    c.train.batch_size = 50
    c.train.local_epochs = 1
    c.optim.lr = 0.05
    c.optim.momentum = 0.9
    c.optim.weight_decay = 0.0
    c.optim.plateau_patience = 1_000_000  # no decay: the reference keeps lr 0.05
    c.eval_batch_size = 1000
    c.eval_every = 1
    c.checkpoint_every = 0
    c.plots = False
    return c
