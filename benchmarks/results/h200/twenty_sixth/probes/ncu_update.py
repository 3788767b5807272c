"""The committed update and the bf16 weight-gradient GEMM at M = 8192, each profiled once after a warm-up
(ncu --profile-from-start off), for the speed-of-light, compute and memory sections at the card's own clock."""
import sys, torch
from ternary.kernels.update import triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

m = 8192
for n in [int(v) for v in sys.argv[1:]]:
    k, g = n, 40
    gen = torch.Generator().manual_seed(n)
    groups = -(-k // g)
    args = [random_packed(n, k, generator=gen).cuda(), torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
            torch.zeros(n, groups, dtype=torch.int8, device="cuda"), torch.zeros(n, k, dtype=torch.int8, device="cuda"),
            torch.zeros(n, dtype=torch.int32, device="cuda")]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    rule = dict(in_features=k, group_size=g, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    call = lambda: ws.ws_update(*args, x, gy, UpdatedTensors(*[torch.empty_like(t) for t in args]), **rule)
    for _ in range(3):
        call(); gy.T @ x
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    call(); gy.T @ x
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
