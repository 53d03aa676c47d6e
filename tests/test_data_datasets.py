"""Data-set loaders: real CIFAR-10 (COMDML_DATA_DIR), CIFAR-100 and CINIC-10 fixtures, cache."""

import dataclasses
import hashlib
import io
import os

import numpy as np
import pytest
from ml_collections import ConfigDict

from comdml_jax.data import sources
from comdml_jax.data.datasets import (
    Dataset,
    dataset_from_config,
    load_dataset,
    stratified_indices,
    subset,
)
from comdml_jax.data.sources import CINIC10_CLASSES, DatasetNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:label\\(\\) is deprecated:DeprecationWarning")

# Published in /work/shared/data/README.md: sha256 of the decoded arrays in the
# original release order (x uint8 [N,32,32,3], y int64 [N], raw C-order bytes).
CIFAR10_SHA256 = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb",
}
# Same README: train-set pixel mean and std per channel on the [0, 1] scale.
CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)


# ----------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="session")
def cifar10_cache(tmp_path_factory):
    """A cache folder that this test session fills (a clean clone has no cache)."""
    return tmp_path_factory.mktemp("comdml_cache")


@pytest.fixture(scope="session")
def cifar10(cifar10_dir, cifar10_cache):
    """CIFAR-10 decoded from the TFDS files once per session (about 10 s)."""
    return load_dataset("cifar10", cifar10_dir, cifar10_cache)


def test_cifar10_sizes_and_class_balance(cifar10):
    assert cifar10.x_train.shape == (50_000, 32, 32, 3)
    assert cifar10.x_test.shape == (10_000, 32, 32, 3)
    assert cifar10.x_train.dtype == np.uint8 and cifar10.y_train.dtype == np.int32
    assert np.array_equal(np.bincount(cifar10.y_train), np.full(10, 5_000))
    assert np.array_equal(np.bincount(cifar10.y_test), np.full(10, 1_000))
    assert cifar10.num_classes == 10 and cifar10.name == "cifar10"
    assert cifar10.class_names[0] == "airplane" and cifar10.class_names[9] == "truck"


def test_cifar10_decoded_in_original_order_matches_published_sha256(cifar10):
    for field, expected in CIFAR10_SHA256.items():
        arr = np.asarray(getattr(cifar10, field))
        if field.startswith("y"):
            arr = arr.astype(np.int64)
        assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == expected, field


def test_cifar10_normalisation_constants_match_the_pixels(cifar10):
    # Exact per-channel moments from pixel-value histograms (fast, no float error).
    pixels = cifar10.x_train.reshape(-1, 3)
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(3):
        hist = np.bincount(pixels[:, c], minlength=256) / pixels.shape[0]
        mean = hist @ values
        std = np.sqrt(hist @ values**2 - mean**2)
        np.testing.assert_allclose(mean, CIFAR10_MEAN[c], atol=1e-7)
        np.testing.assert_allclose(std, CIFAR10_STD[c], atol=1e-7)
    np.testing.assert_allclose(cifar10.mean, CIFAR10_MEAN, atol=1e-7)
    np.testing.assert_allclose(cifar10.std, CIFAR10_STD, atol=1e-7)
    assert cifar10.mean.dtype == np.float32 and cifar10.std.shape == (3,)


def test_second_load_reads_the_cache_without_opening_the_source(
    cifar10, cifar10_dir, cifar10_cache, monkeypatch
):
    import tensorflow_datasets as tfds

    def no_source(*args, **kwargs):
        raise AssertionError("the source was opened although the cache is warm")

    monkeypatch.setattr(tfds, "data_source", no_source)  # the source is never opened
    again = load_dataset("cifar10", cifar10_dir, cifar10_cache)
    assert np.array_equal(again.y_train, cifar10.y_train)
    assert np.array_equal(again.x_test, cifar10.x_test)
    assert not again.x_train.flags.writeable  # served from the read-only memory map


def test_stratified_subset_of_cifar10(cifar10):
    small = subset(cifar10, 1000, 200, seed=3)
    assert np.array_equal(np.bincount(small.y_train, minlength=10), np.full(10, 100))
    assert np.array_equal(np.bincount(small.y_test, minlength=10), np.full(10, 20))
    # Every kept sample is a real (image, label) pair of the full set.
    idx = stratified_indices(np.asarray(cifar10.y_train), 1000, np.random.default_rng([3, 0]))
    assert np.array_equal(small.x_train, cifar10.x_train[idx])
    assert np.array_equal(small.y_train, cifar10.y_train[idx])


# ------------------------------------------------------------ CIFAR-100 fixture

C100_TRAIN, C100_TEST = 40, 12


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _c100_examples(prefix: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) * 37 + seed) % 100
    return images, labels


