"""What the probe scripts of this folder share: random layers for the fused prototypes, their check against the
shipped run decode, CUDA-graph and back-to-back event timing, and the printed line of medians against cuBLAS."""
import statistics

import torch
import torch.nn.functional as F

from ternary.kernels.linear.triton_run_decode import dequantize_runs


def make(n, k, g, seed=0):
    """Random packed bytes [N, ceil(K / 5)] (every valid value) and exponents [N, ceil(K / G)] in -9..-4."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    T = torch.randint(0, 243, (n, -(-k // 5)), device="cuda", generator=gen, dtype=torch.int32).to(torch.uint8)
    E = torch.randint(-9, -3, (n, -(-k // g)), device="cuda", generator=gen, dtype=torch.int32).to(torch.int8)
    return T, E


def full(w_view, kp):
    """The whole [N, Kp] buffer behind a [N, K] view of it (``dequantize_runs`` returns the view)."""
    return torch.as_strided(w_view, (w_view.shape[0], kp), (w_view.stride(0), 1))


def check(f, m, n, k, g, corrupt=False, **kw):
    """Prototype ``f``: its buffer equals ``dequantize_runs`` bit for bit, its fused output equals its GEMM on the
    pre-decoded buffer bit for bit, NaN exactly where cuBLAS's is, relative error to cuBLAS below 1e-2."""
    T, E = make(n, k, g, seed=m + n + k)
    if corrupt:
        T[n // 2, 7] = 250
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    y_ref = F.linear(x, w_ref).float()
    y1, wb = f.forward(x, T, E, in_features=k, group_size=g, fused=True, **kw)
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
    """Microseconds per call of ``fn``, ``reps`` calls in one CUDA graph, one figure per replay (``rounds``)."""
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


def print_medians(label, fns, turns, **graph):
    """Time ``fns`` (a dict with ``"cublas"``) in ``turns`` turns and print each one's median and cuBLAS's over it."""
    times = {name: [] for name in fns}
    for _ in range(turns):
        for name, fn in fns.items():
            times[name] += graph_time(fn, **graph)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{label}: " + "  ".join(f"{name} {t:8.1f}us ({med['cublas'] / t:.3f}x)" for name, t in med.items()),
          flush=True)


def layer(m, n, k, g=40):
    """A random layer, bf16 activations, the shipped buffer and the whole buffer behind it."""
    T, E = make(n, k, g)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    return T, E, x, w_ref, full(w_ref, w_ref.stride(0))


def timed(fn, calls=4):
    """Microseconds per call of ``fn``, ``calls`` calls back to back between two events after one untimed call."""
    fn(); torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(calls):
        fn()
    b.record(); b.synchronize()
    return a.elapsed_time(b) * 1000 / calls
