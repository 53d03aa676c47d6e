"""Image-classification datasets as host numpy arrays, decoded once and cached.

The paper's three data sets (SPEC §9) sit in a registry by name:

* ``cifar10`` and ``cifar100``: TFDS's ``cifar10`` / ``cifar100`` builders
  (version 3.0.2), prepared with ``file_format='array_record'`` and read through
  ``tfds.data_source`` (no TensorFlow needed). TFDS stores the records in a
  shuffled order; :func:`load_dataset` puts them back in the original release
  order using the ``id`` feature (``train_00042`` is index 42).
* ``cinic10``: the official CINIC-10 folder layout
  ``<dir>/{train,valid,test}/<class>/*.png``. Classes are the sorted class names,
  samples within a class are in sorted file-name order (torchvision's
  ``ImageFolder`` order). The training set is ``train`` only unless
  ``include_valid=True`` appends ``valid`` (the CINIC-10 authors' "train+valid"
  setting); the paper does not say which it used, so the default is ``train``.

Decoding the PNGs takes seconds to minutes, so the decoded arrays are written
once as ``.npy`` files into a cache folder and memory-mapped on later runs
(well under a second). The cache entry is keyed by dataset name, version,
options and a hash of the source files' names, sizes and modification times,
so a changed source never reads a stale cache. Entries are written to a
temporary folder and renamed into place, so a crashed or concurrent writer
never leaves a half-written entry behind.

CIFAR-10 and CIFAR-100 have a second source: the official python-pickle
archive extracted into the data dir (``cifar-10-batches-py/``,
``cifar-100-python/``). When neither source is there, ``download=True`` (config
``data.download``, the default for runs) fetches and prepares that archive
once (:mod:`comdml_jax.data.download`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from comdml_jax.data import download as download_lib

Images = np.ndarray  # uint8 [N, 32, 32, 3]
Labels = np.ndarray  # int32 [N]

DATA_DIR_ENV = "COMDML_DATA_DIR"
CACHE_DIR_ENV = "COMDML_CACHE_DIR"
DATA_DIR_FIELD = "--config.data.data_dir"
DEFAULT_CACHE_DIR = Path("~/.cache/comdml_jax")
# Bump when the cache layout or the decoding changes, to invalidate old entries.
_CACHE_FORMAT = 1
_ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


class DatasetNotFoundError(FileNotFoundError):
    """The source files of a data set are not where the configuration says.

    Attributes:
      path: the path that was looked in (the most specific one).
    """

    def __init__(self, message: str, path: str | os.PathLike[str]):
        super().__init__(message)
        self.path = str(path)


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


class _Decoded(NamedTuple):
    """What a source reader returns before caching."""

    x_train: Images
    y_train: Labels
    x_test: Images
    y_test: Labels
    class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to find, fingerprint and decode one registered data set.

    Attributes:
      name: registry name.
      version: source version, part of the cache key.
      num_classes: number of classes.
      mean: per-channel mean on the [0, 1] scale.
      std: per-channel std on the [0, 1] scale.
      locate: ``(data_dir) -> source folder``; raises DatasetNotFoundError.
      decode: ``(source folder, data_dir, include_valid) -> _Decoded``.
      has_valid: whether ``include_valid`` means anything for this data set.
      num_train: samples in the ``train`` split (known without loading, for
        :mod:`comdml_jax.config_check`).
      num_test: samples in the ``test`` split.
      num_valid: samples in the ``valid`` split (``include_valid`` adds them).
    """

    name: str
    version: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    locate: Callable[[Path], Path]
    decode: Callable[[Path, Path, bool], _Decoded]
    has_valid: bool = False
    num_train: int = 0
    num_test: int = 0
    num_valid: int = 0

    def train_size(self, include_valid: bool = False) -> int:
        """Training samples before any subset: ``train``, plus ``valid`` if included."""
        return self.num_train + (self.num_valid if include_valid else 0)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Adds ``spec`` to the registry under ``spec.name`` and returns it."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


# --------------------------------------------------------------------------- TFDS


