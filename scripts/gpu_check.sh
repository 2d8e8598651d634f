#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU (under 8 minutes):
#   1. installs the project with a CUDA build of PyTorch into .venv-gpu,
#   2. runs the CUDA tests (tests/test_cuda.py) and the DDP test,
#   3. trains the default config for $MINUTES minutes (default 4) with AMP and prints
#      tokens/s, peak GPU memory, model FLOPs utilisation against this GPU's measured bf16 peak,
#      and the validation BLEU of the result.
# Usage: TRANSLATOR_DATA_DIR=/path/to/multi30k scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TRANSLATOR_DATA_DIR:?set TRANSLATOR_DATA_DIR to the Multi30k folder}"
MINUTES="${MINUTES:-4}"
VENV="${VENV:-.venv-gpu}"
TORCH="${TORCH:-torch==2.13.0}"   # the PyPI wheel for Linux is a CUDA build
export TRANSLATOR_CACHE_DIR="${TRANSLATOR_CACHE_DIR:-$(mktemp -d)}"
RUN="runs/gpu-check-$(date +%Y%m%d-%H%M%S)"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$TORCH"
"$VENV/bin/pip" install --quiet -e ".[dev]"
"$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== CUDA tests"
"$VENV/bin/python" -m pytest -q tests/test_cuda.py tests/test_distributed.py

echo "== speed (bench_train.py, bf16 and fp32)"
"$VENV/bin/python" scripts/bench_train.py --precisions bf16 fp32 --steps 50 --warmup 10

echo "== $MINUTES minutes of training with AMP"
"$VENV/bin/translator" train --run-dir "$RUN" --no-progress --set train.max_minutes="$MINUTES"
"$VENV/bin/python" - "$RUN" <<'PY'
import json, sys
import torch
records = [json.loads(x) for x in open(f"{sys.argv[1]}/metrics.jsonl")]
speed = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
best = max((r.get("val_bleu", r.get("val_bleu_averaged", 0)) for r in records), default=0)
print(f"training: {sum(speed) / max(len(speed), 1):,.0f} target tok/s (mean of log windows)")
print(f"best validation BLEU (greedy): {best:.2f}")
PY
"$VENV/bin/translator" evaluate --bleu --run "$RUN" --split val
