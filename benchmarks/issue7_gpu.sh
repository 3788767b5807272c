#!/usr/bin/env bash
# Issue 7 on a machine with 2 GPUs, in one call (at most 8.5 minutes wall, hard stops inside):
#   GPU 0: benchmarks/train_compare_gpu.sh - true-ternary vs STE + AdamW vs full precision,
#          small preset, tinyshakespeare, bf16, batch 16 x 256, the rule's current defaults;
#   GPU 1, at the same time: benchmarks/sweep_rule_gpu.sh - the update-rule sweep on the small
#          preset (defaults + one knob at a time), every point its own process on that card,
#          batch 8 x 256, bf16, the same step count for every point, one CPU thread per point.
#
#   OUT=$OUT bash benchmarks/issue7_gpu.sh     # from the repo root, .data/tinyshakespeare.txt carried
#   DEVICE=cpu bash benchmarks/issue7_gpu.sh   # a short check of the plumbing on CPU (tiny preset)
#
# Writes under "$OUT" (7 files): train_compare.{csv,json,png}, train_compare.log, gpu.txt,
# sweep_rule_small.jsonl, sweep_rule_small.log; prints a summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/issue7-gpu}"
DEVICE="${DEVICE:-cuda}"
DATA="${DATA:-.data/tinyshakespeare.txt}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f "$DATA" ]; then echo "issue7_gpu.sh: $DATA is missing (copy tinyshakespeare.txt into .data/ and carry .data)" >&2; exit 2; fi
if [ "$DEVICE" = cpu ]; then
  compare_env=(PRESET=tiny BUDGET_S=20 BATCH=2 CTX=32 DTYPE=float32 EVAL_EVERY=5 HARD_STOP_S=150)
  sweep_env=(PRESET=tiny BUDGET_S=60 HARD_STOP_S=150 BATCH=2 DTYPE=float32 EVAL_BATCHES=2 "POINTS=base;theta_t=8")
  SWEEP_PRESET=tiny
else
  compare_env=()
  sweep_env=()
  SWEEP_PRESET="${SWEEP_PRESET:-small}"
fi
began=$SECONDS
CUDA_VISIBLE_DEVICES=0 env "${compare_env[@]}" OUT="$OUT" DATA="$DATA" DEVICE="$DEVICE" \
  bash benchmarks/train_compare_gpu.sh > /dev/null 2>&1 &
compare_pid=$!
CUDA_VISIBLE_DEVICES=1 env "${sweep_env[@]}" OUT="$OUT" DATA="$DATA" DEVICE="$DEVICE" \
  bash benchmarks/sweep_rule_gpu.sh > /dev/null 2>&1 &
sweep_pid=$!
compare_rc=0; wait "$compare_pid" || compare_rc=$?
compare_s=$((SECONDS - began))
sweep_rc=0; wait "$sweep_pid" || sweep_rc=$?
sweep_s=$((SECONDS - began))

gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | xargs)
echo "=== issue 7 on ${gpus:-$DEVICE} ==="
echo "host: $(getconf _NPROCESSORS_ONLN) CPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "--- GPU 0: train_compare (exit $compare_rc, ${compare_s} s) ---"
if [ -s "$OUT/train_compare.json" ]; then
  python -m benchmarks.train_compare_report "$OUT/train_compare.json"
else
  echo "no train_compare.json"
fi
if [ "$compare_rc" != 0 ]; then tail -15 "$OUT/train_compare.log" 2>/dev/null; fi
echo "(last run, H200, old rule theta_t 8 / theta_e 16: ternary 3.556 / ste 3.136 / float 2.941 bpb)"
echo "note: while GPU 0 trained, GPU 1 ran every sweep point as its own process (1 CPU thread each);"
echo "      the arms' tok/s can be a little lower than on an idle host."
echo
echo "--- GPU 1: rule sweep, $SWEEP_PRESET preset (exit $sweep_rc, ${sweep_s} s) ---"
grep -E "^probe|FAILED|failed" "$OUT/sweep_rule_$SWEEP_PRESET.log" 2>/dev/null
if [ "$sweep_rc" != 0 ]; then tail -8 "$OUT/sweep_rule_$SWEEP_PRESET.log" 2>/dev/null; fi
if [ -s "$OUT/sweep_rule_$SWEEP_PRESET.jsonl" ]; then
  python -m benchmarks.sweep_rule --table --results "$OUT/sweep_rule_$SWEEP_PRESET.jsonl"
else
  echo "no sweep point finished"
fi
echo
echo "files: $(cd "$OUT" && ls | xargs)"
echo "total ${SECONDS} s"
