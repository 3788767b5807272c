"""Decode-in-GEMM forward at M = 2048 / 4096: chunks decoded before the kernel (PRE) and chunk widths, against
cuBLAS and the two-step path, same process, in turns. Each config checked first: its output equal to the shipped
config's bit for bit."""
import sys
import torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
from probe_common import layer, print_medians
from ternary.kernels.linear import triton as kernels, triton_decode_gemm as dg

CONFIGS = [(32, 16, 2), (32, 16, 3), (32, 16, 4), (32, 16, 6), (16, 16, 4), (16, 16, 6), (16, 16, 8)]
kw = dict(group_size=40, bias_frac_bits=16)
ok = True
for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (4096, 4096, 4096),
                (2048, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    shipped = dg.forward(x, T, E, None, in_features=k, **kw)
    for config in CONFIGS:
        same = torch.equal(dg.forward(x, T, E, None, in_features=k, config=config, **kw).view(torch.int16),
                           shipped.view(torch.int16))
        ok &= same
        if not same:
            print(f"MISMATCH {config} M={m} {n}x{k}", flush=True)
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "two_step": lambda: kernels.forward_two_step(x, T, E, None, in_features=k, **kw)}
    for config in CONFIGS:
        fns["c" + "_".join(map(str, config))] = lambda c=config: dg.forward(x, T, E, None, in_features=k, config=c,
                                                                            **kw)
    print_medians(f"M={m} {n}x{k}", fns, turns=3)
print("ALL EQUAL" if ok else "MISMATCHES", flush=True)
