"""GPU probe 2 (thirty-second session): the tiled mma.sync forward with the digit table copied from a kept global
copy (the working tree) against de4bfd0's kernel that computes it (tmma_before), whole calls (regrouping + kernel +
split sum) bit for bit and timed in turns; then the update's bias cost at M = 8192 (no code change)."""
import statistics, sys
sys.path.insert(0, "scratch/s32")
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton_tiled_mma as new
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed
import tmma_before as before  # git show de4bfd0:ternary/kernels/linear/triton_tiled_mma.py, put in scratch/s32

dev = torch.device("cuda")
G = 40
fin = lambda ws: finish_splits(ws, None, 0, torch.bfloat16)
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    tiles = [tile_rows(random_packed(n, k, generator=gen).to(dev),
                       torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev), G) for _ in range(count)]
    dense = [torch.randn(n, k, generator=gen).to(torch.bfloat16).to(dev) for _ in range(copies_for(n * k * 2, dev))]
    for m in (16, 8, 2):
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        same = torch.equal(new.tiled_mma(x, *tiles[0], out_features=n, group_size=G).view(torch.int32),
                           before.tiled_mma(x, *tiles[0], out_features=n, group_size=G).view(torch.int32))
        fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
               "before": [lambda t=t: fin(before.tiled_mma(x, *t, out_features=n, group_size=G)) for t in tiles],
               "after": [lambda t=t: fin(new.tiled_mma(x, *t, out_features=n, group_size=G)) for t in tiles]}
        times = time_interleaved(fns, rounds=7, timer=time_in_graph)
        print(f"{n}x{k} M={m:2d} bit-equal {same}: " + "  ".join(
            f"{name} {statistics.median(ts):6.1f} us {paired_ratio(times['bf16'], ts):4.2f}x" for name, ts in times.items())
            + f"  after/before {paired_ratio(times['after'], times['before']):.3f}", flush=True)
    del tiles, dense
    torch.cuda.empty_cache()

from ternary.kernels.update import triton as triton_update
for n, k in [(4096, 4096), (14336, 4096)]:
    m = 8192
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // G)
    packed = random_packed(n, k, generator=gen).to(dev)
    E = torch.zeros(n, groups, dtype=torch.int8, device=dev)
    T_accum = torch.zeros(n, k, dtype=torch.int8, device=dev)
    bias = torch.zeros(n, dtype=torch.int32, device=dev)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    rule = dict(in_features=k, group_size=G, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    fns = {"gemm": lambda: grad_y.T @ x,
           "bias": lambda: triton_update.update(packed, E, E.clone(), T_accum, bias, x, grad_y, validated=True, **rule),
           "no bias": lambda: triton_update.update(packed, E, E.clone(), T_accum, None, x, grad_y, validated=True, **rule)}
    times = time_interleaved(fns, rounds=7)
    print(f"update {n}x{k} M={m}: " + "  ".join(f"{name} {statistics.median(ts):7.1f} us {paired_ratio(ts, times['gemm']):.3f}x"
                                                for name, ts in times.items()), flush=True)
