"""Fetching CIFAR on a fresh machine (comdml_jax.data.download), against a server on 127.0.0.1.

The archives are built here in the official layout (Python-2 style pickles
with bytes keys, images as 3072 channel-planar bytes): small synthetic ones
for the fast tests, and one from the real CIFAR-10 arrays (slow) whose
decoded arrays must match the published sha256 of data/README.md.
"""

import functools
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest

from comdml_jax.data import download
from comdml_jax.data.datasets import load_dataset
from comdml_jax.data.sources import DatasetNotFoundError

CIFAR10_NAMES = (
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


def _pickle(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _batch(x: np.ndarray, y: np.ndarray, label_key: bytes) -> bytes:
    planar = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # the official byte order
    return _pickle(
        {
            b"batch_label": b"batch",
            label_key: [int(v) for v in y],
            b"data": planar,
            b"filenames": [b"f%d.png" % i for i in range(len(x))],
        }
    )


def build_archive(name: str, x_train, y_train, x_test, y_test, names, level: int = 6) -> bytes:
    """A ``cifar-*-python.tar.gz`` in the official layout."""
    arch = download.ARCHIVES[name]
    files = {}
    for i, part in enumerate(np.array_split(np.arange(len(y_train)), len(arch.train))):
        files[arch.train[i]] = _batch(x_train[part], y_train[part], arch.labels)
    files[arch.test[0]] = _batch(x_test, y_test, arch.labels)
    files[arch.meta] = _pickle({arch.names: [n.encode() for n in names]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level) as tar:
        for fname, data in files.items():
            info = tarfile.TarInfo(f"{arch.folder}/{fname}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def synthetic(num_classes: int, n_train: int = 25, n_test: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, num_classes, n_train).astype(np.int32)
    y_test = rng.integers(0, num_classes, n_test).astype(np.int32)
    return x_train, y_train, x_test, y_test


class Server:
    """Serves files from a folder on 127.0.0.1 in a thread and counts the requests."""

    def __init__(self, root):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``serve(name, archive bytes) -> Server``: a local server of the archive, its md5 pinned."""
    root = tmp_path / "mirror"
    root.mkdir()
    servers = []

    def serve(name, data, md5=None):
        (root / download.ARCHIVES[name].filename).write_bytes(data)
        monkeypatch.setitem(
            download.MD5, download.ARCHIVES[name].filename, md5 or hashlib.md5(data).hexdigest()
        )
        servers.append(Server(root))
        return servers[-1]

    yield serve
    for s in servers:
        s.close()


def _hidden_leftovers(data_dir):
    if not data_dir.exists():
        return []
    return [p.name for p in data_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "name, num_classes, names",
    [("cifar10", 10, CIFAR10_NAMES), ("cifar100", 100, tuple(f"class{i}" for i in range(100)))],
)
def test_fetch_prepares_the_archive_once_and_loads_it_in_order(
    served, tmp_path, name, num_classes, names
):
    arrays = synthetic(num_classes)
    server = served(name, build_archive(name, *arrays, names))
    data_dir = tmp_path / "data"
    ds = load_dataset(name, data_dir, tmp_path / "cache", download=True, mirror=server.url)
    for got, want in zip((ds.x_train, ds.y_train, ds.x_test, ds.y_test), arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert ds.class_names == names and ds.num_classes == num_classes
    assert server.requests == ["/" + download.ARCHIVES[name].filename]
    folder = data_dir / download.ARCHIVES[name].folder
    assert folder.is_dir() and _hidden_leftovers(data_dir) == []
    assert not (data_dir / download.ARCHIVES[name].filename).exists()  # the archive is not kept
    # Again with a new, empty cache: the extracted folder is read, nothing is downloaded.
    again = load_dataset(name, data_dir, tmp_path / "cache2", download=True, mirror=server.url)
    np.testing.assert_array_equal(again.x_train, arrays[0])
    assert len(server.requests) == 1


def test_corrupted_archive_is_refused_and_nothing_is_prepared(served, tmp_path):
    good = build_archive("cifar10", *synthetic(10), CIFAR10_NAMES)
    bad = bytearray(good)
    for i in range(100, len(bad), max(1, len(bad) // 50)):
        bad[i] ^= 0xFF
    server = served("cifar10", bytes(bad), md5=hashlib.md5(good).hexdigest())
    data_dir = tmp_path / "data"
    with pytest.raises(download.ChecksumError) as err:
        load_dataset("cifar10", data_dir, tmp_path / "cache", download=True, mirror=server.url)
    message = str(err.value)
    assert server.url + "cifar-10-python.tar.gz" in message
    assert hashlib.md5(good).hexdigest() in message  # expected
    assert hashlib.md5(bytes(bad)).hexdigest() in message  # actual
    assert not data_dir.exists()  # no archive, no temporary file, no folder, no empty data dir
    assert not (tmp_path / "cache").exists()
    # A data dir that holds other things keeps them, and gains nothing.
    data_dir.mkdir()
    (data_dir / "other").write_text("x")
    with pytest.raises(download.ChecksumError):
        load_dataset("cifar10", data_dir, tmp_path / "cache", download=True, mirror=server.url)
    assert [p.name for p in data_dir.iterdir()] == ["other"]


def test_offline_gives_the_not_found_message_and_the_url(tmp_path):
    with socket.socket() as s:  # a port with nobody listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mirror = f"http://127.0.0.1:{port}/"
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", data_dir, tmp_path / "cache", download=True, mirror=mirror)
    message = str(err.value)
    assert mirror + "cifar-10-python.tar.gz" in message
    assert "tfds build cifar10" in message and "--config.data.data_dir" in message
    assert err.value.path == str(data_dir / "cifar10" / "3.0.2")
    assert not data_dir.exists()  # the failed fetch leaves no empty data dir behind


def test_no_download_unless_asked(served, tmp_path):
    server = served("cifar10", build_archive("cifar10", *synthetic(10), CIFAR10_NAMES))
    with pytest.raises(DatasetNotFoundError, match="tfds build cifar10"):
        load_dataset("cifar10", tmp_path / "data", tmp_path / "cache", mirror=server.url)
    assert server.requests == []


def test_mirror_from_the_environment(monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, "http://example.invalid/cifar")
    assert download.url_for("cifar100") == "http://example.invalid/cifar/cifar-100-python.tar.gz"
    assert download.url_for("cifar10", "http://a/") == "http://a/cifar-10-python.tar.gz"
    monkeypatch.delenv(download.MIRROR_ENV)
    assert download.url_for("cifar10") == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )


def test_published_md5_table():
    assert download.MD5 == {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    }


# sha256 of the decoded CIFAR-10 arrays in original order (data/README.md), y as int64.
CIFAR10_SHA256 = {
    "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
    "y_train": "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f",
    "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
    "y_test": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb",
}


@pytest.mark.slow
def test_archive_of_the_real_cifar10_decodes_to_the_published_arrays(cifar10_dir, served, tmp_path):
    real = load_dataset("cifar10", cifar10_dir, tmp_path / "cache_tfds")
    data = build_archive(
        "cifar10", real.x_train, real.y_train, real.x_test, real.y_test, real.class_names, level=1
    )
    server = served("cifar10", data)
    ds = load_dataset(
        "cifar10", tmp_path / "data", tmp_path / "cache", download=True, mirror=server.url
    )
    for key, digest in CIFAR10_SHA256.items():
        a = np.asarray(getattr(ds, key))
        a = a.astype(np.int64) if key.startswith("y") else a
        assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == digest, key
    assert ds.class_names == CIFAR10_NAMES
