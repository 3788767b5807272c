"""GPU probe 2: where the LUT GEMV's time goes (tables kernel alone, main kernel alone), more tiles."""
import statistics, sys
sys.path.insert(0, "scratch/lut")
import torch, triton, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_gemv as shipped
from ternary.kernels.linear.triton_launch import even_splits, sm_count
from ternary.state.decode_state import tile_rows, TILE_ROWS
from ternary.state.packing import random_packed, unpack
import lut

dev = torch.device("cuda")
G = 40


def main_only(x, T, E, tables, n, tile):
    rpt, sub, warps, per_sm = tile
    blocks, chunks = T.shape[:2]
    steps = chunks // 2
    row_blocks = triton.cdiv(blocks * TILE_ROWS, rpt * sub * 32 * warps)
    splits = even_splits(max(1, min(per_sm * sm_count(x.device) // row_blocks, steps)), steps)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    lut._lut_gemv_kernel[(row_blocks, splits)](
        tables, T, E, ws, n, blocks * TILE_ROWS, chunks, E.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, RPT=rpt, SUB=sub, num_warps=warps)
    return ws


for n, k in [(16384, 16384), (4096, 4096)]:
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
    lut.lut_tables_kernel[(steps,)](x, tables, k, 1)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda t=t: shipped.tiled_gemv(x, *t, out_features=n, group_size=G) for t in tiles],
           "tables only": [lambda: lut.lut_tables_kernel[(steps,)](x, tables, k, 1)]}
    for v in [(2, 4, 8, 2), (4, 2, 4, 3), (2, 4, 4, 3), (1, 8, 8, 2), (2, 6, 4, 3), (2, 4, 8, 1), (2, 2, 4, 4),
              (2, 8, 4, 2)]:
        fns["main " + ",".join(map(str, v))] = [lambda t=t, v=v: main_only(x, *t, tables, n, v) for t in tiles]
    fns["whole 2,4,8,2"] = [lambda t=t: lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(2, 4, 8, 2))
                            for t in tiles]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:14s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    if False:
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        main_only(x, *tiles[0], tables, n, (2, 4, 8, 2))
        main_only(x, *tiles[0], tables, n, (4, 2, 4, 3))
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    del states, tiles, dense
    torch.cuda.empty_cache()
