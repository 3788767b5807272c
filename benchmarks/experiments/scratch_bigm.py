"""Scratch sweep: large-M fused forward vs cuBLAS vs the shipped two-step (one card)."""
import sys, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from benchmarks.kernels import GROUP_SIZE, relative_rms, time_with_events
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear.triton_base3 import digit_planes
from ternary.state.packing import random_packed, unpack
import bigm

TILES = [  # bm, bn, bb, warps, stages, swap, group_m
    (128, 128, 32, 8, 3, True, 8), (128, 128, 32, 8, 4, True, 8), (128, 128, 64, 8, 3, True, 8),
    (128, 128, 32, 8, 3, False, 8), (128, 256, 32, 8, 3, False, 8), (64, 128, 32, 4, 3, True, 8),
    (128, 64, 32, 4, 3, True, 8), (256, 128, 32, 8, 3, False, 8), (128, 128, 16, 8, 4, True, 8),
]
CASES = [(16384, 16384, 2048), (4096, 14336, 2048), (14336, 4096, 2048), (4096, 4096, 2048), (16384, 16384, 8192),
         (4096, 4096, 8192)]
if len(sys.argv) > 1:
    CASES = CASES[: int(sys.argv[1])]
dev = torch.device("cuda")
print(torch.cuda.get_device_name(0), flush=True)
gen = torch.Generator().manual_seed(0)
for n, k, m in CASES:
    g = -(-k // GROUP_SIZE)
    p = random_packed(n, k, generator=gen).to(dev)
    e = torch.randint(-4, 2, (n, g), generator=gen).to(torch.int8).to(dev)
    w = (unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k].bfloat16())
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    want = F.linear(x, w)
    base = time_with_events(lambda: F.linear(x, w), repeats=9)
    flops = 2 * m * n * k
    print(f"{n}x{k} M={m} cublas {base:9.1f} us {flops / base / 1e6:6.0f} TF/s", flush=True)
    ship = time_with_events(lambda: kernels.forward(x, p, e, None, in_features=k, group_size=GROUP_SIZE,
                                                    bias_frac_bits=16), repeats=9)
    print(f"{n}x{k} M={m} shipped {ship:9.1f} us {base / ship:5.2f}x", flush=True)
    for bb in (32, 64):
        kbp = -(-p.shape[1] // bb) * bb
        t = time_with_events(lambda: digit_planes(x, m, kbp, bb, z_form=False, dtype=torch.bfloat16,
                                                  blocked=False), repeats=9)
        print(f"{n}x{k} M={m} regroup bb={bb} {t:9.1f} us {4 * m * k / t / 1e6:6.0f} GB/s", flush=True)
    for tile in TILES:
        for xdirect in (False, True):
            if xdirect and tile[2] != 32:
                continue
            try:
                got = bigm.big_forward(x, p, e, in_features=k, group_size=GROUP_SIZE, tile=tile, xdirect=xdirect)
                err = relative_rms(got, want)
                kbp = -(-p.shape[1] // tile[2]) * tile[2]
                planes = None if xdirect else digit_planes(x, -(-m // tile[0]) * tile[0], kbp, tile[2],
                                                           z_form=False, dtype=torch.bfloat16, blocked=False)
                t = time_with_events(lambda: bigm.big_forward(x, p, e, in_features=k, group_size=GROUP_SIZE,
                                                              tile=tile, xdirect=xdirect, planes=planes), repeats=9)
                print(f"{n}x{k} M={m} fused {tile} direct={xdirect} kernel {t:9.1f} us {base / t:5.2f}x "
                      f"err {err:.1e}", flush=True)
            except Exception as exc:  # noqa
                print(f"{n}x{k} M={m} fused {tile} direct={xdirect} FAILED {type(exc).__name__}: {str(exc)[:200]}",
                      flush=True)