def _tfds_locate(name: str, version: str) -> Callable[[Path], Path]:
    def locate(data_dir: Path) -> Path:
        folder = data_dir / name / version
        prepare = (
            f"To prepare it, on a machine with internet run\n"
            f"    tfds build {name} --data_dir=DIR --file_format=array_record\n"
            f"(or tfds.builder('{name}', data_dir=DIR, file_format='array_record')"
            f".download_and_prepare()), then copy DIR/{name}/{version} to {folder}."
        )
        if not (folder / "dataset_info.json").is_file():
            raise DatasetNotFoundError(
                f"{name} {version} (TFDS, array_record) not found: no dataset_info.json in "
                f"{folder}.\nSet {DATA_DIR_FIELD}=DIR or ${DATA_DIR_ENV}=DIR to the TFDS data "
                f"folder that holds {name}/{version}/ (looked in data dir {data_dir}).\n{prepare}",
                folder,
            )
        missing = [
            split
            for split in ("train", "test")
            if not list(folder.glob(f"{name}-{split}.array_record-*"))
        ]
        if missing:
            raise DatasetNotFoundError(
                f"{name} {version} in {folder} has no array_record files for split(s) "
                f"{missing} (prepared in another file format?). Convert it with\n"
                f"    tfds convert_format --dataset_version_dir={folder} "
                f"--out_file_format=array_record\nor rebuild it.\n{prepare}",
                folder,
            )
        return folder

    return locate


def _original_order(ids: Sequence[bytes | str], split: str) -> np.ndarray:
    """Positions that sort TFDS records by the index in their ``id``.

    Args:
      ids: the ``id`` feature of every record, e.g. ``b"train_00042"``.
      split: split name, for the error message.

    Returns:
      int64 [N] array ``order`` with ``records[order[i]]`` the i-th original sample.
    """
    index = np.array(
        [int((i.decode() if isinstance(i, bytes) else i).rsplit("_", 1)[1]) for i in ids],
        dtype=np.int64,
    )
    n = index.shape[0]
    if not np.array_equal(np.sort(index), np.arange(n)):
        raise ValueError(f"split {split!r}: the record ids are not a permutation of 0..{n - 1}")
    order = np.empty(n, dtype=np.int64)
    order[index] = np.arange(n)
    return order


def _tfds_decode(name: str, version: str) -> Callable[[Path, Path, bool], _Decoded]:
    def decode(folder: Path, data_dir: Path, include_valid: bool) -> _Decoded:
        del folder, include_valid
        import tensorflow_datasets as tfds  # slow import: only on a cache miss

        source = tfds.data_source(f"{name}:{version}", data_dir=str(data_dir), download=False)
        out = {}
        for split in ("train", "test"):
            records = source[split]
            n, chunk = len(records), 2000
            xs, ys, ids = [], [], []
            for start in range(0, n, chunk):
                batch = records.__getitems__(list(range(start, min(start + chunk, n))))
                xs.append(np.stack([r["image"] for r in batch]).astype(np.uint8, copy=False))
                ys.append(np.array([r["label"] for r in batch], dtype=np.int32))
                ids.extend(r["id"] for r in batch)
            order = _original_order(ids, split)
            out[f"x_{split}"] = np.concatenate(xs)[order]
            out[f"y_{split}"] = np.concatenate(ys)[order]
        names = tuple(source["train"].dataset_info.features["label"].names)
        return _Decoded(class_names=names, **out)

    return decode


def _register_tfds(
    name, num_classes, mean, std, version="3.0.2", num_train=50_000, num_test=10_000
) -> DatasetSpec:
    return register_dataset(
        DatasetSpec(
            name=name,
            version=version,
            num_classes=num_classes,
            mean=mean,
            std=std,
            locate=_tfds_locate(name, version),
            decode=_tfds_decode(name, version),
            num_train=num_train,
            num_test=num_test,
        )
    )


