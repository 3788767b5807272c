"""The wide update kernel against the 64-row one (both in the working tree) and the GEMM, in turns, at M = 4096 and
8192 on the three large benchmark shapes; outputs compared bit for bit first (benchmark state, bias)."""
import statistics, sys, torch
from benchmarks.kernels import time_interleaved, paired_ratio, ratio_range, GROUP_SIZE
from ternary.kernels.update import triton_wgmma_ws as ws, triton_wgmma_wide as wide, UpdatedTensors
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
rule = lambda k: dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
for n, k, m in [tuple(int(v) for v in c.split("x")) for c in sys.argv[1].split(",")]:
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    state = [random_packed(n, k, generator=gen).cuda(), torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
             torch.zeros(n, groups, dtype=torch.int8, device="cuda"), torch.zeros(n, k, dtype=torch.int8, device="cuda"),
             torch.zeros(n, dtype=torch.int32, device="cuda")]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    new = lambda: UpdatedTensors(*[torch.empty_like(t) for t in state])
    a = ws.ws_update(*state, x, gy, new(), **rule(k))
    b = wide.wide_update(*state, x, gy, new(), **rule(k))
    same = all(torch.equal(u, w) for u, w in zip(a, b))
    fns = {"gemm": lambda: gy.T @ x, "rows64": lambda: ws.ws_update(*state, x, gy, new(), **rule(k)),
           "wide": lambda: wide.wide_update(*state, x, gy, new(), **rule(k))}
    times = time_interleaved(fns, rounds=int(sys.argv[2]))
    text = " ".join(f"{v} {statistics.median(times[v]):.1f} ({paired_ratio(times[v], times['gemm']):.3f}x "
                    f"{ratio_range(times[v], times['gemm'])})" for v in list(fns)[1:])
    print(f"n={n} k={k} m={m} equal={same} takes={wide.takes(n, state[0].shape[1], m, 132)}: gemm "
          f"{statistics.median(times['gemm']):.1f} {text}", flush=True)
    del state, x, gy
    torch.cuda.empty_cache()
