"""M = 1 forward: the lookup-table GEMV's tiles against the digit GEMV and bf16 cuBLAS, one card.

    python -m benchmarks.lut_sweep [--quick]     # prints a table; GPU only

For each ``(N, K)``: bf16 ``F.linear`` (cuBLAS), the forward ``ternary`` ships
(``triton.forward``), the digit GEMV (``triton.forward_gemv``) and the table GEMV
(``triton_lut.lut_gemv`` + the shared finishing kernel) over ``(BLOCK_N, BLOCK_B, warps,
programs per SM)``. Weights rotate over >= 3x the L2 size, calls replayed inside CUDA graphs,
group size 40, bf16 activations; every row is checked against the naive unpack + dequantise
+ cuBLAS path (relative RMS error). Results: ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.kernels import GROUP_SIZE, copies_for, naive_forward, relative_rms, time_in_graph

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (16384, 16384))
LUT_TILES = ((256, 8, 4, 4), (256, 8, 4, 8), (512, 8, 8, 2), (512, 8, 8, 4), (512, 8, 4, 4), (1024, 8, 8, 1),
             (1024, 8, 8, 2), (512, 16, 8, 2), (256, 16, 8, 4))


def main(argv: list[str] | None = None) -> None:
    from ternary.kernels.linear import triton as kernels
    from ternary.kernels.linear.triton_lut import lut_gemv
    from ternary.state.packing import byte_to_trits_table, random_packed, unpack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16384x16384 only")
    args = parser.parse_args(argv)
    shapes = ((16384, 16384),) if args.quick else SHAPES
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    print(f"{'N x K':>12} {'impl':>24} {'us':>9} {'x bf16':>7} {'rel err':>9}")
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
        x = torch.randn(1, k, device=device, dtype=torch.bfloat16)
        want = naive_forward(x, table, *states[0], k, GROUP_SIZE)
        base = time_in_graph([lambda w=w: F.linear(x, w) for w in dense])
        print(f"{n:>5}x{k:<6} {'bf16_cublas':>24} {base:9.1f} {1.0:7.2f}")

        def row(name, fn):
            err = relative_rms(fn(*states[0]), want)
            us = time_in_graph([lambda s=s: fn(*s) for s in states])
            print(f"{n:>5}x{k:<6} {name:>24} {us:9.1f} {base / us:7.2f} {err:9.2e}", flush=True)

        row("shipped", lambda p, e: kernels.forward(x, p, e, None, **static))
        row("digit gemv", lambda p, e: kernels.forward_gemv(x, p, e, None, **static))
        for tile in LUT_TILES:
            row("lut {}x{} w{} {}/SM".format(*tile), lambda p, e, tile=tile: kernels._finish(
                lut_gemv(x, p, e, group_size=GROUP_SIZE, tile=tile), None, 16, x.dtype))
        del states, dense
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
