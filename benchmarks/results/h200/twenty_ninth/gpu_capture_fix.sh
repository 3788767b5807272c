export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git log -1 --format=%h > $OUT/rev.txt; git status --short >> $OUT/rev.txt
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_kept_tensors.py "tests/test_triton_decode_gemm.py::test_a_first_call_inside_a_cuda_graph_capture_replays_the_eager_result" "tests/test_triton_wgmma_update.py::test_wide_update_captured_in_a_cuda_graph_replays_the_reference_with_its_table_kept_or_not" > $OUT/tests_capture.log 2>&1
echo "tests rc $?"; tail -3 $OUT/tests_capture.log
timeout 300 python -m benchmarks.kernels --out $OUT/bench_m2048 --shapes 16384x16384,4096x14336,14336x4096,4096x4096 --rows 2048,4096 --update-rows none --backends triton --no-compile-times --no-gemlite > $OUT/bench_m2048.log 2>&1
echo "bench rc $?"; grep -v "^  " $OUT/bench_m2048.log | tail -30
