"""GPU probe: host time of each piece of one eager one-row forward of a DecodeLinearState (16384^2)."""
import time
import torch
import torch.utils._pytree as pytree
import triton
from ternary import DecodeLinearState, LinearState, linear
from ternary.kernels.linear import triton as tl_lin
from ternary.kernels.linear import triton_tiled_gemv as tg
from ternary.kernels.linear.triton_launch import even_splits, finish_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import build_tables
from ternary.kernels.registry import implementation, resolve
from ternary.state.decode_state import check_tiles

dev = torch.device("cuda")
n = k = 16384
layer = pytree.tree_map(lambda t: t.to(dev), LinearState.random(k, n, generator=torch.Generator().manual_seed(0)))
d = DecodeLinearState.from_layer(layer)
x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
blocks, chunks = d.T_tiles.shape[:2]
steps = chunks // 2
row_blocks = triton.cdiv(blocks * 32, 4 * 128)
splits = even_splits(max(1, min(4 * sm_count(dev) // row_blocks, steps)), steps)
tables = build_tables(x, steps * 32)
ws = torch.empty((splits, 1, n), dtype=torch.float32, device=dev)


def gemv():
    tg._tiled_gemv_kernel[(row_blocks, splits)](tables, d.T_tiles, d.E_tiles, ws, n, blocks * 32, chunks,
                                                d.E_tiles.shape[1], steps, ws.stride(0), triton.cdiv(steps, splits),
                                                BYTES_PER_GROUP=8, RPT=4, num_warps=4)


pieces = {
    "check_tiles": lambda: check_tiles(d.T_tiles, d.E_tiles, n, k, 40, "x"),
    "_check (layer tensors)": lambda: tl_lin._check("forward", x, d.T_packed, d.E, k, 40, k, "in_features", d.bias),
    "gluon_runs": lambda: tl_lin.gluon_runs(x),
    "sm_count + even_splits": lambda: even_splits(max(1, min(4 * sm_count(dev) // row_blocks, steps)), steps),
    "torch.empty ws": lambda: torch.empty((splits, 1, n), dtype=torch.float32, device=dev),
    "build_tables (alloc + launch)": lambda: build_tables(x, steps * 32),
    "GEMV launch": gemv,
    "finish_splits (alloc + launch)": lambda: finish_splits(ws, d.bias, 16, x.dtype),
    "tiled_gemv (tables + GEMV)": lambda: tg.tiled_gemv(x, d.T_tiles, d.E_tiles, out_features=n, group_size=40),
    "forward_decode": lambda: tl_lin.forward_decode(x, d.T_packed, d.E, d.T_tiles, d.E_tiles, d.bias, in_features=k,
                                                    group_size=40, bias_frac_bits=16),
    "resolve('triton')": lambda: resolve("triton", dev, grad_enabled=False),
    "implementation()": lambda: implementation("linear", "triton"),
    "linear(DecodeLinearState)": lambda: linear(d, x, backend="triton"),
}
with torch.no_grad():
    for name, fn in pieces.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        best = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                fn()
            best.append((time.perf_counter() - start) / 200 * 1e6)
            torch.cuda.synchronize()
        print(f"{name:32s} {sorted(best)[2]:7.1f} us host per call (median of 5 x 200)", flush=True)
