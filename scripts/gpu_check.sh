#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU:
#   1. installs the project with a CUDA build of PyTorch into .venv-gpu, or, with PYTHON set,
#      uses that interpreter as it is (an offline GPU box with PyTorch already installed: the
#      project then runs from this checkout through PYTHONPATH),
#   2. runs the CUDA tests (tests/training/test_cuda.py; the DDP test runs on CPU in `make test`),
#   3. times the training step in bf16 and fp32 (bench_train.py: tokens/s, peak GPU memory,
#      model FLOPs utilisation against this GPU's measured peak),
#   4. trains $CONFIG (in its own precision) for $MINUTES minutes, or until the config's own
#      epoch budget if that comes first, and prints tokens/s and the best validation BLEU. With
#      BUDGET_S set, the minutes are whatever is left of BUDGET_S seconds after steps 1-3, less
#      90 s for the final averaging, validation and step 5: the whole check then fits a lease,
#   5. decodes val with the config's beam search and prints its BLEU (`translator evaluate`).
# Usage: TRANSLATOR_DATA_DIR=/path/to/multi30k scripts/gpu_check.sh
#        PYTHON=python3 CONFIG=configs/multi30k-long.yaml BUDGET_S=540 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TRANSLATOR_DATA_DIR:?set TRANSLATOR_DATA_DIR to the Multi30k folder}"
CONFIG="${CONFIG:-configs/multi30k.yaml}"
MINUTES="${MINUTES:-4}"
export TRANSLATOR_CACHE_DIR="${TRANSLATOR_CACHE_DIR:-$(mktemp -d)}"
RUN="${RUN:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [[ -n "${PYTHON:-}" ]]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    VENV="${VENV:-.venv-gpu}"
    TORCH="${TORCH:-torch==2.13.0}"   # the PyPI wheel for Linux is a CUDA build
    test -x "$VENV/bin/python" || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "$TORCH"
    "$VENV/bin/pip" install --quiet -e ".[dev]"
    PYTHON="$VENV/bin/python"
fi
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== CUDA tests"
failed=""  # a failing test or benchmark is reported, and the training still runs
"$PYTHON" -m pytest -q -p no:cacheprovider tests/training/test_cuda.py || failed+=" CUDA-tests"

echo "== speed (bench_train.py, bf16 and fp32)"
"$PYTHON" scripts/bench_train.py -c "$CONFIG" --precisions bf16 fp32 --steps 50 --warmup 10 \
    || failed+=" benchmark"

if [[ -n "${BUDGET_S:-}" ]]; then
    MINUTES=$("$PYTHON" -c "print(round(max($BUDGET_S - $SECONDS - 90, 60) / 60, 2))")
fi
echo "== $CONFIG, at most $MINUTES minutes of training, in $RUN"
"$PYTHON" -m translator prepare -c "$CONFIG"
"$PYTHON" -m translator train -c "$CONFIG" --run-dir "$RUN" --no-progress \
    --set train.max_minutes="$MINUTES"
"$PYTHON" - "$RUN" <<'PY'
import json, sys
records = [json.loads(x) for x in open(f"{sys.argv[1]}/metrics.jsonl")]
speed = sorted(r["tokens_per_s"] for r in records if "tokens_per_s" in r)
epochs = max((r["epoch"] for r in records if "epoch" in r), default=0)
best = max((r["val_bleu"] for r in records if "val_bleu" in r), default=0)
print(f"training: {speed[len(speed) // 2]:,.0f} target tok/s (median of log windows), {epochs} epochs")
print(f"best validation BLEU (greedy): {best:.2f}")
PY
"$PYTHON" -m translator evaluate --bleu --run "$RUN" --split val
if [[ -n "$failed" ]]; then
    echo "FAILED:$failed" >&2
    exit 1
fi
