"""Same-process A/B of the two-step buffer decodes: the per-weight column decode (shipped before),
the run decode with launch tiles, the plane decode; microseconds and write TB/s; bit-exact check."""
import sys, statistics
import torch
from benchmarks.kernels import copies_for, time_in_graph, GROUP_SIZE
from ternary.kernels.linear import triton as K
from ternary.kernels.linear import triton_run_decode as R
from ternary.state.packing import random_packed

tiles = [(1, 128, 4), (4, 64, 8), (4, 32, 4), (2, 64, 4), (8, 32, 8), (1, 256, 8), (2, 128, 8), (16, 32, 4), (4, 64, 4), (1, 64, 2)]
dev = torch.device("cuda")
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n + k)
    g = -(-k // GROUP_SIZE)
    count = copies_for(n * -(-k // 5), dev)
    states = [(random_packed(n, k, generator=gen).to(dev), torch.randint(-8, 8, (n, g), generator=gen).to(torch.int8).to(dev))
              for _ in range(count)]
    st = dict(in_features=k, group_size=GROUP_SIZE)
    old = K.dequantize(*states[0], runs=False, **st)
    new = K.dequantize(*states[0], **st)
    print(f"{n}x{k}: exact {torch.equal(old, new)} strides old {old.stride(0)} new {new.stride(0)}", flush=True)
    del old, new
    fns = {"per_weight": lambda s: K.dequantize(*s, runs=False, **st),
           "planes": lambda s: K.dequantize_planes(s[0], s[1], group_size=GROUP_SIZE, dtype=torch.bfloat16)}
    for t in tiles:
        fns[f"runs{t}"] = lambda s, t=t: R.dequantize_runs(*s, tile=t, **st)
    times = {name: [] for name in fns}
    for _ in range(3):
        for name, fn in fns.items():
            times[name].append(time_in_graph([lambda s=s, fn=fn: fn(s) for s in states[:4]]))
    for name, v in times.items():
        us = statistics.median(v)
        print(f"  {name:22s} {us:8.1f} us  {n * k * 2 / us / 1e6:5.2f} TB/s written", flush=True)
    del states
    torch.cuda.empty_cache()
