"""Agent partitions: exact cover, seeding, Dirichlet skew, counts and the plot."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ml_collections import ConfigDict

from comdml_jax.data.partition import (
    class_counts,
    dirichlet,
    iid,
    label_skew,
    partition_from_config,
    plot_partition,
)


def _labels(n, num_classes, seed):
    return np.random.default_rng(seed).integers(0, num_classes, n)


def _assert_exact_cover(parts, n):
    everything = np.concatenate(parts)
    assert everything.shape == (n,)
    assert np.array_equal(np.sort(everything), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(50, 600),
    num_agents=st.integers(1, 20),
    num_classes=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
)
def test_iid_is_an_exact_equal_cover(n, num_agents, num_classes, seed):
    parts = iid(_labels(n, num_classes, seed), num_agents, seed)
    assert len(parts) == num_agents
    _assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 600),
    num_agents=st.integers(1, 30),
    num_classes=st.integers(1, 10),
    log_alpha=st.floats(np.log(0.01), np.log(1000.0)),
    seed=st.integers(0, 2**31 - 1),
)
def test_dirichlet_is_an_exact_cover(n, num_agents, num_classes, log_alpha, seed):
    labels = _labels(n, num_classes, seed)
    parts = dirichlet(labels, num_agents, float(np.exp(log_alpha)), seed, min_samples=0)
    assert len(parts) == num_agents
    _assert_exact_cover(parts, n)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(300, 600),
    num_agents=st.integers(1, 10),
    num_classes=st.integers(5, 10),
    log_alpha=st.floats(np.log(0.3), np.log(1000.0)),
    seed=st.integers(0, 2**31 - 1),
)
def test_dirichlet_redraws_until_min_samples(n, num_agents, num_classes, log_alpha, seed):
    # A region where a valid draw is common (>= 30 samples and >= 5 classes per
    # agent on average), so the bounded redraw always succeeds.
    labels = _labels(n, num_classes, seed)
    parts = dirichlet(labels, num_agents, float(np.exp(log_alpha)), seed, min_samples=5)
    _assert_exact_cover(parts, n)
    assert min(len(p) for p in parts) >= 5


def test_same_seed_same_partition_other_seed_differs():
    labels = _labels(1000, 10, 0)
    for make in (lambda s: iid(labels, 7, s), lambda s: dirichlet(labels, 7, 0.5, s, 10)):
        a, b, c = make(1), make(1), make(2)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_class_counts_and_skew_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    counts = class_counts(parts, labels, num_classes=4)
    assert np.array_equal(counts, [[2, 0, 0, 0], [0, 2, 2, 0]])
    # Global mix (1/3, 1/3, 1/3, 0). Agent 0 = (1, 0, 0, 0): TV = (2/3 + 1/3 + 1/3) / 2 = 2/3.
    # Agent 1 = (0, 1/2, 1/2, 0): TV = (1/3 + 1/6 + 1/6) / 2 = 1/3. Mean 1/2.
    assert label_skew(counts) == pytest.approx(0.5)
    assert label_skew(np.array([[1, 1], [3, 3], [0, 0]])) == pytest.approx(0.0)


# Skew thresholds, 10 balanced classes, 10 agents of ~1000 samples (N = 10,000):
# * IID sampling noise: per class |p_kc - 0.1| has sd sqrt(0.1 * 0.9 / 1000) = 0.0095
#   and mean 0.0095 * sqrt(2 / pi) = 0.0076, so TV ~ 10 * 0.0076 / 2 = 0.038.
# * alpha = 1000: each agent's share of a class has sd sqrt(0.1 * 0.9 / 10001) = 0.003
#   around 1/10, i.e. ~3 of ~100 samples, so TV ~ 10 * 0.003 * 0.8 / 2 = 0.012 plus
#   rounding: closer to the global mix than even IID sampling. Bound: < 0.05.
# * alpha = 0.1: Dir(0.1 * 1_10) has total concentration 1; its largest share has
#   mean ~0.62 (the Poisson-Dirichlet(1) limit), so most of a class lands on one or
#   two agents and an agent holds a few dominant classes: TV near the alpha -> 0
#   limit 1 - 1/10 = 0.9 for agents with one class. Bound: > 0.5 (10x the IID level).
SKEW_LABELS = np.repeat(np.arange(10), 1000)


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_skew_large_alpha_is_iid_like_small_alpha_is_strong(seed):
    def skew(parts):
        return label_skew(class_counts(parts, SKEW_LABELS, 10))

    iid_skew = skew(iid(SKEW_LABELS, 10, seed))
    flat = skew(dirichlet(SKEW_LABELS, 10, 1000.0, seed, 10))
    paper = skew(dirichlet(SKEW_LABELS, 10, 0.5, seed, 10))
    strong = skew(dirichlet(SKEW_LABELS, 10, 0.1, seed, 10))
    assert iid_skew < 0.05
    assert flat < 0.05
    assert strong > 0.5
    assert flat < paper < strong


def test_dirichlet_large_alpha_sizes_are_near_equal():
    parts = dirichlet(SKEW_LABELS, 10, 1000.0, 0, 10)
    # Expected 1000 each; 10 classes x sd ~3 samples gives sd ~10 per agent.
    assert all(abs(len(p) - 1000) < 60 for p in parts)


def test_dirichlet_impossible_requests_name_the_fields():
    labels = np.repeat([0, 1, 2], [7, 7, 6])
    with pytest.raises(ValueError, match="min_samples_per_agent=11"):
        dirichlet(labels, 2, 0.5, 0, min_samples=11)  # 2 x 11 > 20 samples
    # With near-degenerate proportions each class goes to one agent, so the
    # sizes are sums of whole classes (7, 7, 6) and never 10 / 10.
    with pytest.raises(
        ValueError, match=r"data\.alpha=0\.001.*num_agents=2.*min_samples_per_agent=10.*3 draws"
    ):
        dirichlet(labels, 2, 1e-3, 0, min_samples=10, max_tries=3)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet(labels, 2, 0.0, 0)


def test_partition_from_config():
    labels = _labels(500, 10, 0)
    cfg = ConfigDict({"partition": "dirichlet", "alpha": 0.5, "min_samples_per_agent": 10})
    got = partition_from_config(cfg, labels, 5, seed=3)
    want = dirichlet(labels, 5, 0.5, 3, 10)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    cfg.partition = "iid"
    assert all(
        np.array_equal(a, b)
        for a, b in zip(partition_from_config(cfg, labels, 5, 3), iid(labels, 5, 3), strict=True)
    )
    cfg.partition = "shards"
    with pytest.raises(ValueError, match="iid"):
        partition_from_config(cfg, labels, 5, 3)


def test_plot_partition_writes_a_png_of_the_expected_size(tmp_path):
    from PIL import Image

    counts = class_counts(dirichlet(SKEW_LABELS, 10, 0.5, 0, 10), SKEW_LABELS, 10)
    path = tmp_path / "partition.png"
    plot_partition(counts, str(path), class_names=tuple(f"c{i}" for i in range(10)))
    with Image.open(path) as img:
        # figsize (max(4, 0.3 * 10 + 2), 3.5) inches at 100 dpi.
        assert img.format == "PNG" and img.size == (500, 350)
        assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 10
