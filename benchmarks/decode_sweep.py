"""Throughput of the two-step path's dense decode (``triton.dequantize``) over tile shapes, one card.

    python -m benchmarks.decode_sweep        # prints a table; GPU only

For each ``(N, K)`` and ``(BLOCK_N, BLOCK_B)``: median time of one decode of a fresh layer
into bf16 (``triton.testing.do_bench``, L2 flushed between calls), written bytes per
second, and a bit-for-bit check against the PyTorch reference decode.
"""

from __future__ import annotations

import torch

SHAPES = ((4096, 4096), (4096, 14336), (16384, 16384))
TILES = ((8, 64), (16, 64), (16, 128), (32, 64), (32, 128))


def main() -> None:
    import triton.testing

    from ternary.kernels.linear import reference
    from ternary.kernels.linear import triton as kernels
    from ternary.state.packing import random_packed

    generator = torch.Generator().manual_seed(0)
    print(f"device: {torch.cuda.get_device_name(0)}")
    print(f"{'N x K':>12} {'tile':>9} {'us':>8} {'TB/s out':>9} exact")
    for n, k in SHAPES:
        packed = random_packed(n, k, generator=generator).cuda()
        exponents = torch.randint(-20, 5, (n, -(-k // 40)), generator=generator).to(torch.int8).cuda()
        want = reference.dequantize(packed, exponents, in_features=k, group_size=40).to(torch.bfloat16)
        for block_n, block_b in TILES:
            kernels.DECODE_BLOCK_N, kernels.DECODE_BLOCK_B = block_n, block_b
            run = lambda: kernels.dequantize(packed, exponents, in_features=k, group_size=40)  # noqa: E731
            exact = torch.equal(run(), want)
            ms = triton.testing.do_bench(run, warmup=5, rep=50)
            print(f"{n:>5} x {k:<5} {block_n:>3}x{block_b:<4} {ms * 1e3:8.1f} {n * k * 2 / ms / 1e9:9.2f} {exact}")


if __name__ == "__main__":
    main()
