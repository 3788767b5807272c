"""The staged Gluon run decode (gluon_decode.py) against the shipped one: bit for bit on odd shapes (G = 20, 40,
60; K = 1001, 4099; a corrupt byte), then time_in_graph in turns (5 rounds, three rotating layers) at the
benchmark's shapes, with the plain coalesced store as the ceiling."""
import statistics
import sys
import pathlib

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from gluon_decode import dequantize_runs_staged  # noqa: E402
from gluon_flat import dequantize_runs_flat  # noqa: E402
from benchmarks.kernels import time_in_graph, time_interleaved  # noqa: E402
from ternary.kernels.linear import triton_run_decode as shipped  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402


@triton.jit
def plain_store(out, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.full([BLOCK], 0x3F803F80, tl.int32), mask=offs < n)


def layer(n, k, g, seed):
    gen = torch.Generator().manual_seed(seed)
    return (random_packed(n, k, generator=gen).cuda(),
            torch.randint(-128, 127, (n, -(-k // g)), generator=gen).to(torch.int8).cuda())


bad = 0
for n, k, g, block_r in ((37, 1001, 40, None), (5, 4099, 20, None), (64, 1001, 60, 32), (3, 40, 40, None),
                         (300, 4096, 40, None), (17, 16384, 40, None), (9, 14336, 20, 128)):
    p, e = layer(n, k, g, n * k)
    p[n // 2, p.shape[1] // 3] = 250
    ref = shipped.dequantize_runs(p, e, in_features=k, group_size=g)
    got = dequantize_runs_staged(p, e, in_features=k, group_size=g, block_r=block_r)
    flat = dequantize_runs_flat(p, e, in_features=k, group_size=g)
    pad = flat.as_strided((n, flat.stride(0) - k), (flat.stride(0), 1), k)
    same = torch.equal(ref.view(torch.int16), got.view(torch.int16)) and torch.equal(
        ref.view(torch.int16), flat.view(torch.int16)) and bool((pad == 0).all())
    bad += not same
    print(f"check {n}x{k} G={g} block_r={block_r}: {'equal' if same else 'DIFFERENT'} "
          f"(NaN columns {int(got.isnan().sum())})", flush=True)
print("all equal" if bad == 0 else f"{bad} DIFFER", flush=True)

G = 40
for n, k in ((14336, 4096), (4096, 14336), (16384, 16384), (4096, 4096)):
    states = [layer(n, k, G, i) for i in range(3)]
    bufs = [torch.empty(n, shipped.round_up(shipped.round_up(k, 40), 64), dtype=torch.bfloat16, device="cuda")
            for _ in range(3)]
    calls = {"shipped": [lambda s=s: shipped.dequantize_runs(*s, in_features=k, group_size=G) for s in states]}
    for name, flags in (("flat", {"EVICT": True, "LOADS": True}), ("flat_noevict", {"EVICT": False, "LOADS": True}), ("flat_noloads", {"LOADS": False, "EVICT": True}),
                        ("flat_noloads_noevict", {"LOADS": False, "EVICT": False})):
        calls[name] = [lambda s=s, f=flags: dequantize_runs_flat(*s, in_features=k, group_size=G, block_r=64, **f)
                       for s in states]
    calls["plain"] = [lambda b=b: plain_store[(triton.cdiv(b.numel() // 2, 1024),)](
        b.view(torch.int32), b.numel() // 2, BLOCK=1024, num_warps=8) for b in bufs]
    times = time_interleaved(calls, rounds=5, timer=time_in_graph)
    for name, t in times.items():
        us = statistics.median(t)
        print(f"{n}x{k} {name:>12} {us:8.1f} us  {bufs[0].numel() * 2 / us / 1e6:5.2f} TB/s  "
              f"rounds {[round(x, 1) for x in t]}", flush=True)
    del states, bufs
    torch.cuda.empty_cache()
