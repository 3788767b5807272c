"""Where the update's time over the GEMM goes: the rule's ALU (1), the whole rule (2), the regrouping (3), both (4)."""
import statistics, sys, torch
from benchmarks.kernels import time_interleaved, paired_ratio, GROUP_SIZE, with_constants
from ternary.kernels.update import triton as triton_update
import scratch.ws_ablate as ab
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
for m, n, k in [(8192, 16384, 16384), (8192, 4096, 14336), (8192, 4096, 4096), (2048, 16384, 16384)]:
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    dev = "cuda"
    packed = random_packed(n, k, generator=gen).to(dev)
    E = torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen).to(dev)
    E_accum = torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen).to(dev)
    T_accum = torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen).to(dev)
    x = torch.randn(m, k, generator=gen).to(dev, torch.bfloat16)
    grad_y = torch.randn(m, n, generator=gen).to(dev, torch.bfloat16)
    rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)

    def call(a):
        return with_constants(triton_update, lambda: with_constants(ab, lambda: triton_update.update(
            packed, E, E_accum, T_accum, None, x, grad_y, validated=True, **rule), ABLATE=a), triton_wgmma_ws=ab)
    ref = triton_update.update(packed, E, E_accum, T_accum, None, x, grad_y, validated=True, **rule)
    print("ablate0 equals shipped module:", all(torch.equal(u, v) for u, v in zip(call(0), ref) if u is not None), flush=True)
    fns = {"gemm": lambda: grad_y.T @ x} | {f"a{a}": (lambda a=a: call(a)) for a in (0, 1, 2, 5, 7)}
    times = time_interleaved(fns, rounds=5)
    print(f"m={m} n={n} k={k}: " + " ".join(f"{v} {statistics.median(t):.1f} ({paired_ratio(t, times['gemm']):.3f}x)" for v, t in times.items()), flush=True)
    del packed, E, E_accum, T_accum, x, grad_y
    torch.cuda.empty_cache()
