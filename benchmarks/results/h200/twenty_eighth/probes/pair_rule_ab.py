"""The f16x2 pair rule (working tree) against the committed integer rule (scratch/s28/ws_old.py, HEAD's
triton_wgmma_ws): outputs bit-equal on random states, times in turns with the bf16 weight-gradient GEMM
(benchmark's state: zero E / E_accum / T_accum / bias, random packed, bf16 hooks, a bias)."""
import statistics, sys, time, torch
sys.path.insert(0, "scratch/s28")
import ws_old
from benchmarks.kernels import time_interleaved, paired_ratio, ratio_range, GROUP_SIZE, with_constants
from ternary.kernels.update import triton_wgmma_ws as ws, UpdatedTensors
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
R128 = dict(WS_UPDATE_TILE=(64, 128, 64, 3, 4), WS_RULE_ROWS=4, WS_PRODUCT_REGISTERS=192)
rule = lambda k: dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)


def run(module, state, x, gy, k, **constants):
    new = UpdatedTensors(*[None if t is None else torch.empty_like(t) for t in state])
    return with_constants(module, lambda: module.ws_update(*state, x, gy, new, **rule(k)), **constants) if constants \
        else module.ws_update(*state, x, gy, new, **rule(k))


def random_state(n, k, gen, bias=True):
    groups = -(-k // GROUP_SIZE)
    return [random_packed(n, k, generator=gen).cuda(), torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen).cuda(),
            torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen).cuda(),
            torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen).cuda(),
            torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen).cuda() if bias else None]


t0 = time.time()
VARIANTS = {"new": {}, "new_r128": R128}
for n, k, m in [(1000, 4102, 300)]:
    gen = torch.Generator().manual_seed(n + k)
    for bias in (True, False):
        state = random_state(n, k, gen, bias)
        x = torch.randn(m, k, generator=gen).cuda().bfloat16()
        gy = torch.randn(m, n, generator=gen).cuda().bfloat16()
        a = run(ws_old, state, x, gy, k)
        for label, constants in VARIANTS.items():
            out = run(ws, state, x, gy, k, **constants)
            bad = [f for f, u, w in zip(UpdatedTensors._fields, a, out) if u is not None and not torch.equal(u, w)]
            print(f"{'DIFFERS ' + str(bad) if bad else 'equal'} {label} n={n} k={k} m={m} bias={bias}", flush=True)
print(f"compiled and checked in {time.time() - t0:.0f} s", flush=True)
for n, k, m in [tuple(int(v) for v in c.split("x")) for c in sys.argv[1].split(",")]:
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    state = [random_packed(n, k, generator=gen).cuda(), torch.zeros(n, groups, dtype=torch.int8, device="cuda"),
             torch.zeros(n, groups, dtype=torch.int8, device="cuda"), torch.zeros(n, k, dtype=torch.int8, device="cuda"),
             torch.zeros(n, dtype=torch.int32, device="cuda")]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    fns = {"gemm": lambda: gy.T @ x, "old": lambda: run(ws_old, state, x, gy, k)}
    fns |= {label: (lambda c=constants: run(ws, state, x, gy, k, **c)) for label, constants in VARIANTS.items()}
    times = time_interleaved(fns, rounds=int(sys.argv[2]))
    text = " ".join(f"{v} {statistics.median(times[v]):.1f} ({paired_ratio(times[v], times['gemm']):.3f}x "
                    f"{ratio_range(times[v], times['gemm'])})" for v in list(fns)[1:])
    print(f"n={n} k={k} m={m}: gemm {statistics.median(times['gemm']):.1f} {text}", flush=True)
    del state, x, gy
    torch.cuda.empty_cache()
