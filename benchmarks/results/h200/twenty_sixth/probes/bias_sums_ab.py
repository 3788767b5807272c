"""Bias column sums by torch.sum before the kernel (working tree) against the committed kernel's product against
a column of ones (ws_before), same process, in turns with the bf16 weight-gradient GEMM; outputs compared."""
import statistics, sys, torch
sys.path.insert(0, "scratch/s26")  # ws_before, wgmma_before: the modules of 15fdf02 (git show), put there
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import ws_before
from probe_common import timed
from ternary.kernels.update import triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

for m, n, k in [(8192, 4096, 4096), (8192, 16384, 16384), (8192, 14336, 4096), (8192, 4096, 14336), (2048, 4096, 4096)]:
    g = 40
    gen = torch.Generator().manual_seed(m + n + k)
    groups = -(-k // g)
    packed = random_packed(n, k, generator=gen).cuda()
    E = torch.zeros(n, groups, dtype=torch.int8, device="cuda")
    T_accum = torch.zeros(n, k, dtype=torch.int8, device="cuda")
    bias = torch.zeros(n, dtype=torch.int32, device="cuda")
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    rule = dict(in_features=k, group_size=g, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

    def call(mod, with_bias):
        args = [packed, E, E.clone(), T_accum, bias if with_bias else None]
        new = UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in args])
        return mod.ws_update(*args, x, gy, new, **rule)

    old, new = call(ws_before, True), call(ws, True)
    diff = {name: int((a != b).sum()) for name, a, b in zip(UpdatedTensors._fields, old, new) if a is not None}
    fns = {"gemm": lambda: gy.T @ x, "before_bias": lambda: call(ws_before, True), "after_bias": lambda: call(ws, True),
           "before_nobias": lambda: call(ws_before, False), "after_nobias": lambda: call(ws, False)}
    t = {name: [] for name in fns}
    for _ in range(6):
        for name, fn in fns.items():
            t[name].append(timed(fn))
    ratio = {name: statistics.median([b / a for a, b in zip(t["gemm"], t[name])]) for name in fns if name != "gemm"}
    print(f"M={m} {n}x{k}: gemm {statistics.median(t['gemm']):8.1f} us  " +
          "  ".join(f"{name} {statistics.median(t[name]):8.1f} ({r:.3f}x)" for name, r in ratio.items()) +
          f"  differing {diff}", flush=True)
