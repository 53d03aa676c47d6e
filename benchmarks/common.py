"""Shared helpers of the benchmarks: machine description, timing, subprocess runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import jax

        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    return info


def time_calls(fn: Callable[[], object], warmup: int = 2, repeats: int = 7) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (which must block until done)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_json(args: list[str], env: dict | None = None, timeout: int = 1800) -> dict:
    """Runs ``python args...`` in a fresh process and parses the last stdout line as JSON."""
    e = {**os.environ, **(env or {})}
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=e, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jitted_step(programs, role: str, cut: int = 0):
    """One step of ``train.steps.StepPrograms`` jitted as the engine's plain loop does it:
    the state donated, the programs' compiler options."""
    import jax

    return jax.jit(
        programs.pure(*programs.key(role, cut)),
        donate_argnums=(0,),
        compiler_options=programs.xla_options,
    )
