"""triton_decode_gemm forward and grad-x on the card: checks (buffer bit for bit, outputs against fp32 products
of the same buffer, corrupt bytes, bias) and grad-x timings against cuBLAS and the shipped two-step grad-x."""
import sys
import torch
import torch.nn.functional as F
sys.path.insert(0, "benchmarks/results/h200/twenty_sixth/probes")
from probe_common import layer, make, print_medians
from ternary.kernels.linear import triton as kernels, triton_decode_gemm as dg
from ternary.kernels.linear.triton_run_decode import dequantize_runs

GX_CONFIGS = [(32, 16, 2, 0), (32, 32, 2, 0), (32, 64, 2, 0)]


def check(m, n, k, g, config, corrupt=False, bias=False, grad_x=False):
    T, E = make(n, k, g, seed=m + n + k)
    if corrupt:
        T[n // 2, 7] = 250
    a = torch.randn(m, n if grad_x else k, device="cuda").to(torch.bfloat16)
    b = torch.randint(-2**20, 2**20, (n,), device="cuda", dtype=torch.int32) if bias else None
    w_ref = dequantize_runs(T, E, in_features=k, group_size=g)
    if grad_x:
        ref = a.float() @ w_ref.float()
        y, w = dg.grad_x(a, T, E, in_features=k, group_size=g, config=config, keep_buffer=True)
    else:
        ref = F.linear(a.float(), w_ref.float())
        if bias:
            ref = ref + b.float() * 2.0**-16
        y, w = dg.forward(a, T, E, b, in_features=k, group_size=g, bias_frac_bits=16, config=config,
                          keep_buffer=True)
    torch.cuda.synchronize()
    same_w = torch.equal(w[:, :k].view(torch.int16), w_ref.view(torch.int16))
    fin = torch.isfinite(ref)
    err = ((y.float() - ref)[fin].norm() / ref[fin].norm()).item()
    same_nan = torch.equal(fin, torch.isfinite(y.float()))
    ok = same_w and same_nan and err < 4e-3 and y.shape == ref.shape
    print(f"check {'grad_x' if grad_x else 'forward'} {config} m={m} n={n} k={k} g={g} corrupt={corrupt} "
          f"bias={bias}: w equal {same_w}, nan same {same_nan}, rel err {err:.2e} {'OK' if ok else 'FAIL'}",
          flush=True)
    return ok


ok = True
for config in GX_CONFIGS:
    for grad_x in (True, False):
        if not grad_x and config[1] != 16:
            continue
        ok &= check(300, 1000, 1001, 40, config, grad_x=grad_x)
        ok &= check(129, 513, 2600, 20, config, corrupt=True, bias=not grad_x, grad_x=grad_x)
        ok &= check(1, 300, 4100, 60, config, bias=not grad_x, grad_x=grad_x)
        ok &= check(700, 3000, 9000, 40, config, corrupt=True, grad_x=grad_x)
        ok &= check(2048, 4096, 4096, 40, config, grad_x=grad_x)
print("ALL OK" if ok else "FAILED", flush=True)
kw = dict(group_size=40)
for m, n, k in [(mm, nn, kk) for mm in (1024, 2048, 4096, 8192)
                for nn, kk in ((4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384))]:
    T, E, x, w_ref, wf = layer(m, n, k)
    g = torch.randn(m, n, device="cuda").to(torch.bfloat16)
    fns = {"cublas": lambda: g @ w_ref,
           "two_step": lambda: kernels.grad_x_two_step(g, T, E, in_features=k, **kw)}
    for config in GX_CONFIGS:
        fns["gx" + "_".join(map(str, config))] = lambda c=config: dg.grad_x(g, T, E, in_features=k, config=c, **kw)
    print_medians(f"grad_x M={m} {n}x{k}", fns, turns=2)
