export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
git log --oneline -1
timeout 200 python -m pytest -q -x tests/test_triton_decode_gemm.py -p no:cacheprovider 2>&1 | tail -5 | tee $OUT/tests_decode_gemm.log
timeout 330 python -m benchmarks.kernels --rows 2048,4096,8192 --update-rows none --backends triton --no-compile-times --no-gemlite --out $OUT/bench_large_m > $OUT/bench.log 2>&1
tail -40 $OUT/bench.log
