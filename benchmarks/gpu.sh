#!/usr/bin/env bash
# The whole GPU table on one CUDA GPU, in under 10 minutes (one device call): prints it as it goes
# and writes benchmarks/gpu.json after every figure, then the optimizer-step table (gpu_optim.json).
# Compiled rows start only in the first 300 s; a run cut short keeps every figure it printed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-benchmarks/gpu.json}
PYTHONUNBUFFERED=1 timeout 520 "$PY" benchmarks/gpu.py --json "$OUT" --budget 300 || echo "gpu.py stopped early (exit $?)"
PYTHONUNBUFFERED=1 timeout 60 "$PY" benchmarks/optim_step.py --device cuda --json "${OUT%.json}_optim.json" \
    || echo "optim_step.py stopped early (exit $?)"
