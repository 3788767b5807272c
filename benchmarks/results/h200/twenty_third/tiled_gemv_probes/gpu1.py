"""GPU probe: the tiled GEMV with two steps a turn (tgemv_u) against the shipped one."""
import statistics, sys
sys.path.insert(0, "scratch/tgemv")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_gemv as shipped
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import tgemv_u

dev = torch.device("cuda")
G = 40
TILES = [(4, 4, 4), (2, 4, 4), (4, 2, 8), (2, 8, 2), (1, 4, 4)]
for n, k, g in [(1000, 4099, 40), (257, 999, 80), (100, 3000, 320), (33, 333, 40), (64, 200, 20), (70, 900, 5)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-128, 128, (n, -(-k // g))).to(torch.int8).to(dev)
    p[5, 3] = 250
    t = tile_rows(p, e, g)
    x = torch.randn(1, k, device=dev).bfloat16()
    print(f"check n={n} k={k} g={g}: bit-equal to shipped",
          [torch.equal(torch.nan_to_num(tgemv_u.tiled_gemv(x, *t, out_features=n, group_size=g, tile=v).sum(0), 7.0),
                       torch.nan_to_num(shipped.tiled_gemv(x, *t, out_features=n, group_size=g, tile=v).sum(0), 7.0))
           for v in TILES], flush=True)
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
    for v in TILES[:4] if n * k >= 16384 * 16384 else TILES[:1]:
        fns[f"unrolled {v}"] = [lambda t=t, v=v: tgemv_u.tiled_gemv(x, *t, out_features=n, group_size=G, tile=v)
                                for t in tiles]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
