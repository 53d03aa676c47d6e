"""CIFAR-10 and CIFAR-100 on a fresh machine: the official archives, fetched once.

When neither the TFDS folder nor an extracted archive is in the data dir, the
run fetches the official "python version" archive, as tfds and torchvision
do (``comdml_jax.data.datasets.load_dataset(..., download=True)``, config
``data.download``):

1. stream ``MIRROR/FILENAME`` with a tqdm progress bar into a temporary file in
   the data dir (the default mirror is the authors' page; ``data.mirror`` or
   ``$COMDML_DATA_MIRROR`` replace it);
2. check its md5 against :data:`MD5`, the published sums; on a mismatch the
   file is deleted and :class:`ChecksumError` names the URL and both sums;
3. extract it into a temporary folder in the data dir and rename the
   archive's top folder (``cifar-10-batches-py`` / ``cifar-100-python``) into
   place, so a crash never leaves a half-extracted folder; the archive is then
   deleted.

The extracted folder is a source like the TFDS one: :func:`decode` reads its
pickled batches in the original release order (CIFAR-10: ``data_batch_1`` to
``data_batch_5``, then ``test_batch``; CIFAR-100: ``train`` and ``test`` with
the 100 ``fine_labels``), and the data set cache keys on its files.
Offline, :func:`fetch` raises :class:`DownloadError`, which the loader turns
into its usual "not found" message plus the URL it tried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from absl import logging

DEFAULT_MIRROR = "https://www.cs.toronto.edu/~kriz/"
MIRROR_ENV = "COMDML_DATA_MIRROR"
# Where a run with no data dir configured downloads to (tfds: ~/tensorflow_datasets).
DEFAULT_DATA_DIR = Path("~/.cache/comdml_jax/data")
TIMEOUT_S = 60.0  # per socket operation, not for the whole download

# Published md5 of each archive (https://www.cs.toronto.edu/~kriz/cifar.html).
MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}


@dataclasses.dataclass(frozen=True)
class Archive:
    """One data set's official archive and its pickled layout.

    Attributes:
      filename: the archive's file name on the mirror (a key of :data:`MD5`).
      folder: the archive's top folder, extracted into the data dir.
      train: the training batches, in release order.
      test: the test batches.
      labels: the label key of a batch (bytes, the pickles come from Python 2).
      meta: the file holding the class names.
      names: the class-name key of ``meta``.
    """

    filename: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: bytes
    meta: str
    names: bytes


ARCHIVES = {
    "cifar10": Archive(
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        labels=b"labels",
        meta="batches.meta",
        names=b"label_names",
    ),
    "cifar100": Archive(
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        labels=b"fine_labels",
        meta="meta",
        names=b"fine_label_names",
    ),
}


class DownloadError(OSError):
    """The archive could not be fetched (offline, refused, timed out, HTTP error)."""


class ChecksumError(ValueError):
    """The fetched archive's md5 is not the published one; the file was deleted."""


def url_for(name: str, mirror: str = "") -> str:
    """The archive URL: ``mirror`` (else ``$COMDML_DATA_MIRROR``, else the authors' page) + file."""
    base = mirror or os.environ.get(MIRROR_ENV, "") or DEFAULT_MIRROR
    return base.rstrip("/") + "/" + ARCHIVES[name].filename


def extracted_folder(name: str, data_dir: str | os.PathLike[str]) -> Path | None:
    """``data_dir/<archive folder>`` if it holds every batch and the meta file, else None."""
    arch = ARCHIVES[name]
    folder = Path(data_dir) / arch.folder
    needed = (*arch.train, *arch.test, arch.meta)
    return folder if all((folder / f).is_file() for f in needed) else None


def is_extracted(name: str, folder: Path) -> bool:
    """Whether ``folder`` is an extracted archive of ``name`` (not a TFDS folder)."""
    return name in ARCHIVES and folder.name == ARCHIVES[name].folder


