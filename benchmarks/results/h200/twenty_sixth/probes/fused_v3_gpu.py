"""Fused decode + GEMM prototype: correctness against the shipped two-step path, then timings (CUDA graphs)."""
import sys, statistics, torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
import fused_v2 as f2
import fused_v3 as f
from ternary.kernels.linear.triton_run_decode import dequantize_runs

def make(n, k, g, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    T = torch.randint(0, 243, (n, -(-k // 5)), device="cuda", generator=gen, dtype=torch.int32).to(torch.uint8)
    E = torch.randint(-9, -3, (n, -(-k // g)), device="cuda", generator=gen, dtype=torch.int32).to(torch.int8)
    return T, E

def full(w_view, kp):
    return torch.as_strided(w_view, (w_view.shape[0], kp), (w_view.stride(0), 1))

def check(m, n, k, g, corrupt=False):
    T, E = make(n, k, g, seed=m + n + k)
    if corrupt:
        T[n // 2, 7] = 250
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    y_ref = F.linear(x, w_ref).float()
    y1, wb = f.forward(x, T, E, in_features=k, group_size=g, fused=True)
    torch.cuda.synchronize()
    y0, _ = f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=full(w_ref, w_ref.stride(0)))
    same_w = torch.equal(wb[:, :k].view(torch.int16), w_ref.view(torch.int16))
    same_y = torch.equal(y0.view(torch.int16), y1.view(torch.int16))
    fin = torch.isfinite(y_ref)
    err = ((y1.float() - y_ref)[fin].norm() / y_ref[fin].norm()).item()
    same_nan = torch.equal(fin, torch.isfinite(y1.float()))
    nan_rows = (~torch.isfinite(y1.float())).any(0).nonzero().flatten().tolist()
    print(f"check m={m} n={n} k={k} g={g} corrupt={corrupt}: w equal {same_w}, fused==gemm {same_y}, rel err {err:.2e},"
          f" nan columns {nan_rows[:4]}", flush=True)
    return same_w and same_y and same_nan and err < 1e-2

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

def bench(m, n, k, g=40):
    T, E = make(n, k, g)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    wf = full(w_ref, w_ref.stride(0))
    fns = {
        "cublas": lambda: F.linear(x, w_ref),
        "two_step": lambda: F.linear(x, dequantize_runs(T, E, in_features=k, group_size=g)),
        "gemm_v2": lambda: f2.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
        "gemm_v3": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf),
        "fused_v3": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=True),
        "gemm_v3B": lambda: f.forward(x, T, E, in_features=k, group_size=g, fused=False, w=wf, tile=(256, 128, 3)),
    }
    times = {name: [] for name in fns}
    for _ in range(2):
        for name, fn in fns.items():
            times[name] += graph_time(fn)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"M={m} {n}x{k}: " + "  ".join(f"{name} {t:8.1f}us ({med['cublas'] / t:.3f}x)" for name, t in med.items()),
          flush=True)

if sys.argv[1] == "check":
    ok = all([check(300, 1000, 1001, 40), check(129, 513, 2600, 40, corrupt=True), check(2048, 4096, 4096, 40)])
    print("ALL OK" if ok else "FAILED")
else:
    for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384),
                    (8192, 16384, 16384)]:
        bench(m, n, k)
