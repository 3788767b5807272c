"""Decode-in-GEMM forward PRE (chunks decoded before the kernel) A/B under the benchmark's conditions: weights
rotating over copies_for() layers, cuBLAS and each config in turns for 5 rounds of time_in_graph, ratios paired
by round. Outputs of each config equal to the shipped one bit for bit."""
import statistics
import torch
import torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, paired_ratio, ratio_range
from ternary.kernels.linear import triton_decode_gemm as dg
from ternary.state.packing import random_packed, unpack

G = 40
kw = dict(in_features=None, group_size=G, bias_frac_bits=16)
for (n, k) in [(4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(), torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).cuda())
              for _ in range(count)]
    dense = [unpack(p, k).to(torch.bfloat16).cuda() * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16()
             for p, e in states[:copies_for(n * k * 2, torch.device("cuda"))]]
    for m in (2048, ):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        calls = {"cublas": [lambda w=w: F.linear(x, w) for w in dense]}
        ref = dg.forward(x, *states[0], None, in_features=k, group_size=G, bias_frac_bits=16)
        same = True
        for pre in (2, 3, 4):
            cfg = (32, 16, pre)
            out = dg.forward(x, *states[0], None, in_features=k, group_size=G, bias_frac_bits=16, config=cfg)
            same &= torch.equal(out.view(torch.int16), ref.view(torch.int16))
            calls[f"pre{pre}"] = [lambda s=s, cfg=cfg: dg.forward(x, s[0], s[1], None, in_features=k, group_size=G,
                                                                   bias_frac_bits=16, config=cfg) for s in states]
        times = time_interleaved(calls, rounds=7, timer=time_in_graph)
        base = times["cublas"]
        cells = [f"cublas {statistics.median(base):.1f}us"] + [
            f"{name} {statistics.median(t):.1f}us {paired_ratio(base, t):.3f}x [{ratio_range(base, t)[0]:.3f}-{ratio_range(base, t)[1]:.3f}]"
            for name, t in times.items() if name != "cublas"]
        print(f"M={m} {n}x{k} equal={same}: " + "  ".join(cells), flush=True)
    del states, dense
    torch.cuda.empty_cache()
