"""Where the image-classification data sets come from, and how they are decoded.

The paper's three data sets (SPEC §9) sit in a registry by name
(:data:`DATASETS`, a literal built once at import):

* ``cifar10`` and ``cifar100``: TFDS's ``cifar10`` / ``cifar100`` builders
  (version 3.0.2), prepared with ``file_format='array_record'`` and read through
  ``tfds.data_source`` (no TensorFlow needed). TFDS stores the records in a
  shuffled order; the decoder puts them back in the original release
  order using the ``id`` feature (``train_00042`` is index 42).
* ``cinic10``: the official CINIC-10 folder layout
  ``<dir>/{train,valid,test}/<class>/*.png``. Classes are the sorted class names,
  samples within a class are in sorted file-name order (torchvision's
  ``ImageFolder`` order). The training set is ``train`` only unless
  ``include_valid=True`` appends ``valid`` (the CINIC-10 authors' "train+valid"
  setting); the paper does not say which it used, so the default is ``train``.

CIFAR-10 and CIFAR-100 have a second source: the official python-pickle
archive extracted into the data dir (``cifar-10-batches-py/``,
``cifar-100-python/``). When neither source is there, ``download=True`` (config
``data.download``, the default for runs) fetches and prepares that archive
once (:mod:`comdml_jax.data.download`, called from
:func:`comdml_jax.data.datasets.load_dataset`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from comdml_jax.data import download as download_lib

Images = np.ndarray  # uint8 [N, 32, 32, 3]
Labels = np.ndarray  # int32 [N]

DATA_DIR_ENV = "COMDML_DATA_DIR"
DATA_DIR_FIELD = "--config.data.data_dir"


class DatasetNotFoundError(FileNotFoundError):
    """The source files of a data set are not where the configuration says.

    Attributes:
      path: the path that was looked in (the most specific one).
    """

    def __init__(self, message: str, path: str | os.PathLike[str]):
        super().__init__(message)
        self.path = str(path)


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
        :mod:`comdml_jax.data.config`).
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


def _tfds_spec(
    name, num_classes, mean, std, version="3.0.2", num_train=50_000, num_test=10_000
) -> DatasetSpec:
    return DatasetSpec(
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


# ----------------------------------------------------------------------- registry

# Train-set statistics: CIFAR-10 from data/README.md, CIFAR-100 and CINIC-10 as
# published with the data sets / the ComDML original code. The CIFAR entries (the
# names in download.ARCHIVES) also read the extracted official archive.
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": _with_archive_source(
        _tfds_spec(
            "cifar10",
            10,
            (0.49139968, 0.48215841, 0.44653091),
            (0.24703223, 0.24348513, 0.26158784),
        )
    ),
    "cifar100": _with_archive_source(
        _tfds_spec("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    ),
    "cinic10": DatasetSpec(
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
    ),
}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Adds ``spec`` to the registry under ``spec.name`` and returns it."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec
