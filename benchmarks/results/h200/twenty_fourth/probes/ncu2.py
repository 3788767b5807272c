import sys
sys.path.insert(0, "scratch/lut")
import torch
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed
import lut
dev = torch.device("cuda")
n = k = 16384
G = 40
gen = torch.Generator().manual_seed(3)
p = random_packed(n, k, generator=gen).to(dev)
e = torch.randint(-4, 2, (n, -(-k // G)), generator=gen).to(torch.int8).to(dev)
t = tile_rows(p, e, G)
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
for tile in [(2, 4, 8, 2), (4, 2, 4, 3)]:
    lut.lut_gemv(x, *t, out_features=n, group_size=G, tile=tile)
torch.cuda.synchronize()
