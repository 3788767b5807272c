"""GPU: the shipped tiled kernel (umulhi) against the prototype (19 b >> 9) and bf16, tile sweep; ncu target."""
import statistics, sys
import torch, torch.nn.functional as F
sys.path.insert(0, "scratch")
import tiled_gemv as proto
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
mode = sys.argv[1]
shapes = [(16384, 16384)] if mode != "all" else [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
for n, k in shapes:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    packed_bytes = n * -(-k // 5) + n * groups
    count = copies_for(packed_bytes, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    st = dict(in_features=k, group_size=G, bias_frac_bits=16)
    if mode == "ncu":
        for _ in range(3):
            tl_lin.forward_decode(x, *states[0], *tiles[0], None, **st)
        torch.cuda.synchronize()
        sys.exit(0)
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    ref = F.linear(x.float(), dense[0].float())
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "proto(4,4,4)": [lambda t=t: proto.tiled_gemv(x, *t, n, G, rpt=4, warps=4, programs_per_sm=4) for t in tiles]}
    for tile in [(4, 4, 4), (4, 4, 3), (2, 4, 6), (4, 8, 2), (2, 8, 3), (2, 4, 4)]:
        y = tl_lin.forward_decode(x, *states[0], *tiles[0], None, tile=tile, **st)
        print(n, k, tile, "err", ((y.float() - ref).norm() / ref.norm()).item(), flush=True)
        fns[f"new{tile}"] = [lambda s=s, t=t, tile=tile: tl_lin.forward_decode(x, *s, *t, None, tile=tile, **st)
                             for s, t in zip(states, tiles)]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    base = times["bf16"]
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:16s} {statistics.median(ts):8.1f} us  {paired_ratio(base, ts):5.2f}x", flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
