"""GPU probe 3: lut2 (FFMA chains, balanced splits, int32 offsets, faster tables) correctness and whole calls."""
import statistics, sys, os, importlib, traceback
sys.path.insert(0, "scratch/lut")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_gemv as shipped
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import lut
mods = {name: importlib.import_module(name) for name in os.environ.get("MODS", "lut2").split(",")}
TILES = [tuple(int(v) for v in t.split(",")) for t in os.environ.get("TILES", "2,4,8,2").split(";")]
dev = torch.device("cuda")


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


worst = 0.0
for name, mod in mods.items():
    for n, k, g in [(1000, 4099, 40), (33, 999, 80), (1, 3000, 160), (257, 333, 40), (700, 5000, 320), (64, 17, 40),
                    (5000, 2000, 40)]:
        p = random_packed(n, k).to(dev)
        e = torch.randint(-20, 10, (n, -(-k // g))).to(torch.int8).to(dev)
        t = tile_rows(p, e, g)
        w64 = unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(g, 1)[:, :k]
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(1, k, device=dev).to(dtype)
            ref = x.double() @ w64.T
            for tile in TILES[:3]:
                try:
                    got = mod.lut_gemv(x, *t, out_features=n, group_size=g, tile=tile).sum(0)
                    r = rel(got, ref)
                    worst = max(worst, r)
                    if r > 1e-5:
                        print("BAD", name, n, k, g, dtype, tile, r, flush=True)
                except Exception:
                    print("error", name, n, k, g, tile, traceback.format_exc()[-800:], flush=True)
                    worst = float("inf")
print("worst relative error against float64", worst, flush=True)

if worst < 1e-5:
    G = 40
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
        fin = lambda ws: finish_splits(ws, None, 0, torch.bfloat16)
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "shipped": [lambda t=t: fin(shipped.tiled_gemv(x, *t, out_features=n, group_size=G)) for t in tiles],
               "lut v1": [lambda t=t: fin(lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=(2, 4, 8, 2)))
                          for t in tiles]}
        steps = tiles[0][0].shape[1] // 2
        for name, mod in mods.items():
            tables = torch.empty((steps, 256, 32), dtype=torch.float32, device=dev)
            fns[f"{name} tables"] = [lambda mod=mod, tables=tables: mod.lut_tables_kernel[(steps, 2)](
                x, tables, k, 1, V_BLOCK=128)]
            for v in TILES:
                fns[f"{name} " + ",".join(map(str, v))] = [lambda t=t, v=v, mod=mod: fin(mod.lut_gemv(
                    x, *t, out_features=n, group_size=G, tile=v)) for t in tiles]
                if n == 16384:
                    fns[f"{name} main {v}"] = [lambda t=t, v=v, mod=mod, tables=tables: mod.lut_gemv(
                        x, *t, out_features=n, group_size=G, tile=v, tables=tables) for t in tiles]
        times = time_interleaved(fns, rounds=3, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16'], ts):5.2f}x",
                  flush=True)
        del states, tiles, dense
        torch.cuda.empty_cache()
