"""The kernels cuBLAS runs for the benchmark's bf16 baselines at M = 2048 / 8192 (forward F.linear, grad-x grad_y @ W,
the weight-gradient GEMM grad_y.T @ x), named by the driver from a captured call."""
import torch
import torch.nn.functional as F
from benchmarks.graph_nodes import nodes_per_call

for n, k in [(4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384)]:
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    for m in (2048, 8192):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        g = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        for name, call in (("forward", lambda: F.linear(x, w)), ("grad_x", lambda: g @ w),
                           ("wgrad", lambda: g.T @ x)):
            print(f"{n}x{k} M={m} {name}: {[node[:100] for node in nodes_per_call(call)]}", flush=True)
        del x, g
