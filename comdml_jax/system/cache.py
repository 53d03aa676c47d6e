"""Small caches of the system layer: an LRU map and array digests for cache keys.

A leaf module: the topology caches its ``Links`` per bandwidth vector, and
the routing and pairing code cache their results on a ``Links``, all with
these two.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable

import numpy as np


class LRU:
    """A small least-recently-used map: ``get(key, make)`` computes on a miss."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._d: collections.OrderedDict = collections.OrderedDict()

    def get(self, key, make: Callable[[], object]):
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        value = make()
        self._d[key] = value
        if len(self._d) > self.maxsize:
            self._d.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._d)


def digest(*arrays) -> bytes:
    """A 16-byte hash of arrays' dtypes, shapes and contents (cache keys)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()
