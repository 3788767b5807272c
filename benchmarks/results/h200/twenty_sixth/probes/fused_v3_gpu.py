"""Fused decode + GEMM prototype v3 against v2's GEMM: correctness against the shipped two-step path, then
timings (CUDA graphs)
(fused_v2.py: see fused_v2_gpu.py)."""
import sys
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import fused_v2 as f2
import fused_v3 as f
from probe_common import check, layer, print_medians
from ternary.kernels.linear.triton_run_decode import dequantize_runs

if sys.argv[1] == "check":
    ok = all([check(f, 300, 1000, 1001, 40), check(f, 129, 513, 2600, 40, corrupt=True),
              check(f, 2048, 4096, 4096, 40)])
    print("ALL OK" if ok else "FAILED")
else:
    for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384),
                    (8192, 16384, 16384)]:
        T, E, x, w_ref, wf = layer(m, n, k)
        g = 40
        fns = {
            "cublas": lambda: F.linear(x, w_ref),
            "two_step": lambda: F.linear(x, dequantize_runs(T, E, in_features=k, group_size=g)),
            "gemm_v2": lambda: f2.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
            "gemm_v3": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
            "fused_v3": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=True),
            "gemm_v3B": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf, tile=(256, 128, 3)),
        }
        print_medians(f"M={m} {n}x{k}", fns, turns=2, reps=6, rounds=5)
