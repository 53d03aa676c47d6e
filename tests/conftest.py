"""Test set-up: fake 8 CPU devices before JAX is imported anywhere.

The real CIFAR-10 lives outside the package; tests find it through the
``COMDML_DATA_DIR`` environment variable (the README's test command sets it).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Several tests compile the same programs (e.g. the smoke config run in and out of
# process): a per-session persistent compilation cache saves them the recompiles.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="comdml_jax_cache_")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cifar10_dir():
    """The TFDS data dir holding cifar10/3.0.2, or skip when it is not configured."""
    data_dir = os.environ.get("COMDML_DATA_DIR")
    if not data_dir:
        pytest.skip("COMDML_DATA_DIR is not set; the README's test command sets it")
    return data_dir


@pytest.fixture
def plan_json(tmp_path):
    """``plan_json(data_dir, profile, *flags)``: the records of ``python -m experiments.plan
    --config=configs/smoke.py --json`` with ``profile`` (a SplitProfile) as ``--profile_json``."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(data_dir, profile, *flags):
        path = tmp_path / "plan_profile.json"
        path.write_text(profile.to_json())
        cmd = [sys.executable, "-m", "experiments.plan", "--config=configs/smoke.py"]
        cmd += [f"--config.data.data_dir={data_dir}", *flags, "--json", f"--profile_json={path}"]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
        return [json.loads(line) for line in proc.stdout.splitlines()]

    return run
