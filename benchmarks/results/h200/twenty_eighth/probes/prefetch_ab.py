"""The update rule's state loads 1 / 2 / 3 parts ahead (ship tile) and 128-row tiles: outputs equal to the
shipped kernel's bit for bit, times in turns with the GEMM (bf16 hooks, no bias)."""
import statistics, sys, time, torch
from benchmarks.kernels import time_interleaved, paired_ratio, ratio_range, GROUP_SIZE, with_constants
from ternary.kernels.update import triton as triton_update, triton_wgmma_ws as ws
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
SHIP = dict(WS_UPDATE_TILE=(64, 64, 64, 4, 8), WS_RULE_ROWS=8, WS_PRODUCT_REGISTERS=216)
R128 = dict(WS_UPDATE_TILE=(64, 128, 64, 3, 4), WS_RULE_ROWS=4, WS_PRODUCT_REGISTERS=int(sys.argv[2]))
VARIANTS = {"ship1": SHIP | dict(WS_RULE_PREFETCH=1), "ship2": SHIP | dict(WS_RULE_PREFETCH=2),
            "ship3": SHIP | dict(WS_RULE_PREFETCH=3)}
for p in sys.argv[3].split(","):
    if p:
        VARIANTS[f"r128_{p}"] = R128 | dict(WS_RULE_PREFETCH=int(p))
cases = [tuple(int(v) for v in c.split("x")) for c in sys.argv[1].split(",")]


def state(n, k, m, seed):
    gen = torch.Generator().manual_seed(seed)
    groups = -(-k // GROUP_SIZE)
    t = dict(packed=random_packed(n, k, generator=gen),
             E=torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen),
             E_accum=torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen),
             T_accum=torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen),
             bias=torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen),
             x=torch.randn(m, k, generator=gen).to(torch.bfloat16), grad_y=torch.randn(m, n, generator=gen).to(torch.bfloat16))
    return {key: v.cuda() for key, v in t.items()}


def call(s, k, variant, with_bias):
    rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    return with_constants(ws, lambda: triton_update.update(
        s["packed"], s["E"], s["E_accum"], s["T_accum"], s["bias"] if with_bias else None, s["x"], s["grad_y"],
        validated=True, **rule), **VARIANTS[variant])


t0 = time.time()
for n, k, m in [(1000, 4100, 300), (136, 640, 1)]:  # odd: rows not a multiple of the tile, K not of 320
    s = state(n, k, m, n + k + m)
    for with_bias in (True, False):
        outs = {v: call(s, k, v, with_bias) for v in VARIANTS}
        a = outs["ship1"]
        for v, b in outs.items():
            bad = [name for name, u, w in zip(("T_packed", "E", "E_accum", "T_accum", "bias"), a, b)
                   if u is not None and not torch.equal(u, w)]
            print(f"{'DIFFERS ' + str(bad) if bad else 'equal'} {v} n={n} k={k} m={m} bias={with_bias}", flush=True)
print(f"compiled and checked in {time.time() - t0:.0f} s", flush=True)
for n, k, m in cases:
    s = state(n, k, m, n + k + m)
    outs = {v: call(s, k, v, False) for v in VARIANTS}
    same = all(all((u is None and w is None) or torch.equal(u, w) for u, w in zip(outs["ship1"], b)) for b in outs.values())
    fns = {"gemm": lambda: s["grad_y"].T @ s["x"]} | {v: (lambda v=v: call(s, k, v, False)) for v in VARIANTS}
    times = time_interleaved(fns, rounds=5)
    text = " ".join(f"{v} {statistics.median(times[v]):.1f} ({paired_ratio(times[v], times['gemm']):.3f}x "
                    f"{ratio_range(times[v], times['gemm'])})" for v in VARIANTS)
    print(f"n={n} k={k} m={m} equal={same}: gemm {statistics.median(times['gemm']):.1f} {text}", flush=True)
    del s
    torch.cuda.empty_cache()
