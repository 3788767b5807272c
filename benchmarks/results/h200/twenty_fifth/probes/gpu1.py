"""Session 25 probe 1: where a one-row LUT call's time goes inside one CUDA graph (tables, main kernel,
finish), finishing-kernel variants, at 16384^2 and 14336x4096."""
import statistics, sys
import torch, triton, triton.language as tl, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels, triton_lut_gemv as lut
from ternary.kernels.linear.triton_launch import balanced_splits, sm_count, finish_splits, _finish_kernel
from ternary.state.decode_state import tile_rows, TILE_ROWS, CHUNK_BYTES, STEP_BYTES
from ternary.state.packing import random_packed, unpack


@triton.jit
def finish2d(ws_ptr, out_ptr, C, stride_ws, SPLITS, SB: tl.constexpr, BLOCK: tl.constexpr):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)[None, :]
    s = tl.arange(0, SB)[:, None]
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s0 in range(0, SPLITS, SB):
        part = tl.load(ws_ptr + (s0 + s) * stride_ws + c, mask=(c < C) & (s0 + s < SPLITS), other=0.0)
        total += tl.sum(part, axis=0)
    cc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + cc, total.to(out_ptr.dtype.element_ty), mask=cc < C)


def fin_block(ws, block, warps=4):
    splits, m, c = ws.shape
    out = torch.empty((m, c), dtype=torch.bfloat16, device=ws.device)
    _finish_kernel[(m, triton.cdiv(c, block))](ws, ws, out, m, c, ws.stride(0), ws.stride(1), out.stride(0), 0, 1.0,
                                               splits, HAS_BIAS=False, BLOCK=block, num_warps=warps)
    return out


def fin_2d(ws, sb, block, warps=4):
    splits, m, c = ws.shape
    out = torch.empty((m, c), dtype=torch.bfloat16, device=ws.device)
    finish2d[(triton.cdiv(c, block),)](ws, out, c, ws.stride(0), splits, SB=sb, BLOCK=block, num_warps=warps)
    return out


def main_only(x, T, E, tables, n, G, per_sm=2):
    blocks, chunks = T.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    row_blocks = triton.cdiv(blocks * TILE_ROWS, lut.LUT_PROGRAM_ROWS)
    splits = balanced_splits(steps, row_blocks, per_sm * sm_count(x.device))
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    lut._lut_gemv_kernel[(row_blocks, splits)](
        tables, T, E, ws, n, blocks * TILE_ROWS, chunks, E.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, num_warps=lut.LUT_WARPS)
    return ws


dev = torch.device("cuda")
G = 40
for n, k in [(16384, 16384), (14336, 4096)]:
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
    steps = tiles[0][0].shape[1] * CHUNK_BYTES // STEP_BYTES
    tables = lut.build_tables(x, steps)
    per_sm = 2 if n * k >= 1 << 28 else 1
    ws = main_only(x, *tiles[0], tables, n, G, per_sm)
    ref = finish_splits(ws, None, 0, torch.bfloat16)
    print(f"{n}x{k}: splits {ws.shape[0]}", flush=True)
    for name, f in [("b128", lambda: fin_block(ws, 128)), ("b64", lambda: fin_block(ws, 64, 2)),
                    ("2d8x128", lambda: fin_2d(ws, 8, 128)), ("2d16x64", lambda: fin_2d(ws, 16, 64)),
                    ("2d32x64", lambda: fin_2d(ws, 32, 64, 8)), ("2d8x64", lambda: fin_2d(ws, 8, 64, 2))]:
        o = f()
        print(f"  {name}: equal to finish_splits {torch.equal(o, ref)}, max diff {(o.float() - ref.float()).abs().max().item():.3g}", flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "whole": [lambda s=s, t=t: kernels.forward_decode(x, *s, *t, None, **kw) for s, t in zip(states, tiles)],
           "tables": [lambda: lut.build_tables(x, steps)],
           "main": [lambda t=t: main_only(x, *t, tables, n, G, per_sm) for t in tiles],
           "tables+main": [lambda t=t: main_only(x, *t, lut.build_tables(x, steps), n, G, per_sm) for t in tiles],
           "main+finish": [lambda t=t: finish_splits(main_only(x, *t, tables, n, G, per_sm), None, 0, torch.bfloat16)
                           for t in tiles],
           "finish256": [lambda: finish_splits(ws, None, 0, torch.bfloat16)],
           "fin b128": [lambda: fin_block(ws, 128)],
           "fin b64w2": [lambda: fin_block(ws, 64, 2)],
           "fin b32w1": [lambda: fin_block(ws, 32, 1)],
           "fin 2d8x128": [lambda: fin_2d(ws, 8, 128)],
           "fin 2d16x64": [lambda: fin_2d(ws, 16, 64)],
           "fin 2d32x64w8": [lambda: fin_2d(ws, 32, 64, 8)],
           "fin 2d8x64w2": [lambda: fin_2d(ws, 8, 64, 2)],
           "fin 2d64x32w4": [lambda: fin_2d(ws, 64, 32, 4)],
           "empty": [lambda: torch.empty(1, device=dev).zero_()]}
    times = time_interleaved(fns, rounds=5, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:14s} {statistics.median(ts):7.2f} us {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
