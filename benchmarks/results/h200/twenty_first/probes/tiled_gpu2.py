"""GPU: tiled GEMV variants, per-kernel breakdown, and an ncu target."""
import os, statistics, sys
import torch, torch.nn.functional as F, triton
sys.path.insert(0, "scratch")
import tiled_gemv as tg
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear.triton_launch import even_splits, finish_splits, sm_count
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
mode = sys.argv[1]
n = k = 16384
gen = torch.Generator().manual_seed(n * 7 + k)
groups = -(-k // G)
packed_bytes = n * -(-k // 5) + n * groups
count = copies_for(packed_bytes, dev)
states = [(random_packed(n, k, generator=gen).to(dev),
           torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
tiles = [tg.tile_layer(p, e, G) for p, e in states]
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)

if mode == "ncu":
    for _ in range(3):
        tg.tiled_gemv(x, *tiles[0], n, G, rpt=4, warps=4, programs_per_sm=4)
    torch.cuda.synchronize()
    sys.exit(0)

dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
         for p, e in states[:copies_for(n * k * 2, dev)]]
ref = F.linear(x.float(), dense[0].float())
fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
       "shipped": [lambda s=s: tl_lin.forward(x, s[0], s[1], None, bias_frac_bits=16, in_features=k, group_size=G) for s in states]}
for cfg in [(4, 4, 4, 1), (2, 4, 4, 2), (2, 4, 6, 2), (4, 4, 2, 2), (4, 8, 2, 1), (4, 4, 3, 1), (4, 4, 1, 1)]:
    y = tg.tiled_gemv(x, *tiles[0], n, G, rpt=cfg[0], warps=cfg[1], programs_per_sm=cfg[2], ahead=cfg[3])
    print(cfg, "err", ((y.float() - ref).norm() / ref.norm()).item(), flush=True)
    fns[f"tiled{cfg}"] = [lambda t=t, cfg=cfg: tg.tiled_gemv(x, *t, n, G, rpt=cfg[0], warps=cfg[1], programs_per_sm=cfg[2], ahead=cfg[3]) for t in tiles]

# pieces of (4,4,4,1)
nb, kc = tiles[0][0].shape[:2]
steps = kc // 2
row_blocks = triton.cdiv(nb * 32, 4 * 128)
splits = even_splits(max(1, min(4 * sm_count(dev) // row_blocks, steps)), steps)
print("splits", splits, "row_blocks", row_blocks, "steps", steps)
tables = torch.empty((steps * 16, 32, 4), dtype=torch.float32, device=dev)
ws = torch.empty((splits, 1, n), dtype=torch.float32, device=dev)
fns["part_tables"] = [lambda: tg._tables_kernel[(steps * 32 // 4,)](x[0], tables, k, BLOCK_C=4)]
tg._tables_kernel[(steps * 32 // 4,)](x[0], tables, k, BLOCK_C=4)
fns["part_kernel"] = [lambda t=t: tg._tiled_gemv_kernel[(row_blocks, splits)](
    tables, t[0], t[1], ws, n, nb * 32, kc, t[1].shape[1], steps, ws.stride(0), triton.cdiv(steps, splits),
    BYTES_PER_GROUP=8, RPT=4, AHEAD=1, num_warps=4) for t in tiles]
fns["part_finish"] = [lambda: finish_splits(ws, None, 16, torch.bfloat16)]
times = time_interleaved(fns, rounds=3, timer=time_in_graph)
base = times["bf16"]
for name, ts in times.items():
    print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):8.1f} us  {paired_ratio(base, ts):5.2f}x", flush=True)