@pytest.fixture(scope="module")
def cifar100_dir(tmp_path_factory):
    """A real TFDS cifar100 3.0.2 array_record folder, written offline by TFDS's builder.

    The official builder's ``_split_generators`` is replaced by in-memory
    examples (PNG bytes, so no TensorFlow is needed); TFDS then shuffles,
    serialises and writes the array_record shards and dataset_info.json exactly
    as it does for the real data.
    """
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = tfds.builder("cifar100", data_dir=str(data_dir), file_format="array_record")

    def split_generators(dl_manager):
        del dl_manager
        builder.info.features["label"].names = [f"fine_{i:02d}" for i in range(100)]
        builder.info.features["coarse_label"].names = [f"coarse_{i:02d}" for i in range(20)]

        def gen(prefix, n, seed):
            images, labels = _c100_examples(prefix, n, seed)
            for i in range(n):
                yield (
                    i,
                    {
                        "id": f"{prefix}_{i:05d}",
                        "image": _png(images[i]),
                        "label": int(labels[i]),
                        "coarse_label": int(labels[i]) // 5,
                    },
                )

        return {"train": gen("train", C100_TRAIN, 1), "test": gen("test", C100_TEST, 2)}

    builder._split_generators = split_generators
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig())
    return data_dir


def test_cifar100_fixture_is_stored_shuffled(cifar100_dir):
    """Guards the next test: TFDS really stores the records out of order."""
    import tensorflow_datasets as tfds

    source = tfds.data_source("cifar100", data_dir=str(cifar100_dir), download=False)
    ids = [source["train"][i]["id"] for i in range(C100_TRAIN)]
    assert sorted(ids) != ids


def test_cifar100_loads_in_original_order(cifar100_dir, tmp_path):
    ds = load_dataset("cifar100", cifar100_dir, tmp_path)
    for split, n, seed in (("train", C100_TRAIN, 1), ("test", C100_TEST, 2)):
        images, labels = _c100_examples(split, n, seed)
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.shape == (n, 32, 32, 3) and x.dtype == np.uint8
        assert y.dtype == np.int32
        assert np.array_equal(x, images)
        assert np.array_equal(y, labels)
    assert ds.num_classes == 100 and ds.name == "cifar100"
    assert ds.class_names == tuple(f"fine_{i:02d}" for i in range(100))
    np.testing.assert_allclose(ds.mean, (0.5071, 0.4865, 0.4409), atol=1e-7)
    np.testing.assert_allclose(ds.std, (0.2673, 0.2564, 0.2762), atol=1e-7)


