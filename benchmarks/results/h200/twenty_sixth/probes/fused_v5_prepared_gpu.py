"""Prepared for the next session (not run): fused v5 (fused_v3.py + fused_v5_prepared.diff as fused5.py), the first
round's first chunks decoded by the full-card run decode before the fused kernel (flags preset), against v3's GEMM
(no pre-decode), cuBLAS and the two-step path."""
import sys
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import fused5 as f
from probe_common import check, layer, print_medians
from ternary.kernels.linear.triton_run_decode import dequantize_runs

ok = all([check(f, 300, 1000, 1001, 40, pre_chunks=1), check(f, 129, 513, 2600, 20, corrupt=True, pre_chunks=2),
          check(f, 2048, 4096, 4096, 40, pre_chunks=99), check(f, 700, 3000, 9000, 40, corrupt=True, pre_chunks=1)])
print("ALL OK" if ok else "FAILED")
for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384),
                (8192, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    g = 40
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "two_step": lambda: F.linear(x, dequantize_runs(T, E, in_features=k, group_size=g)),
           "gemm": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf)}
    for pre in (0, 1, 2, 99):
        fns[f"fused_pre{pre}"] = lambda pre=pre: f.forward(x, T, E, in_features=k, group_size=g, fused=True,
                                                           pre_chunks=pre)
    print_medians(f"M={m} {n}x{k}", fns, turns=2)
