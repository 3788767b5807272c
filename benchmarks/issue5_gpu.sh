#!/usr/bin/env bash
# Triton backend on the GPU machine, one call: kernel tests on the card, the decode tile sweep,
# then the kernel benchmark (`ternary bench kernels`, Triton rows only: forward / grad-x / update against bf16 cuBLAS, same run).
#   OUT=... bash benchmarks/issue5_gpu.sh        # BENCH_ARGS overrides the benchmark's shape/row flags
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/issue5-gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader -i "${CUDA_VISIBLE_DEVICES:-0}"
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } | tee "$OUT/gpu.txt"
timeout "${TEST_S:-360}" python -m pytest -q -p no:cacheprovider tests/test_triton_linear.py tests/test_triton_update.py \
  tests/test_grouped_linear.py tests/test_base3_quotients.py > "$OUT/triton_tests.log" 2>&1
echo "triton tests exit $?: $(tail -1 "$OUT/triton_tests.log")" | tee -a "$OUT/gpu.txt"
grep -E "^(FAILED|ERROR)" "$OUT/triton_tests.log" | head -10
timeout "${SWEEP_S:-90}" python -m benchmarks.decode_sweep > "$OUT/decode_sweep.log" 2>&1
echo "decode sweep exit $?"; cat "$OUT/decode_sweep.log"
# shellcheck disable=SC2086
timeout "${BENCH_S:-300}" python -m benchmarks.kernels --out "$OUT" --backends triton --no-compile-times \
  ${BENCH_ARGS:---shapes 4096x4096,4096x14336,14336x4096,16384x16384 --rows 1,16,2048,8192 --update-rows 8192 --no-gemlite} \
  > "$OUT/bench.log" 2>&1
echo "bench exit $?"; tail -60 "$OUT/bench.log"
