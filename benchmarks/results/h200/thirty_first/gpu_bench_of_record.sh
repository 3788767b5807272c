export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
git log -1 --format=%h > $OUT/rev.txt; git status --short >> $OUT/rev.txt
export PYTHONPATH=$PWD:$PWD/scratch/gl/gemlite-0.6.0.post2
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu,power.draw --format=csv > $OUT/card.txt
timeout 420 python -m benchmarks.kernels --out $OUT/bench --shapes 16384x16384,4096x14336,14336x4096,4096x4096 --rows 1,16,128,2048,8192 --update-rows 8192 --backends triton --no-compile-times --gemlite > $OUT/bench.log 2>&1
echo "bench rc $?"; grep -v "^  " $OUT/bench.log | tail -45
