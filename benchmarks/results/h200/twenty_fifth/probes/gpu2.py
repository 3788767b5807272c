"""Session 25 probe 2: tables built inside the LUT kernel (working tree) against the shipped kernel with its
table kernel (lut_before.py, a1eebc6), whole one-row calls in one process, four shapes, plus the shuffle GEMV."""
import statistics, sys
sys.path.insert(0, "scratch/s25")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels, triton_tiled_gemv as tg, triton_lut_gemv as lut
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import lut_before
from fin2d import fin_2d

dev = torch.device("cuda")
G = 40
SHUFFLE = (tg.TILED_ROWS_PER_LANE, tg.TILED_WARPS, tg.TILED_PROGRAMS_PER_SM)
for n, k in [(16384, 16384), (14336, 4096), (4096, 14336), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    kw = dict(in_features=k, group_size=G, bias_frac_bits=0)
    per_sm = 2 if n * k >= 1 << 28 else 1
    new = lut.lut_gemv(x, *tiles[0], out_features=n, group_size=G, tile=(per_sm,)).sum(0)
    old = lut_before.lut_gemv(x, *tiles[0], out_features=n, group_size=G, tile=(per_sm,)).sum(0)
    ref = F.linear(x.double(), dense[0].double()) if False else (x.double() @ (unpack(states[0][0], k).double() * torch.exp2(states[0][1].double()).repeat_interleave(G, 1)[:, :k]).T)
    print(f"{n}x{k}: new vs float64 {float((new.double() - ref).norm() / ref.norm()):.2e}, old {float((old.double() - ref).norm() / ref.norm()):.2e}", flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "old whole": [lambda t=t: finish_splits(lut_before.lut_gemv(x, *t, out_features=n, group_size=G, tile=(per_sm,)), None, 0, x.dtype) for t in tiles],
           "new whole": [lambda t=t: finish_splits(lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(per_sm,)), None, 0, x.dtype) for t in tiles],
           "new fin2d": [lambda t=t: fin_2d(lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(per_sm,)), 16, 64) for t in tiles],
           "new kernel": [lambda t=t: lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(per_sm,)) for t in tiles],
           "new 1/SM": [lambda t=t: finish_splits(lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(1,)), None, 0, x.dtype) for t in tiles],
           "new 2/SM": [lambda t=t: finish_splits(lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(2,)), None, 0, x.dtype) for t in tiles],
           "shuffle": [lambda s=s, t=t: kernels.forward_decode(x, *s, *t, None, tile=SHUFFLE, **kw) for s, t in zip(states, tiles)]}
    times = time_interleaved(fns, rounds=5, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:12s} {statistics.median(ts):7.2f} us {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
