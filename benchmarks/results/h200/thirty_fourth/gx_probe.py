"""grad-x at 64-256 bf16 rows on the H200: wgmma kernel (default and 128-row launch) vs two-step vs cuBLAS."""
import sys, torch
from benchmarks.kernels import time_in_graph, time_interleaved, copies_for, paired_ratio
from ternary import LinearState
from ternary.kernels.linear import triton as kernels, reference

G = 40
out = open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    copies = copies_for(n * k * 2, torch.device("cuda"))
    layers = [LinearState.random(k, n, group_size=G, generator=torch.Generator().manual_seed(i), device="cuda")
              for i in range(copies)]
    dense = [reference.dequantize(l.T_packed, l.E, in_features=k, group_size=G).to(torch.bfloat16) for l in layers]
    for m in (64, 128, 256):
        g = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        kw = dict(in_features=k, group_size=G)
        fns = {
            "cublas": [lambda w=w: g @ w for w in dense],
            "dispatch": [lambda l=l: kernels.grad_x(g, l.T_packed, l.E, **kw) for l in layers],
            "two_step": [lambda l=l: kernels.grad_x_two_step(g, l.T_packed, l.E, **kw) for l in layers],
        }
        for tile in [None, (128, 2, 1, 8), (64, 2, 2, 4)]:
            fns[f"wgmma{tile}"] = [lambda l=l, tile=tile: kernels.grad_x_wgmma(g, l.T_packed, l.E, tile=tile, **kw)
                                   for l in layers]
        ref = dense[0].double().cpu()
        checks = {}
        for name, calls in fns.items():
            if name == "cublas":
                continue
            try:
                y = calls[0]().double().cpu()
                checks[name] = float((y - g.double().cpu() @ ref).norm() / (g.double().cpu() @ ref).norm())
            except Exception as e:
                checks[name] = repr(e)[:80]
        good = {name: calls for name, calls in fns.items() if name == "cublas" or isinstance(checks.get(name), float)}
        times = time_interleaved(good, rounds=3, timer=time_in_graph)
        line = f"{n}x{k} M={m} cublas {min(times['cublas']):.1f} us | " + " | ".join(
            f"{name} {min(t):.1f} us {paired_ratio(times['cublas'], t):.2f}x err {checks[name]:.1e}"
            for name, t in times.items() if name != "cublas")
        print(line, file=out, flush=True)
        bad = {k2: v for k2, v in checks.items() if not isinstance(v, float)}
        if bad:
            print("   not run:", bad, file=out, flush=True)
