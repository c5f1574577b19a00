#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (about 5-8 minutes on one H100/H200):
#   bash experiments/benchmarks/run_gpu.sh [extra bench overrides]
# 1. the GPU tests (nvJPEG decode vs CPU decode, trainer=gpu_fast end to end, SyncBatchNorm under DDP);
# 2. the full benchmark with the memory table; its report is copied to experiments/benchmarks/results/
#    (or to $OUT when set) as gpu_<date>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
export COLORIZATION_LOG_DIR=${COLORIZATION_LOG_DIR:-logs}
$PY -m pytest -m gpu -q tests/data/test_gpu_decode.py tests/runs/test_ddp.py
$PY -m colorization.bench "bench.memory_batches=[64,128,256,512]" "$@" | tee /tmp/colorization_bench.txt
run_dir=$(sed -n 's/^written: \(.*\)\/bench.json.*/\1/p' /tmp/colorization_bench.txt)
dest=${OUT:-experiments/benchmarks/results}
mkdir -p "$dest"
stamp=$(date +%Y-%m-%d)
cp "$run_dir/bench.md" "$dest/gpu_$stamp.md"
cp "$run_dir/bench.json" "$dest/gpu_$stamp.json"
echo "copied to $dest/gpu_$stamp.{md,json}"
