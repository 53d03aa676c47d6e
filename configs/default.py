"""Default configuration: every field the system reads, with the paper's defaults.

Other config files start from this one and override what they change. Run it with

    python -m experiments.run --config=configs/default.py --workdir=runs/default

(the paper's 10-agent ResNet-56 CIFAR-10 IID setting; days of CPU time, use a GPU).
"""

from ml_collections import ConfigDict


def get_config(arg: str | None = None) -> ConfigDict:
    del arg
    c = ConfigDict()
    c.seed = 0
    c.method = "comdml"  # registry name in comdml_jax.methods
    c.rounds = 300
    c.target_accuracy = 0.90  # time_to_target_s is reported against this

    # --- model (SPEC §2) ---
    c.model = ConfigDict()
    c.model.name = "resnet56"  # registry name in comdml_jax.models
    c.model.conv_impl = "auto"  # auto | xla | matmul  (see comdml_jax.models.conv)
    c.model.bn_impl = "auto"  # auto | plain | materialize  (see comdml_jax.models.norm)
    # paper: Kaiming fan-out convs + PyTorch Linear heads, as the paper's code;
    # lecun: Flax's defaults (comdml_jax.models.init, docs/learning_vs_reference.md)
    c.model.init = "paper"
    # the cuts' auxiliary head: linear (the paper's GAP + Dense) | conv (a 3x3
    # conv-BN-ReLU before it, beyond the paper; docs/timing_model.md)
    c.model.aux_head = "linear"

    # --- data (SPEC §3, §9) ---
    c.data = ConfigDict()
    c.data.name = "cifar10"  # cifar10 | cifar100 | cinic10
    c.data.data_dir = ""  # empty: $COMDML_DATA_DIR
    c.data.cache_dir = ""  # empty: $COMDML_CACHE_DIR or ~/.cache/comdml_jax
    # A missing CIFAR-10/100 is fetched (official archive, md5-checked) into data_dir,
    # or ~/.cache/comdml_jax/data when data_dir is empty; mirror: another base URL.
    c.data.download = True
    c.data.mirror = ""
    c.data.partition = "iid"  # iid | dirichlet
    c.data.alpha = 0.5  # Dirichlet concentration (paper: 0.5)
    c.data.min_samples_per_agent = 10
    c.data.train_subset = 0  # 0: all training samples; n: a seeded, stratified subset
    c.data.test_subset = 0  # 0: the whole test set
    c.data.augment = True  # random crop (pad 4) + horizontal flip
    c.data.cutout = 0  # Cutout side length; the original code uses 16

    # --- agents and system (docs/timing_model.md) ---
    c.num_agents = 10
    c.participation = 1.0  # fraction of agents sampled each round
    c.system = ConfigDict()
    c.system.cpu_profiles = (4.0, 2.0, 1.0, 0.5, 0.2)
    c.system.bandwidth_profiles_mbps = (0.0, 10.0, 20.0, 50.0, 100.0)
    c.system.cpu = ()  # explicit per-agent CPUs; overrides the profile draw
    c.system.bandwidth_mbps = ()  # explicit per-agent Mbps; overrides the profile draw
    c.system.trace = ""  # path to a per-round profile trace (.json); overrides both
    c.system.dynamics_rounds = (100,)  # rounds at which a fraction of agents redraws
    c.system.dynamics_fraction = 0.2
    # FLOP/s of one simulated CPU: timing.calibrate_cpu_flops(resnet56 profile at B=100, gamma=1)
    # = 2.76e9, i.e. Table I setting 1's ratio of compute to link speed (see configs/table1.py).
    c.system.cpu_flops = 2.76e9
    # '' uses cpu_flops as given; 'table1' derives it from the split profile so that
    # Table I's compute/link ratio holds (comdml_jax.system.timing.calibrate_cpu_flops)
    c.system.cpu_flops_calibration = ""
    c.system.cpu_gamma = 1.0  # effective speed = cpu ** gamma
    c.system.latency_s = 1e-3  # per-message latency alpha (AllReduce steps, model transfers)
    c.system.server_bandwidth_mbps = 1000.0  # FedAvg's server link S, shared fairly
    c.system.allreduce = "halving_doubling"  # halving_doubling | ring
    c.system.topology = ConfigDict()
    c.system.topology.kind = "full"  # full | random | ring | edges
    c.system.topology.p = 0.2  # link probability of the random topology
    c.system.topology.edges = ()  # explicit edge list ((i, j), ...)
    # greedy (Algorithm 1) | greedy_ls (Algorithm 1 + local search) | exact (small K) | none
    c.system.scheduler = "greedy"
    # which agents a slow agent may pair with: direct (its neighbours, the paper) | routes
    # (any reachable participant, over the AllReduce's routes; comdml_jax.system.pair_routes)
    c.system.pairing_links = "direct"
    c.system.sweep_cuts = False  # experiments.plan: also price every forced cut (Table I)

    # --- optimisation (SPEC §3) ---
    c.optim = ConfigDict()
    c.optim.lr = 0.001
    c.optim.momentum = 0.9
    c.optim.weight_decay = 0.0
    c.optim.plateau_factor = 0.2  # paper: 0.2 for 10 agents, 0.5 for 20 or more
    c.optim.plateau_patience = 10  # evaluations (rounds if eval_every=1) without a better accuracy
    c.optim.min_lr = 1e-6
    # Gradual warm-up (Goyal et al. 2017), one step per round: round r < W trains at
    # lr (r + 1) / (W + 1), and the plateau schedule reads evaluations from round W on.
    # 0 is the paper's constant start.
    c.optim.warmup_rounds = 0

    # --- training engine ---
    c.train = ConfigDict()
    c.train.batch_size = 100
    c.train.local_epochs = 1
    c.train.backend = "auto"  # auto | loop | vmap
    c.train.on_nonfinite = "stop"  # stop | skip (drop a diverged group's update, recorded)
    c.train.aggregation = "psum"  # psum | halving_doubling  (comdml_jax.train.aggregate.ALGORITHMS)
    # Beyond the paper (ComDML only): the merge weight of a slow agent's front (the stages it
    # trained against its auxiliary head), as a fraction of its N_i; 1.0 is the paper's average.
    c.train.aux_front_weight = 1.0
    c.eval_batch_size = 1000
    # Test evaluation every eval_every rounds (and after the last). The lr plateau schedule
    # reads these evaluations' test accuracy, so eval_every > 1 changes the lr schedule (its
    # patience counts evaluations) and with it the accuracy; a warning says so when
    # eval_every exceeds optim.plateau_patience.
    c.eval_every = 1
    # Per-agent methods (gossip, braintorrent): evaluate every agent's own model every
    # eval_agents_every rounds (0: never) on the first eval_agents_subset test images (0: all).
    c.eval_agents_every = 5
    c.eval_agents_subset = 1000

    # --- privacy (SPEC §8; all off by default; checked by comdml_jax.privacy.config) ---
    c.privacy = ConfigDict()
    c.privacy.dp = ConfigDict()
    c.privacy.dp.mechanism = "none"  # none | gaussian | laplace
    # local (each agent, before its update leaves it) | central (on the aggregate)
    c.privacy.dp.placement = "local"
    c.privacy.dp.clip_norm = 1.0  # C: L2 bound (gaussian) or L1 bound (laplace) of each update
    c.privacy.dp.noise_multiplier = 1.0  # sigma (gaussian): noise std = sigma * C
    c.privacy.dp.epsilon_per_round = 0.5  # laplace: noise scale C / epsilon_per_round (paper 0.5)
    c.privacy.dp.delta = 1e-5  # delta at which epsilon is reported (paper 1e-5)
    c.privacy.nopeek = False  # slow-side loss (1-alpha) CE + alpha dCor(x, z)
    c.privacy.nopeek_alpha = 0.5  # alpha (paper 0.5)
    c.privacy.patch_shuffle = False  # shuffle p x p patches of the sent activation
    c.privacy.patch_size = 2  # p; a remainder of H or W not divisible by p stays in place

    # --- output ---
    c.checkpoint_every = 10  # rounds; 0 disables checkpoints
    c.plots = True
    return c
