"""Prepared for the next session (not run): fused v5, the first round's first chunks decoded by the full-card run
decode before the fused kernel (flags preset), against v3 (no pre-decode) and the two-step path."""
import sys, statistics, torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")  # fused5 = fused_v3.py + fused_v5_prepared.diff
import fused5 as f
from ternary.kernels.linear.triton_run_decode import dequantize_runs


def make(n, k, g, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    T = torch.randint(0, 243, (n, -(-k // 5)), device="cuda", generator=gen, dtype=torch.int32).to(torch.uint8)
    E = torch.randint(-9, -3, (n, -(-k // g)), device="cuda", generator=gen, dtype=torch.int32).to(torch.int8)
    return T, E


def full(w_view, kp):
    return torch.as_strided(w_view, (w_view.shape[0], kp), (w_view.stride(0), 1))


def graph_time(fn, reps=6, rounds=5):
    fn(); torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    out = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        out.append(a.elapsed_time(b) * 1000 / reps)
    return out


for m, n, k, g, pre in [(300, 1000, 1001, 40, 1), (129, 513, 2600, 20, 2), (2048, 4096, 4096, 40, 99), (700, 3000, 9000, 40, 1)]:
    T, E = make(n, k, g, seed=n)
    T[n // 2, 7] = 250
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    y1, wb = f.forward(x, T, E, in_features=k, group_size=g, fused=True, pre_chunks=pre)
    y0, _ = f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=full(w_ref, w_ref.stride(0)))
    print("check", m, n, k, g, pre, torch.equal(wb[:, :k].view(torch.int16), w_ref.view(torch.int16)),
          torch.equal(y0.view(torch.int16), y1.view(torch.int16)), flush=True)

for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384), (8192, 16384, 16384)]:
    g = 40
    T, E = make(n, k, g)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    wf = full(w_ref, w_ref.stride(0))
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "two_step": lambda: F.linear(x, dequantize_runs(T, E, in_features=k, group_size=g)),
           "gemm": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf)}
    for pre in (0, 1, 2, 99):
        fns[f"fused_pre{pre}"] = lambda pre=pre: f.forward(x, T, E, in_features=k, group_size=g, fused=True, pre_chunks=pre)
    times = {name: [] for name in fns}
    for _ in range(2):
        for name, fn in fns.items():
            times[name] += graph_time(fn)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"M={m} {n}x{k}: " + "  ".join(f"{name} {t:8.1f}us ({med['cublas'] / t:.3f}x)" for name, t in med.items()),
          flush=True)
