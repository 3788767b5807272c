#!/usr/bin/env bash
# MoE fused dispatch on the GPU machine, one call: its tests on the card, then the dispatch benchmark.
#   OUT=... bash benchmarks/moe_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/moe-gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } | tee "$OUT/moe_gpu.txt"
timeout "${TEST_S:-200}" python -m pytest -q -p no:cacheprovider tests/test_grouped_linear.py \
  tests/test_moe_dispatch_bench.py tests/test_model_components.py tests/test_hooks_and_transforms.py > "$OUT/moe_tests.log" 2>&1
echo "moe tests exit $?: $(tail -1 "$OUT/moe_tests.log")" | tee -a "$OUT/moe_gpu.txt"
grep -E "^(FAILED|ERROR)" "$OUT/moe_tests.log" | head -10
timeout "${BENCH_S:-300}" python -m benchmarks.moe_dispatch --sizes "${SIZES:-small,base}" --out "$OUT" > "$OUT/moe_dispatch.log" 2>&1
echo "moe_dispatch exit $?"
tail -60 "$OUT/moe_dispatch.log"
