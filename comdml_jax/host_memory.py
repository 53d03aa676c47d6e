"""Keep XLA:CPU's per-execution scratch memory mapped between steps (issue 6).

XLA:CPU allocates every execution's temporary buffer (about 1 GB for a
ResNet-56 training step at batch 100) with ``posix_memalign`` from a worker
thread. glibc serves such a request from a fresh ``mmap`` in a per-thread arena
and unmaps it on free, so every step page-faults and zeroes the whole buffer
again: measured here, 248,000 minor faults and 0.43 s of kernel time per step,
a quarter of the step's CPU time. Asking glibc for one arena, no ``mmap`` for
large blocks and no trimming makes the freed block reusable: 0 faults per step.
The cost is that the process keeps its peak heap, as PyTorch's caching
allocator does.

Call :func:`tune_host_allocator` once, before JAX runs anything (the CLI and
the benchmarks do). It only acts on Linux with glibc, and
``COMDML_TUNE_MALLOC=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False


def tune_host_allocator() -> bool:
    """Configures glibc malloc to reuse large blocks; returns whether it did.

    Returns:
      True if the settings were applied (now or by an earlier call).
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("COMDML_TUNE_MALLOC", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = (
        libc.mallopt(_M_ARENA_MAX, 1) == 1
        and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
    )
    _applied = bool(ok)
    return _applied
