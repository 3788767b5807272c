"""Small launches of the shared-memory kernels for compute-sanitizer (racecheck / synccheck)."""
import sys
import torch
from ternary.kernels.linear import triton_lut_gemv as lut
from ternary.kernels.linear import triton_tiled_mma as tmma
from ternary.state.decode_state import tile_rows

which = sys.argv[1] if len(sys.argv) > 1 else "all"
gen = torch.Generator().manual_seed(0)
n, k, g = 1024, 4099, 40
packed = torch.randint(0, 243, (n, -(-k // 5)), generator=gen).to(torch.uint8)
exponents = torch.randint(-4, 4, (n, -(-k // g)), generator=gen).to(torch.int8)
T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
if which in ("all", "lut"):
    for sms in (1, 3, None):
        if sms is not None:
            lut.sm_count = lambda device, _s=sms: _s
        x = torch.randn(1, k, generator=gen).cuda()
        ws = lut.lut_gemv(x, T_tiles, E_tiles, out_features=n, group_size=g, tile=(2,))
        torch.cuda.synchronize()
        print("lut sms", sms, "splits", ws.shape[0], "finite", bool(torch.isfinite(ws).all()))
if which in ("all", "tmma"):
    for m in (2, 16):
        x = torch.randn(m, k, generator=gen).to(torch.bfloat16).cuda()
        ws = tmma.tiled_mma(x, T_tiles, E_tiles, out_features=n, group_size=g)
        torch.cuda.synchronize()
        print("tiled_mma m", m, "shape", tuple(ws.shape), "finite", bool(torch.isfinite(ws).all()))
