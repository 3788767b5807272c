"""Natural-order hooks against digit planes in the wgmma update: outputs equal, times in turns with the GEMM."""
import statistics, sys, torch
from benchmarks.kernels import time_interleaved, paired_ratio, GROUP_SIZE
from ternary.kernels.update import triton as triton_update, triton_wgmma_ws as ws
from ternary.state.packing import random_packed

print(torch.cuda.get_device_name(), flush=True)
shapes = [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
for m in (8192, 2048):
    for n, k in shapes:
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

        def call(natural, with_bias=True):
            ws.WS_NATURAL_MAX_N = 1 << 30 if natural else 0
            return triton_update.update(packed, E, E_accum, T_accum, bias if with_bias else None, x, grad_y,
                                        validated=True, **rule)
        for with_bias in (True, False):
            a, b = call(False, with_bias), call(True, with_bias)
            same = all((u is None and v is None) or torch.equal(u, v) for u, v in zip(a, b))
            print(f"equal natural/planes n={n} k={k} m={m} bias={with_bias}: {same}", flush=True)
            if not same:
                for name, u, v in zip(("T_packed", "E", "E_accum", "T_accum", "bias"), a, b):
                    if u is not None and not torch.equal(u, v):
                        print("  differs:", name, (u != v).sum().item(), flush=True)
        times = time_interleaved({"gemm": lambda: grad_y.T @ x, "planes": lambda: call(False),
                                  "natural": lambda: call(True)}, rounds=5)
        med = {key: statistics.median(v) for key, v in times.items()}
        print(f"n={n} k={k} m={m}: gemm {med['gemm']:.1f} planes {med['planes']:.1f} ({paired_ratio(times['planes'], times['gemm']):.3f}x) "
              f"natural {med['natural']:.1f} ({paired_ratio(times['natural'], times['gemm']):.3f}x) "
              f"natural/planes {paired_ratio(times['natural'], times['planes']):.3f}", flush=True)
        del packed, E, E_accum, T_accum, bias, x, grad_y
        torch.cuda.empty_cache()