# Train-set statistics: CIFAR-10 from data/README.md, CIFAR-100 and CINIC-10 as
# published with the data sets / the ComDML original code.
_register_tfds(
    "cifar10", 10, (0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)
)
_register_tfds("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))

# ----------------------------------------------------------------------- CINIC-10

CINIC10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CINIC_SUBDIRS = ("cinic10", "CINIC-10", "")


def _cinic_locate(data_dir: Path) -> Path:
    candidates = [data_dir / sub if sub else data_dir for sub in _CINIC_SUBDIRS]
    for root in candidates:
        if all((root / split).is_dir() for split in ("train", "valid", "test")):
            return root
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(
        f"cinic10 not found: none of {looked} holds train/, valid/ and test/ folders.\n"
        f"Set {DATA_DIR_FIELD}=DIR or ${DATA_DIR_ENV}=DIR so that DIR/cinic10/train/<class>/"
        f"*.png exist (or DIR/train/<class>/*.png).\nTo prepare it, download the official "
        f"archive CINIC-10.tar.gz (https://datashare.ed.ac.uk/handle/10283/3192) and extract "
        f"it with\n    mkdir -p DIR/cinic10 && tar -xzf CINIC-10.tar.gz -C DIR/cinic10",
        candidates[0],
    )


def _cinic_files(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """PNG paths of one split in ImageFolder order, and their labels."""
    split_dir = root / split
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if tuple(found) != CINIC10_CLASSES:
        raise ValueError(
            f"{split_dir} should hold exactly the class folders {list(CINIC10_CLASSES)}, "
            f"found {found}"
        )
    paths, labels = [], []
    for label, cls in enumerate(CINIC10_CLASSES):
        files = sorted(f for f in os.listdir(split_dir / cls) if f.lower().endswith(".png"))
        paths.extend(split_dir / cls / f for f in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int32)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        # Some CINIC-10 images (from ImageNet) are greyscale: convert like ImageFolder.
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _decode_cinic(root: Path, data_dir: Path, include_valid: bool) -> _Decoded:
    del data_dir

    def read(splits):
        paths, labels = [], []
        for split in splits:
            p, y = _cinic_files(root, split)
            paths.extend(p)
            labels.append(y)
        x = np.stack([_read_png(p) for p in paths]) if paths else np.zeros((0, 32, 32, 3))
        return x.astype(np.uint8, copy=False), np.concatenate(labels)

    x_train, y_train = read(("train", "valid") if include_valid else ("train",))
    x_test, y_test = read(("test",))
    return _Decoded(x_train, y_train, x_test, y_test, CINIC10_CLASSES)


register_dataset(
    DatasetSpec(
        name="cinic10",
        version="1.0",
        num_classes=10,
        mean=(0.47889522, 0.47227842, 0.43047404),
        std=(0.24205776, 0.23828046, 0.25874835),
        locate=_cinic_locate,
        decode=_decode_cinic,
        has_valid=True,
        num_train=90_000,  # CINIC-10: 90,000 images in each of train, valid and test
        num_test=90_000,
        num_valid=90_000,
    )
)

# -------------------------------------------------------------------------- cache


def _fingerprint(folder: Path) -> str:
    """sha256 over the relative path, size and mtime of every file below ``folder``.

    Uses ``os.scandir`` (about 0.7 s for CINIC-10's 270,000 files on a warm
    file-system cache), so the check runs on every load.
    """
    root = os.fspath(folder)
    cut = len(root) + 1
    entries, stack = [], [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                else:
                    st = e.stat()
                    entries.append(f"{e.path[cut:]}\0{st.st_size}\0{st.st_mtime_ns}")
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _cache_key(spec: DatasetSpec, source: Path, include_valid: bool) -> str:
    payload = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "name": spec.name,
            "version": spec.version,
            "include_valid": include_valid,
            "files": _fingerprint(source),
        }
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    suffix = "-trainvalid" if include_valid else ""
    return f"{spec.name}-{spec.version}{suffix}-{digest}"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] = "") -> Path:
    """The cache folder: ``cache_dir``, else ``$COMDML_CACHE_DIR``, else ~/.cache/comdml_jax."""
    chosen = os.fspath(cache_dir) or os.environ.get(CACHE_DIR_ENV, "") or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def _read_cache(entry: Path) -> _Decoded | None:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    arrays = {k: np.load(entry / f"{k}.npy", mmap_mode="r").view(np.ndarray) for k in _ARRAY_NAMES}
    return _Decoded(class_names=tuple(meta["class_names"]), **arrays)


def _write_cache(entry: Path, decoded: _Decoded) -> None:
    """Writes the entry into a temporary sibling folder and renames it into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for k in _ARRAY_NAMES:
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(getattr(decoded, k)))
        (tmp / "meta.json").write_text(json.dumps({"class_names": list(decoded.class_names)}))
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # not a concurrent writer's entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------- CIFAR from the official archives


def _with_archive_source(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` that also reads the extracted official archive when the TFDS folder is absent."""
    tfds_locate, tfds_decode = spec.locate, spec.decode

    def locate(data_dir: Path) -> Path:
        try:
            return tfds_locate(data_dir)
        except DatasetNotFoundError:
            folder = download_lib.extracted_folder(spec.name, data_dir)
            if folder is None:
                raise
            return folder

    def decode(folder: Path, data_dir: Path, include_valid: bool) -> _Decoded:
        if download_lib.is_extracted(spec.name, folder):
            return _Decoded(**download_lib.decode(spec.name, folder))
        return tfds_decode(folder, data_dir, include_valid)

    return dataclasses.replace(spec, locate=locate, decode=decode)


for _name in download_lib.ARCHIVES:
    DATASETS[_name] = _with_archive_source(DATASETS[_name])


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
