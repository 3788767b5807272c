#!/usr/bin/env bash
# TileLang on the GPU machine in one call (at most ~7 minutes, every step under `timeout`):
#   1. correctness of the TileLang forward / grad_x against a float64 truth over the full int8
#      E range, bf16 / fp16 / fp32 activations, plus the fp32 domain check (rows from 2^-149
#      to fp32's maximum in one batch) and the corrupt-byte check (benchmarks/tilelang_check.py);
#   2. `python -m benchmarks.kernels` (what `ternary bench kernels` runs): auto, tilelang and
#      triton rows against bf16 cuBLAS on the same shapes in the same process, no update rows,
#      after the cold vs cached TileLang compile of the kernels it uses (`ternary prewarm`
#      twice, in fresh processes, on an empty cache folder);
#   3. a short table, printed last and kept in summary.txt.
# Usage (TileLang carried with /work/shared/tools/tilelang-carry.sh):
#   mkdir -p /tmp/site && tar -C /tmp/site -xJf .carry/tilelang-site.tar.xz && export PYTHONPATH=/tmp/site:$PWD
#   CUDA_VISIBLE_DEVICES=1 OUT=$OUT/tl bash benchmarks/tilelang_gpu.sh
# Files under $OUT (6): check.log tilelang_check.json bench.log kernels.json kernels.csv summary.txt
# Knobs: SHAPES (NxK list), ROWS (M list), BACKENDS, CHECK_S / BENCH_S (step limits, s),
# TOTAL_S (whole-run limit, s). DRY=1 prints the steps instead of running them and then
# summarizes whatever JSON is already in $OUT (for checking the script without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/tilelang-gpu}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SHAPES="${SHAPES:-4096x4096,16384x16384}"
ROWS="${ROWS:-1,16,128,2048,8192}"
BACKENDS="${BACKENDS:-auto,tilelang,triton}"
CHECK_S="${CHECK_S:-150}"
BENCH_S="${BENCH_S:-240}"
TOTAL_S="${TOTAL_S:-415}"
DRY="${DRY:-0}"
deadline=$((SECONDS + TOTAL_S))
SUMMARY_RESERVE_S=15

# step NAME LIMIT_S CMD...: run CMD under timeout (never past the deadline), log to $OUT/NAME.log
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS - SUMMARY_RESERVE_S))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "$name: skipped, no time left"
    return 0
  fi
  if [[ $DRY == 1 ]]; then
    echo "$name: would run (timeout ${limit}s): $*"
    return 0
  fi
  local began=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - began)) s$( ((rc == 124 || rc == 137)) && echo " (timed out at ${limit}s)")"
}

if [[ $DRY != 1 ]]; then
  nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader 2>&1 | head -4
  python -c "import torch, triton, tilelang; print('torch', torch.__version__, 'triton', triton.__version__, 'tilelang', tilelang.__version__, 'device', torch.cuda.get_device_name())" 2>&1 | tail -1
fi
rm -f "$OUT/tilelang_check.json" "$OUT/kernels.json" "$OUT/kernels.csv" 2>/dev/null

# 1. correctness (its own empty kernel cache, compiled in parallel up front)
export TILELANG_CACHE_DIR
TILELANG_CACHE_DIR=$(mktemp -d /tmp/tilelang-check-cache.XXXXXX)
step check "$CHECK_S" python benchmarks/tilelang_check.py --parts correct --out "$OUT"
unset TILELANG_CACHE_DIR  # the benchmark measures its own cold compile on a fresh folder
[[ $DRY != 1 ]] && tail -n 12 "$OUT/check.log"

# 2. kernel benchmark with the compile-time table (gemlite only where it imports)
gemlite=--no-gemlite
python -c "import gemlite" >/dev/null 2>&1 && gemlite=--gemlite
step bench "$BENCH_S" \
  python -m benchmarks.kernels --out "$OUT" --shapes "$SHAPES" --rows "$ROWS" --update-rows none \
  --backends "$BACKENDS" "$gemlite" --compile-times
[[ $DRY != 1 ]] && grep -E "^(Traceback|[A-Za-z]*Error)" "$OUT/bench.log" | head -5

# 3. the short table, last
echo
timeout 60 python benchmarks/tilelang_check.py --summarize "$OUT" 2>&1 | tee "$OUT/summary.txt"
echo "total $SECONDS s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
