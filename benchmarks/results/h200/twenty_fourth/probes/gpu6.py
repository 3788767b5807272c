"""GPU probe 6: the LUT kernel with its rows copied into a per-thread shared-memory ring by cp.async a step ahead (lut5)."""
import statistics, sys
sys.path.insert(0, "scratch/lut")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_lut_gemv as shipped
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import lut5

dev = torch.device("cuda")
worst = 0.0
for n, k, g in [(1000, 4099, 40), (33, 999, 80), (700, 5000, 320), (5000, 2000, 40)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-20, 10, (n, -(-k // g))).to(torch.int8).to(dev)
    t = tile_rows(p, e, g)
    w64 = unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(g, 1)[:, :k]
    x = torch.randn(1, k, device=dev)
    ref = x.double() @ w64.T
    for tile in ((2, 2, 8, 2), (2, 2, 8, 0), (2, 2, 8, 1)):
        got = lut5.lut_gemv(x, *t, out_features=n, group_size=g, tile=tile).sum(0).double()
        worst = max(worst, float((got - ref).norm() / ref.norm()))
print("worst relative error against float64", worst, flush=True)
G = 40
for n, k in [(16384, 16384), (14336, 4096), (4096, 14336)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    fin = lambda ws: finish_splits(ws, None, 0, torch.bfloat16)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda t=t: fin(shipped.lut_gemv(x, *t, out_features=n, group_size=G)) for t in tiles]}
    if worst < 1e-5:
        for tile in ((2, 2, 8, 2), (2, 2, 8, 1)):
            fns[f"ring {tile}"] = [lambda t=t, v=tile: fin(lut5.lut_gemv(
                x, *t, out_features=n, group_size=G, tile=v)) for t in tiles]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:28s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
