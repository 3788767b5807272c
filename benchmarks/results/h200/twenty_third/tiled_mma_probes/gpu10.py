"""GPU check: the review-mended kernel equals the committed d9382be kernel bit for bit."""
import sys
sys.path.insert(0, "scratch/tmma")
import torch
from ternary.kernels.linear import triton_tiled_mma as new
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed
import tmma_d938 as old

dev = torch.device("cuda")
TILES = [(8, 2), (4, 2), (8, 1), (4, 3), (2, 1), (8, 0)]
for n, k, g, m in [(1000, 4099, 40, 16), (257, 999, 80, 9), (100, 3000, 320, 5), (33, 333, 40, 2), (64, 200, 40, 3),
                   (4096, 4096, 40, 8), (300, 161, 40, 11)]:
    p = random_packed(n, k).to(dev)
    e = torch.randint(-128, 128, (n, -(-k // g))).to(torch.int8).to(dev)
    p[5, 3] = 250
    t = tile_rows(p, e, g)
    x = torch.randn(m, k, device=dev).bfloat16()
    same = [torch.equal(torch.nan_to_num(new.tiled_mma(x, *t, out_features=n, group_size=g, tile=v), 7.0),
                        torch.nan_to_num(old.tiled_mma(x, *t, out_features=n, group_size=g, tile=v), 7.0)) for v in TILES]
    print(f"n={n} k={k} g={g} m={m}: bit-equal {all(same)} {same}", flush=True)
