#!/usr/bin/env bash
# The update-rule sweep on the small preset on one GPU, in one call (at most 8 minutes):
# every point is its own process on the same card (the small model needs ~2.3 GB), one CPU thread
# each; a timing probe of all points side by side sets one step count (same tokens for every point)
# that fits BUDGET_S. Rows are appended as points finish, so a cut-short sweep keeps what it measured.
#
#   bash benchmarks/sweep_rule_gpu.sh        # on the GPU machine, from the repo root, carrying .data
#
# Writes under "$OUT": sweep_rule_$PRESET.jsonl (one JSON row per finished point) and
# sweep_rule_$PRESET.log (probe, one line per point, failures); prints the markdown table last
# (again: python -m benchmarks.sweep_rule --table --results "$OUT/sweep_rule_$PRESET.jsonl").
# A check on CPU: DEVICE=cpu PRESET=tiny BUDGET_S=40 BATCH=2 DTYPE=float32 POINTS="base;theta_t=8" bash ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/sweep-rule-gpu}"
DATA="${DATA:-.data/tinyshakespeare.txt}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-small}"
BUDGET_S="${BUDGET_S:-435}"      # the sweep's own deadline (probe and all points), counted after imports
HARD_STOP_S="${HARD_STOP_S:-470}"
BATCH="${BATCH:-8}"              # x the preset's context (256 for small)
DTYPE="${DTYPE:-bfloat16}"
THREADS="${THREADS:-1}"          # CPU threads per point: leave the host's cores to whatever else runs
EVAL_BATCHES="${EVAL_BATCHES:-8}"
# the defaults, then one knob at a time (e_min/e_max together)
POINTS="${POINTS:-base;theta_t=8;theta_t=32;theta_e=16;theta_e=127;bias_step=16;bias_step=256;e_min=-8,e_max=-2}"
SEEDS="${SEEDS:-0}"              # comma list; every point runs once per seed
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="$THREADS"
if [ ! -f "$DATA" ]; then echo "sweep_rule_gpu.sh: $DATA is missing (copy tinyshakespeare.txt into .data/ and carry .data)" >&2; exit 2; fi
RESULTS="$OUT/sweep_rule_$PRESET.jsonl"
LOG="$OUT/sweep_rule_$PRESET.log"
rc=0
timeout "$HARD_STOP_S" python -m benchmarks.sweep_rule --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" \
  --data "$DATA" --batch "$BATCH" --eval-batches "$EVAL_BATCHES" --threads "$THREADS" --only "$POINTS" --seeds "$SEEDS" --workers 0 \
  --budget-s "$BUDGET_S" --results "$RESULTS" > "$LOG" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then echo "sweep_rule_gpu.sh: the sweep exited with $rc (124: hard stop); the rows written so far are kept"; tail -20 "$LOG"; fi
if [ -s "$RESULTS" ]; then python -m benchmarks.sweep_rule --table --results "$RESULTS"; else echo "sweep_rule_gpu.sh: no point finished"; fi
exit "$rc"
