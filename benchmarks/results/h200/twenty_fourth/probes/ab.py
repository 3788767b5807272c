"""Final code, same process: whole one-row forward_decode calls, the LUT kernel (default dispatch) against the
shuffle GEMV (its default tile forced) and bf16 cuBLAS, at the four benchmark shapes."""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels, triton_tiled_gemv as tg
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
SHUFFLE = (tg.TILED_ROWS_PER_LANE, tg.TILED_WARPS, tg.TILED_PROGRAMS_PER_SM)
for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
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
    fns = {"bf16 F.linear": [lambda w=w: F.linear(x, w) for w in dense],
           "forward_decode (default)": [lambda s=s, t=t: kernels.forward_decode(x, *s, *t, None, **kw)
                                        for s, t in zip(states, tiles)],
           "shuffle GEMV forced": [lambda s=s, t=t: kernels.forward_decode(x, *s, *t, None, tile=SHUFFLE, **kw)
                                   for s, t in zip(states, tiles)]}
    a = kernels.forward_decode(x, *states[0], *tiles[0], None, **kw).double()
    b = kernels.forward_decode(x, *states[0], *tiles[0], None, tile=SHUFFLE, **kw).double()
    print(f"{n}x{k}: default vs shuffle relative difference {float((a - b).norm() / b.norm()):.2e}", flush=True)
    times = time_interleaved(fns, rounds=5, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:26s} {statistics.median(ts):7.1f} us {paired_ratio(times['bf16 F.linear'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
