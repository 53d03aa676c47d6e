"""Image-classification datasets as host numpy arrays, decoded once and cached.

:func:`load_dataset` finds a registered data set's source
(:mod:`comdml_jax.data.sources`: the registry, the TFDS / CINIC-10 / official
archive readers), fetches the official CIFAR archive when allowed and needed
(:mod:`comdml_jax.data.download`), and reads the decoded arrays from the on-disk
cache, decoding and writing them on a miss (:mod:`comdml_jax.data.cache`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from comdml_jax.data import download as download_lib
from comdml_jax.data.cache import _cache_key, _read_cache, _write_cache, resolve_cache_dir
from comdml_jax.data.sources import (
    DATA_DIR_ENV,
    DATA_DIR_FIELD,
    DATASETS,
    DatasetNotFoundError,
    DatasetSpec,
)

Images = np.ndarray  # uint8 [N, 32, 32, 3]
Labels = np.ndarray  # int32 [N]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set held as host numpy arrays.

    Arrays loaded from the cache are read-only memory maps; index them (which
    copies) or ``np.array`` them before writing.

    Attributes:
      x_train: uint8 [N, H, W, 3] training images.
      y_train: int32 [N] training labels in [0, num_classes).
      x_test: uint8 [M, H, W, 3] test images.
      y_test: int32 [M] test labels.
      num_classes: number of classes C.
      name: registry name, e.g. ``"cifar10"``.
      mean: float32 (3,) per-channel normalisation mean on the [0, 1] scale.
      std: float32 (3,) per-channel normalisation std on the [0, 1] scale.
      class_names: the C class names in label order.
    """

    x_train: Images
    y_train: Labels
    x_test: Images
    y_test: Labels
    num_classes: int
    name: str
    mean: np.ndarray
    std: np.ndarray
    class_names: tuple[str, ...] = ()

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])


def _locate_or_fetch(spec: DatasetSpec, root: Path, download: bool, mirror: str) -> Path:
    """The source folder; fetches the official archive first if allowed and needed."""
    try:
        return spec.locate(root)
    except DatasetNotFoundError as err:
        if not download or spec.name not in download_lib.ARCHIVES:
            raise
        try:
            download_lib.fetch(spec.name, root, mirror)
        except download_lib.DownloadError as offline:
            raise DatasetNotFoundError(
                f"{err}\nFetching the official archive failed too: {offline}. Copy the data "
                f"in as above, or extract {download_lib.ARCHIVES[spec.name].filename} into "
                f"{root}.",
                err.path,
            ) from offline
        return spec.locate(root)


# ---------------------------------------------------------------------- public API


