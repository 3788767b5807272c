"""GPU probe 3 (thirty-second session): the update's bias column sums taken in place of the last byte block's
product past K (working tree) against de4bfd0's third product in the first byte block (scratch/s32/before: the
three update modules of de4bfd0, imports pointed at each other), bit for bit on the benchmark's state and in turns
with the bf16 weight-gradient GEMM, each shape on the kernel the dispatch picks; and without a bias."""
import statistics, sys
sys.path.insert(0, "scratch/s32/before")
import torch
import triton_wgmma_ws as ws_before, triton_wgmma_wide as wide_before
from benchmarks.kernels import time_interleaved, paired_ratio
from ternary.kernels.linear.triton_launch import sm_count
from ternary.kernels.update import UpdatedTensors, triton_wgmma, triton_wgmma_wide, triton_wgmma_ws
from ternary.state.packing import random_packed

dev = torch.device("cuda")
G = 40
for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384)]:
    m = 8192
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // G)
    packed = random_packed(n, k, generator=gen).to(dev)
    E = torch.randint(-3, 4, (n, groups), generator=gen).to(torch.int8).to(dev)
    E_accum = torch.randint(-4, 5, (n, groups), generator=gen).to(torch.int8).to(dev)
    T_accum = torch.randint(-4, 5, (n, k), generator=gen).to(torch.int8).to(dev)
    bias = torch.randint(-1000, 1000, (n,), generator=gen).to(torch.int32).to(dev)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16).to(dev)
    grad_y = torch.randn(m, n, generator=gen).to(torch.bfloat16).to(dev)
    wide = triton_wgmma_wide.takes(n, packed.shape[1], m, sm_count(dev))
    after = triton_wgmma_wide.wide_update if wide else triton_wgmma_ws.ws_update
    before = wide_before.wide_update if wide else ws_before.ws_update
    rule = dict(in_features=k, group_size=G, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    def run(fn, b=bias):
        args = (packed, E, E_accum, T_accum, b)
        return fn(*args, x, grad_y, UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in args]), **rule)
    a, b = run(after), run(before)
    differing = {name: int((p != q).sum()) for name, p, q in zip(UpdatedTensors._fields, a, b)}
    fns = {"gemm": lambda: grad_y.T @ x, "before": lambda: run(before), "after": lambda: run(after),
           "no bias": lambda: run(after, None)}
    times = time_interleaved(fns, rounds=7)
    print(f"update {n}x{k} M={m} ({'wide' if wide else '64-row'}; sums in padding "
          f"{triton_wgmma.sums_in_padding(k, triton_wgmma.WGMMA_BLOCK_B)}) differing {differing}: "
          + "  ".join(f"{name} {statistics.median(ts):7.1f} us {paired_ratio(ts, times['gemm']):.3f}x"
                      for name, ts in times.items())
          + f"  after/before {paired_ratio(times['after'], times['before']):.3f}", flush=True)
