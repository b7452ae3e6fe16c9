#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call, most important first:
# the CUDA tests, `cemnet bench` (half and full spectrum, eager and with CUDA
# graphs, and with CUDA graphs at batch 400), a CUDA profile of a cemnet-small
# step, and the whole test suite. Each stage gets what is left of BUDGET
# seconds, so a short lease still returns the first stages' results.
#
# Usage, from the repository root on a CUDA machine with PyTorch installed:
#   OUT=runs/cuda BUDGET=540 CEMNET_DATA=path/holding/mnist bash benchmarks/cuda_session.sh
# Writes OUT/run.log and OUT/bench-cuda-*.json (the suite needs pytest-xdist).
set -u
OUT=${OUT:-runs/cuda-session}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$OUT/run.log"

# stage NAME LIMIT COMMAND...: run with at most LIMIT seconds, fewer if the budget is nearly spent.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    if ((left < 20)); then
        echo "== $name: skipped, ${left}s of the budget left" | tee -a "$log"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at ${SECONDS}s, limit ${limit}s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
}

bench=(python3 -m cemnet bench --device cuda --repeats 15 --warmup 3)

stage machine 30 bash -c 'nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"'
stage "CUDA tests" 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
stage "bench, half spectrum" 90 "${bench[@]}" -O half_spectrum=true --out "$OUT/bench-cuda-half.json"
stage "bench, half spectrum, CUDA graphs" 90 "${bench[@]}" -O half_spectrum=true --cuda-graphs --no-memory \
    --out "$OUT/bench-cuda-half-graphs.json"
stage "profile, cemnet-small half" 45 python3 benchmarks/profile_step.py cemnet-small -O half_spectrum=true \
    --device cuda --rows 25
stage "bench, full spectrum" 90 "${bench[@]}" --out "$OUT/bench-cuda-full.json"
stage "bench, full spectrum, CUDA graphs" 90 "${bench[@]}" --cuda-graphs --no-memory --out "$OUT/bench-cuda-full-graphs.json"
stage "bench, half spectrum, CUDA graphs, batch 400" 90 "${bench[@]}" -O half_spectrum=true --cuda-graphs \
    --no-memory --batch-size 400 --out "$OUT/bench-cuda-half-graphs-400.json"
stage "test suite" 200 python3 -m pytest -q -p no:cacheprovider -n 8
echo "== done at ${SECONDS}s" | tee -a "$log"
