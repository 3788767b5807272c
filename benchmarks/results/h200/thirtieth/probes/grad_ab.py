"""Grad-x on the layers below DECODE_GEMM_GRAD_X_MIN_WEIGHTS, with the pre-decode's fitted launch tile: the two-step
path (run decode, cuBLAS) against the decode-in-GEMM kernel; cuBLAS and both in turns for 7 rounds of time_in_graph,
ratios paired by round; outputs compared (both are fp32-accumulated products of the same bf16 weights)."""
import statistics
import torch
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved, paired_ratio, ratio_range
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_decode_gemm as dg
from ternary.state.packing import random_packed, unpack

G = 40
for (n, k) in [(14336, 4096), (4096, 14336), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    dense = [unpack(p, k).to(torch.bfloat16).cuda() * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16()
             for p, e in states[:copies_for(n * k * 2, torch.device("cuda"))]]
    for m in (2048, 4096):
        gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        two = lambda s: kernels.grad_x_two_step(gy, s[0], s[1], in_features=k, group_size=G)
        fused = lambda s: dg.grad_x(gy, s[0], s[1], in_features=k, group_size=G)
        a, b = two(states[0]).float(), fused(states[0]).float()
        err = ((a - b).norm() / a.norm()).item()
        calls = {"cublas": [lambda w=w: gy @ w for w in dense], "two_step": [lambda s=s: two(s) for s in states],
                 "decode_gemm": [lambda s=s: fused(s) for s in states]}
        times = time_interleaved(calls, rounds=7, timer=time_in_graph)
        base = times["cublas"]
        cells = [f"cublas {statistics.median(base):.1f}us"] + [
            f"{name} {statistics.median(t):.1f}us {paired_ratio(base, t):.3f}x "
            f"[{ratio_range(base, t)[0]:.3f}-{ratio_range(base, t)[1]:.3f}]" for name, t in times.items() if name != "cublas"]
        print(f"grad_x M={m} {n}x{k} rel_diff={err:.1e}: " + "  ".join(cells), flush=True)
    del states, dense
    torch.cuda.empty_cache()
