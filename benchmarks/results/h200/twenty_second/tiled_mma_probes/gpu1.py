"""GPU probe: table-decode mma.sync forward for 2..16 rows over the decode layout, against the shipped path."""
import statistics, sys
sys.path.insert(0, "scratch/tmma")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import tmma

dev = torch.device("cuda")


def dequant(p, e, k, G):
    return unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(G, 1)[:, :k]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def call(x, t, n, G, **kw):
    return finish_splits(tmma.tmma_forward(x, *t, out_features=n, group_size=G, **kw), None, 16, x.dtype)


worst = 0.0
for n, k, G, m in [(33, 1001, 40, 2), (1000, 4099, 40, 16), (257, 333, 80, 9), (64, 3200, 160, 3), (100, 2000, 320, 16),
                   (96, 4800, 40, 8), (1, 7, 40, 5), (4096, 4096, 40, 16), (130, 1600, 800, 13)]:
    gen = torch.Generator().manual_seed(n + k + m)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-20, 10, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
    t = tile_rows(p, e, G)
    w = dequant(p, e, k, G)
    for dtype in (torch.bfloat16, torch.float32):
        x = (torch.randn(m, k, device=dev) * torch.exp(torch.randn(m, k, device=dev))).to(dtype)
        xb = x.bfloat16().double()
        want = xb @ w.T
        got = tmma.tmma_forward(x, *t, out_features=n, group_size=G).sum(0)
        err = rel(got, want)
        worst = max(worst, err)
        print(f"check n={n} k={k} G={G} m={m} x={dtype}: rel err vs fp64 of bf16 x {err:.2e}", flush=True)
    if n >= 64:
        pc = p.clone(); pc[5, 3] = 250; pc[n - 1, -1] = 243
        y = tmma.tmma_forward(x, *tile_rows(pc, e, G), out_features=n, group_size=G).sum(0)
        bad = torch.isnan(y).any(0).nonzero().flatten().tolist()
        print(f"  corrupt bytes -> NaN rows {bad}, all x-rows NaN there: {bool(torch.isnan(y[:, bad]).all())}", flush=True)
# extremes
n, k, G = 64, 800, 40
p = random_packed(n, k).to(dev)
for ev in (127, -128, -127):
    e = torch.full((n, k // G), ev, dtype=torch.int8, device=dev)
    x = torch.randn(4, k, device=dev).bfloat16() * (2.0 ** (-120 if ev > 0 else 100))
    want = x.double() @ dequant(p, e, k, G).T
    got = tmma.tmma_forward(x, *tile_rows(p, e, G), out_features=n, group_size=G).sum(0)
    print(f"extreme E={ev}: rel err {rel(got, want):.2e}", flush=True)
print("worst", worst, flush=True)

for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    G = 40
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    for m in (16, 8, 2):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        exact = x.double() @ dequant(*states[0], k, G).T
        ys = tl_lin.forward(x, *states[0], None, in_features=k, group_size=G, bias_frac_bits=16)
        print(f"{n}x{k} M={m} rel err vs fp64: tmma {rel(call(x, tiles[0], n, G), exact):.2e} shipped {rel(ys, exact):.2e}",
              flush=True)
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "shipped": [lambda s=s: tl_lin.forward(x, *s, None, in_features=k, group_size=G, bias_frac_bits=16)
                           for s in states]}
        for warps, per_sm in [(4, 4), (4, 8), (4, 16), (8, 4), (8, 8), (2, 16)]:
            fns[f"tmma w{warps} p{per_sm}"] = [lambda t=t, warps=warps, per_sm=per_sm: call(x, t, n, G, warps=warps,
                                                                                         per_sm=per_sm) for t in tiles]
        times = time_interleaved(fns, rounds=3, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M={m} {name:16s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
                  flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
