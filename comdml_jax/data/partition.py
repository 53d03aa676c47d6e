"""Splitting a training set over K agents: IID and Dirichlet label skew (SPEC §9).

Host-side numpy, seeded by an integer. A partition is a list of K int64 arrays
of sample indices, sorted ascending; every sample goes to exactly one agent.

* :func:`iid`: a uniformly random split into K parts whose sizes differ by at
  most one.
* :func:`dirichlet`: the per-class Dirichlet method of the non-IID literature
  (Hsu et al. 2019; Wang et al., FedMA 2020), as FedML's
  ``non_iid_partition_with_dirichlet_distribution`` and the ComDML original
  code implement it. For every class c, proportions q_c ~ Dir(alpha * 1_K)
  split that class's samples over the agents; an agent that already holds
  N / K or more samples gets no share of later classes (the balancing step of
  that code). The whole draw is repeated until every agent holds at least
  ``min_samples``. Small alpha gives strong label skew, large alpha tends to
  IID; the paper uses alpha = 0.5.

Skew is measured by :func:`label_skew`: the mean, over agents, of the total
variation distance between the agent's label distribution and the global one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Partition = list[np.ndarray]  # K int64 index arrays into the training set
Counts = np.ndarray  # int64 [K, C]: samples of class c held by agent k


def _check(labels: np.ndarray, num_agents: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if num_agents < 1:
        raise ValueError(f"num_agents must be >= 1, got {num_agents}")
    return labels


def iid(labels: np.ndarray, num_agents: int, seed: int) -> Partition:
    """An equal, uniformly random split of the samples.

    Args:
      labels: int [N] labels (only N is used).
      num_agents: K.
      seed: numpy seed.

    Returns:
      K sorted int64 index arrays of sizes floor(N/K) or ceil(N/K).
    """
    labels = _check(labels, num_agents)
    perm = np.random.default_rng(seed).permutation(labels.shape[0])
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_agents)]


def _dirichlet_once(
    by_class: list[np.ndarray], num_agents: int, alpha: float, total: int, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    parts: list[list[np.ndarray]] = [[] for _ in range(num_agents)]
    sizes = np.zeros(num_agents, dtype=np.int64)
    for idx in by_class:
        idx = rng.permutation(idx)
        q = rng.dirichlet(np.full(num_agents, alpha))
        q = q * (sizes < total / num_agents)  # balancing: full agents take no more
        q = q / q.sum()
        cuts = (np.cumsum(q) * idx.shape[0]).astype(np.int64)[:-1]
        for k, piece in enumerate(np.split(idx, cuts)):
            parts[k].append(piece)
            sizes[k] += piece.shape[0]
    return parts


def dirichlet(
    labels: np.ndarray,
    num_agents: int,
    alpha: float,
    seed: int,
    min_samples: int = 10,
    max_tries: int = 1000,
) -> Partition:
    """Label-skewed split with per-class Dirichlet(alpha) proportions.

    Args:
      labels: int [N] labels.
      num_agents: K.
      alpha: Dirichlet concentration (config ``data.alpha``; paper: 0.5).
      seed: numpy seed.
      min_samples: every agent must get at least this many samples (config
        ``data.min_samples_per_agent``); the draw is repeated until it holds.
      max_tries: how many draws to try before giving up.

    Returns:
      K sorted int64 index arrays.

    Raises:
      ValueError: bad arguments, or no draw met ``min_samples`` in ``max_tries``.
    """
    labels = _check(labels, num_agents)
    total = labels.shape[0]
    if alpha <= 0:
        raise ValueError(f"data.alpha must be > 0, got {alpha}")
    if num_agents * min_samples > total:
        raise ValueError(
            f"cannot give each of num_agents={num_agents} agents "
            f"data.min_samples_per_agent={min_samples} samples: only {total} samples"
        )
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        parts = _dirichlet_once(by_class, num_agents, alpha, total, rng)
        sizes = [sum(p.shape[0] for p in pieces) for pieces in parts]
        if min(sizes) >= min_samples:
            return [np.sort(np.concatenate(pieces)).astype(np.int64) for pieces in parts]
    raise ValueError(
        f"no Dirichlet partition with data.alpha={alpha} gave each of num_agents={num_agents} "
        f"agents at least data.min_samples_per_agent={min_samples} of {total} samples in "
        f"{max_tries} draws; raise data.alpha or lower data.min_samples_per_agent"
    )


def class_counts(parts: Partition, labels: np.ndarray, num_classes: int) -> Counts:
    """Per-agent class histogram.

    Args:
      parts: K index arrays.
      labels: int [N] labels.
      num_classes: C.

    Returns:
      int64 [K, C] counts.
    """
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes).astype(np.int64) for p in parts])


def label_skew(counts: Counts) -> float:
    """Mean total-variation distance between agents' label distributions and the global one.

    TV_k = 1/2 * sum_c |p_kc - p_c|, with p_kc = counts[k, c] / N_k and
    p_c = sum_k counts[k, c] / N. The result is the mean of TV_k over agents
    with at least one sample. It is 0 when every agent has the global label
    mix, and 1 - p_c when agent k holds class c only; an IID split of n samples
    per agent has TV of order sum_c sqrt(p_c (1 - p_c) / n) / 2.

    Args:
      counts: int [K, C] from :func:`class_counts`.

    Returns:
      The skew, in [0, 1).
    """
    counts = np.asarray(counts, dtype=np.float64)
    sizes = counts.sum(axis=1)
    keep = sizes > 0
    local = counts[keep] / sizes[keep, None]
    glob = counts.sum(axis=0) / counts.sum()
    return float(np.mean(0.5 * np.abs(local - glob).sum(axis=1)))


SKEW_CAPTION = (
    "label skew = mean over agents of the total-variation distance "
    "½ Σ_c |p_kc − p_c| between agent k's label mix and the global one: "
    "0 when every agent holds the global mix, 1 − p_c when an agent holds only class c"
)


def plot_partition(counts: Counts, path: str, class_names: tuple[str, ...] = ()) -> None:
    """Saves a stacked bar chart of the class counts, one bar per agent, as PNG.

    The title gives :func:`label_skew` and a caption under the chart says what
    it measures; the legend names the classes (up to 20 of them).

    Args:
      counts: int [K, C] from :func:`class_counts`.
      path: output file.
      class_names: the C class names in label order, e.g. a data set's
        ``Dataset.class_names``; default the class indices.
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(counts)
    k, c = counts.shape
    width = max(4.0, 0.3 * k + 2.0)
    fig = Figure(figsize=(width, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" if c <= 10 else None for i in range(c)]
    bottom = np.zeros(k)
    agents = np.arange(k)
    for j in range(c):
        name = class_names[j] if j < len(class_names) else str(j)
        ax.bar(agents, counts[:, j], bottom=bottom, width=0.85, color=colors[j], label=name)
        bottom += counts[:, j]
    ax.set_xlabel("agent")
    ax.set_ylabel("samples")
    ax.set_title(f"class counts per agent (label skew {label_skew(counts):.3f})", fontsize=9)
    if c <= 20:
        ax.legend(fontsize=6, bbox_to_anchor=(1.01, 1.0), loc="upper left", title="class",
                  title_fontsize=6)  # fmt: skip
    if k <= 20:
        ax.set_xticks(agents)
    chars = int(width * 100 / 4.6)  # about 4.3 px per character at font size 5.5
    caption = "\n".join(textwrap.wrap(SKEW_CAPTION, chars))
    lines = caption.count("\n") + 1
    fig.text(0.01, 0.01, caption, fontsize=5.5, color="dimgrey", va="bottom", ha="left")
    fig.tight_layout(rect=(0.0, 0.025 + 0.03 * lines, 1.0, 1.0))
    fig.savefig(path)


PartitionFn = Callable[..., Partition]  # (data_cfg, labels, num_agents, seed) -> Partition

PARTITIONS: dict[str, PartitionFn] = {
    "iid": lambda cfg, labels, k, seed: iid(labels, k, seed),
    "dirichlet": lambda cfg, labels, k, seed: dirichlet(
        labels, k, cfg.alpha, seed, cfg.min_samples_per_agent
    ),
}


def partition_from_config(data_cfg, labels: np.ndarray, num_agents: int, seed: int) -> Partition:
    """The partition that a config's ``data`` block names (registry :data:`PARTITIONS`).

    Args:
      data_cfg: ``config.data`` (fields partition, alpha, min_samples_per_agent).
      labels: int [N] training labels.
      num_agents: K (config ``num_agents``).
      seed: the run seed.

    Returns:
      K sorted int64 index arrays.
    """
    if data_cfg.partition not in PARTITIONS:
        raise ValueError(
            f"unknown data.partition {data_cfg.partition!r}; choose from {sorted(PARTITIONS)}"
        )
    return PARTITIONS[data_cfg.partition](data_cfg, labels, num_agents, seed)


def partition_for_run(config, labels: np.ndarray) -> Partition:
    """The run's partition, as training and ``experiments.plan`` both use it.

    :func:`partition_from_config` with the config's ``num_agents`` and
    ``seed``, refusing a split that leaves an agent without samples (it would
    have zero batches and finish every round instantly, so it would look like
    the ideal fast partner).

    Args:
      config: a run config (``num_agents``, ``seed``, ``data.*``).
      labels: int [N] training labels (after ``data.train_subset``).

    Returns:
      K sorted int64 index arrays, none empty.

    Raises:
      ConfigError: some agent would hold no samples.
    """
    from comdml_jax.errors import ConfigError

    k, n = int(config.num_agents), int(np.asarray(labels).shape[0])
    subset = config.data.train_subset
    where = f"the {n} training samples (data.train_subset={subset})"
    if k > n:
        raise ConfigError(
            f"--config.num_agents={k} is invalid: {where} cannot give every agent a sample; "
            f"use num_agents <= {n} or a larger data.train_subset"
        )
    parts = partition_from_config(config.data, labels, k, int(config.seed))
    empty = [i for i, p in enumerate(parts) if p.shape[0] == 0]
    if empty:
        raise ConfigError(
            f"--config.num_agents={k} is invalid: data.partition={config.data.partition!r} over "
            f"{where} leaves {len(empty)} agent(s) without samples (first: agent {empty[0]}); "
            "use fewer agents, a larger data.train_subset or a larger data.min_samples_per_agent"
        )
    return parts
