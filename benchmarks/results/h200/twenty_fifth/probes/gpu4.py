"""Session 25 probe 4: the final kernel (own-row read-back for warps without a ninth-block value), whole one-row
forward_decode calls at 16384^2 against bf16 cuBLAS in one process."""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
n = k = 16384
gen = torch.Generator().manual_seed(n * 7 + k)
groups = -(-k // G)
count = copies_for(n * -(-k // 5) + n * groups, dev)
states = [(random_packed(n, k, generator=gen).to(dev),
           torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
tiles = [tile_rows(p, e, G) for p, e in states]
dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
         for p, e in states[:copies_for(n * k * 2, dev)]]
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
kw = dict(in_features=k, group_size=G, bias_frac_bits=0)
fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
       "forward_decode": [lambda s=s, t=t: kernels.forward_decode(x, *s, *t, None, **kw) for s, t in zip(states, tiles)]}
times = time_interleaved(fns, rounds=5, timer=time_in_graph)
for name, ts in times.items():
    print(f"{n}x{k} M=1 {name:14s} {statistics.median(ts):7.2f} us {paired_ratio(times['bf16'], ts):5.2f}x", flush=True)
