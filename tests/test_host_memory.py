"""The glibc tunables for XLA:CPU's scratch buffers (comdml_jax.host_memory)."""

import os
import platform
import subprocess
import sys

import pytest

from comdml_jax import host_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


@glibc
def test_tuned_env_adds_the_tunables_once_and_keeps_others(monkeypatch):
    monkeypatch.delenv("COMDML_TUNE_MALLOC", raising=False)
    env = host_memory.tuned_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "X": "1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:" + host_memory.TUNABLES
    assert env["X"] == "1"
    assert host_memory.tuned_env(env) == env
    assert host_memory.tuned_env({})["GLIBC_TUNABLES"] == host_memory.TUNABLES


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("COMDML_TUNE_MALLOC", "0")
    assert "GLIBC_TUNABLES" not in host_memory.tuned_env({"COMDML_TUNE_MALLOC": "0"})
    assert host_memory._applicable() is False  # so reexec_with_tunables does nothing


@glibc
def test_reexec_restarts_the_command_with_the_tunables():
    code = (
        "import os, sys; from comdml_jax import host_memory as h; "
        "print('start', os.environ.get('GLIBC_TUNABLES', ''), flush=True); "
        "h.reexec_with_tunables(); print('after', os.environ['GLIBC_TUNABLES'], sys.argv[1:])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "COMDML_TUNE_MALLOC")}
    out = subprocess.run(
        [sys.executable, "-c", code, "arg1"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # The first process prints "start" with nothing set and re-executes; the second
    # starts with the tunables, so it does not re-execute again.
    assert out[0] == "start "
    assert out[1] == "start " + host_memory.TUNABLES
    assert out[2] == f"after {host_memory.TUNABLES} ['arg1']"
    assert len(out) == 3
