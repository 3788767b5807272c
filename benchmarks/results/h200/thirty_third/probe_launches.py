"""Probe (thirty-third session): the tiled mma.sync forward of a DecodeLinearState at 17-48 bf16 rows
(TILES = 3, 4, 6 column tiles, the kernel as it is) against what forward_decode takes there today (the
forward on T_packed), bf16 cuBLAS in the same process; rows of an M > 16 call checked bit for bit
against M = 16 calls on the same launch."""
import statistics, sys
import torch, torch.nn.functional as F
import triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_tiled_mma as tm
from ternary.kernels.linear.triton_launch import finish_splits, program_splits
from ternary.state.decode_state import tile_rows, CHUNK_BYTES, STEP_BYTES
from ternary.state.packing import random_packed
from ternary.kernels.linear.reference import dequantize

dev = torch.device("cuda")
G = 40


def run(x, T_tiles, E_tiles, n, warps, per_sm, cap):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    frags = tm.fragments(x, steps)
    row_programs = triton.cdiv(blocks, warps)
    splits = program_splits(per_sm, row_programs, steps, steps, x.device)
    ws = torch.empty((splits, x.shape[0], n), dtype=torch.float32, device=x.device)
    tm._tiled_mma_kernel[(row_programs, splits)](
        tm.digit_table(x.device), frags, T_tiles, E_tiles, ws, x.shape[0], n, blocks, chunks, E_tiles.shape[1], steps,
        ws.stride(0), ws.stride(1), triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, TILES=frags.shape[1],
        num_warps=warps, **({"maxnreg": cap} if cap else {}))
    return finish_splits(ws, None, 0, torch.bfloat16), ws


LAUNCHES = {1: [(8, 2, 0), (4, 3, 168), (4, 4, 128), (4, 5, 0)],
            2: [(8, 2, 0), (4, 3, 168), (4, 4, 128), (4, 5, 0), (4, 3, 0)],
            5: [(8, 1, 0), (4, 2, 0)]}
ROWS = [int(v) for v in sys.argv[1].split(",")] if len(sys.argv) > 1 else [16, 24, 32, 48]
SHAPES = [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
for n, k in SHAPES:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    layers = []
    for _ in range(count):
        packed = random_packed(n, k, generator=gen).to(dev)
        E = torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)
        layers.append((packed, E) + tuple(tile_rows(packed, E, G)))
    dense = [torch.randn(n, k, generator=gen).to(torch.bfloat16).to(dev) for _ in range(copies_for(n * k * 2, dev))]
    for m in ROWS:
        tiles = -(-m // 8)
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        P, E, Tt, Et = layers[0]
        ref = x.double() @ dequantize(P, E, in_features=k, group_size=G).double().T
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "now": [lambda L=L: kernels.forward_decode(x, L[0], L[1], L[2], L[3], None, in_features=k, group_size=G,
                                                          bias_frac_bits=0, validated=True) for L in layers]}
        checks = []
        for warps, per_sm, cap in LAUNCHES.get(tiles, [(8, 2, 0)]):
            name = f"w{warps}p{per_sm}" + (f"c{cap}" if cap else "")
            out, ws = run(x, Tt, Et, n, warps, per_sm, cap)
            if m > 16 and m % 16 == 0:
                halves = [run(x[i:i + 16], Tt, Et, n, warps, per_sm, cap)[1] for i in range(0, m, 16)]
                same = torch.equal(torch.cat(halves, 1).view(torch.int32), ws.view(torch.int32))
            else:
                same = "-"  # checked against float64 only
            err = ((out.double() - ref).norm() / ref.norm()).item() if ref is not None else float("nan")
            checks.append(f"{name} equal={same} rel={err:.1e}")
            fns[name] = [lambda L=L, w=warps, p=per_sm, c=cap: run(x, L[2], L[3], n, w, p, c)[0] for L in layers]
        times = time_interleaved(fns, rounds=5, timer=time_in_graph)
        print(f"{n}x{k} M={m:2d} " + "  ".join(
            f"{nm} {statistics.median(ts):6.1f}us {paired_ratio(times['bf16'], ts):4.2f}x" for nm, ts in times.items()),
            flush=True)
        print("   " + "; ".join(checks), flush=True)
    del layers, dense
    torch.cuda.empty_cache()
