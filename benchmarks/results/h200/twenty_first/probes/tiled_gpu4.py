"""GPU probe: the shipped tiled kernel with a register cap (more programs per SM) against the shipped launch."""
import statistics, sys
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear import triton_tiled_gemv as tg
from ternary.kernels.linear.triton_launch import even_splits, finish_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import build_tables
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40


def capped(x, T_tiles, E_tiles, n, rpt, warps, per_sm, maxnreg):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks // 2
    row_blocks = triton.cdiv(blocks * 32, rpt * 32 * warps)
    splits = even_splits(max(1, min(per_sm * sm_count(x.device) // row_blocks, steps)), steps)
    tables = build_tables(x, steps * 32)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    extra = {"maxnreg": maxnreg} if maxnreg else {}
    tg._tiled_gemv_kernel[(row_blocks, splits)](
        tables, T_tiles, E_tiles, ws, n, blocks * 32, chunks, E_tiles.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, RPT=rpt, num_warps=warps, **extra)
    return finish_splits(ws, None, 16, x.dtype)


for n, k in [(16384, 16384), (4096, 14336), (14336, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    ref = tl_lin.forward_decode(x, *states[0], *tiles[0], None, in_features=k, group_size=G, bias_frac_bits=16)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda s=s, t=t: tl_lin.forward_decode(x, *s, *t, None, in_features=k, group_size=G,
                                                               bias_frac_bits=16) for s, t in zip(states, tiles)]}
    for cfg in [(4, 4, 5, 96), (4, 4, 6, 80), (4, 4, 4, 120), (4, 8, 2, 128), (4, 8, 3, 80)]:
        y = capped(x, *tiles[0], n, *cfg)
        print(n, k, cfg, "equal to shipped:", torch.equal(y, ref) if cfg[2] == 4 else
              f"max rel diff {((y.float() - ref.float()).abs().max() / ref.float().abs().max()).item():.1e}", flush=True)
        fns[f"cap{cfg}"] = [lambda t=t, cfg=cfg: capped(x, *t, n, *cfg) for t in tiles]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
