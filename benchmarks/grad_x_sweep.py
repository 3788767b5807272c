"""grad-x at small M: the GEMV's and the fused kernel's tiles against the two-step path and
bf16 cuBLAS, one card.

    python -m benchmarks.grad_x_sweep [--rows 1,2,4,16,32,48,64]     # prints a table; GPU only

For each ``(N, K)`` and ``M``: ``grad_y @ W`` in bf16 cuBLAS, ``triton.grad_x_two_step``
(decode into a buffer, then cuBLAS) and, for ``M <= GEMV_MAX_ROWS``, ``triton.grad_x_gemv`` with
its default tile and ``TILES`` (forced into ``GRAD_X_GEMV_TILES``, splits from the shipped
rule), else ``triton.grad_x_fused`` with its default tile and ``FUSED_TILES`` and, where it takes
the call, ``triton.grad_x_wgmma`` with its default launch and ``WGMMA_TILES``. Weights rotate
over >= 3x the L2 size and calls replay inside CUDA graphs; every kernel's result is checked
against the fp32 product (relative RMS error, dominated by the bf16 output rounding).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.kernels import GROUP_SIZE, copies_for, ints, relative_rms, time_in_graph, with_constants

SHAPES = ((16384, 16384), (4096, 14336), (14336, 4096), (4096, 4096))
TILES = ((32, 32, 4), (16, 64, 4), (64, 32, 4), (32, 64, 4))
FUSED_TILES = ((32, 32, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 8, 3), (64, 32, 4, 4))
# (BLOCK_T, STAGES, programs per SM, warps) of the wgmma grad-x kernel.
WGMMA_TILES = ((16, 2, 2, 4), (32, 2, 2, 4), (64, 2, 2, 4), (64, 2, 1, 8), (128, 2, 1, 8), (32, 4, 2, 4))


def main(argv: list[str] | None = None) -> None:
    from ternary.kernels.linear import triton as kernels
    from ternary.kernels.linear import triton_wgmma_grad_x as wgmma_grad_x
    from ternary.state.packing import random_packed, unpack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=ints, default=[1, 2, 16])
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    gen = torch.Generator().manual_seed(0)
    for n, k in SHAPES:
        groups = -(-k // GROUP_SIZE)
        count = copies_for(n * -(-k // 5) + n * groups, device)
        states = [(random_packed(n, k, generator=gen).to(device),
                   torch.randint(-4, 2, (n, groups), generator=gen).to(torch.int8).to(device)) for _ in range(count)]
        w = unpack(states[0][0], k).to(torch.bfloat16) * torch.exp2(states[0][1].float()).repeat_interleave(
            GROUP_SIZE, 1)[:, :k].bfloat16()
        dense = [w] + [torch.empty_like(w) for _ in range(copies_for(n * k * 2, device) - 1)]
        static = dict(in_features=k, group_size=GROUP_SIZE)
        for m in args.rows:
            grad_y = torch.randn(m, n, device=device, dtype=torch.bfloat16)
            want = grad_y.float() @ w.float()
            base = time_in_graph([lambda d=d: grad_y @ d for d in dense])
            two = time_in_graph([lambda s=s: kernels.grad_x_two_step(grad_y, *s, **static) for s in states])
            line = f"{n}x{k} M={m} cublas {base:7.1f} | two-step {two:7.1f} ({base / two:4.2f}x)"
            if m <= kernels.GEMV_MAX_ROWS:
                runs = [("gemv", tile, lambda s, tile=tile: with_constants(
                    kernels, lambda: kernels.grad_x_gemv(grad_y, *s, **static),
                    GRAD_X_GEMV_TILES=(tile,) * kernels.GEMV_MAX_ROWS))
                    for tile in (kernels.grad_x_gemv_tile(m),) + TILES]
            else:
                runs = [("fused", tile, lambda s, tile=tile: kernels.grad_x_fused(grad_y, *s, tile=tile, **static))
                        for tile in (kernels.GRAD_X_FUSED_TILE,) + FUSED_TILES]
            if m > kernels.GEMV_MAX_ROWS and wgmma_grad_x.takes(grad_y, *states[0], GROUP_SIZE):
                runs += [("wgmma", tile, lambda s, tile=tile: kernels.grad_x_wgmma(grad_y, *s, tile=tile, **static))
                         for tile in (None,) + WGMMA_TILES]
            for name, tile, run in runs:
                err = relative_rms(run(states[0]), want)
                us = time_in_graph([lambda s=s, run=run: run(s) for s in states])
                line += f" | {name} {tile} {us:7.1f} ({base / us:4.2f}x, err {err:.0e})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
