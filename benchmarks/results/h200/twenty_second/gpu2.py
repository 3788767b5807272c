"""GPU probe 2: int8 one-row forward with split dp4a chains."""
import statistics, sys
sys.path.insert(0, "scratch/int8")
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import int8_gemv as m

dev = torch.device("cuda")


def dequant(p, e, k, G):
    return unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(G, 1)[:, :k]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def int8_call(x, t, n, G, **kw):
    return finish_splits(m.int8_gemv(x, *t, out_features=n, group_size=G, **kw), None, 16, x.dtype)


VARIANTS = {"c2": dict(chains=2), "c4": dict(chains=4), "c2 t443": dict(chains=2, tile=(4, 4, 3)),
            "c4 t443": dict(chains=4, tile=(4, 4, 3)), "c2 t442": dict(chains=2, tile=(4, 4, 2)),
            "c4 r128": dict(chains=4, maxnreg=128), "c2 r128": dict(chains=2, maxnreg=128),
            "c4 t282": dict(chains=4, tile=(2, 8, 2)), "c4 t244": dict(chains=4, tile=(2, 4, 4))}
for n, k, G in [(33, 1001, 40), (1000, 4099, 5), (257, 333, 10), (64, 3200, 20), (100, 2000, 80), (96, 4800, 160),
                (40, 9600, 320), (1, 7, 40)]:
    gen = torch.Generator().manual_seed(n + k)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-30, 10, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
    t = tile_rows(p, e, G)
    x = torch.randn(1, k, device=dev) * torch.exp(torch.randn(1, k, device=dev))
    steps = t[0].shape[1] // 2
    xw, xs = m.quantize(x, steps)
    q_ref, s_ref = m.reference_quantize(x, steps)
    q_got = torch.stack([(xw.view(-1, 2)[:, 0] << (24 - 8 * d)) >> 24 for d in range(4)] + [(xw.view(-1, 2)[:, 1] << 24) >> 24], 1).reshape(-1)
    want = dequant(p, e, k, G) @ (q_ref.double().view(-1, 160) * s_ref.double()[:, None]).view(-1)[:k]
    errs = {name: rel(m.int8_gemv(x, *t, out_features=n, group_size=G, **kw).sum(0)[0], want) for name, kw in VARIANTS.items()}
    print(f"check n={n} k={k} G={G} quant_exact={torch.equal(q_got, q_ref) and torch.equal(xs, s_ref)} worst relerr "
          f"{max(errs.values()):.2e}", flush=True)

for n, k in [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]:
    G = 40
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda s=s, t=t: tl_lin.forward_decode(x, *s, *t, None, in_features=k, group_size=G,
                                                               bias_frac_bits=16) for s, t in zip(states, tiles)]}
    for name, kw in VARIANTS.items():
        fns[name] = [lambda t=t, kw=kw: int8_call(x, t, n, G, **kw) for t in tiles]
    xw, xs = m.quantize(x, tiles[0][0].shape[1] // 2)
    fns["kernel only c4"] = [lambda t=t: m.int8_gemv(x, *t, out_features=n, group_size=G, chains=4) for t in tiles]
    fns["quantize only"] = [lambda: m.quantize(x, tiles[0][0].shape[1] // 2)]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
