"""A finished run repriced for a method that trains exactly its models (FedAvg from AllReduce).

FedAvg and AllReduce start every round from the same model, train the same
participants on the same batches and merge them by the same data-size-weighted
average (``methods.base.GlobalModelMethod``); only who may take part (FedAvg:
every sampled, connected agent; AllReduce: the largest connected component)
and the pricing differ (``catalog.MethodFacts.trains_as``). Wherever every
round has the same participants, FedAvg's run is AllReduce's learning records
under FedAvg's own plan and price. A comparison with both methods
(``comparison.run_comparison``) then reprices AllReduce's finished run instead
of training FedAvg again, which saves one method's training per seed.

The repriced records are a trained FedAvg run's, field for field, apart from
the wall-clock fields (tests/test_reprice.py trains both and compares): the
priced fields (``report.record.priced_fields``) and ``sim_time_s`` come from
FedAvg's ``method.plan`` / ``method.price`` through the one pricing path
(``rounds.plan_and_price``, as ``price_only``); every other field is the
source's. The run is not reused (None) when a round's participants differ,
a round was skipped, or differential privacy is on (its noise is drawn
inside the merge); the comparison then trains the method.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from comdml_jax import catalog
from comdml_jax.methods import get_method
from comdml_jax.privacy.config import PrivacySpec
from comdml_jax.report.record import priced_fields
from comdml_jax.report.writers import JsonlWriter, write_json
from comdml_jax.rounds import context_for, plan_and_price

REPRICED_FILE = "repriced.json"
"""Written into a repriced run's folder: which run it was repriced from, and why it may be."""


def reprice_records(
    config: ml_collections.ConfigDict, source: Sequence[dict], setup
) -> tuple[list[dict] | None, str]:
    """The records of ``config.method``'s run, from another method's trained ``source`` records.

    Args:
      config: the run config of the repriced method (``method`` and ``seed`` set).
      source: the finished run's metrics records, of ``trains_as`` of that method.
      setup: ``setup(cfg) -> (system, num_batches, profile)``, as
        ``price_only.run_setup()`` gives.

    Returns:
      ``(records, why)``: the records, or None and the reason they cannot be reused.
    """
    method = get_method(config.method)
    src_cfg = ml_collections.ConfigDict(config.to_dict())
    src_cfg.method = catalog.METHODS[config.method].trains_as
    src_method = get_method(src_cfg.method)
    if PrivacySpec.from_config(config).dp.enabled:
        return None, "differential privacy is on (its noise is drawn in the merge)"
    system, batches, profile = setup(config)
    src_system, _, _ = setup(src_cfg)
    k = int(config.num_agents)
    host, src_host, sim, out = method.init_host(k), src_method.init_host(k), 0.0, []
    for rec in source:
        r = int(rec["round"])
        if rec.get("skipped"):
            return None, f"round {r} was skipped"
        ctx = context_for(config, system, method, r, batches, None, profile)
        plan, timing, seconds = plan_and_price(method, ctx, host)
        if np.flatnonzero(plan.participants).tolist() != rec["participants"]:
            return None, f"round {r} has other participants under {config.method}"
        src_ctx = context_for(src_cfg, src_system, src_method, r, batches, None, profile)
        src_plan, src_timing, src_seconds = plan_and_price(src_method, src_ctx, src_host)
        priced = priced_fields(src_cfg, src_method, src_ctx, src_plan, src_timing, src_seconds)
        sim += seconds
        learned = {k: v for k, v in rec.items() if k not in priced and k != "sim_time_s"}
        out.append(
            {**priced_fields(config, method, ctx, plan, timing, seconds), "sim_time_s": sim}
            | learned
        )
        trained = np.flatnonzero(plan.participants).tolist()
        host = method.advance_host(host, plan, trained)
        src_host = src_method.advance_host(src_host, src_plan, trained)
    return out, ""


def reprice_run(
    config: ml_collections.ConfigDict, source_dir: Path, folder: Path, setup=None
) -> tuple[bool, str]:
    """Writes ``config.method``'s run into ``folder`` from the finished run in ``source_dir``.

    ``folder`` gets ``config.json``, ``metrics.jsonl``, ``summary.json`` (the
    source's wall-clock seconds: what training these models took),
    ``partition.json`` (the source's: the same partition) and
    :data:`REPRICED_FILE`; an earlier repriced run there is replaced.

    Returns:
      ``(done, why)``: False and the reason when the run cannot be reused
      (:func:`reprice_records`); nothing is written then.
    """
    from comdml_jax import experiment, price_only

    source_dir, folder = Path(source_dir), Path(folder)
    records, why = reprice_records(
        config, JsonlWriter(source_dir / "metrics.jsonl").read(), setup or price_only.run_setup()
    )
    if records is None:
        return False, why
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_json(folder / "config.json", config.to_dict())
    shutil.copyfile(source_dir / "partition.json", folder / "partition.json")
    writer = JsonlWriter(folder / "metrics.jsonl")
    for rec in records:
        writer.write(rec)
    src_summary = json.loads((source_dir / "summary.json").read_text())
    summary = experiment.summarize(config, records, src_summary.get("startup_s"))
    write_json(folder / "summary.json", summary)
    write_json(
        folder / REPRICED_FILE,
        {
            "source": str(source_dir.relative_to(source_dir.parent.parent)),
            "why": f"{config.method} trains exactly {catalog.METHODS[config.method].trains_as}'s "
            "models when every round has the same participants (comdml_jax.reprice)",
        },
    )
    return True, ""
