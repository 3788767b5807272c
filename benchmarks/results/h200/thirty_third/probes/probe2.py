"""Probe (thirty-third session): the tiled forward on wgmma (scratch/s33/twg2.py: table-decoded weights as the
register operand, activations by TMA) at 32-128 rows against forward_decode (the mma.sync tiled kernel up to 48
rows, the forward on T_packed above) and bf16 cuBLAS, same process; outputs against float64."""
import statistics, sys
sys.path.insert(0, "scratch/s33")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear.reference import dequantize
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed
import twg2

dev = torch.device("cuda")
G = 40
LAUNCHES = {4: [(8, 2, 3, 0, False), (8, 2, 3, 0, True), (4, 2, 3, 0, True)],
            8: [(8, 1, 2, 0, False), (8, 1, 3, 0, True), (8, 1, 2, 0, True)],
            16: [(8, 1, 2, 0, False), (8, 1, 2, 0, True)]}
ROWS = [int(v) for v in sys.argv[1].split(",")] if len(sys.argv) > 1 else [32, 64, 128]
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
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
        for launch in LAUNCHES.get(tiles, [(4, 2, 2, 0)]):
            name = "twg w{}p{}s{}".format(*launch[:3]) + ("P" if launch[4] else "")
            try:
                ws = twg2.twg_forward(x, Tt, Et, out_features=n, group_size=G, tile=launch[:4], pipe=launch[4])
                sums = ws.sum(0).double()
                err = ((sums - ref).norm() / ref.norm()).item()
                rows = ((sums - ref).norm(dim=0) / ref.norm(dim=0)).max().item()
            except Exception as error:  # a failed launch is a row of the log, not a failed probe
                checks.append(f"{name} FAILED {type(error).__name__}: {str(error)[:200]}")
                continue
            checks.append(f"{name} rel={err:.1e} worst_row={rows:.1e}")
            if err < 1e-4:
                fns[name] = [lambda L=L, t=launch: finish_splits(
                    twg2.twg_forward(x, L[2], L[3], out_features=n, group_size=G, tile=t[:4], pipe=t[4]), None, 0,
                    torch.bfloat16)
                    for L in layers]
        times = time_interleaved(fns, rounds=5, timer=time_in_graph)
        print(f"{n}x{k} M={m:3d} " + "  ".join(
            f"{nm} {statistics.median(ts):6.1f}us {paired_ratio(times['bf16'], ts):4.2f}x" for nm, ts in times.items()),
            flush=True)
        print("   " + "; ".join(checks), flush=True)
    del layers, dense
    torch.cuda.empty_cache()
