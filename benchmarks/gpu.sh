#!/usr/bin/env bash
# The whole GPU table on one CUDA GPU, in under 10 minutes (one device call): prints it as it goes
# and writes benchmarks/gpu.json after every figure, then the optimizer-step table (gpu_optim.json) and,
# the host CPU's engine table from `inceptionv4 bench` (gpu_cpu.json).
# Compiled rows start only in the first 300 s; a run cut short keeps every figure it printed.
#
#   bash benchmarks/gpu.sh [out.json]                 # on the GPU machine
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh out.json  # a smoke run of this script (tests/test_benchmarks.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-benchmarks/gpu.json}
DEVICE=${DEVICE:-cuda}
GPU_ARGS=(--device "$DEVICE" --json "$OUT" --budget 300)
OPTIM_ARGS=(--device "$DEVICE" --json "${OUT%.json}_optim.json")
if [ "${QUICK:-0}" = 1 ]; then
    GPU_ARGS+=(--quick --models inception_v4)
    OPTIM_ARGS+=(--models inception_resnet_v1 --repeats 1)
fi
# A lent GPU machine has its own PyTorch, timm and Python, and no copy of this package installed
# (nor a way to install one: it has no network): import the package from this checkout.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import inceptionv4, timm, torch, torchvision; print('python', '$PY', 'torch', torch.__version__, \
    'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available(), \
    'inceptionv4 from', inceptionv4.__file__)" || { echo "cannot import inceptionv4, timm and torch with $PY"; exit 1; }
PYTHONUNBUFFERED=1 timeout 520 "$PY" benchmarks/gpu.py "${GPU_ARGS[@]}" || echo "gpu.py stopped early (exit $?)"
PYTHONUNBUFFERED=1 timeout 60 "$PY" benchmarks/optim_step.py "${OPTIM_ARGS[@]}" || echo "optim_step.py stopped early (exit $?)"
# Then the host CPU's engine table (`inceptionv4 bench`: every backend x precision installed there,
# bf16 where the CPU has AVX-512 BF16 or AMX), in what is left of the 10 minutes.
CPU_ARGS=(bench inception_v4 --device cpu --rounds 2 --seconds 2 --json)
[ "${QUICK:-0}" = 1 ] && CPU_ARGS+=(--batch-size 1 --rounds 1 --seconds 0 --backend torch)
if [ "$SECONDS" -gt 470 ]; then
    echo "bench (host CPU) skipped: ${SECONDS} s gone, under 2 minutes left of the 10"
else
    PYTHONUNBUFFERED=1 timeout $((590 - SECONDS)) "$PY" -m inceptionv4 "${CPU_ARGS[@]}" >"${OUT%.json}_cpu.json" \
        && echo "host CPU engine table: ${OUT%.json}_cpu.json" || echo "bench (host CPU) stopped early (exit $?)"
fi
