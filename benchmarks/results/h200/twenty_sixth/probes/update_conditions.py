"""Why the update row of the benchmark (8.1 ms at 16384^2 M = 8192) is slower than a probe's (7.1 ms): the same
kernel under each condition, in turns with the bf16 weight-gradient GEMM (and GEMM + AdamW where marked)."""
import statistics, sys, torch
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
from probe_common import timed
from ternary.kernels.update import triton as triton_update, triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

n = k = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
m, G = 8192, 40
gen = torch.Generator().manual_seed(1)
groups = -(-k // G)
packed = random_packed(n, k, generator=gen).cuda()
zero = dict(E=torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
            T_accum=torch.zeros(n, k, dtype=torch.int8, device="cuda"),
            bias=torch.zeros(n, dtype=torch.int32, device="cuda"))
rand = dict(E=torch.randint(-3, 4, (n, groups), generator=gen).to(torch.int8).cuda(),
            T_accum=torch.randint(-4, 5, (n, k), generator=gen).to(torch.int8).cuda(),
            bias=torch.randint(-1000, 1000, (n,), generator=gen, dtype=torch.int32).cuda())
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
bench_rule = dict(in_features=k, group_size=G, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
probe_rule = dict(in_features=k, group_size=G, theta_t=2, theta_e=2, e_min=-3, e_max=3, bias_step=64)
master = torch.nn.Parameter(torch.zeros(n, k, device="cuda"))
opt = torch.optim.AdamW([master], lr=1e-3, fused=True)

def ste():
    master.grad = (gy.T @ x).to(torch.float32)
    opt.step()

def direct(state, bias, rule):
    args = [packed, state["E"], state["E"].clone(), state["T_accum"], state["bias"] if bias else None]
    def call():
        new = UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in args])
        return ws.ws_update(*args, x, gy, new, **rule)
    return call

def dispatch(state, bias, rule):
    e_acc = state["E"].clone()
    return lambda: triton_update.update(packed, state["E"], e_acc, state["T_accum"], state["bias"] if bias else None,
                                        x, gy, validated=True, **rule)

cases = {
    "A probe: random state, no bias, probe rule, direct": (direct(rand, False, probe_rule), False),
    "B bench: zero state, bias, bench rule, dispatch": (dispatch(zero, True, bench_rule), False),
    "C zero state, bias, bench rule, direct": (direct(zero, True, bench_rule), False),
    "D zero state, no bias, bench rule, direct": (direct(zero, False, bench_rule), False),
    "E random state, bias, probe rule, direct": (direct(rand, True, probe_rule), False),
    "F bench case B with GEMM + AdamW in the turns": (dispatch(zero, True, bench_rule), True),
    "G probe case A with GEMM + AdamW in the turns": (direct(rand, False, probe_rule), True),
}
for name, (fn, with_ste) in cases.items():
    fns = {"gemm": lambda: gy.T @ x, "ours": fn} | ({"ste": ste} if with_ste else {})
    t = {key: [] for key in fns}
    for _ in range(6):
        for key, f in fns.items():
            t[key].append(timed(f))
    ratios = sorted(b / a for a, b in zip(t["gemm"], t["ours"]))
    print(f"{name}: gemm {statistics.median(t['gemm']):8.1f} us, ours {statistics.median(t['ours']):8.1f} us, "
          f"ratio median {statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})", flush=True)
