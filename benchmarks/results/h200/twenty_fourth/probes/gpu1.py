"""GPU probe 1: the 243-entry shared-table one-row forward against the shipped tiled GEMV and cuBLAS."""
import statistics, sys, traceback
sys.path.insert(0, "scratch/lut")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_gemv as shipped
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import lut

dev = torch.device("cuda")


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


worst = 0.0
for n, k, g in [(1000, 4099, 40), (33, 999, 80), (1, 3000, 160), (257, 333, 40), (4096, 4096, 40), (700, 5000, 320),
                (64, 17, 40)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-128, 127, (n, -(-k // g))).to(torch.int8).to(dev)
    e.clamp_(-20, 10)
    t = tile_rows(p, e, g)
    w64 = unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(g, 1)[:, :k]
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(1, k, device=dev).to(dtype)
        ref = x.double() @ w64.T
        old = shipped.tiled_gemv(x, *t, out_features=n, group_size=g).sum(0)
        for tile in [(4, 2, 8, 2), (4, 1, 8, 2), (2, 2, 4, 3)]:
            try:
                got = lut.lut_gemv(x, *t, out_features=n, group_size=g, tile=tile).sum(0)
                r = rel(got, ref)
                worst = max(worst, r)
                if r > 1e-5:
                    print("BAD", n, k, g, dtype, tile, r, "old", rel(old, ref), flush=True)
            except Exception:
                print("error", n, k, g, tile, traceback.format_exc()[-800:], flush=True)
                worst = float("inf")
print("worst relative error against float64", worst, flush=True)
# corrupt byte
n, k, g = 300, 1000, 40
p = random_packed(n, k).to(dev)
e = torch.zeros((n, k // g), dtype=torch.int8, device=dev)
p[7, 3] = 250
t = tile_rows(p, e, g)
got = lut.lut_gemv(torch.randn(1, k, device=dev), *t, out_features=n, group_size=g).sum(0)[0]
print("corrupt row nan", bool(got[7].isnan()), "others finite", bool(got[torch.arange(n, device=dev) != 7].isfinite().all()))
# extreme exponents
e = torch.full((n, k // g), -128, dtype=torch.int8, device=dev)
e[:, 1::2] = 127
p = random_packed(n, k).to(dev)
t = tile_rows(p, e, g)
x = torch.randn(1, k, device=dev) * 1e-30
w64 = unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(g, 1)[:, :k]
print("extreme exponents rel", rel(lut.lut_gemv(x, *t, out_features=n, group_size=g).sum(0), x.double() @ w64.T))

if worst < 1e-5:
    G = 40
    for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
        gen = torch.Generator().manual_seed(n * 7 + k)
        groups = -(-k // G)
        count = copies_for(n * -(-k // 5) + n * groups, dev)
        states = [(random_packed(n, k, generator=gen).to(dev),
                   torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
        tiles = [tile_rows(p, e, G) for p, e in states]
        dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
                 for p, e in states[:copies_for(n * k * 2, dev)]]
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "shipped": [lambda t=t: shipped.tiled_gemv(x, *t, out_features=n, group_size=G) for t in tiles]}
        for v in [(4, 2, 8, 2), (4, 1, 8, 2), (4, 2, 8, 1), (4, 1, 8, 3), (2, 2, 8, 2), (4, 2, 4, 3), (4, 4, 8, 1),
                  (8, 1, 8, 1), (2, 4, 8, 2)]:
            fns["lut " + ",".join(map(str, v))] = [lambda t=t, v=v: lut.lut_gemv(x, *t, out_features=n, group_size=G,
                                                                                 tile=v) for t in tiles]
        times = time_interleaved(fns, rounds=3, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M=1 {name:14s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
                  flush=True)
        del states, tiles, dense
        torch.cuda.empty_cache()
