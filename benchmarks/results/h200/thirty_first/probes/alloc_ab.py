"""Staging allocation of exactly 20 words a run (5 KB at 64 runs: 32 programs, 64 warps an SM) against the
committed 8 KB one (25 programs, 50 warps): bit for bit, then the decode alone at the benchmark shapes,
time_in_graph in turns, 5 rounds, rotating layers; blocks of 64 and 128 runs."""
import statistics
import sys
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import rd_8kb as old  # noqa: E402
from benchmarks.kernels import copies_for, time_in_graph, time_interleaved  # noqa: E402
from ternary.kernels.linear import triton_run_decode as new  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402

G = 40
for n, k, g in ((37, 1001, 40), (5, 4099, 20), (64, 1001, 60), (1, 7, 20), (300, 4096, 40)):
    gen = torch.Generator().manual_seed(n * k)
    p = random_packed(n, k, generator=gen).cuda()
    e = torch.randint(-128, 127, (n, -(-k // g)), generator=gen).to(torch.int8).cuda()
    p[n // 2, p.shape[1] // 3] = 250
    for block in (32, 64, 512):
        a = old.dequantize_runs(p, e, in_features=k, group_size=g, block=block)
        b = new.dequantize_runs(p, e, in_features=k, group_size=g, block=block)
        full = b.as_strided((n, b.stride(0)), (b.stride(0), 1), b.storage_offset())
        print(f"check {n}x{k} G={g} block {block}: equal {torch.equal(a.view(torch.int16), b.view(torch.int16))}, "
              f"zeros past K {bool((full[:, k:].view(torch.int16) == 0).all())}", flush=True)
for n, k in ((14336, 4096), (4096, 14336), (4096, 4096), (16384, 16384)):
    gen = torch.Generator().manual_seed(n + k)
    count = copies_for(n * -(-k // 5) + n * -(-k // G), torch.device("cuda"))
    states = [(random_packed(n, k, generator=gen).cuda(),
               torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).cuda()) for _ in range(count)]
    calls = {}
    for block in (64, 128):
        calls[f"8kb_{block}"] = [lambda s=s, b=block: old.dequantize_runs(*s, in_features=k, group_size=G, block=b)
                                 for s in states]
        calls[f"exact_{block}"] = [lambda s=s, b=block: new.dequantize_runs(*s, in_features=k, group_size=G, block=b)
                                   for s in states]
    times = time_interleaved(calls, rounds=5, timer=time_in_graph)
    print(f"{n}x{k}: " + ", ".join(f"{name} {statistics.median(t):.1f} us" for name, t in times.items()), flush=True)
    del states
    torch.cuda.empty_cache()
