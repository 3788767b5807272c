#!/usr/bin/env bash
# train_compare on the GPU machine, in one call (at most 8 minutes on an H100 or H200):
# true-ternary vs STE + AdamW vs full precision, small preset, tinyshakespeare, bf16 activations.
#
#   cp ../shared/data/tinyshakespeare.txt .data/          # on the CPU machine (.data is ignored)
#   bash benchmarks/train_compare_gpu.sh                   # on the GPU machine, carrying .data
#
# Writes under "$OUT": train_compare.{csv,json,png}, train_compare.log, gpu.txt; prints a table last.
# The same script runs on CPU for a check: DEVICE=cpu PRESET=tiny BUDGET_S=20 BATCH=2 CTX=32 DTYPE=float32 bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/train-compare-gpu}"
DATA="${DATA:-.data/tinyshakespeare.txt}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-small}"
BUDGET_S="${BUDGET_S:-270}"   # timed runs of the three arms; the short timing probes come on top
BATCH="${BATCH:-16}"
CTX="${CTX:-256}"
DTYPE="${DTYPE:-bfloat16}"
EVAL_EVERY="${EVAL_EVERY:-50}"
LR="${LR:-0.003}"             # AdamW of the ste and float arms (tiny on CPU preferred 1e-2 at 150 steps; small is wider)
HARD_STOP_S="${HARD_STOP_S:-470}"  # arms that finished by then are already written
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f "$DATA" ]; then echo "train_compare_gpu.sh: $DATA is missing (copy tinyshakespeare.txt into .data/ and carry .data)" >&2; exit 2; fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; } > "$OUT/gpu.txt"
# a hard stop (7 min 50 s by default): arms that finished are already written
timeout "$HARD_STOP_S" python -m benchmarks.train_compare --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --data "$DATA" \
  --budget-s "$BUDGET_S" --batch "$BATCH" --ctx "$CTX" --eval-every "$EVAL_EVERY" --eval-batches 8 --lr "$LR" \
  --keep-going --out "$OUT" > "$OUT/train_compare.log" 2>&1 || { tail -30 "$OUT/train_compare.log"; exit 1; }
cat "$OUT/gpu.txt"
tail -8 "$OUT/train_compare.log"
