"""Throughput of dense decodes of a ternary layer (the two-step path's first step), one card.

    python -m benchmarks.decode_sweep        # prints a table; GPU only

For each ``(N, K)``, three layouts of the same work (see ``benchmarks/NOTES.md``):

- ``runs``: the shipped column-order decode for bf16 and G a multiple of 20
  (``triton_run_decode``, eight packed bytes per lane through the PTX word decode, stores staged
  through shared memory so that each warp writes 512 contiguous bytes), used by the two-step paths
  (forward from ``TWO_STEP_MIN_ROWS`` rows, grad-x above ``GRAD_X_FUSED_ROWS``), over ``RUN_BLOCKS``;
- ``columns``: the per-weight column-order decode (``triton.dequantize(..., runs=False)``, a run of
  consecutive columns per lane decoded one digit each, 16-byte stores), which other layers take
  when ``M * PLANES_ROWS_PER_OUTPUT >= N``, over ``COLUMN_TILES``;
- ``planes``: the shipped digit-plane decode (``triton.dequantize_planes``, two packed bytes
  per register through the PTX pair decode, five contiguous runs per byte tile), over tiles;
  ``planes-f32q`` the same kernel with the fp32 quotient decode;
- ``strided``: one packed byte per lane with the five digits stored at stride 5 (kept to
  show what scattered 2-byte stores cost).

Median of ``triton.testing.do_bench`` (L2 flushed), output bytes per second, and a
bit-for-bit check against the PyTorch reference decode (after undoing the plane order).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from benchmarks.kernels import with_constants
from ternary.kernels.linear.triton_base3 import exact_exp2, shifted_quotients, trit_of

SHAPES = ((4096, 4096), (4096, 14336), (16384, 16384))
# (BLOCK_N, run length, PTX pair decode) of the digit-plane decode; the first is the shipped one.
PLANE_TILES = ((8, 128, True), (8, 128, False), (8, 64, True), (8, 256, True), (16, 128, True), (32, 128, True),
               (4, 256, True))
# Runs per program of the run decode; the first is the shipped one.
RUN_BLOCKS = (64, 32, 128, 256, 512)
# (BLOCK_N, BLOCK_C, warps) of the per-weight column-order decode; the first is the shipped one.
COLUMN_TILES = ((16, 256, 4), (64, 128, 4), (32, 128, 4), (128, 64, 4), (64, 64, 4), (64, 256, 8), (128, 128, 8),
                (32, 256, 4), (256, 64, 8), (128, 128, 4))


@triton.jit
def _bytes_strided_kernel(p_ptr, e_ptr, w_ptr, N, K, KB, stride_pn, stride_en, stride_wn,
                          BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    jb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rows = tl.minimum(rn, N - 1)[:, None]
    b_ok = (jb < KB)[None, :]
    byte = tl.load(p_ptr + rows * stride_pn + jb[None, :], mask=b_ok, other=121).to(tl.int32)
    scale = exact_exp2(tl.load(e_ptr + rows * stride_en + (jb // BYTES_PER_GROUP)[None, :], mask=b_ok, other=0))
    r0, r1, r2, r3, r4 = shifted_quotients(byte)
    base = w_ptr + rn[:, None] * stride_wn + jb[None, :] * 5
    ok = (rn < N)[:, None]
    dtype = w_ptr.dtype.element_ty
    tl.store(base, (trit_of(r0, r1) * scale).to(dtype), mask=ok & (jb * 5 < K)[None, :])
    tl.store(base + 1, (trit_of(r1, r2) * scale).to(dtype), mask=ok & (jb * 5 + 1 < K)[None, :])
    tl.store(base + 2, (trit_of(r2, r3) * scale).to(dtype), mask=ok & (jb * 5 + 2 < K)[None, :])
    tl.store(base + 3, (trit_of(r3, r4) * scale).to(dtype), mask=ok & (jb * 5 + 3 < K)[None, :])
    tl.store(base + 4, (r4 * scale).to(dtype), mask=ok & (jb * 5 + 4 < K)[None, :])


def strided(packed, exponents, k, block_n=16, block_b=64):
    n, kb = packed.shape
    w = torch.empty((n, k), dtype=torch.bfloat16, device=packed.device)
    _bytes_strided_kernel[(triton.cdiv(n, block_n), triton.cdiv(kb, block_b))](
        packed, exponents, w, n, k, kb, packed.stride(0), exponents.stride(0), w.stride(0),
        BYTES_PER_GROUP=8, BLOCK_N=block_n, BLOCK_B=block_b)
    return w


def planes_to_columns(w, k, block_b):
    """Undo the digit-plane order: ``[N, blocks * 5 * BB]`` -> ``[N, K]``."""
    n = w.shape[0]
    return w.view(n, -1, 5, block_b).transpose(2, 3).reshape(n, -1)[:, :k]


def main() -> None:
    import triton.testing

    from ternary.kernels.linear import reference, triton_run_decode
    from ternary.kernels.linear import triton as kernels
    from ternary.state.packing import random_packed

    generator = torch.Generator().manual_seed(0)
    print(f"device: {torch.cuda.get_device_name(0)}")
    print(f"{'N x K':>12} {'decode':>10} {'tile':>7} {'us':>8} {'TB/s out':>9} exact")
    for n, k in SHAPES:
        packed = random_packed(n, k, generator=generator).cuda()
        exponents = torch.randint(-20, 5, (n, -(-k // 40)), generator=generator).to(torch.int8).cuda()
        want = reference.dequantize(packed, exponents, in_features=k, group_size=40).to(torch.bfloat16)
        runs = [("runs", str(block), lambda block=block: triton_run_decode.dequantize_runs(
                     packed, exponents, in_features=k, group_size=40, block=block), lambda w: w)
                for block in RUN_BLOCKS]
        runs += [("columns", "{}x{}w{}".format(*tile), lambda tile=tile: kernels.dequantize(
                     packed, exponents, in_features=k, group_size=40, tile=tile), lambda w: w) for tile in COLUMN_TILES]
        for block_n, block_b, pairs in PLANE_TILES:
            def planes(bn=block_n, bb=block_b, pairs=pairs):
                return with_constants(kernels, lambda: kernels.dequantize_planes(
                    packed, exponents, group_size=40, dtype=torch.bfloat16, bf16_pairs=pairs),
                    PLANE_BLOCK_N=bn, PLANE_BLOCK_B=bb)
            runs.append(("planes" if pairs else "planes-f32q", f"{block_n}x{block_b}", planes,
                         lambda w, bb=block_b: planes_to_columns(w, k, bb)))
        runs += [
            ("strided", "16x64", lambda: strided(packed, exponents, k), lambda w: w),
            ("strided", "8x128", lambda: strided(packed, exponents, k, 8, 128), lambda w: w),
        ]
        for name, tile, run, undo in runs:
            try:
                exact = torch.equal(undo(run()), want)
                ms = triton.testing.do_bench(run, warmup=5, rep=50)
                print(f"{n:>5} x {k:<5} {name:>10} {tile:>9} {ms * 1e3:8.1f} {n * k * 2 / ms / 1e9:9.2f} {exact}")
            except Exception as error:  # one failing variant must not hide the others
                print(f"{n:>5} x {k:<5} {name:>10} {tile:>9} error {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
