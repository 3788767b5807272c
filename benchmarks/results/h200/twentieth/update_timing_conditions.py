"""Why the benchmark's update row (zero state, a bias, AdamW in the turns) is slower than a probe's."""
import statistics, sys, torch
from benchmarks.kernels import time_interleaved, paired_ratio, GROUP_SIZE
from ternary.kernels.update import triton as triton_update
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
m = 8192
for n, k in [(16384, 16384), (4096, 14336)]:
    gen = torch.Generator().manual_seed(n + k + m)
    groups = -(-k // GROUP_SIZE)
    dev = "cuda"
    packed = random_packed(n, k, generator=gen).to(dev)
    rnd = dict(E=torch.randint(-20, 5, (n, groups), dtype=torch.int8, generator=gen).to(dev),
               E_accum=torch.randint(-100, 100, (n, groups), dtype=torch.int8, generator=gen).to(dev),
               T_accum=torch.randint(-3, 4, (n, k), dtype=torch.int8, generator=gen).to(dev),
               bias=torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=gen).to(dev))
    zero = {key: torch.zeros_like(v) for key, v in rnd.items()}
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    grad_y = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
    rule = dict(in_features=k, group_size=GROUP_SIZE, theta_t=4, theta_e=16, e_min=-24, e_max=8, bias_step=64)
    master = torch.nn.Parameter(torch.zeros(n, k, device=dev))
    optimizer = torch.optim.AdamW([master], lr=1e-3, fused=True)

    def ste_step():
        master.grad = (grad_y.T @ x).to(torch.float32)
        optimizer.step()

    def call(state, with_bias):
        return triton_update.update(packed, state["E"], state["E_accum"], state["T_accum"],
                                    state["bias"] if with_bias else None, x, grad_y, validated=True, **rule)
    fns = {"gemm": lambda: grad_y.T @ x,
           "rnd_nobias": lambda: call(rnd, False), "rnd_bias": lambda: call(rnd, True),
           "zero_nobias": lambda: call(zero, False), "zero_bias": lambda: call(zero, True)}
    times = time_interleaved(fns, rounds=5)
    print(f"n={n} k={k}: " + " ".join(f"{v} {statistics.median(t):.1f} ({paired_ratio(t, times['gemm']):.3f}x)" for v, t in times.items()), flush=True)
    fns = {"gemm": lambda: grad_y.T @ x, "ste": ste_step, "zero_bias": lambda: call(zero, True)}
    times = time_interleaved(fns, rounds=5)
    print(f"n={n} k={k} bench-order: " + " ".join(f"{v} {statistics.median(t):.1f} ({paired_ratio(t, times['gemm']):.3f}x)" for v, t in times.items()), flush=True)
    fns = {"gemm": lambda: grad_y.T @ x, "zero_bias": lambda: call(zero, True)}
    times = time_interleaved(fns, rounds=5)
    print(f"n={n} k={k} no-ste: " + " ".join(f"{v} {statistics.median(t):.1f} ({paired_ratio(t, times['gemm']):.3f}x)" for v, t in times.items()), flush=True)
    del master, optimizer, packed, rnd, zero, x, grad_y
    torch.cuda.empty_cache()
