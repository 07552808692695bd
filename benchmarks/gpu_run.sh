#!/bin/bash
# One device call: GPU correctness checks, the H200 speed rows, and (full) the GPU host CPU's rows.
#
#   bash benchmarks/gpu_run.sh quick   # MPM rows only, photos, 3 repeats (about 2-3 min on an H200)
#   bash benchmarks/gpu_run.sh full    # MPM, ToMe, ALGM; photos + synthetic; 5 repeats; CPU rows (about 7-9 min)
#
# Writes under $OUT: gpu.txt, checks.log, speed.json (or speed.partial.json if cut short), speed.log,
# and for full cpu_speed.json, cpu_speed.log. Commit speed.json as results/reference/h200/speed.json
# and merge cpu_speed.json's rows into results/reference/cpu/speed.json.
set -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/mpm-out}
mkdir -p "$OUT"
what=${1:-quick}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv \
    | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" \
    | tee -a "$OUT/gpu.txt"
timeout 150 python3 benchmarks/cuda_checks.py kernels runner --quick 2>&1 | tee "$OUT/checks.log"
if ! grep -q "^ok .*triton mutual plan" "$OUT/checks.log" || grep -q "^FAIL triton" "$OUT/checks.log"; then
    echo "Triton kernel checks failed or did not run: timing the PyTorch twins (MPM_TRITON=0)" | tee -a "$OUT/checks.log"
    export MPM_TRITON=0
fi
if [ "$what" = quick ]; then
    python3 benchmarks/speed.py --device cuda --images photos --methods mpm --repeats 3 \
        --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
else
    python3 benchmarks/speed.py --device cuda --images photos,synthetic --methods mpm,tome,algm --repeats 5 \
        --out "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log"
    python3 benchmarks/speed.py --device cpu --models T,S --threads 1,4 --methods mpm,tome,algm --repeats 5 \
        --images photos --out "$OUT/cpu_speed.json" 2>&1 | tee "$OUT/cpu_speed.log"
fi
