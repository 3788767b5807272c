export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git log -1 --format=%h > $OUT/rev.txt; git status --short >> $OUT/rev.txt
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_launches_per_call.py tests/test_triton_linear.py "tests/test_triton_decode_gemm.py::test_dispatch_leaves_cpu_calls_and_other_rows_to_the_other_paths" "tests/test_triton_decode_gemm.py::test_forward_dispatch_takes_the_kernel_for_training_rows" "tests/test_triton_decode_gemm.py::test_grad_x_dispatch_takes_the_kernel_for_large_layers" > $OUT/tests.log 2>&1
echo "tests rc $?"; tail -3 $OUT/tests.log; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head -20
