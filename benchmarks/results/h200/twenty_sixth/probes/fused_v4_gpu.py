"""fused v4 (fused_v3.py + fused_v4.diff as fused_v4.py) against v3: two bit-for-bit checks, then timings."""
import sys
import torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import fused_v3 as f3
import fused_v4 as f
from probe_common import full, layer, make, print_medians
from ternary.kernels.linear.triton_run_decode import dequantize_runs

for m, n, k, g in [(300, 1000, 1001, 40), (129, 513, 2600, 20)]:
    T, E = make(n, k, g, seed=n)
    T[n // 2, 7] = 250
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    y1, wb = f.forward(x, T, E, in_features=k, group_size=g, fused=True)
    y0, _ = f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=full(w_ref, w_ref.stride(0)))
    print("check", m, n, k, g, torch.equal(wb[:, :k].view(torch.int16), w_ref.view(torch.int16)),
          torch.equal(y0.view(torch.int16), y1.view(torch.int16)), flush=True)
for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384),
                (8192, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    g = 40
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "two_step": lambda: F.linear(x, dequantize_runs(T, E, in_features=k, group_size=g)),
           "gemm": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
           "fused_v3": lambda: f3.forward(x, T, E, in_features=k, group_size=g, fused=True),
           "fused_v4": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=True)}
    print_medians(f"M={m} {n}x{k}", fns, turns=2)
