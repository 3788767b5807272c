"""Session 25 probe 3: where the in-kernel-table LUT kernel starts to beat the shuffle GEMV (smaller layers),
whole forward_decode calls in one process, one and two programs per SM."""
import statistics
import torch, torch.nn.functional as F
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as kernels, triton_tiled_gemv as tg
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack

dev = torch.device("cuda")
G = 40
SHUFFLE = (tg.TILED_ROWS_PER_LANE, tg.TILED_WARPS, tg.TILED_PROGRAMS_PER_SM)
for n, k in [(1024, 1024), (2048, 2048), (1024, 4096), (4096, 1024), (2048, 8192), (8192, 2048), (4096, 4096),
             (8192, 8192)]:
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
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense]}
    for name, tile in [("lut 1/SM", (1,)), ("lut 2/SM", (2,)), ("shuffle", SHUFFLE)]:
        fns[name] = [lambda s=s, t=t, tile=tile: kernels.forward_decode(x, *s, *t, None, tile=tile, **kw)
                     for s, t in zip(states, tiles)]
    times = time_interleaved(fns, rounds=5, timer=time_in_graph)
    mb = tiles[0][0].numel() / 2**20
    for name, ts in times.items():
        print(f"{n}x{k} ({mb:.2f} MiB) M=1 {name:10s} {statistics.median(ts):7.2f} us "
              f"{paired_ratio(times['bf16'], ts):5.2f}x", flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
