"""fused_v3 split into its parts: GEMM alone, GEMM with the decoder writing a separate buffer (no waits), and fused."""
import sys
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import fused_v3 as f
from probe_common import layer, print_medians
from ternary.kernels.linear.triton_run_decode import dequantize_runs

for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    g = 40
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "gemm": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
           "gemm_plus_decoder": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf,
                                                  interfere=True),
           "fused": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=True),
           "decode_alone": lambda: dequantize_runs(T, E, in_features=k, group_size=g)}
    print_medians(f"M={m} {n}x{k}", fns, turns=2)
