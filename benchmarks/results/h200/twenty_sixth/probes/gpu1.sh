set -x
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv > $OUT/card.txt 2>&1
CS=$(which compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
echo "sanitizer: $CS" > $OUT/racecheck.log
python benchmarks/results/h200/twenty_sixth/probes/racecheck.py all >> $OUT/racecheck.log 2>&1
if [ -n "$CS" ]; then
  timeout 150 $CS --tool racecheck --racecheck-report all python benchmarks/results/h200/twenty_sixth/probes/racecheck.py lut >> $OUT/racecheck.log 2>&1
  timeout 100 $CS --tool racecheck python benchmarks/results/h200/twenty_sixth/probes/racecheck.py tmma >> $OUT/racecheck.log 2>&1
  timeout 60 $CS --tool synccheck python benchmarks/results/h200/twenty_sixth/probes/racecheck.py lut >> $OUT/racecheck.log 2>&1
fi
timeout 400 python -m benchmarks.kernels --out $OUT/bench_large --rows 2048,8192 --update-rows 8192 --backends triton --no-compile-times --no-gemlite > $OUT/bench_large.log 2>&1
tail -5 $OUT/bench_large.log