def _download(url: str, dest: Path, timeout: float) -> str:
    """Streams ``url`` into ``dest`` with a progress bar; returns the md5 hex digest."""
    from tqdm import tqdm

    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}"
            ) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}") from err
    return md5.hexdigest()


def fetch(
    name: str,
    data_dir: str | os.PathLike[str],
    mirror: str = "",
    timeout: float = TIMEOUT_S,
) -> Path:
    """Downloads, checks and extracts ``name``'s archive into ``data_dir``, once.

    Args:
      name: ``cifar10`` or ``cifar100``.
      data_dir: the data dir (created if missing).
      mirror: base URL replacing the default mirror (config ``data.mirror``).
      timeout: seconds per socket operation.

    Returns:
      The extracted folder (also when it was there already).

    Raises:
      DownloadError: offline, refused, timed out or an HTTP error.
      ChecksumError: the archive's md5 is not :data:`MD5`'s; nothing is kept.
    """
    data_dir = Path(data_dir).expanduser()
    done = extracted_folder(name, data_dir)
    if done is not None:
        return done
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_into(name, data_dir, url_for(name, mirror), timeout)
    except BaseException:
        if created:  # leave no empty data dir behind a failed fetch
            with contextlib.suppress(OSError):
                data_dir.rmdir()  # only if empty
        raise


def _fetch_into(name: str, data_dir: Path, url: str, timeout: float) -> Path:
    arch = ARCHIVES[name]
    logging.info("%s is not in %s: downloading %s", name, data_dir, url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{arch.filename}.", dir=data_dir)
    os.close(fd)
    tmp_file = Path(tmp_name)
    tmp_dir = None
    try:
        actual = _download(url, tmp_file, timeout)
        expected = MD5[arch.filename]
        if actual != expected:
            raise ChecksumError(
                f"refused {url}: its md5 is {actual}, the published md5 of {arch.filename} is "
                f"{expected}. The download is corrupted or not the official archive; it was "
                f"deleted. Try again, or set --config.data.mirror to another mirror."
            )
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{arch.folder}.", dir=data_dir))
        with tarfile.open(tmp_file, "r:gz") as tar:
            tar.extractall(tmp_dir, filter="data")
        if extracted_folder(name, tmp_dir) is None:
            raise ChecksumError(f"{url} does not hold {arch.folder}/ with the expected batches")
        try:
            os.rename(tmp_dir / arch.folder, data_dir / arch.folder)
        except OSError:
            if extracted_folder(name, data_dir) is None:  # not a concurrent fetch's folder
                raise
        logging.info("%s prepared in %s", name, data_dir / arch.folder)
    finally:
        tmp_file.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    folder = extracted_folder(name, data_dir)
    assert folder is not None
    return folder


def _load_batch(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")  # the official pickles are Python 2's


def _images(batch: dict) -> np.ndarray:
    data = np.asarray(batch[b"data"], dtype=np.uint8)  # [N, 3072]: 1024 R, 1024 G, 1024 B
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def decode(name: str, folder: Path) -> dict:
    """Reads an extracted archive in the original release order.

    Args:
      name: ``cifar10`` or ``cifar100``.
      folder: the extracted folder (:func:`extracted_folder`).

    Returns:
      ``x_train``, ``x_test`` (uint8 [N, 32, 32, 3]), ``y_train``, ``y_test``
      (int32 [N]) and ``class_names`` (tuple of str, label order).
    """
    arch = ARCHIVES[name]
    out = {}
    for split, files in (("train", arch.train), ("test", arch.test)):
        batches = [_load_batch(folder / f) for f in files]
        out[f"x_{split}"] = np.ascontiguousarray(np.concatenate([_images(b) for b in batches]))
        out[f"y_{split}"] = np.concatenate(
            [np.asarray(b[arch.labels], dtype=np.int32) for b in batches]
        )
    names = _load_batch(folder / arch.meta)[arch.names]
    out["class_names"] = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return out