def check_source(data_cfg) -> None:
    """Refuses a missing data set before any work, where no download could fetch it.

    What :func:`load_dataset` would find first (the data dir, then the source
    folder), without reading, decoding or fetching anything. A source that a
    download may still fetch (``data.download`` for CIFAR) is left to the run.

    Args:
      data_cfg: the config's ``data`` block.

    Raises:
      DatasetNotFoundError: no data dir is configured, or the source is not in it.
    """
    name = data_cfg.name
    download = bool(getattr(data_cfg, "download", True)) and name in download_lib.ARCHIVES
    chosen = os.fspath(getattr(data_cfg, "data_dir", "")) or os.environ.get(DATA_DIR_ENV, "")
    if download:
        return
    if not chosen:
        raise DatasetNotFoundError(
            f"no data directory for {name!r}: data_dir is empty and ${DATA_DIR_ENV} is not set. "
            f"Set {DATA_DIR_FIELD}=DIR or ${DATA_DIR_ENV}=DIR.",
            "",
        )
    DATASETS[name].locate(Path(chosen).expanduser())


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] = "",
    cache_dir: str | os.PathLike[str] = "",
    *,
    include_valid: bool = False,
    download: bool = False,
    mirror: str = "",
) -> Dataset:
    """Loads a registered data set, decoding it once and caching the arrays.

    Args:
      name: registry name: ``cifar10``, ``cifar100`` or ``cinic10``.
      data_dir: folder with the source data (the TFDS data dir for CIFAR; for
        CINIC-10 the folder holding ``cinic10/`` or ``train|valid|test/``).
        Empty: ``$COMDML_DATA_DIR``.
      cache_dir: cache folder. Empty: ``$COMDML_CACHE_DIR``, else
        ``~/.cache/comdml_jax``.
      include_valid: CINIC-10 only: append the ``valid`` split to ``train``.
      download: CIFAR only: when the data is not in the data dir, fetch the
        official archive into it (:mod:`comdml_jax.data.download`); with no data
        dir configured, into ``download.DEFAULT_DATA_DIR``.
      mirror: base URL of the archives (default ``$COMDML_DATA_MIRROR``, else the
        authors' page).

    Returns:
      The data set, samples in the original release order.

    Raises:
      DatasetNotFoundError: the source is missing (and could not be fetched);
        the message names the path, the setting to change and how to prepare the data.
      download.ChecksumError: the fetched archive is not the official one.
      ValueError: unknown name, or ``include_valid`` for a data set without one.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    spec = DATASETS[name]
    if include_valid and not spec.has_valid:
        raise ValueError(f"dataset {name!r} has no valid split; include_valid must be False")
    chosen = os.fspath(data_dir) or os.environ.get(DATA_DIR_ENV, "")
    if not chosen and download and name in download_lib.ARCHIVES:
        chosen = os.fspath(download_lib.DEFAULT_DATA_DIR)
    if not chosen:
        raise DatasetNotFoundError(
            f"no data directory for {name!r}: data_dir is empty and ${DATA_DIR_ENV} is not set. "
            f"Set {DATA_DIR_FIELD}=DIR or ${DATA_DIR_ENV}=DIR.",
            "",
        )
    root = Path(chosen).expanduser()
    source = _locate_or_fetch(spec, root, download, mirror)
    entry = resolve_cache_dir(cache_dir) / _cache_key(spec, source, include_valid)
    decoded = _read_cache(entry)
    if decoded is None:
        _write_cache(entry, spec.decode(source, root, include_valid))
        decoded = _read_cache(entry)
        assert decoded is not None
    return Dataset(
        x_train=decoded.x_train,
        y_train=decoded.y_train,
        x_test=decoded.x_test,
        y_test=decoded.y_test,
        num_classes=spec.num_classes,
        name=spec.name,
        mean=np.asarray(spec.mean, dtype=np.float32),
        std=np.asarray(spec.std, dtype=np.float32),
        class_names=decoded.class_names,
    )


def synthetic_dataset(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """A CIFAR-10-shaped Dataset of random uint8 images, labels cycling 0..9 (stratified).

    For benchmarks and tests that exercise the engine without the real data
    (``experiment.build(..., dataset=)``).
    """
    rng = np.random.default_rng(seed)
    return Dataset(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.int32),
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=(np.arange(n_test) % 10).astype(np.int32),
        num_classes=10,
        name="cifar10",
        mean=np.array([0.49, 0.48, 0.45], np.float32),
        std=np.array([0.25, 0.24, 0.26], np.float32),
    )


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A sorted random subset of ``n`` positions with the label proportions kept.

    Each class c gets floor(n * N_c / N) samples, and the remaining ones go to
    the classes with the largest fractional parts (largest-remainder rounding),
    so the total is exactly ``n``.

    Args:
      labels: int [N] labels.
      n: subset size, 0 < n <= N.
      rng: numpy random generator.

    Returns:
      int64 [n] sorted indices into ``labels``.
    """
    total = labels.shape[0]
    if not 0 < n <= total:
        raise ValueError(f"subset size {n} must be in 1..{total}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / total
    take = np.floor(quota).astype(np.int64)
    extra = n - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def subset(dataset: Dataset, train_n: int, test_n: int, seed: int) -> Dataset:
    """A seeded, stratified subset for quick runs (config data.train_subset / test_subset).

    Args:
      dataset: the full data set.
      train_n: training samples to keep; 0 keeps all.
      test_n: test samples to keep; 0 keeps all.
      seed: numpy seed; train and test draw from independent streams.

    Returns:
      A Dataset with the chosen samples in their original relative order.
    """
    train_rng, test_rng = (np.random.default_rng([seed, k]) for k in (0, 1))
    changes = {}
    if train_n and train_n != dataset.num_train:
        idx = stratified_indices(np.asarray(dataset.y_train), train_n, train_rng)
        changes.update(x_train=dataset.x_train[idx], y_train=dataset.y_train[idx])
    if test_n and test_n != dataset.num_test:
        idx = stratified_indices(np.asarray(dataset.y_test), test_n, test_rng)
        changes.update(x_test=dataset.x_test[idx], y_test=dataset.y_test[idx])
    return dataclasses.replace(dataset, **changes)


def dataset_from_config(data_cfg, seed: int) -> Dataset:
    """Loads and subsets the data set that a config's ``data`` block names.

    Args:
      data_cfg: ``config.data`` (fields name, data_dir, cache_dir, train_subset,
        test_subset; include_valid, download (default True) and mirror if present).
      seed: the run seed, for the subset draw.

    Returns:
      The data set to train and evaluate on.
    """
    ds = load_dataset(
        data_cfg.name,
        data_cfg.data_dir,
        data_cfg.cache_dir,
        include_valid=bool(getattr(data_cfg, "include_valid", False)),
        download=bool(getattr(data_cfg, "download", True)),
        mirror=str(getattr(data_cfg, "mirror", "")),
    )
    return subset(ds, data_cfg.train_subset, data_cfg.test_subset, seed)
