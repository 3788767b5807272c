export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git log -1 --format=%h > $OUT/rev.txt; git status --short >> $OUT/rev.txt
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_launches_per_call.py tests/test_bench_cli.py > $OUT/tests.log 2>&1
echo "tests rc $?"; tail -3 $OUT/tests.log; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head
timeout 150 python scratch/s30/pre_ab.py > $OUT/pre_ab.log 2>&1; echo "pre rc $?"; cat $OUT/pre_ab.log
timeout 100 python scratch/s30/m16_parts.py > $OUT/m16_parts.log 2>&1; echo "parts rc $?"; cat $OUT/m16_parts.log
export PYTHONPATH=$PWD:$PWD/scratch/gl/gemlite-0.6.0.post2
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv > $OUT/card.txt
timeout 390 python -m benchmarks.kernels --out $OUT/bench --shapes 16384x16384,4096x14336,14336x4096,4096x4096 --rows 1,16,128,2048,8192 --update-rows 8192 --backends triton --no-compile-times --gemlite > $OUT/bench.log 2>&1
echo "bench rc $?"; grep -v "^  " $OUT/bench.log | tail -42
