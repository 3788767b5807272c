"""GPU: tiled-layout M = 1 GEMV against the shipped table GEMV and bf16 cuBLAS (same process)."""
import statistics, sys, time
import torch, torch.nn.functional as F
sys.path.insert(0, "scratch")
import tiled_gemv as tg
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
print(torch.cuda.get_device_name(), flush=True)

def dense_of(p, e, k):
    return (unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(G, 1)[:, :k])

# correctness on odd shapes
for n, k in [(1, 7), (33, 333), (1000, 645), (257, 4100), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-6, 3, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    t, et = tg.tile_layer(p, e, G)
    for cfg in [(2, 4, 4), (4, 4, 4), (2, 2, 4)]:
        ws_y = tg.tiled_gemv(x, t, et, n, G, rpt=cfg[0], warps=cfg[1], programs_per_sm=cfg[2])
        ref = x.double() @ dense_of(p, e, k).T
        err = ((ws_y.double() - ref).norm() / ref.norm()).item()
        print(f"check {n}x{k} {cfg} rel_err {err:.2e}", flush=True)

rows = []
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    packed_bytes = n * -(-k // 5) + n * groups
    count = copies_for(packed_bytes, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tg.tile_layer(p, e, G) for p, e in states]
    dcount = copies_for(n * k * 2, dev)
    dense = [dense_of(p, e, k).to(torch.bfloat16) for p, e in states[:dcount]]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    ref = x.double() @ dense_of(*states[0], k).T
    shipped = tl_lin.forward(x, *states[0], None, bias_frac_bits=16, in_features=k, group_size=G)
    print(f"{n}x{k} shipped err {((shipped.double()-ref).norm()/ref.norm()).item():.2e}", flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda s=s: tl_lin.forward(x, s[0], s[1], None, bias_frac_bits=16, in_features=k, group_size=G) for s in states]}
    for cfg in [(2, 4, 4), (4, 4, 4), (2, 4, 8), (2, 2, 4), (4, 2, 4), (4, 4, 2), (2, 8, 2)]:
        y = tg.tiled_gemv(x, *tiles[0], n, G, rpt=cfg[0], warps=cfg[1], programs_per_sm=cfg[2])
        err = ((y.double() - ref).norm() / ref.norm()).item()
        fns[f"tiled{cfg}"] = [lambda t=t, cfg=cfg: tg.tiled_gemv(x, *t, n, G, rpt=cfg[0], warps=cfg[1], programs_per_sm=cfg[2]) for t in tiles]
        print(f"  tiled{cfg} err {err:.2e}", flush=True)
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    base = times["bf16"]
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:18s} {statistics.median(ts):8.1f} us  {paired_ratio(base, ts):5.2f}x  {packed_bytes/statistics.median(ts)/1e6:5.2f} TB/s", flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
