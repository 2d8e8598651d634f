#!/usr/bin/env bash
# Our trainer side by side with JoeyNMT 2.3.0: scripts/compare_joeynmt.py, run with our virtual
# environment's Python ($OUR_VENV, default .venv); its docstring has the usage and variables,
# docs/compare-joeynmt.md what it measures and how.
#   STEPS=20 WARMUP=5 SENTENCES=100 scripts/compare_joeynmt.sh   # 2 minutes: every stage runs
#   RUN=runs/tiny-bpe-90 scripts/compare_joeynmt.sh              # decoding only, one trained model
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${OUR_VENV:-$ROOT/.venv}/bin/python
[[ -x $PY ]] || { echo "compare_joeynmt: no $PY: run 'make install' first" >&2; exit 1; }
exec "$PY" "$ROOT/scripts/compare_joeynmt.py" "$@"
