#!/usr/bin/env bash
# One GPU-machine call: kernel tests on the card, then the model's smoke/train figures.
#   bash benchmarks/gpu_check.sh        # writes under "$OUT"
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${TEST_S:-240}" python -m pytest -q -x -p no:cacheprovider \
  tests/test_triton_linear.py tests/test_triton_update.py tests/test_linear_reference.py \
  tests/test_update_rule.py tests/test_hooks_and_transforms.py tests/test_backend_selection.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests exit $?: $(tail -1 "$OUT/gpu_tests.log")"
mkdir -p /tmp/model_gpu
OUT=/tmp/model_gpu timeout "${MODEL_S:-300}" python benchmarks/model_gpu.py > "$OUT/model_gpu.log" 2>&1
echo "model_gpu exit $?"
cp /tmp/model_gpu/results.json "$OUT/model_gpu.json" 2>/dev/null
tail -30 "$OUT/model_gpu.log"
