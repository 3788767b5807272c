"""triton_decode_gemm on the card: checks (buffer bit for bit, output against cuBLAS on the same buffer, corrupt
bytes, bias) and timings of its configs against cuBLAS and the shipped two-step path."""
import sys
import torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
from probe_common import layer, make, print_medians
from ternary.kernels.linear import triton as kernels, triton_decode_gemm as dg
from ternary.kernels.linear.triton_run_decode import dequantize_runs

CONFIGS = [(8, 64, 2, 1), (8, 64, 2, 0), (8, 64, 2, 2), (8, 32, 2, 1), (16, 32, 2, 1), (32, 16, 2, 1), (32, 16, 2, 2)]


def check(m, n, k, g, config, corrupt=False, bias=False):
    T, E = make(n, k, g, seed=m + n + k)
    if corrupt:
        T[n // 2, 7] = 250
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    b = torch.randint(-2**20, 2**20, (n,), device="cuda", dtype=torch.int32) if bias else None
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    ref = F.linear(x.float(), w_ref.float())
    if bias:
        ref = ref + b.float() * 2.0**-16
    y, w = dg.forward(x, T, E, b, in_features=k, group_size=g, bias_frac_bits=16, config=config, keep_buffer=True)
    torch.cuda.synchronize()
    same_w = torch.equal(w[:, :k].view(torch.int16), w_ref.view(torch.int16))
    fin = torch.isfinite(ref)
    err = ((y.float() - ref)[fin].norm() / ref[fin].norm()).item()
    same_nan = torch.equal(fin, torch.isfinite(y.float()))
    ok = same_w and same_nan and err < 4e-3
    print(f"check {config} m={m} n={n} k={k} g={g} corrupt={corrupt} bias={bias}: w equal {same_w}, nan same "
          f"{same_nan}, rel err {err:.2e} {'OK' if ok else 'FAIL'}", flush=True)
    return ok


ok = True
for config in CONFIGS:
    ok &= check(300, 1000, 1001, 40, config)
    ok &= check(129, 513, 2600, 20, config, corrupt=True, bias=True)
    ok &= check(1, 300, 4100, 60, config, bias=True)
    ok &= check(2048, 4096, 4096, 40, config)
    ok &= check(700, 3000, 9000, 40, config, corrupt=True)
print("ALL OK" if ok else "FAILED", flush=True)
kw = dict(group_size=40, bias_frac_bits=16)
for m, n, k in [(2048, 4096, 4096), (2048, 14336, 4096), (2048, 4096, 14336), (2048, 16384, 16384),
                (8192, 4096, 4096), (8192, 16384, 16384)]:
    T, E, x, w_ref, wf = layer(m, n, k)
    fns = {"cublas": lambda: F.linear(x, w_ref),
           "two_step": lambda: kernels.forward_two_step(x, T, E, None, in_features=k, **kw)}
    for config in CONFIGS:
        fns["c" + "_".join(map(str, config))] = lambda c=config: dg.forward(x, T, E, None, in_features=k, config=c,
                                                                            **kw)
    print_medians(f"M={m} {n}x{k}", fns, turns=2)
