"""GPU probe: int8-activation one-row forward (dp4a + shared trit table) against the shipped tiled kernel."""
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


def int8_call(x, t, n, G, tile=None, poison=True):
    return finish_splits(m.int8_gemv(x, *t, out_features=n, group_size=G, tile=tile, poison=poison), None, 16, x.dtype)


# correctness on odd shapes and every group size
for n, k, G in [(33, 1001, 40), (1000, 4099, 5), (257, 333, 10), (64, 3200, 20), (100, 2000, 80), (96, 4800, 160),
                (40, 9600, 320), (1, 7, 40), (4096, 4096, 40)]:
    gen = torch.Generator().manual_seed(n + k)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-128, 128, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev) if n < 4096 else \
        torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
    t = tile_rows(p, e, G)
    x = torch.randn(1, k, device=dev) * torch.exp(torch.randn(1, k, device=dev))
    steps = t[0].shape[1] // 2
    xw, xs = m.quantize(x, steps)
    q_ref, s_ref = m.reference_quantize(x, steps)
    q_got = torch.stack([(xw.view(-1, 2)[:, 0] << (24 - 8 * d)) >> 24 for d in range(4)] + [(xw.view(-1, 2)[:, 1] << 24) >> 24], 1).reshape(-1)
    quant_ok = torch.equal(q_got, q_ref) and torch.equal(xs, s_ref)
    w = dequant(p, e, k, G)
    xd = (q_ref.double().view(-1, 160) * s_ref.double()[:, None]).view(-1)[:k]
    want = w @ xd
    for tile in [None, (4, 4, 1), (2, 4, 4)]:
        y = m.int8_gemv(x, *t, out_features=n, group_size=G, tile=tile).sum(0)[0].double()
        fin = torch.isfinite(want)
        err = rel(y[fin], want[fin])
        print(f"check n={n} k={k} G={G} tile={tile} quant_exact={quant_ok} relerr_vs_fp64(quantized x)={err:.2e} "
              f"nonfinite_match={torch.equal(torch.isfinite(y), fin)}", flush=True)
    yq = int8_call(x.bfloat16(), t, n, G).double()
    print(f"  bf16 x: quantization error vs fp64 unquantized {rel(yq, w @ x.bfloat16()[0].double()):.2e}", flush=True)
    if n >= 64:
        pc = p.clone(); pc[5, 3] = 250
        tc = tile_rows(pc, e, G)
        y = m.int8_gemv(x, *tc, out_features=n, group_size=G).sum(0)[0]
        print("  corrupt byte -> NaN rows:", torch.nonzero(torch.isnan(y)).flatten().tolist(), flush=True)

for n, k in [(16384, 16384), (14336, 4096), (4096, 14336), (4096, 4096)]:
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
    exact = dequant(*states[0], k, G) @ x[0].double()
    y8 = int8_call(x, tiles[0], n, G)
    ys = tl_lin.forward_decode(x, *states[0], *tiles[0], None, in_features=k, group_size=G, bias_frac_bits=16)
    print(f"{n}x{k} accuracy vs fp64: int8 {rel(y8, exact):.2e}  shipped {rel(ys, exact):.2e}  bf16 {rel(F.linear(x, dense[0]), exact):.2e}", flush=True)
    fns = {"bf16": [lambda w=w: F.linear(x, w) for w in dense],
           "shipped": [lambda s=s, t=t: tl_lin.forward_decode(x, *s, *t, None, in_features=k, group_size=G,
                                                               bias_frac_bits=16) for s, t in zip(states, tiles)]}
    for tile in [(4, 4, 4), (4, 4, 3), (2, 4, 4), (4, 8, 2), (8, 4, 2)]:
        fns[f"int8{tile}"] = [lambda t=t, tile=tile: int8_call(x, t, n, G, tile) for t in tiles]
    fns["int8 nopoison"] = [lambda t=t: int8_call(x, t, n, G, None, False) for t in tiles]
    fns["quantize only"] = [lambda: m.quantize(x, tiles[0][0].shape[1] // 2)]
    fns["int8 kernel only"] = [lambda t=t, xw=m.quantize(x, tiles[0][0].shape[1] // 2): None for t in tiles]
    xw, xs = m.quantize(x, tiles[0][0].shape[1] // 2)
    steps = tiles[0][0].shape[1] // 2
    blocks = tiles[0][0].shape[0]
    row_blocks = triton.cdiv(blocks * 32, 512)
    from ternary.kernels.linear.triton_launch import even_splits, sm_count
    splits = even_splits(max(1, min(4 * sm_count(dev) // row_blocks, steps)), steps)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=dev)
    fns["int8 kernel only"] = [lambda t=t: m._int8_gemv_kernel[(row_blocks, splits)](
        xw, xs, t[0], t[1], ws, n, blocks * 32, t[0].shape[1], t[1].shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=G // 5, RPT=4, POISON=True, num_warps=4) for t in tiles]
    times = time_interleaved(fns, rounds=3, timer=time_in_graph)
    for name, ts in times.items():
        print(f"{n}x{k} M=1 {name:22s} {statistics.median(ts):8.1f} us  {paired_ratio(times['bf16'], ts):5.2f}x",
              flush=True)
    del states, tiles, dense
    torch.cuda.empty_cache()
