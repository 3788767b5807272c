"""Small-M forward: the lookup-table kernel over its tiles, against bf16 cuBLAS and the shipped paths.

    python -m benchmarks.table_sweep [--quick]     # prints a table; GPU only

One process, one card: for each ``(N, K)`` and ``M``, bf16 ``F.linear`` (cuBLAS), the
forward ``ternary`` ships for that ``M`` (``triton.forward``), the digit-decoding GEMV /
fused kernel it replaces, and the table kernel (``triton_table``) over
``(BLOCK_N, TABLE_B, warps)``. Weights rotate over >= 3x the L2 size, calls replayed inside
CUDA graphs (``benchmarks.kernels.time_in_graph``), group size 40, bf16 activations; every
row is checked against the naive unpack + dequantise + cuBLAS path (relative RMS error).
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F

from benchmarks.kernels import GROUP_SIZE, copies_for, naive_forward, relative_rms, time_in_graph

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384))
ROWS = (1, 2, 4, 8, 16)
TILES = ((256, 16, 8), (512, 16, 16))


# (BLOCK_N, BLOCK_B, warps, splits) of the digit GEMV: fewer rows and longer byte runs per program
# read each row in longer contiguous pieces.
GEMV_TILES = ((64, 32, 4, 8), (16, 128, 4, 8), (8, 256, 4, 8), (4, 512, 4, 8), (8, 512, 8, 8), (16, 256, 8, 8),
              (32, 128, 8, 8), (8, 256, 4, 16), (16, 128, 4, 16), (4, 256, 4, 16))


def main(argv: list[str] | None = None) -> None:
    from ternary.kernels.linear import triton as kernels
    from ternary.kernels.linear.triton_table import table_forward_partials
    from ternary.state.packing import byte_to_trits_table, random_packed, unpack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16384x16384 only")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="comma list of activation rows M")
    args = parser.parse_args(argv)
    rows = tuple(int(r) for r in args.rows.split(","))
    shapes = ((16384, 16384),) if args.quick else SHAPES
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    print(f"{'N x K':>12} {'M':>3} {'impl':>28} {'us':>9} {'x bf16':>7} {'rel err':>9}")
    gen = torch.Generator().manual_seed(0)
    table = byte_to_trits_table(device)
    for n, k in shapes:
        groups = -(-k // GROUP_SIZE)
        count = copies_for(n * -(-k // 5) + n * groups, device)
        states = [(random_packed(n, k, generator=gen).to(device),
                   torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(device)) for _ in range(count)]
        dense = [unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k]
                 .bfloat16() for p, e in states[:copies_for(n * k * 2, device)]]
        static = dict(in_features=k, group_size=GROUP_SIZE)
        for m in rows:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            want = naive_forward(x, table, *states[0], k, GROUP_SIZE)
            base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
            print(f"{n:>5}x{k:<6} {m:>3} {'bf16_cublas':>28} {base:9.1f} {1.0:7.2f}")

            def row(name, fn):
                err = relative_rms(fn(*states[0]), want)
                us = time_in_graph([lambda s=s: fn(*s) for s in states])
                print(f"{n:>5}x{k:<6} {m:>3} {name:>28} {us:9.1f} {base / us:7.2f} {err:9.2e}", flush=True)

            row("shipped", lambda p, e: kernels.forward(x, p, e, None, bias_frac_bits=16, **static))
            digits = kernels.forward_gemv if m == 1 else kernels.forward_fused
            row("digit_decode", lambda p, e: digits(x, p, e, None, bias_frac_bits=16, **static))
            for tile in GEMV_TILES if m == 1 else ():
                row("gemv {}x{} w{} s{}".format(*tile), lambda p, e, tile=tile: kernels.forward_gemv(
                    x, p, e, None, bias_frac_bits=16, tile=tile, **static))
            tiles = TILES if m == 1 else TILES[1:3]
            for (block_n, table_b, warps), prefetch in itertools.product(tiles, (False,)):
                def table_path(p, e, block_n=block_n, table_b=table_b, warps=warps, prefetch=prefetch):
                    ws = table_forward_partials(x, p, e, block_n=block_n, table_b=table_b, num_warps=warps,
                                                prefetch=prefetch, **static)
                    return kernels._finish(ws, None, 16, x.dtype)
                row(f"table {block_n}x{table_b} w{warps}{' pf' if prefetch else ''}", table_path)
        del states, dense
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
