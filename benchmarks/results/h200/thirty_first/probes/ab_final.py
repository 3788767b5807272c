"""The committed run decode (one row a program, lane-pair stores; HEAD 4582a6e, as old_run_decode.py) against
the new one (flat runs, stores staged through shared memory): bit for bit on the benchmark shapes, the decode
alone, and the two-step grad-x at M = 2048 (decode, then cuBLAS on the buffer) against cuBLAS on the same
weights stored dense (the benchmark's baseline), time_in_graph in turns, 7 rounds, rotating layers."""
import statistics
import sys
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import old_run_decode as old  # noqa: E402
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved  # noqa: E402
from ternary.kernels.linear import triton_run_decode as new  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402

G = 40
for n, k in ((14336, 4096), (4096, 14336), (4096, 4096), (16384, 16384)):
    gen = torch.Generator().manual_seed(n + k)
    count = copies_for(n * -(-k // 5) + n * -(-k // G), torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    a = old.dequantize_runs(*states[0], in_features=k, group_size=G)
    b = new.dequantize_runs(*states[0], in_features=k, group_size=G)
    print(f"{n}x{k}: buffers equal {torch.equal(a.view(torch.int16), b.view(torch.int16))}, row stride "
          f"{a.stride(0)} -> {b.stride(0)}", flush=True)
    times = time_interleaved({
        "old": [lambda s=s: old.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
        "new": [lambda s=s: new.dequantize_runs(*s, in_features=k, group_size=G) for s in states]},
        rounds=5, timer=time_in_graph)
    print(f"  decode old {statistics.median(times['old']):.1f} us, new {statistics.median(times['new']):.1f} us",
          flush=True)
    if n * k < 16384 * 16384:
        m = 2048
        gy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
        dense = [new.dequantize_runs(*s, in_features=k, group_size=G).contiguous()
                 for s in states[:copies_for(n * k * 2, gy.device)]]
        times = time_interleaved({
            "cublas": [lambda w=w: gy @ w for w in dense],
            "old": [lambda s=s: gy @ old.dequantize_runs(*s, in_features=k, group_size=G) for s in states],
            "new": [lambda s=s: gy @ new.dequantize_runs(*s, in_features=k, group_size=G) for s in states]},
            rounds=7, timer=time_in_graph)
        base = times["cublas"]
        cells = []
        for name in ("old", "new"):
            ratios = sorted(x / y for x, y in zip(base, times[name]))
            cells.append(f"{name} {statistics.median(times[name]):.1f} us {ratios[3]:.3f}x [{ratios[0]:.3f}-{ratios[-1]:.3f}]")
        print(f"  grad-x M=2048 two-step: cublas {statistics.median(base):.1f} us; " + "; ".join(cells), flush=True)
        del dense, gy
    del states
    torch.cuda.empty_cache()
