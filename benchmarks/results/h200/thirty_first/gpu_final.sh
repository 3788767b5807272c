export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git log -1 --format=%h > $OUT/rev.txt; git status --short >> $OUT/rev.txt
timeout 420 python -m pytest -q -p no:cacheprovider tests/test_triton_run_decode.py tests/test_triton_decode_gemm.py tests/test_triton_linear.py tests/test_launches_per_call.py > $OUT/tests.log 2>&1
echo "tests rc $?"; tail -3 $OUT/tests.log; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head -20
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv > $OUT/card.txt
timeout 110 python -m benchmarks.kernels --out $OUT/bench --shapes 16384x16384,4096x14336,14336x4096,4096x4096 --rows 2048 --update-rows none --backends triton --no-compile-times --no-gemlite > $OUT/bench.log 2>&1
echo "bench rc $?"; grep -v "^  " $OUT/bench.log | tail -14
