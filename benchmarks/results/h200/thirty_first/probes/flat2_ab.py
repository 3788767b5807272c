"""Flat Gluon run decode, second round: fewer barriers (WIDE: one [R, 16] and one [R, 4] shared store a run),
two runs a thread (HALVES), evict_last or not; bit for bit against the shipped decode, then the decode alone and
the two-step grad-x (decode + cuBLAS on the buffer) at M = 2048 against cuBLAS on a dense bf16 weight, in turns."""
import statistics
import sys
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from gluon_flat import dequantize_runs_flat as flat1  # noqa: E402
from gluon_flat2 import dequantize_runs_flat as flat2  # noqa: E402
from benchmarks.kernels import time_in_graph, time_interleaved, copies_for  # noqa: E402
from ternary.kernels.linear import triton_run_decode as shipped  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402

VARIANTS = {"wide64": dict(block_r=64), "wide128": dict(block_r=128), "wide64x2": dict(block_r=64, halves=2),
            "wide64_noevict": dict(block_r=64, evict=False), "narrow64": dict(block_r=64, wide=False)}


def layer(n, k, g, seed):
    gen = torch.Generator().manual_seed(seed)
    return (random_packed(n, k, generator=gen).cuda(),
            torch.randint(-128, 127, (n, -(-k // g)), generator=gen).to(torch.int8).cuda())


bad = 0
for n, k, g in ((37, 1001, 40), (5, 4099, 20), (64, 1001, 60), (3, 40, 40), (300, 4096, 40), (17, 16384, 40),
                (9, 14336, 20), (1, 7, 20)):
    p, e = layer(n, k, g, n * k)
    p[n // 2, p.shape[1] // 3] = 250
    ref = shipped.dequantize_runs(p, e, in_features=k, group_size=g).view(torch.int16)
    for name, kw in VARIANTS.items():
        got = flat2(p, e, in_features=k, group_size=g, **kw)
        pad = got.as_strided((n, got.stride(0) - k), (got.stride(0), 1), k)
        ok = torch.equal(ref, got.view(torch.int16)) and bool((pad == 0).all())
        bad += not ok
        if not ok:
            print(f"DIFFERENT {n}x{k} G={g} {name}", flush=True)
print("all equal" if bad == 0 else f"{bad} DIFFER", flush=True)

G = 40
for n, k in ((14336, 4096), (4096, 14336), (16384, 16384), (4096, 4096)):
    states = [layer(n, k, G, i) for i in range(3)]
    calls = {"shipped": [lambda s=s: shipped.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
             "flat1_64": [lambda s=s: flat1(*s, in_features=k, group_size=G, block_r=64) for s in states]}
    for name, kw in VARIANTS.items():
        calls[name] = [lambda s=s, kw=kw: flat2(*s, in_features=k, group_size=G, **kw) for s in states]
    times = time_interleaved(calls, rounds=5, timer=time_in_graph)
    for name, t in times.items():
        print(f"decode {n}x{k} {name:>15} {statistics.median(t):8.1f} us  rounds {[round(x, 1) for x in t]}", flush=True)
    if n * k <= 16384 * 4096:
        m = 2048
        gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(n * k * 2, gy.device))]
        calls = {"cublas": [lambda w=w: gy @ w for w in dense],
                 "two_step_shipped": [lambda s=s: gy @ shipped.dequantize_runs(*s, in_features=k, group_size=G)
                                      for s in states]}
        for name in ("wide64", "wide64_noevict", "wide64x2"):
            calls["two_step_" + name] = [lambda s=s, kw=VARIANTS[name]: gy @ flat2(*s, in_features=k, group_size=G, **kw)
                                         for s in states]
        times = time_interleaved(calls, rounds=7, timer=time_in_graph)
        base = times["cublas"]
        for name, t in times.items():
            ratios = sorted(b / x for b, x in zip(base, t))
            print(f"grad-x M={m} {n}x{k} {name:>24} {statistics.median(t):8.1f} us  {ratios[len(ratios) // 2]:.3f}x "
                  f"[{ratios[0]:.3f}-{ratios[-1]:.3f}]", flush=True)
        del dense, gy
    del states
    torch.cuda.empty_cache()
