"""GPU probe 7: digit 4 in ten ops (tmma_a), unrolled by two (tmma_u, with and without a 128-register cap),
the scale table (tmma7), against the committed kernel (tmma_head)."""
import statistics, sys
sys.path.insert(0, "scratch/tmma")
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear.triton_launch import program_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import tmma_head, tmma_a, tmma_u, tmma7

dev = torch.device("cuda")
G = 40


def launch(module, x, T_tiles, E_tiles, n, g, warps, per_sm, maxnreg=0):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks // 2
    xf = tmma_head.fragments(x, steps)
    programs = triton.cdiv(blocks, warps)
    splits = program_splits(per_sm, programs, steps, steps, x.device)
    ws = torch.empty((splits, x.shape[0], n), dtype=torch.float32, device=x.device)
    module._tiled_mma_kernel[(programs, splits)](
        xf, T_tiles, E_tiles, ws, x.shape[0], n, blocks, chunks, E_tiles.shape[1], steps, ws.stride(0), ws.stride(1),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=g // 5, TILES=xf.shape[1], num_warps=warps,
        **({"maxnreg": maxnreg} if maxnreg else {}))
    return ws


VARIANTS = {"digit4_10ops": (tmma_a, 0), "unrolled": (tmma_u, 0), "unrolled_r128": (tmma_u, 128), "scale_table": (tmma7, 0)}
TILES = [(8, 2), (4, 2), (8, 1), (4, 3), (2, 1)]
for n, k, g, m in [(1000, 4099, 40, 16), (257, 999, 80, 9), (100, 3000, 320, 5), (33, 333, 40, 2), (64, 200, 40, 3)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-128, 128, (n, -(-k // g))).to(torch.int8).to(dev)
    p[5, 3] = 250
    t = tile_rows(p, e, g)
    x = torch.randn(m, k, device=dev).bfloat16()
    for name, (mod, r) in VARIANTS.items():
        print(f"check {name} n={n} k={k} g={g} m={m}: bit-equal to committed",
              [torch.equal(torch.nan_to_num(launch(mod, x, *t, n, g, *v, r).sum(0), 7.0),
                           torch.nan_to_num(launch(tmma_head, x, *t, n, g, *v).sum(0), 7.0)) for v in TILES],
              flush=True)
for n, k, ms in [(16384, 16384, (16, 2)), (4096, 14336, (16,)), (14336, 4096, (16,)), (4096, 4096, (16,))]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    for m in ms:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "committed": [lambda t=t: launch(tmma_head, x, *t, n, G, 8, 2) for t in tiles]}
        for name, (mod, r) in VARIANTS.items():
            fns[name] = [lambda t=t, mod=mod, r=r: launch(mod, x, *t, n, G, 8, 2, r) for t in tiles]
        times = time_interleaved(fns, rounds=3, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M={m} {name:16s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
                  flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
