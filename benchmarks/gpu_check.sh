#!/usr/bin/env bash
# GPU check of the training stage (a few minutes): the card, the throughput benchmark with the projected
# paper-protocol time, then a real 2-worker search on a tiny demo dataset and a refit that must reuse it.
#   benchmarks/gpu_check.sh            (in the repository root, with .venv built)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/sts_gpu_check}
mkdir -p "$OUT"
export STS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: no GPU"

echo "== benchmark (paper sizes, batch 32 and 64)"
timeout 300 "$PY" benchmarks/bench_gpu_training.py --warmup 5 --steps 15 2>&1 | tee "$OUT/bench.txt"

echo "== tiny demo dataset"
DIR=$(mktemp -d)
"$PY" - "$DIR" <<'PYEOF'
import sys
try:
    from sts_utils.acquisition import acquire
except ImportError:  # older layout
    from sts_utils.datasets import acquire
from sts_utils.scalograms import compute_scalograms
from sts_utils.splits import make_splits
d = sys.argv[1]
acquire("demo", d, n_cells=6, n_jobs=8)
compute_scalograms("demo", d, n_jobs=8, progress=False)
make_splits("demo", d)
PYEOF

echo "== search: 2 workers, 4 trials, 2 folds x 2 epochs"
PARAMS=(--param TRIAL_EPOCHS=2 --param EPOCHS=2 --param PRETRAINED=none --param IMAGE_SIZE=96)
timeout 300 "$PY" -m sts_utils.search --dataset demo --backbone resnet18 --data-dir "$DIR" --profile demo \
    --n-workers 2 --n-trials 4 "${PARAMS[@]}" --log-dir "$OUT/workers" --no-progress
tail -n 5 "$OUT"/workers/*.log || true

echo "== refit (make train): must take the finished study's best trial, not search again"
"$PY" - "$DIR" <<'PYEOF'
import sys, torch
from sts_utils.training import TrainConfig, resolve_profile, run_finetuning
d = sys.argv[1]
run = resolve_profile("demo", "demo", "resnet18", {"trial_epochs": 2, "epochs": 2, "pretrained": "none",
                                                    "image_size": 96, "n_trials": 4}, default_seed=0)
r = run_finetuning("demo", "resnet18", d, base=TrainConfig.from_run(run, "resnet18"), settings=run, progress=False)
t = r["trials"]
print(t[["number", "state", "cv_balanced_accuracy", "user_attrs_host", "user_attrs_pid", "user_attrs_gpu"]].to_string())
assert r["config"]["search"]["storage"] != "in-memory", r["config"]["search"]
assert (t["state"] == "COMPLETE").sum() == 4 and t["user_attrs_pid"].nunique() == 2, "expected 4 trials by 2 workers"
print("refit on", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "history:")
print(r["history"].to_string())
print("GPU CHECK OK")
PYEOF
