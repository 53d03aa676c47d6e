"""FedAvg repriced from AllReduce's trained run equals a trained FedAvg run (issue 22).

FedAvg trains exactly AllReduce's models whenever both take the same
participants (``comdml_jax.reprice``), so a comparison may reprice AllReduce's
finished run instead of training FedAvg. Both are trained here on real
CIFAR-10 (smoke config, Dirichlet split so that the data-size weights differ,
3 of 5 agents sampled per round, 3 rounds), and the repriced records must equal
the trained FedAvg records in every field except the wall-clock ones.
"""

import json

import pytest
from conftest import smoke_config, wall_free_records

from comdml_jax import comparison, experiment, reprice

pytestmark = pytest.mark.slow

OVERRIDES = {"rounds": 3, "participation": 0.6, "data.partition": "dirichlet"}


@pytest.fixture(scope="module")
def trained(cifar10_dir, tmp_path_factory):
    """workdir with allreduce/seed0 and fedavg/seed0 trained, and a repriced fedavg run."""
    wd = tmp_path_factory.mktemp("reprice")
    for m in ("allreduce", "fedavg"):
        experiment.run(smoke_config(cifar10_dir, method=m, **OVERRIDES), wd / m / "seed0")
    cfg = smoke_config(cifar10_dir, method="fedavg", **OVERRIDES)
    done, why = reprice.reprice_run(cfg, wd / "allreduce" / "seed0", wd / "repriced")
    assert done, why
    return wd


def test_repriced_fedavg_equals_trained_fedavg(trained):
    got = wall_free_records(trained / "repriced")
    want = wall_free_records(trained / "fedavg" / "seed0")
    source = wall_free_records(trained / "allreduce" / "seed0")
    assert len(got) == len(want) == 3
    assert got == want
    # not vacuous: the times differ from AllReduce's, the learning fields do not
    assert [r["round_time_s"] for r in got] != [r["round_time_s"] for r in source]
    assert [r["test_accuracy"] for r in got] == [r["test_accuracy"] for r in source]
    assert any(r["participants"] != [0, 1, 2, 3, 4] for r in got)  # participation < 1 acts


def test_repriced_summary_equals_trained_summary(trained):
    def load(folder):
        s = json.loads((folder / "summary.json").read_text())
        return {k: v for k, v in s.items() if k not in ("wall_time_s", "startup_s")}

    assert load(trained / "repriced") == load(trained / "fedavg" / "seed0")
    assert json.loads((trained / "repriced" / reprice.REPRICED_FILE).read_text())["source"] == (
        "allreduce/seed0"
    )


def test_a_round_with_other_participants_is_not_reused(cifar10_dir):
    cfg = smoke_config(cifar10_dir, method="fedavg", **OVERRIDES)
    records, why = reprice.reprice_records(
        cfg, [{"round": 0, "participants": [4]}], comparison_setup()
    )
    assert records is None and "round 0 has other participants" in why


def test_dp_is_not_reused(cifar10_dir):
    cfg = smoke_config(
        cifar10_dir, method="fedavg", **{**OVERRIDES, "privacy.dp.mechanism": "gaussian"}
    )
    records, why = reprice.reprice_records(cfg, [], comparison_setup())
    assert records is None and "differential privacy" in why


def test_a_comparison_reprices_fedavg_and_reports_it_as_trained(cifar10_dir, trained, tmp_path):
    """run_comparison with both methods: AllReduce's run is reused, FedAvg repriced from it."""
    import shutil

    wd = tmp_path / "cmp"
    shutil.copytree(trained / "allreduce", wd / "allreduce")
    config = smoke_config(cifar10_dir, **OVERRIDES)
    comparison.run_comparison(config, wd, ["fedavg", "allreduce"], [0])
    assert (wd / "fedavg" / "seed0" / reprice.REPRICED_FILE).is_file()
    assert wall_free_records(wd / "fedavg" / "seed0") == wall_free_records(
        trained / "fedavg" / "seed0"
    )


def comparison_setup():
    from comdml_jax import price_only

    return price_only.run_setup()
