"""Small-M forward launch sweep: the digit GEMV's tiles and split counts, the fused kernel's
programs per SM, against bf16 cuBLAS, one card.

    python -m benchmarks.gemv_sweep [--rows 1,2,16] [--quick]     # prints a table; GPU only

For each ``(N, K)`` and ``M``: bf16 ``F.linear`` (cuBLAS), the forward ``ternary`` ships
(``triton.forward``), then at ``M = 1`` the shuffle-table kernel over ``(rows per lane, warps,
splits)``, at ``M <= GEMV_MAX_ROWS`` the GEMV over ``(BLOCK_N, BLOCK_B, warps, splits)``, where the
``mma.sync`` kernel takes the call (``triton_mma_forward``, bf16, M = 2..16) over ``(BLOCK_N, warps,
programs per SM)``, where the ``wgmma`` kernel does (``triton_wgmma_forward``, bf16, M >= 2) over
``(BLOCK_T, BLOCK_N, warps, stages, programs per SM)``, and at ``M > 1`` (unless ``--no-fused``) the fused kernel over ``(BLOCK_N, BLOCK_B, warps, stages)`` with ``PROGRAMS_PER_SM``
forced. Weights rotate over >= 3x the L2 size, calls replayed inside CUDA graphs (``benchmarks.kernels.time_in_graph``),
group size 40, bf16 activations; every row is checked against the naive unpack + dequantise
+ cuBLAS path (relative RMS error). Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.kernels import GROUP_SIZE, copies_for, ints, naive_forward, relative_rms, time_in_graph, with_constants

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384))
ROWS = (1, 2, 16)
# (BLOCK_N, BLOCK_B, warps, splits) of the GEMV; longer byte runs per row measured slower.
GEMV_TILES = ((64, 32, 4, 2), (64, 32, 4, 4), (64, 32, 4, 8), (64, 32, 4, 16), (32, 32, 4, 8), (32, 32, 4, 16),
              (16, 128, 4, 8), (4, 512, 4, 8))
# (rows per lane, warps, splits) of the one-row shuffle-table kernel (splits 0: its own rule).
TABLE_TILES = ((2, 4, 0), (2, 2, 0), (1, 4, 0), (4, 4, 0), (2, 8, 0), (2, 4, 8), (2, 2, 16))
FUSED_PER_SM = (4, 8, 16)
# (BLOCK_N, warps, programs per SM) of the register-decode mma.sync kernel; the first is the shipped one.
MMA_TILES = ((64, 4, 16), (64, 4, 8), (64, 4, 24), (32, 2, 16), (32, 2, 32), (128, 4, 8))
# (BLOCK_T, BLOCK_N, warps, stages, programs per SM) of the wgmma kernel, by the row tile the default
# picks (None: the default itself).
WGMMA_SWEEP = {8: (None, (8, 64, 4, 2, 8)), 16: (None, (16, 64, 4, 4, 16), (16, 128, 4, 4, 8)),
               32: (None, (32, 64, 4, 4, 8), (32, 128, 8, 4, 4)),
               64: (None, (64, 128, 4, 3, 4), (64, 64, 4, 3, 4), (64, 128, 8, 3, 4)),
               128: (None, (128, 64, 4, 2, 2), (128, 128, 8, 2, 2), (128, 256, 8, 2, 2), (256, 128, 8, 2, 1))}
# (BLOCK_N, BLOCK_B, warps, stages) of the fused kernel; the first is the shipped one at M <= 64.
FUSED_TILES = ((64, 32, 4, 3), (64, 32, 4, 4), (64, 64, 4, 3), (64, 32, 8, 3), (128, 32, 8, 3), (128, 32, 4, 3),
               (32, 32, 4, 3), (128, 64, 8, 3), (64, 16, 4, 3))


def main(argv: list[str] | None = None) -> None:
    from ternary.kernels.linear import triton as kernels
    from ternary.kernels.linear.triton_wgmma_forward import default_tile as wgmma_default_tile
    from ternary.state.packing import byte_to_trits_table, random_packed, unpack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16384x16384 only")
    parser.add_argument("--rows", type=ints, default=ROWS, help="comma list of activation rows M")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True,
                        help="sweep the fused tensor-core kernel too (slow)")
    args = parser.parse_args(argv)
    rows = args.rows
    shapes = ((16384, 16384),) if args.quick else SHAPES
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    print(f"{'N x K':>12} {'M':>3} {'impl':>24} {'us':>9} {'x bf16':>7} {'rel err':>9}")
    gen = torch.Generator().manual_seed(0)
    table = byte_to_trits_table(device)
    for n, k in shapes:
        groups = -(-k // GROUP_SIZE)
        count = copies_for(n * -(-k // 5) + n * groups, device)
        states = [(random_packed(n, k, generator=gen).to(device),
                   torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(device)) for _ in range(count)]
        dense = [unpack(p, k).to(torch.bfloat16) * torch.exp2(e.float()).repeat_interleave(GROUP_SIZE, 1)[:, :k]
                 .bfloat16() for p, e in states[:copies_for(n * k * 2, device)]]
        static = dict(in_features=k, group_size=GROUP_SIZE, bias_frac_bits=16)
        for m in rows:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            want = naive_forward(x, table, *states[0], k, GROUP_SIZE)
            base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
            print(f"{n:>5}x{k:<6} {m:>3} {'bf16_cublas':>24} {base:9.1f} {1.0:7.2f}")

            def row(name, fn):
                err = relative_rms(fn(*states[0]), want)
                us = time_in_graph([lambda s=s: fn(*s) for s in states])
                print(f"{n:>5}x{k:<6} {m:>3} {name:>24} {us:9.1f} {base / us:7.2f} {err:9.2e}", flush=True)

            row("shipped", lambda p, e: kernels.forward(x, p, e, None, **static))
            if m == 1 and kernels.table_gemv_takes(x, *states[0], GROUP_SIZE):
                for tile in TABLE_TILES:
                    row("table {}x{} s{}".format(*tile),
                        lambda p, e, tile=tile: kernels.forward_table_gemv(x, p, e, None, tile=tile, **static))
            if m <= kernels.GEMV_MAX_ROWS:
                for tile in GEMV_TILES:
                    row("gemv {}x{} w{} s{}".format(*tile),
                        lambda p, e, tile=tile: kernels.forward_gemv(x, p, e, None, tile=tile, **static))
            if kernels.mma_forward_takes(x, *states[0], GROUP_SIZE):
                for tile in MMA_TILES:
                    row("mma {}x{} {}/SM".format(*tile),
                        lambda p, e, tile=tile: kernels.forward_mma(x, p, e, None, tile=tile, **static))
            if kernels.wgmma_forward_takes(x, *states[0], GROUP_SIZE):
                for tile in WGMMA_SWEEP[wgmma_default_tile(m)[0]]:
                    row("wgmma " + ("default" if tile is None else "{}/{}x{} st{} {}/SM".format(*tile)),
                        lambda p, e, tile=tile: kernels.forward_wgmma(x, p, e, None, tile=tile, **static))
            if m > 1 and args.fused:
                for tile in FUSED_TILES:
                    for per_sm in FUSED_PER_SM:
                        row("fused {}x{} w{} st{}".format(*tile) + f" {per_sm}/SM",
                            lambda p, e, tile=tile, per_sm=per_sm: with_constants(
                                kernels, lambda: kernels.forward_fused(x, p, e, None, tile=tile, **static),
                                PROGRAMS_PER_SM=per_sm))
        del states, dense
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
