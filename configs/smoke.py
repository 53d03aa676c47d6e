"""Smoke: a half-minute end-to-end ComDML run on real CIFAR-10, for tests and CI.

    python -m experiments.run --config=configs/smoke.py --workdir=/tmp/smoke \
        --config.data.data_dir=../shared/data/tfds

A stratified subset of 300 training and 200 test images, split IID over 5
agents with explicit, heterogeneous profiles (CPUs 4, 2, 1, 0.5, 0.2; links
100, 50, 20, 50, 10 Mbps), the ``tiny`` bottleneck model, batch 20 (3 batches
per agent), 2 rounds, a checkpoint every round. ``cpu_flops`` is calibrated to
the paper's Table I compute-to-link ratio, so the slow agents really pair and
offload (as the paper's would) even though the tiny model is cheap.

Expected runtime on one CPU core (measured with ``taskset -c 1``): about 35 s
with a cold JAX compilation cache, 25 s with a warm one; the two rounds
themselves take a few seconds, the rest is start-up, the model's random
initialisation and compiling the steps. The accuracy stays near chance (10-12%):
it is a smoke test, not a benchmark.
"""

from ml_collections import ConfigDict

from configs import default


def get_config(arg: str | None = None) -> ConfigDict:
    c = default.get_config(arg)
    c.rounds = 2
    c.target_accuracy = 0.15  # near chance, so time_to_target_s is exercised
    c.model.name = "tiny"
    c.data.name = "cifar10"
    c.data.partition = "iid"
    c.data.train_subset = 300
    c.data.test_subset = 200
    c.data.min_samples_per_agent = 10
    c.num_agents = 5
    c.participation = 1.0
    c.system.cpu = (4.0, 2.0, 1.0, 0.5, 0.2)
    c.system.bandwidth_mbps = (100.0, 50.0, 20.0, 50.0, 10.0)
    c.system.dynamics_rounds = ()
    c.system.cpu_flops_calibration = "table1"
    c.train.batch_size = 20
    c.optim.lr = 0.05  # a tiny model on little data: the paper's 0.001 barely moves
    c.optim.plateau_patience = 1
    c.eval_batch_size = 200
    c.checkpoint_every = 1
    return c
