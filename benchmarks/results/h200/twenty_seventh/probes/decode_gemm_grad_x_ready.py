"""Grad-x variant: is the GEMM itself slow? The kernel on a pre-decoded buffer with no flag waits and no decode
('ready') against the full kernel, cuBLAS and the two-step path."""
import sys
import torch
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
sys.path.insert(0, "scratch/s27")  # dgx.py: the module + decode_gemm_grad_x.diff + decode_gemm_grad_x_ready.diff
import dgx
from probe_common import full, layer, print_medians
from ternary.kernels.linear import triton as kernels

kw = dict(group_size=40)
for m, n, k in [(2048, 4096, 4096), (2048, 16384, 16384), (8192, 4096, 4096), (8192, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    g = torch.randn(m, n, device="cuda").to(torch.bfloat16)
    a = dgx.grad_x(g, T, E, in_features=k, **kw)
    b = dgx.grad_x(g, T, E, in_features=k, ready=wf, **kw)
    print("ready equals full kernel:", torch.equal(a.view(torch.int16), b.view(torch.int16)), flush=True)
    fns = {"cublas": lambda: g @ w_ref,
           "two_step": lambda: kernels.grad_x_two_step(g, T, E, in_features=k, **kw),
           "gx": lambda: dgx.grad_x(g, T, E, in_features=k, **kw),
           "gx_ready": lambda: dgx.grad_x(g, T, E, in_features=k, ready=wf, **kw)}
    print_medians(f"grad_x M={m} {n}x{k}", fns, turns=2)
