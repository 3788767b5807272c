"""GPU probe 4: finish with loads issued ahead (bit-equal?), and the LUT kernel without its table copies / barriers."""
import statistics, sys
sys.path.insert(0, "scratch/lut")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_gemv as shipped
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import lut3, fin

dev = torch.device("cuda")
for splits, m, c in [(33, 1, 16384), (7, 3, 1000), (1, 1, 5000), (16, 16, 4096), (9, 1, 300)]:
    ws = torch.randn(splits, m, c, device=dev)
    bias = torch.randint(-1000, 1000, (c,), dtype=torch.int32, device=dev)
    for b in (None, bias):
        for ahead in (4, 8):
            a = finish_splits(ws, b, 8, torch.bfloat16)
            o = fin.finish(ws, b, 8, torch.bfloat16, ahead=ahead)
            a32 = finish_splits(ws, b, 8, torch.float32)
            o32 = fin.finish(ws, b, 8, torch.float32, ahead=ahead)
            print("finish bit-equal", splits, m, c, b is not None, ahead, torch.equal(a, o), torch.equal(a32, o32))
G = 40
n = k = 16384
gen = torch.Generator().manual_seed(n * 7 + k)
groups = -(-k // G)
count = copies_for(n * -(-k // 5) + n * groups, dev)
states = [(random_packed(n, k, generator=gen).to(dev),
           torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
tiles = [tile_rows(p, e, G) for p, e in states]
dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
         for p, e in states[:copies_for(n * k * 2, dev)]]
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
steps = tiles[0][0].shape[1] // 2
tables = torch.empty((steps, 256, 32), dtype=torch.float32, device=dev)
lut3.lut_tables_kernel[(steps, 2)](x, tables, k, 1, V_BLOCK=128)
ws33 = torch.randn(33, 1, n, device=dev)
ws16 = torch.randn(16, 1, n, device=dev)
fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
       "shipped": [lambda t=t: finish_splits(shipped.tiled_gemv(x, *t, out_features=n, group_size=G), None, 0,
                                             torch.bfloat16) for t in tiles],
       "finish 33": [lambda: finish_splits(ws33, None, 0, torch.bfloat16)],
       "fin8 33": [lambda: fin.finish(ws33, None, 0, torch.bfloat16)],
       "fin8 33 b128": [lambda: fin.finish(ws33, None, 0, torch.bfloat16, block=128)],
       "finish 16": [lambda: finish_splits(ws16, None, 0, torch.bfloat16)],
       "fin8 16": [lambda: fin.finish(ws16, None, 0, torch.bfloat16)],
       "shipped fin8": [lambda t=t: fin.finish(shipped.tiled_gemv(x, *t, out_features=n, group_size=G), None, 0,
                                               torch.bfloat16) for t in tiles]}
for v in [(2, 4, 8, 2), (1, 2, 8, 3), (4, 2, 4, 3)]:
    fns[f"lut3 fin8 {v}"] = [lambda t=t, v=v: fin.finish(lut3.lut_gemv(x, *t, out_features=n, group_size=G, tile=v),
                                                         None, 0, torch.bfloat16) for t in tiles]
for copy, bar in [(True, True), (False, True), (True, False), (False, False)]:
    fns[f"main copy={copy} bar={bar}"] = [lambda t=t, c=copy, b=bar: lut3.lut_gemv(
        x, *t, out_features=n, group_size=G, tile=(2, 4, 8, 2), tables=tables, copy=c, bar=b) for t in tiles]
times = time_interleaved(fns, rounds=3, timer=time_in_graph)
for name, ts in times.items():
    print(f"{n}x{k} M=1 {name:28s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x", flush=True)
