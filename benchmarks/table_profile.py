"""One 16384^2 M = 1 forward through the table kernel (``ncu`` target; tile from argv)."""

from __future__ import annotations

import sys

import torch

from ternary.kernels.linear.triton_table import table_forward_partials
from ternary.state.packing import random_packed

n = k = 16384
block_n, table_b, warps = (int(v) for v in sys.argv[1:4])
gen = torch.Generator().manual_seed(0)
packed = random_packed(n, k, generator=gen).cuda()
exponents = torch.randint(-4, 2, (n, -(-k // 40)), generator=gen).to(torch.int8).cuda()
x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
for _ in range(4):
    table_forward_partials(x, packed, exponents, in_features=k, group_size=40, block_n=block_n, table_b=table_b,
                           num_warps=warps)
torch.cuda.synchronize()
