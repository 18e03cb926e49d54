#!/usr/bin/env bash
# The whole GPU table on one CUDA GPU, in under 5 minutes: prints it and writes benchmarks/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYTHONUNBUFFERED=1 timeout 600 "$PY" benchmarks/gpu.py --json "${1:-benchmarks/gpu.json}"
