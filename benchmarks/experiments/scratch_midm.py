"""Scratch sweep: mid-M fused forward (one async dot per step) vs the shipped forward."""
import sys, torch, torch.nn.functional as F
from benchmarks.kernels import GROUP_SIZE, copies_for, relative_rms, time_in_graph
from ternary.kernels.linear import triton as kernels
from ternary.state.packing import random_packed, unpack
import onedot2

TILES = [(64, 128, 32, 4, 3, 8), (64, 64, 16, 4, 4, 8), (64, 128, 16, 4, 3, 8), (128, 128, 32, 8, 3, 8),
         (128, 64, 32, 4, 3, 8), (128, 128, 16, 8, 3, 8), (64, 128, 32, 4, 2, 8), (64, 256, 32, 8, 3, 8),
         (128, 256, 32, 8, 3, 8), (64, 128, 32, 4, 3, 4)]
SHAPES = [(16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096)]
ROWS = [int(r) for r in sys.argv[1].split(",")] if len(sys.argv) > 1 else [48, 64, 96, 128, 192, 256]
dev = torch.device("cuda")
print(torch.cuda.get_device_name(0), flush=True)
gen = torch.Generator().manual_seed(0)
for n, k in SHAPES:
    g = -(-k // GROUP_SIZE)
    count = copies_for(n * -(-k // 5) + n * g, dev)
    states = [(random_packed(n, k, generator=gen).to(dev),
               torch.randint(-4, 2, (n, g), generator=gen).to(torch.int8).to(dev)) for _ in range(count)]
    w = unpack(states[0][0], k).to(torch.bfloat16) * torch.exp2(states[0][1].float()).repeat_interleave(
        GROUP_SIZE, 1)[:, :k].bfloat16()
    dense = [w] + [torch.empty_like(w) for _ in range(copies_for(n * k * 2, dev) - 1)]
    for m in ROWS:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        want = F.linear(x, w)
        base = time_in_graph([lambda d=d: F.linear(x, d) for d in dense])
        static = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
        ship = time_in_graph([lambda s=s: kernels.forward(x, *s, None, **static) for s in states])
        fused = time_in_graph([lambda s=s: kernels.forward_fused(x, *s, None, **static) for s in states])
        print(f"{n}x{k} M={m} cublas {base:8.1f} us | shipped {ship:8.1f} us {base / ship:5.2f}x | 5-dot fused "
              f"{fused:8.1f} us {base / fused:5.2f}x", flush=True)
        for tile in TILES:
            try:
                got = onedot2.one_forward(x, *states[0], in_features=k, group_size=GROUP_SIZE, tile=tile)
                err = relative_rms(got, want)
                rows, kbp = -(-m // tile[0]) * tile[0], -(-states[0][0].shape[1] // tile[2]) * tile[2]
                xp = onedot2.permuted_x(x, rows, kbp, tile[2])
                t = time_in_graph([lambda s=s: onedot2.one_forward(x, *s, in_features=k, group_size=GROUP_SIZE,
                                                                   tile=tile, xp=xp) for s in states])
                print(f"{n}x{k} M={m} onedot {tile} {t:8.1f} us {base / t:5.2f}x err {err:.1e}", flush=True)
            except Exception as exc:  # noqa
                print(f"{n}x{k} M={m} onedot {tile} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)

import twodot
from benchmarks.kernels import time_with_events
for n, k, m in [(16384, 16384, 2048), (4096, 4096, 2048), (4096, 4096, 128), (16384, 16384, 128)]:
    g = -(-k // GROUP_SIZE)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-4, 2, (n, g), generator=gen).to(torch.int8).to(dev)
    w = unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k].bfloat16()
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    want = F.linear(x, w)
    base = time_with_events(lambda: F.linear(x, w), repeats=9)
    print(f"{n}x{k} M={m} cublas {base:8.1f} us", flush=True)
    for tile in [(128, 128, 32, 8, 3, 8), (128, 128, 16, 8, 4, 8), (64, 128, 32, 4, 3, 8), (128, 256, 32, 8, 3, 8),
                 (128, 128, 32, 8, 3, 0), (256, 128, 32, 8, 3, 8), (128, 128, 64, 8, 3, 8)]:
        try:
            got = twodot.two_forward(x, p, e, group_size=GROUP_SIZE, tile=tile)
            err = relative_rms(got, want)
            bm, bb = tile[0], tile[2]
            xp = twodot.two_x(x, -(-m // bm) * bm, -(-p.shape[1] // bb) * bb, bb)
            t = time_with_events(lambda: twodot.two_forward(x, p, e, group_size=GROUP_SIZE, tile=tile, xp=xp),
                                 repeats=9)
            print(f"{n}x{k} M={m} twodot {tile} {t:8.1f} us {base / t:5.2f}x err {err:.1e}", flush=True)
        except Exception as exc:  # noqa
            print(f"{n}x{k} M={m} twodot {tile} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
