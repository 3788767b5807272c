"""GPU probe 4: two-step forward at M >= 2048 decoded chunk by chunk into one reused (L2-resident) buffer."""
import statistics, sys
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_back_to_back, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear import triton_run_decode as rd
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40


def chunked(x, p, e, k, rows, buf):
    n = p.shape[0]
    y = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = buf[: r1 - r0]
        rd.launch(p[r0:r1], e[r0:r1], w.view(torch.int32), group_size=G, tile=rd.RUN_DECODE_TILE)
        torch.mm(x, w[:, :k].t(), out=y[:, r0:r1])
    return y


for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    full = tl_lin.dequantize(*states[0], in_features=k, group_size=G, dtype=torch.bfloat16)
    cols = full.stride(0)
    for m in [2048, 8192]:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        ref = tl_lin.forward(x, *states[0], None, in_features=k, group_size=G, bias_frac_bits=16)
        fns = {"bf16": lambda: [F.linear(x, w) for w in dense],
               "shipped": lambda: [tl_lin.forward(x, p, e, None, in_features=k, group_size=G, bias_frac_bits=16)
                                   for p, e in states]}
        bufs = {}
        for rows in [1024, 2048, 4096]:
            if rows >= n:
                continue
            bufs[rows] = torch.empty((rows, cols), dtype=torch.bfloat16, device=dev)
            y = chunked(x, *states[0], k, rows, bufs[rows])
            err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"{n}x{k} M={m} chunk {rows}: rel diff to shipped {err:.1e}", flush=True)
            fns[f"chunk {rows}"] = lambda rows=rows: [chunked(x, p, e, k, rows, bufs[rows]) for p, e in states]
        per = {name: (lambda f=f: f()) for name, f in fns.items()}
        times = time_interleaved(per, rounds=4, timer=lambda f: time_back_to_back(f, calls=2, repeats=3))
        for name, ts in times.items():
            c = len(dense) if name == "bf16" else len(states)
            med = statistics.median(ts) / c
            ratio = paired_ratio([t / len(dense) for t in times["bf16"]], [t / c for t in ts])
            print(f"{n}x{k} M={m} {name:12s} {med:9.1f} us  {ratio:5.3f}x of bf16", flush=True)
    del states, dense, full
    torch.cuda.empty_cache()
