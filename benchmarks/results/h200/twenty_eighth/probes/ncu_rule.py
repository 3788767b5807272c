"""The committed update at M = 2048 (where its rule decides the time), profiled once after a warm-up, for
per-instruction stall samples (SourceCounters) and warp states."""
import sys, torch
from ternary.kernels.update import triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

m, n = int(sys.argv[1]), int(sys.argv[2])
k, g = n, 40
gen = torch.Generator().manual_seed(n)
groups = -(-k // g)
args = [random_packed(n, k, generator=gen).cuda(), torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
        torch.zeros(n, groups, dtype=torch.int8, device="cuda"), torch.zeros(n, k, dtype=torch.int8, device="cuda"),
        None]
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
rule = dict(in_features=k, group_size=g, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
out = UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in args])
call = lambda: ws.ws_update(*args, x, gy, out, **rule)
for _ in range(3):
    call()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart()
call()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
