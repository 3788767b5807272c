"""128-row update tiles (one 8-warp product partition, 4 rule warps) against the shipped 64-row tiles:
outputs equal, times in turns with the GEMM."""
import statistics, sys, torch
from benchmarks.kernels import time_interleaved, paired_ratio, GROUP_SIZE, with_constants
from ternary.kernels.update import triton as triton_update, triton_wgmma_ws as ws
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
VARIANTS = {
    "ship": dict(WS_RULE_ROWS=8),
    "rr16": dict(WS_RULE_ROWS=16),
}
shapes = [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
for m, n, k in [(8192, 16384, 16384), (8192, 4096, 14336), (8192, 14336, 4096), (8192, 4096, 4096), (2048, 16384, 16384), (2048, 4096, 4096)]:
    if True:
        gen = torch.Generator().manual_seed(n + k + m)
        groups = -(-k // GROUP_SIZE)
        dev = "cuda"
        packed = random_packed(n, k, generator=gen).to(dev)
        E = torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen).to(dev)
        E_accum = torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen).to(dev)
        T_accum = torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen).to(dev)
        bias = torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen).to(dev)
        x = torch.randn(m, k, generator=gen).to(dev, torch.bfloat16)
        grad_y = torch.randn(m, n, generator=gen).to(dev, torch.bfloat16)
        rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

        def call(variant, with_bias=False):
            return with_constants(ws, lambda: triton_update.update(
                packed, E, E_accum, T_accum, bias if with_bias else None, x, grad_y, validated=True, **rule),
                **VARIANTS[variant])
        for with_bias in (True, False):
            outs = {v: call(v, with_bias) for v in VARIANTS}
            a = outs["ship"]
            for v, b in outs.items():
                same = all((u is None and w is None) or torch.equal(u, w) for u, w in zip(a, b))
                if not same:
                    print(f"DIFFERS {v} n={n} k={k} m={m} bias={with_bias}", [name for name, u, w in zip(("T_packed", "E", "E_accum", "T_accum", "bias"), a, b) if u is not None and not torch.equal(u, w)], flush=True)
            print(f"checked n={n} k={k} m={m} bias={with_bias}", flush=True)
        fns = {"gemm": lambda: grad_y.T @ x} | {v: (lambda v=v: call(v)) for v in VARIANTS}
        times = time_interleaved(fns, rounds=5)
        text = " ".join(f"{v} {statistics.median(times[v]):.1f} ({paired_ratio(times[v], times['gemm']):.3f}x)" for v in VARIANTS)
        print(f"n={n} k={k} m={m}: gemm {statistics.median(times['gemm']):.1f} {text}", flush=True)
        del packed, E, E_accum, T_accum, bias, x, grad_y
        torch.cuda.empty_cache()
