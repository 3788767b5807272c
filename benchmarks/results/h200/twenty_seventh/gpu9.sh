export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
timeout 240 python -m pytest -q -x tests/test_triton_decode_gemm.py -p no:cacheprovider 2>&1 | tail -5 | tee $OUT/tests_decode_gemm.log
timeout 300 python -m benchmarks.kernels --rows 2048,4096,8192 --update-rows none --backends triton --no-compile-times --no-gemlite --out $OUT/bench_large_m > $OUT/bench.log 2>&1
grep -E "^(forward|grad_x|decode) " $OUT/bench.log
