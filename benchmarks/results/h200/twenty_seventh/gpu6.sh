export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name --format=csv,noheader
git log --oneline -1
timeout 420 python -m pytest -q -p no:cacheprovider tests/test_triton_linear.py tests/test_triton_run_decode.py tests/test_backend_selection.py tests/test_grouped_linear.py 2>&1 | tail -6 | tee $OUT/tests_linear.log
timeout 120 python -m apps.cli smoke --device cuda --backward --json > $OUT/smoke_cuda.json 2>$OUT/smoke_cuda.err; echo smoke rc $?
python - <<'P'
import json, os
r = json.load(open(os.environ["OUT"] + "/smoke_cuda.json"))
print({k: r[k] for k in r if k in ("audit", "backend", "ok", "loss")})
P
