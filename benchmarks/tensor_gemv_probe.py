"""Experiment (commit only): the tensor-core M = 1 forward (triton_tensor_gemv) against the GEMV and bf16 on one card.

    python -m benchmarks.tensor_gemv_probe check           # bit-exact single columns, NaN rows
    python -m benchmarks.tensor_gemv_probe time "(128,4,2,2)"   # (BLOCK_N, warps, splits, stages[, independent])
"""
import sys, torch, torch.nn.functional as F
from benchmarks.kernels import GROUP_SIZE, copies_for, naive_forward, relative_rms, time_in_graph
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_tensor_gemv as tg
from ternary.state.packing import byte_to_trits_table, random_packed, unpack

dev = torch.device("cuda")
print(torch.cuda.get_device_name(0), flush=True)
gen = torch.Generator().manual_seed(0)
table = byte_to_trits_table(dev)

def fwd(x, p, e, k, tile=None, gs=GROUP_SIZE):
    ind = tile is not None and len(tile) == 5
    tile = tile[:4] if ind else tile
    return kernels._finish(tg.partial_sums(x, p, e, in_features=k, group_size=gs, tile=tile, independent=ind), None, 16, x.dtype)

def exact(n, k, gs, tile=None):
    p = random_packed(n, k, generator=gen).to(dev)
    g = -(-k // gs)
    e = torch.randint(-30, 30, (n, g), generator=gen).to(torch.int8).to(dev)
    e[0, 0] = -128; e[1 % n, 0] = 100; e[2 % n, 0] = -127
    w = unpack(p, k).float() * torch.exp2(e.float()).repeat_interleave(gs, 1)[:, :k]
    bad = 0
    for col in torch.randperm(k, generator=gen)[:6].tolist() + [0, k - 1]:
        x = torch.zeros(1, k, device=dev, dtype=torch.bfloat16); x[0, col] = 1
        y = fwd(x, p, e, k, tile, gs).float()
        want = w[:, col].bfloat16().float()
        bad += int(((y[0] != want) & ~(torch.isnan(y[0]) & torch.isnan(want))).sum())
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    ref = (x.float() @ w.T)
    err = relative_rms(fwd(x, p, e, k, tile, gs).float(), ref)
    p2 = p.clone(); p2[2 % n, -1] = 250
    y2 = fwd(x, p2, e, k, tile, gs)
    nan_rows = torch.isnan(y2[0]).nonzero().flatten().tolist()
    print(f"exact {n}x{k} G={gs} tile={tile}: single-column mismatches {bad}, random-x rel err {err:.2e}, "
          f"NaN rows with row {2 % n} corrupt: {nan_rows}", flush=True)

if sys.argv[1] == "check":
    for n, k, gs in ((300, 333, 40), (17, 1001, 40), (4096, 4096, 40), (257, 40, 40), (1000, 777, 10), (64, 1234, 5),
                     (5000, 3000, 80)):
        exact(n, k, gs)
    exact(4096, 4096, 40, (64, 4, 4))
    exact(4096, 4096, 40, (256, 8, 3))
    sys.exit(0)

tiles = [eval(a) for a in sys.argv[2:]]
for n, k in ((16384, 16384), (4096, 14336))[:int(__import__('os').environ.get('SHAPES', '2'))]:
    g = -(-k // GROUP_SIZE)
    count = copies_for(n * -(-k // 5) + n * g, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, g), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    dense = [unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k].bfloat16()
             for p, e in states[:copies_for(n * k * 2, dev)]]
    static = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    want = naive_forward(x, table, *states[0], k, GROUP_SIZE)
    base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
    print(f"{n:>5}x{k:<6} {'bf16':>28} {base:9.1f}", flush=True)
    def row(name, fn):
        try:
            err = relative_rms(fn(*states[0]), want)
            us = time_in_graph([lambda s=s: fn(*s) for s in states])
            print(f"{n:>5}x{k:<6} {name:>28} {us:9.1f} {base / us:7.2f} {err:9.2e}", flush=True)
        except Exception as exc:
            print(f"{n:>5}x{k:<6} {name:>28} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    row("shipped", lambda p, e: kernels.forward(x, p, e, None, **static))
    for tile in tiles:
        row(f"tc {tile}", lambda p, e, tile=tile: fwd(x, p, e, k, tile))
    del states, dense
    torch.cuda.empty_cache()