def test_data_dir_falls_back_to_the_environment(cifar100_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("COMDML_DATA_DIR", str(cifar100_dir))
    monkeypatch.setenv("COMDML_CACHE_DIR", str(tmp_path / "env_cache"))
    ds = load_dataset("cifar100")
    assert ds.num_train == C100_TRAIN
    assert len(list((tmp_path / "env_cache").iterdir())) == 1


def test_changed_source_is_decoded_again(cifar100_dir, tmp_path, monkeypatch):
    load_dataset("cifar100", cifar100_dir, tmp_path)
    decodes = []
    spec = sources.DATASETS["cifar100"]
    counting = lambda *a: decodes.append(1) or spec.decode(*a)
    monkeypatch.setitem(sources.DATASETS, "cifar100", dataclasses.replace(spec, decode=counting))
    load_dataset("cifar100", cifar100_dir, tmp_path)
    assert decodes == []  # warm cache
    shard = next((cifar100_dir / "cifar100" / "3.0.2").glob("cifar100-train.array_record-*"))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset("cifar100", cifar100_dir, tmp_path)
    assert decodes == [1]  # the stale entry was not used
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # no temporary folders left behind


# ------------------------------------------------------------- CINIC-10 fixture


def _write_cinic(root):
    """Writes a tiny CINIC-10 tree; returns {split: (images, labels)} in ImageFolder order."""
    from PIL import Image

    rng = np.random.default_rng(0)
    expected = {}
    for split, per_class in (("train", 2), ("valid", 1), ("test", 1)):
        images, labels = [], []
        for label, cls in enumerate(CINIC10_CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            # File names whose sorted order differs from their creation order.
            names = [f"n0{label}_{9 - j}.png" for j in range(per_class)]
            names += [f"cifar10-{split}-{j}.png" for j in range(per_class)]
            written = {}
            for name in names:
                if name.endswith("_9.png") and split == "train":
                    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
                    Image.fromarray(grey, mode="L").save(folder / name)
                    written[name] = np.repeat(grey[:, :, None], 3, axis=2)
                else:
                    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(img).save(folder / name)
                    written[name] = img
            (folder / "notes.txt").write_text("not an image")
            for name in sorted(written):
                images.append(written[name])
                labels.append(label)
        expected[split] = (np.stack(images), np.array(labels))
    return expected


@pytest.fixture(scope="module")
def cinic_tree(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cinic_data")
    expected = _write_cinic(data_dir / "cinic10")
    return data_dir, expected


def test_cinic10_loads_in_imagefolder_order(cinic_tree, tmp_path):
    data_dir, expected = cinic_tree
    ds = load_dataset("cinic10", data_dir, tmp_path)
    assert ds.x_train.shape == (40, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
    assert np.array_equal(ds.x_train, expected["train"][0])
    assert np.array_equal(ds.y_train, expected["train"][1])
    assert np.array_equal(ds.x_test, expected["test"][0])
    assert np.array_equal(ds.y_test, expected["test"][1])
    assert ds.class_names == CINIC10_CLASSES and ds.num_classes == 10
    assert ds.y_train.dtype == np.int32


def test_cinic10_accepts_the_folder_itself_and_train_plus_valid(cinic_tree, tmp_path):
    data_dir, expected = cinic_tree
    ds = load_dataset("cinic10", data_dir / "cinic10", tmp_path, include_valid=True)
    x = np.concatenate([expected["train"][0], expected["valid"][0]])
    y = np.concatenate([expected["train"][1], expected["valid"][1]])
    assert np.array_equal(ds.x_train, x)
    assert np.array_equal(ds.y_train, y)
    assert np.array_equal(ds.x_test, expected["test"][0])


def test_include_valid_is_refused_for_cifar(cifar100_dir, tmp_path):
    with pytest.raises(ValueError, match="no valid split"):
        load_dataset("cifar100", cifar100_dir, tmp_path, include_valid=True)


# --------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_tfds_data_names_the_path(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path / "nowhere", tmp_path / "cache")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / name / "3.0.2") in message
    assert err.value.path == str(tmp_path / "nowhere" / name / "3.0.2")
    assert "--config.data.data_dir" in message and "COMDML_DATA_DIR" in message
    assert f"tfds build {name}" in message and "array_record" in message
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "cache").exists()


def test_tfds_folder_in_another_file_format_is_reported(tmp_path):
    folder = tmp_path / "cifar10" / "3.0.2"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, tmp_path / "cache")
    assert str(folder) in str(err.value) and "convert_format" in str(err.value)
    assert "['train', 'test']" in str(err.value)


def test_missing_cinic10_names_the_paths(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cinic10", tmp_path, tmp_path / "cache")
    message = str(err.value)
    assert str(tmp_path / "cinic10") in message
    assert "CINIC-10.tar.gz" in message and "--config.data.data_dir" in message


def test_missing_data_dir_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("COMDML_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="COMDML_DATA_DIR"):
        load_dataset("cifar10", "", tmp_path)


def test_unknown_name_lists_the_registry():
    with pytest.raises(ValueError, match="cinic10"):
        load_dataset("mnist", "/nonexistent")


# --------------------------------------------------------------------- subsets


def _toy_dataset(labels_train, labels_test):
    def images(labels):
        # Each image carries its own position, so selections can be checked.
        pos = np.arange(len(labels))
        return np.broadcast_to(pos[:, None, None, None] % 256, (len(labels), 2, 2, 3)).astype(
            np.uint8
        )

    return Dataset(
        x_train=images(labels_train),
        y_train=np.asarray(labels_train, np.int32),
        x_test=images(labels_test),
        y_test=np.asarray(labels_test, np.int32),
        num_classes=3,
        name="toy",
        mean=np.zeros(3, np.float32),
        std=np.ones(3, np.float32),
    )


def test_subset_is_stratified_seeded_and_ordered():
    # 60 / 30 / 10 samples of classes 0 / 1 / 2; a 20 % subset keeps 12 / 6 / 2.
    y = np.repeat([0, 1, 2], [60, 30, 10])
    np.random.default_rng(0).shuffle(y)
    ds = _toy_dataset(y, y[:50])
    small = subset(ds, 20, 0, seed=5)
    assert np.array_equal(np.bincount(small.y_train, minlength=3), [12, 6, 2])
    assert small.x_test is ds.x_test  # 0 keeps everything
    kept = small.x_train[:, 0, 0, 0].astype(int)
    assert np.all(np.diff(kept) > 0)  # original relative order
    assert np.array_equal(small.y_train, y[kept])
    again = subset(ds, 20, 0, seed=5)
    other = subset(ds, 20, 0, seed=6)
    assert np.array_equal(again.x_train, small.x_train)
    assert not np.array_equal(other.x_train, small.x_train)


def test_subset_largest_remainder_rounding():
    # Quotas 7 * (5, 3, 2) / 10 = 3.5, 2.1, 1.4 -> floors 3, 2, 1 and the one
    # remaining sample goes to the largest remainder (class 0): 4, 2, 1.
    y = np.repeat([0, 1, 2], [5, 3, 2])
    idx = stratified_indices(y, 7, np.random.default_rng(0))
    assert np.array_equal(np.bincount(y[idx], minlength=3), [4, 2, 1])
    with pytest.raises(ValueError):
        stratified_indices(y, 11, np.random.default_rng(0))


def test_dataset_from_config(cifar100_dir, tmp_path):
    cfg = ConfigDict(
        {
            "name": "cifar100",
            "data_dir": str(cifar100_dir),
            "cache_dir": str(tmp_path),
            "train_subset": 20,
            "test_subset": 0,
        }
    )
    ds = dataset_from_config(cfg, seed=0)
    assert ds.num_train == 20 and ds.num_test == C100_TEST
