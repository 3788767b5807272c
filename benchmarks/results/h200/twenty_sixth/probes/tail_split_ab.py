"""Update with the tail split against the committed kernel (ws_before), same process, in turns with the bf16
weight-gradient GEMM; outputs compared (equal where no tile splits)."""
import sys, statistics, torch
sys.path.insert(0, "scratch/s26")  # ws_before, wgmma_before: the modules of 15fdf02 (git show), put there
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import ws_before
from probe_common import timed
from ternary.kernels.update import triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

def state(n, k, g, gen):
    groups = -(-k // g)
    return [random_packed(n, k, generator=gen).cuda(),
            torch.randint(-3, 4, (n, groups), generator=gen).to(torch.int8).cuda(),
            torch.randint(-4, 5, (n, groups), generator=gen).to(torch.int8).cuda(),
            torch.randint(-4, 5, (n, k), generator=gen).to(torch.int8).cuda(), None]

def run(mod, args, x, gy, k, g):
    new = UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in args])
    return mod.ws_update(*args, x, gy, new, in_features=k, group_size=g, theta_t=2, theta_e=2, e_min=-3, e_max=3,
                         bias_step=64)

for m, n, k in [(8192, 4096, 4096), (8192, 14336, 4096), (8192, 4096, 14336), (8192, 16384, 16384),
                (2048, 4096, 4096), (2048, 14336, 4096), (8192, 1024, 1024), (8192, 2048, 2048)]:
    g = 40
    gen = torch.Generator().manual_seed(m + n + k)
    args = state(n, k, g, gen)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16).cuda()
    gy = torch.randn(m, n, generator=gen).to(torch.bfloat16).cuda()
    tiles = -(-n // 64) * -(-(-(-k // 5)) // 64)
    plan = ws.tail_plan(tiles, torch.cuda.get_device_properties(0).multi_processor_count, -(-m // 64))
    old, new = run(ws_before, args, x, gy, k, g), run(ws, args, x, gy, k, g)
    diff = {name: int((a != b).sum()) for name, a, b in zip(UpdatedTensors._fields, old, new) if a is not None}
    fns = {"gemm": lambda: gy.T @ x, "before": lambda: run(ws_before, args, x, gy, k, g),
           "split": lambda: run(ws, args, x, gy, k, g)}
    t = {name: [] for name in fns}
    for _ in range(6):
        for name, fn in fns.items():
            t[name].append(timed(fn))
    r_before = statistics.median([b / a for a, b in zip(t["gemm"], t["before"])])
    r_split = statistics.median([b / a for a, b in zip(t["gemm"], t["split"])])
    print(f"M={m} {n}x{k} tiles={tiles} plan={plan}: gemm {statistics.median(t['gemm']):8.1f} us  before "
          f"{statistics.median(t['before']):8.1f} ({r_before:.3f}x gemm)  split {statistics.median(t['split']):8.1f} "
          f"({r_split:.3f}x gemm)  entries differing {diff}", flush=True)
