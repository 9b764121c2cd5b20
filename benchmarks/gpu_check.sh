#!/usr/bin/env bash
# GPU check of the training stage, within BUDGET seconds (default 450). Steps, most important first, each
# with a timeout and its output also in $OUT/<step>.txt:
#   env            the card (nvidia-smi); python, torch, torchvision, optuna versions
#   bench          training images/s per backbone at the paper's sizes, batch 32 and 64, and the projected
#                  paper-protocol time (benchmarks/bench_gpu_training.py)
#   search         a real 2-worker search on a tiny demo dataset (4 trials, 2 folds x 2 epochs, 96 px), then
#                  the refit, which must reuse the finished study; prints "GPU CHECK OK"
#   bench_shared   2 trials sharing the GPU (--processes 2, what TRIALS_PER_GPU=2 runs): aggregate images/s
#   bench_compile  torch.compile, resnet18 and mobilenet_v2 only (at most 150 s: compiling is slow)
# bench_shared and bench_compile are extras: a failure there is reported (FAILED) and does not fail the check.
# Without CUDA everything runs in a tiny CPU configuration, only to test this script.
#
#   benchmarks/gpu_check.sh                     (repository root, .venv built; builds the tiny demo dataset)
#   PY=python3 OUT=/tmp/out DEMO_DIR=.gpucheck/demo_data bash benchmarks/gpu_check.sh
#
# DEMO_DIR is a prepared data folder holding demo/ (cells.csv, scalograms/, splits.csv: acquire with n_cells=6,
# compute_scalograms, make_splits); it is copied first, since the search writes into its data folder.
set -uo pipefail
[[ -n ${DEMO_DIR:-} ]] && DEMO_DIR=$(realpath "$DEMO_DIR")
OUT=$(realpath -m "${OUT:-/tmp/sts_gpu_check}")
cd "$(dirname "$0")/.."
export PY=${PY:-.venv/bin/python} OUT DEMO_DIR=${DEMO_DIR:-} BUDGET=${BUDGET:-450}
export STS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DIR=$(mktemp -d)
export DIR
trap 'rm -rf "$DIR"' EXIT
mkdir -p "$OUT"
STATUS=()

# step NAME SECONDS FUNCTION: run FUNCTION under `timeout` (capped by what is left of BUDGET), teed into $OUT/NAME.txt
step() {
    local name=$1 limit=$2 fn=$3 left=$((BUDGET - SECONDS - 15)) rc
    ((limit > left)) && limit=$left
    if ((limit < 10)); then
        echo "== $name skipped: time budget spent" | tee "$OUT/$name.txt"; STATUS+=("$name SKIPPED"); return
    fi
    echo "== $name (timeout ${limit} s)"
    timeout -k 10 "$limit" bash -c "$fn" 2>&1 | tee "$OUT/$name.txt"  # -k: KILL what ignores TERM
    rc=${PIPESTATUS[0]}
    if ((rc == 0)); then STATUS+=("$name ok"); else STATUS+=("$name FAILED (exit $rc$( ((rc == 124)) && echo ", timeout"))"); fi
}

env_info() {
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: no GPU"
    "$PY" -c 'import sys, torch, torchvision, optuna
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torchvision", torchvision.__version__,
      "| optuna", optuna.__version__, "| CUDA", torch.version.cuda, "| cudnn", torch.backends.cudnn.version())
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
}

bench() { "$PY" benchmarks/bench_gpu_training.py --warmup 5 --steps 15; }
bench_shared() { "$PY" benchmarks/bench_gpu_training.py --warmup 5 --steps 15 --processes 2; }
bench_compile() { "$PY" benchmarks/bench_gpu_training.py --warmup 5 --steps 15 --compile --backbones resnet18 mobilenet_v2; }

search() {
    set -e
    if [[ -n $DEMO_DIR ]]; then
        cp -r "$DEMO_DIR/." "$DIR/"
    else
        echo "building the tiny demo dataset"
        "$PY" -c 'import os, sys
from sts_utils.stages.acquisition import acquire
from sts_utils.stages.scalograms import compute_scalograms
from sts_utils.stages.splits import make_splits
d, n = sys.argv[1], min(8, os.cpu_count())
acquire("demo", d, n_cells=6, n_jobs=n)
compute_scalograms("demo", d, n_jobs=n, progress=False)
make_splits("demo", d)' "$DIR"
    fi
    echo "search: 2 workers, 4 trials, 2 folds x 2 epochs"
    "$PY" -m sts_utils.stages.search --dataset demo --backbone resnet18 --data-dir "$DIR" --profile cpu_small \
        --n-workers 2 --n-trials 4 --param TRIAL_EPOCHS=2 --param EPOCHS=2 --param PRETRAINED=none \
        --param IMAGE_SIZE=96 --log-dir "$DIR/logs" --no-progress || { tail -n 20 "$DIR"/logs/*.log; exit 1; }
    tail -n 3 "$DIR"/logs/*.log
    echo "refit (make train): must take the finished study's best trial, not search again"
    "$PY" - "$DIR" <<'PYEOF'
import sys, torch
from sts_utils.stages.fit import TrainConfig
from sts_utils.stages.training import resolve_profile, run_finetuning
d = sys.argv[1]
run = resolve_profile("cpu_small", "demo", "resnet18", {"trial_epochs": 2, "epochs": 2, "pretrained": "none",
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
}
export -f env_info bench bench_shared bench_compile search

step env 60 env_info
step bench 150 bench
step search 210 search
step bench_shared 150 bench_shared
step bench_compile 150 bench_compile

printf '%s\n' "== summary (${SECONDS} s)" "${STATUS[@]}" | tee "$OUT/summary.txt"
# the check fails only when one of its essential steps did
! printf '%s\n' "${STATUS[@]}" | grep -Eq '^(env|bench|search) (FAILED|SKIPPED)'
