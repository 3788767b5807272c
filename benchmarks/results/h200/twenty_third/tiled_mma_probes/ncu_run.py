"""Run the shipped tiled mma kernel at 16384^2 for M = 16 then M = 2 (twice each) for ncu."""
import torch
from ternary.kernels.linear import triton_tiled_mma as tiled
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed

dev = torch.device("cuda")
n = k = 16384
G = 40
gen = torch.Generator().manual_seed(3)
p = random_packed(n, k, generator=gen).to(dev)
e = torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
t = tile_rows(p, e, G)
for m in (16, 16, 2, 2):
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    tiled.tiled_mma(x, *t, out_features=n, group_size=G)
torch.cuda.synchronize()
