"""GPU probe 3: the shipped tiled mma kernel under register caps (more programs per SM), and ncu of it."""
import statistics, sys
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_mma as tm
from ternary.kernels.linear.triton_launch import finish_splits, program_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40


def launch(x, T_tiles, E_tiles, n, warps, per_sm, maxnreg):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks // 2
    xf = tm.fragments(x, steps)
    programs = triton.cdiv(blocks, warps)
    splits = program_splits(per_sm, programs, steps, steps, x.device)
    ws = torch.empty((splits, x.shape[0], n), dtype=torch.float32, device=x.device)
    tm._tiled_mma_kernel[(programs, splits)](
        xf, T_tiles, E_tiles, ws, x.shape[0], n, blocks, chunks, E_tiles.shape[1], steps, ws.stride(0), ws.stride(1),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, TILES=xf.shape[1], num_warps=warps,
        **({"maxnreg": maxnreg} if maxnreg else {}))
    return finish_splits(ws, None, 16, x.dtype)


ncu = "ncu" in sys.argv
for n, k in [(16384, 16384)] if ncu else [(16384, 16384), (4096, 14336)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = 2 if ncu else copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    for m in (16, 2):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        if ncu:
            for t in tiles:
                launch(x, *t, n, 8, 2, 0)
            torch.cuda.synchronize()
            continue
        ref = launch(x, *tiles[0], n, 8, 2, 0)
        dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
                 for p, e in states[:copies_for(n * k * 2, dev)]]
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense]}
        for warps, per_sm, reg in [(8, 2, 0), (8, 3, 84), (8, 3, 80), (4, 5, 96), (4, 6, 80), (8, 4, 64)]:
            y = launch(x, *tiles[0], n, warps, per_sm, reg)
            diff = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"{n}x{k} M={m} w{warps} p{per_sm} r{reg}: rel diff to shipped launch {diff:.1e}", flush=True)
            fns[f"w{warps} p{per_sm} r{reg}"] = [lambda t=t, a=(warps, per_sm, reg): launch(x, *t, n, *a) for t in tiles]
        times = time_interleaved(fns, rounds=3, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M={m} {name:14s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
                  flush=True)
        del dense
    del states, tiles
    torch.cuda.empty_cache()
