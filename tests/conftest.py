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


# ------------------------------------------------------------------ shared helpers
# Plain functions that several test files use: ``from conftest import smoke_config``.


def smoke_config(data_dir: str, **overrides):
    """configs/smoke.py on the data in ``data_dir``, with dotted-name overrides."""
    from configs import smoke

    c = smoke.get_config()
    c.data.data_dir = data_dir
    c.update_from_flattened_dict(overrides)
    return c


def read_records(workdir) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``, one per non-empty line."""
    import json
    from pathlib import Path

    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


def without_wall_time(records: list[dict]) -> list[dict]:
    """The records without ``wall_time_s`` (the one field that differs between equal runs)."""
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def wall_free_records(workdir) -> list[dict]:
    """``without_wall_time(read_records(workdir))``."""
    return without_wall_time(read_records(workdir))


def final_state(config, workdir):
    """The RunState of ``workdir``'s latest checkpoint (asserting there is one)."""
    from comdml_jax import experiment

    state = experiment.restore_state(experiment.build(config, workdir))
    assert state is not None, f"no checkpoint in {workdir}"
    return state


# The synthetic world: the smoke config's 5 heterogeneous agents and tiny model on
# 5 x 20 random training images (2 batches of 10 each) and 40 test images.
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_BATCH = 100, 40, 10


def synthetic_config(method: str = "comdml", **overrides):
    """configs/smoke.py sized for ``datasets.synthetic_dataset``, with dotted-name overrides."""
    c = smoke_config("/nonexistent-synthetic-data")
    c.method = method
    c.data.train_subset = SYNTHETIC_TRAIN
    c.data.test_subset = SYNTHETIC_TEST
    c.data.min_samples_per_agent = SYNTHETIC_BATCH
    c.train.batch_size = SYNTHETIC_BATCH
    c.eval_batch_size = SYNTHETIC_TEST
    c.plots = False
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture
def build_synthetic(tmp_path):
    """``build_synthetic(method, workdir=None, **overrides) -> Experiment``: the smoke
    config on synthetic data (no CIFAR-10), built in ``tmp_path/<method>`` by default."""
    from comdml_jax import experiment
    from comdml_jax.data.datasets import synthetic_dataset

    def build(method: str = "comdml", workdir=None, **overrides):
        config = synthetic_config(method, **overrides)
        workdir = tmp_path / method if workdir is None else workdir
        dataset = synthetic_dataset(SYNTHETIC_TRAIN, SYNTHETIC_TEST, seed=int(config.seed))
        return experiment.build(config, workdir, dataset=dataset)

    return build
