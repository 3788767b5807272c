"""The forward only, M = 2048 / 3072 / 4096 / 6144, the three layers below 2^27 weights (a second sample of the M = 4096
lead of dispatch_ab.log): the two-step path against the decode-in-GEMM kernel; cuBLAS on the same weights stored dense
first in each round; time_in_graph in turns, 7 rounds, ratios paired by round (over cuBLAS: higher is faster)."""
import statistics

import torch
import torch.nn.functional as F

from benchmarks.kernels import copies_for, time_in_graph, time_interleaved
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_decode_gemm as dg
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed

G = 40
for (n, k) in [(4096, 4096), (14336, 4096), (4096, 14336)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    count = copies_for(n * -(-k // 5) + n * -(-k // G), torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    dense = [rd.dequantize_runs(*s, in_features=k, group_size=G).contiguous()
             for s in states[:copies_for(n * k * 2, torch.device("cuda"))]]
    for m in (2048, 3072, 4096, 6144):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        rows = {
            "forward": {"cublas": [lambda w=w: F.linear(x, w) for w in dense],
                        "two_step": [lambda s=s: kernels.forward_two_step(x, *s, None, in_features=k, group_size=G,
                                                                          bias_frac_bits=16) for s in states],
                        "decode_gemm": [lambda s=s: dg.forward(x, *s, None, in_features=k, group_size=G,
                                                               bias_frac_bits=16) for s in states]}}
        for op, calls in rows.items():
            times = time_interleaved(calls, rounds=7, timer=time_in_graph)
            base = times["cublas"]
            cells = [f"cublas {statistics.median(base):.1f}us"]
            for name in ("two_step", "decode_gemm"):
                ratios = sorted(b / t for b, t in zip(base, times[name]))
                cells.append(f"{name} {statistics.median(times[name]):.1f}us {ratios[3]:.3f}x "
                             f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]")
            print(f"{op} M={m} {n}x{k}: " + "  ".join(cells), flush=True)
    del states, dense
    torch.cuda.empty_cache()
