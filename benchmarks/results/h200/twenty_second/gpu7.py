"""GPU probe 7: is there a faster cuBLAS arrangement of the two-step product than F.linear's (TN) at M = 2048?"""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for

dev = torch.device("cuda")
for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (16384, 16384)]:
    count = copies_for(n * k * 2, dev, cap=8)
    ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(count)]
    wts = [w.t().contiguous() for w in ws]
    for m in [2048, 8192]:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        ref = F.linear(x, ws[0]).float()
        alt = torch.mm(x, wts[0]).float()
        print(f"{n}x{k} M={m} NN vs TN rel diff {((alt - ref).norm() / ref.norm()).item():.1e}", flush=True)

        fns = {"F.linear TN": [lambda w=w: F.linear(x, w) for w in ws],
               "mm NN (W^T stored)": [lambda w=w: torch.mm(x, w) for w in wts]}
        times = time_interleaved(fns, rounds=5, timer=time_in_graph)
        for name, ts in times.items():
            print(f"{n}x{k} M={m} {name:20s} {statistics.median(ts):8.1f} us  TN/this {paired_ratio(times['F.linear TN'], ts):.3f}",
                  flush=True)
    del ws, wts
    torch.cuda.empty_cache()
