"""GPU probe: the tiled forward with and without programmatic dependent launch, bf16 cuBLAS in the same process."""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for, with_constants
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear import triton_tiled_gemv as tg
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    st = dict(in_features=k, group_size=G, bias_frac_bits=16)

    def call(s, t, pdl):
        return with_constants(tg, lambda: tl_lin.forward_decode(x, *s, *t, None, **st), TILED_PDL=pdl)

    a, b = call(states[0], tiles[0], True), call(states[0], tiles[0], False)
    print(n, k, "pdl output equal:", torch.equal(a, b), flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "tiled_pdl": [lambda s=s, t=t: call(s, t, True) for s, t in zip(states, tiles)],
           "tiled_plain": [lambda s=s, t=t: call(s, t, False) for s, t in zip(states, tiles)]}
    times = time_interleaved(fns, rounds=5, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:12s} {statistics.median(ts):8.2f} us  {paired_ratio(times['bf16'], ts):5.2f}x  "
              f"rounds {[round(t, 2) for t in ts]}", flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
