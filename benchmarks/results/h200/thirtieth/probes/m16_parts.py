"""16384^2 M = 16 (and M = 8): the forward over the decode layout split into its kernels, each timed alone in a CUDA
graph over rotating layers: the activation fragments, fragments + the mma.sync kernel, the split sum with the bias,
and the whole call; cuBLAS alongside."""
import torch
import torch.nn.functional as F
from benchmarks.kernels import copies_for, time_in_graph
from ternary.kernels.linear import triton as kernels
from ternary.kernels.linear import triton_tiled_mma as tm
from ternary.kernels.linear.triton_launch import finish_splits
from ternary.state.decode_state import tile_rows
from ternary.state.packing import random_packed

G, n, k = 40, 16384, 16384
gen = torch.Generator().manual_seed(3)
groups = -(-k // G)
count = copies_for(n * -(-k // 5) + n * groups, torch.device("cuda"))
layers = []
for _ in range(count):
    p = random_packed(n, k, generator=gen).cuda()
    e = torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).cuda()
    layers.append((p, e, *tile_rows(p, e, G)))
bias = torch.randint(-1000, 1000, (n, ), dtype=torch.int32, device="cuda")
dense = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(n * k * 2, torch.device("cuda")))]
for m in (16, 8):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    steps = layers[0][2].shape[1] * tm.CHUNK_BYTES // tm.STEP_BYTES
    ws = tm.tiled_mma(x, layers[0][2], layers[0][3], out_features=n, group_size=G)
    parts = {
        "cublas": [lambda w=w: F.linear(x, w) for w in dense],
        "fragments": [lambda: tm.fragments(x, steps)],
        "fragments+mma": [lambda l=l: tm.tiled_mma(x, l[2], l[3], out_features=n, group_size=G) for l in layers],
        "finish": [lambda: finish_splits(ws, bias, 16, x.dtype)],
        "whole": [lambda l=l: kernels.forward_decode(x, l[0], l[1], l[2], l[3], bias, in_features=k, group_size=G,
                                                     bias_frac_bits=16) for l in layers],
    }
    print(f"M={m} splits={ws.shape[0]} ws={ws.numel() * 4 / 1e6:.1f} MB: " +
          "  ".join(f"{name} {time_in_graph(calls):.1f}us" for name, calls in parts.items()), flush=True)
