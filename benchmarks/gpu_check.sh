#!/usr/bin/env bash
# One short GPU check (issue 12): configs/quickstart.py with the vmap backend against
# the loop backend on the same machine, side by side, and the samples/s of each.
#
#   bash benchmarks/gpu_check.sh DATA_DIR [ROUNDS]
#
# DATA_DIR holds cifar10/3.0.2 (e.g. ../shared/data/tfds). Each backend runs ROUNDS
# rounds (default 4) in a fresh workdir under ${OUT:-/tmp}/gpu_check; the first
# round (compiles) is left out of samples/s. Meant for a machine with jax and flax
# preinstalled and no registry: it installs the package without dependencies.
# CONFIG=configs/smoke.py tries it on a CPU in a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash benchmarks/gpu_check.sh DATA_DIR [ROUNDS]}
rounds=${2:-4}
out=${OUT:-/tmp}/gpu_check
config=${CONFIG:-configs/quickstart.py}
rm -rf "$out" && mkdir -p "$out"
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
python -c "import jax; print('devices:', jax.devices())"
for backend in vmap loop; do
  python -m experiments.run --config="$config" --workdir="$out/$backend" \
    --config.data.data_dir="$data" --config.rounds="$rounds" --config.plots=false \
    --config.checkpoint_every=0 --config.train.backend="$backend" > "$out/$backend.log" 2>&1 \
    || { echo "$backend failed:"; tail -n 20 "$out/$backend.log"; exit 1; }
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rate = {}
for backend in ("vmap", "loop"):
    rows = [json.loads(line) for line in (out / backend / "metrics.jsonl").open()]
    cfg = json.loads((out / backend / "config.json").read_text())
    sizes = [sum(c) for c in json.loads((out / backend / "partition.json").read_text())["class_counts"]]
    epochs = cfg["train"]["local_epochs"]
    samples = sum(sizes[a] * epochs for r in rows[1:] for a in r["participants"])
    wall = rows[-1]["wall_time_s"] - rows[0]["wall_time_s"]
    rate[backend] = samples / wall
    print(f"{backend}: {rate[backend]:.0f} samples/s over rounds 2-{len(rows)} "
          f"({wall:.1f} s), final accuracy {rows[-1]['test_accuracy']:.4f}")
print(f"vmap / loop: {rate['vmap'] / rate['loop']:.2f}x")
PY
