"""GPU probe 3: int8 one-row forward, variant B (LDS.32 table + SWAR digit 4) against A and the shipped kernel."""
import statistics, sys
sys.path.insert(0, "scratch/int8")
import torch, torch.nn.functional as F, triton
from benchmarks.kernels import time_in_graph, time_interleaved, paired_ratio, copies_for
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed, unpack
import int8_gemv as ma
import int8_swar as mb

dev = torch.device("cuda")


def dequant(p, e, k, G):
    return unpack(p, k).double() * torch.exp2(e.double()).repeat_interleave(G, 1)[:, :k]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def b_call(x, t, n, G, **kw):
    return finish_splits(mb.swar_gemv(x, *t, out_features=n, group_size=G, **kw), None, 16, x.dtype)


VARIANTS = {"B t444": dict(tile=(4, 4, 4)), "B t445": dict(tile=(4, 4, 5)), "B t443": dict(tile=(4, 4, 3)),
            "B t446 r80": dict(tile=(4, 4, 6), maxnreg=80), "B t842": dict(tile=(8, 4, 2)),
            "B t482": dict(tile=(4, 8, 2)), "B t244": dict(tile=(2, 4, 4)), "B t248": dict(tile=(2, 4, 8))}
if "ncu" not in sys.argv:
    for n, k, G in [(33, 1001, 40), (64, 3200, 20), (100, 2000, 80), (96, 4800, 160), (40, 9600, 320), (1, 7, 40),
                    (1000, 4099, 40)]:
        gen = torch.Generator().manual_seed(n + k)
        p = random_packed(n, k, generator=gen).to(dev)
        e = torch.randint(-30, 10, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
        t = tile_rows(p, e, G)
        x = torch.randn(1, k, device=dev) * torch.exp(torch.randn(1, k, device=dev))
        steps = t[0].shape[1] // 2
        q_ref, s_ref = ma.reference_quantize(x, steps)
        want = dequant(p, e, k, G) @ (q_ref.double().view(-1, 160) * s_ref.double()[:, None]).view(-1)[:k]
        errs = {name: rel(mb.swar_gemv(x, *t, out_features=n, group_size=G, **kw).sum(0)[0], want)
                for name, kw in VARIANTS.items()}
        msg = ""
        if n >= 64:
            pc = p.clone(); pc[5, 3] = 250; pc[n - 1, -1] = 243
            y = mb.swar_gemv(x, *tile_rows(pc, e, G), out_features=n, group_size=G).sum(0)[0]
            msg = f"corrupt -> NaN rows {torch.nonzero(torch.isnan(y)).flatten().tolist()}"
        print(f"check n={n} k={k} G={G} worst relerr {max(errs.values()):.2e} {msg}", flush=True)

shapes = [(16384, 16384)] if "ncu" in sys.argv else [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
for n, k in shapes:
    G = 40
    gen = torch.Generator().manual_seed(n * 7 + k)
    groups = -(-k // G)
    count = 2 if "ncu" in sys.argv else copies_for(n * -(-k // 5) + n * groups, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    tiles = [tile_rows(p, e, G) for p, e in states]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    if "ncu" in sys.argv:
        for t in tiles:
            tl_lin.forward_decode(x, *states[0], *t, None, in_features=k, group_size=G, bias_frac_bits=16)
            ma.int8_gemv(x, *t, out_features=n, group_size=G, tile=(4, 4, 3))
            mb.swar_gemv(x, *t, out_features=n, group_size=G)
        torch.cuda.synchronize()
        break
    dense = [(unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(G, 1)[:, :k].bfloat16())
             for p, e in states[:copies_for(n * k * 2, dev)]]
    exact = dequant(*states[0], k, G) @ x[0].double()
    print(f"{n}x{k} accuracy vs fp64 (unquantized x): B {rel(b_call(x, tiles[0], n, G), exact):.2e} "
          f"bf16 {rel(F.linear(x, dense[0]), exact):.2e}", flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda s=s, t=t: tl_lin.forward_decode(x, *s, *t, None, in_features=k, group_size=G,
                                                               bias_frac_bits=16) for s, t in zip(states, tiles)],
           "A t443": [lambda t=t: finish_splits(ma.int8_gemv(x, *t, out_features=n, group_size=G, tile=(4, 4, 3)),
                                                None, 16, x.dtype) for t in tiles]}
    for name, kw in VARIANTS.items():
        fns[name] = [lambda t=t, kw=kw: b_call(x, t, n, G, **kw) for t in tiles]
    fns["B no finish"] = [lambda t=t: mb.swar_gemv(x, *t, out_features=n, group_size=G) for t in tiles]
    fns["B quantize"] = [lambda: mb.quantize(x, tiles[0][0].shape[1] // 2, G)]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
