"""The shipped one-row LUT forward at 16384^2 (large tile) twice, for ncu's stall reasons."""
import torch
from ternary.kernels.linear import triton_lut_gemv as lut
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed

dev = torch.device("cuda")
n = k = 16384
G = 40
gen = torch.Generator().manual_seed(3)
p = random_packed(n, k, generator=gen).to(dev)
e = torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
t = tile_rows(p, e, G)
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
for _ in range(2):
    lut.lut_gemv(x, *t, out_features=n, group_size=G)
torch.cuda.synchronize()
