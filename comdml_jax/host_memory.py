"""Keep XLA:CPU's per-execution scratch memory mapped, on huge pages, between steps.

XLA:CPU allocates every execution's temporary buffer (about 1 GB for a
ResNet-56 training step at batch 100) with ``posix_memalign`` from a worker
thread. glibc serves such a request with a fresh ``mmap`` and unmaps it on
free, so every step page-faults and zeroes the whole buffer again.

The fix is glibc's own tunables: one arena, no ``mmap`` for large blocks and no
trimming make the freed block reusable, and ``hugetlb=1`` puts the heap on
transparent huge pages (fewer TLB misses). The cost is that the process keeps
its peak heap, as PyTorch's caching allocator does. The faults and step times
with and without :data:`TUNABLES`: (docs/cpu_speed_experiments.md, *Host
memory: glibc malloc tunables*).

glibc reads tunables only when a process starts, so :func:`reexec_with_tunables`
re-executes the current command with ``GLIBC_TUNABLES`` set (the CLI and the
benchmarks call it first thing). Setting the same values with ``mallopt`` in
a running process fragments the heap under JAX's asynchronous dispatch, so it
is not offered. Only on Linux with glibc; ``COMDML_TUNE_MALLOC=0`` turns it off.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = (
    "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:"
    "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"
)


def _applicable() -> bool:
    return (
        os.environ.get("COMDML_TUNE_MALLOC", "1") != "0"
        and platform.system() == "Linux"
        and platform.libc_ver()[0] == "glibc"
    )


def tuned_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with :data:`TUNABLES` added to GLIBC_TUNABLES."""
    env = dict(os.environ if env is None else env)
    if not _applicable():
        return env
    current = env.get("GLIBC_TUNABLES", "")
    if TUNABLES not in current:
        env["GLIBC_TUNABLES"] = f"{current}:{TUNABLES}" if current else TUNABLES
    return env


def reexec_with_tunables() -> None:
    """Re-executes this process with :data:`TUNABLES` unless they are already in effect.

    Call it first thing in ``main``, before JAX starts. It returns only when the
    tunables are in effect or do not apply.
    """
    if not _applicable() or TUNABLES in os.environ.get("GLIBC_TUNABLES", ""):
        return
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], tuned_env())
