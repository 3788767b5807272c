"""The 128-row tile on the f16x2 loop rule (ws_pair), 16384^2 M = 8192 no bias, profiled once after a warm-up."""
import sys, torch
sys.path.insert(0, "scratch/s28")
import ws_pair as ws
from ternary.kernels.update import UpdatedTensors
from ternary.state.packing import random_packed

ws.WS_UPDATE_TILE = (64, 128, 64, 3, 4); ws.WS_RULE_ROWS = 4; ws.WS_PRODUCT_REGISTERS = 192
m, n = int(sys.argv[1]), int(sys.argv[2])
k, g = n, 40
gen = torch.Generator().manual_seed(n)
groups = -(-k // g)
args = [random_packed(n, k, generator=gen).cuda(), torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
        torch.zeros(n, groups, dtype=torch.int8, device="cuda"), torch.zeros(n, k, dtype=torch.int8, device="cuda"), None]
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
