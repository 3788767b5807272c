"""TileLang programs of the ternary linear op (imported only when TileLang is used).

Both programs read ``T_packed`` (uint8 ``[N, ceil(K/5)]``) and ``E`` (int8
``[N, ceil(K/G)]``) straight from global memory and dequantise one weight tile per
K (or N) step into shared memory as **bf16**: each weight ``T * 2^E`` is built from
integer bits (:mod:`tilelang_decode`), so every int8 E is exact. The tensor cores
multiply bf16 x bf16 into float32 accumulators.

Activations that are not bf16 are split inside the kernel into a sum of bf16 pieces
that is exact: fp16 = hi + lo (2 x 8 significant bits >= 11), fp32 = hi + mid + lo
(3 x 8 >= 24). Since the weights are exact in bf16, ``x @ W.T`` is then the sum of
one bf16 GEMM per piece, accumulated in float32: fp32 inputs keep fp32 accuracy (no
tf32 rounding) at three times the tensor-core work.

The fp32 split is exact only for |v| >= 2^-110 (the last piece of a smaller value falls
below bf16's subnormal step 2^-133 and loses bits; measured: 2.5e-5 relative error for
inputs near 2^-120 against a 2e-5 budget). So fp32 programs take one more input, ``Shift``
(int32 ``[M]``, computed on the device by the launcher, no host sync): row ``i`` of the
activations is multiplied by ``2^Shift[i]`` before the split and row ``i`` of the
accumulator by ``2^-Shift[i]`` before the cast (both exact powers of two built from
bits). The weights are untouched, so no E is affected. See
``tilelang_decode.split_row_shift`` for the choice of the shift.

A tile of ``block_k`` columns holds ``block_k / 5`` whole bytes; ``G`` is a multiple
of 5, so each byte has one exponent and is decoded once per tile, as one unit.

``M`` is a dynamic dimension: one compiled program serves every batch size of its
M bucket (the tile shape is chosen per bucket, see ``tilelang.py``).
"""

# No `from __future__ import annotations` here: TileLang evaluates the T.Tensor
# annotations of a prim_func, which name local shapes.
import warnings
from typing import NamedTuple

import tilelang
import tilelang.language as T

from ternary.kernels.linear.tilelang_decode import (
    ZERO_TRIT_DIGIT,
    float32_power_bits,
    poison_corrupt,
    scale_bits,
    trit_digit,
    weight_bits,
)

TARGET_ARCH_DEFAULT = "sm_90a"
BF16 = "bfloat16"
ACCUM = "float32"
TRITS_PER_BYTE = 5
ZERO_BYTE = ZERO_TRIT_DIGIT * (1 + 3 + 9 + 27 + 81)  # five zero trits
SPLIT_PIECES = {"bfloat16": 1, "float16": 2, "float32": 3}


class Tile(NamedTuple):
    """Block shape and pipeline depth of one program (``block_k`` a multiple of 80)."""

    block_m: int
    block_n: int
    block_k: int
    stages: int
    threads: int


def _select(cond, a, b):
    return T.if_then_else(cond, a, b)


@T.macro
def dequantize_tile(
    P, E, W_shared, row0, byte0, rows: int, byte_cols: int, N: int, KB: int, G: int, transposed: bool
):
    """``W_shared[i, 5b + t] = T[row0 + i, 5(byte0 + b) + t] * 2^E`` as bf16 (``[5b + t, i]`` when
    ``transposed``); zero outside the matrix, NaN for a corrupt byte."""
    for i, b in T.Parallel(rows, byte_cols):
        inside = (row0 + i < N) and (byte0 + b < KB)
        byte = T.if_then_else(inside, T.cast(P[row0 + i, byte0 + b], "int32"), ZERO_BYTE)
        exponent = T.if_then_else(inside, T.cast(E[row0 + i, ((byte0 + b) * TRITS_PER_BYTE) // G], "int32"), 0)
        byte, magnitude = poison_corrupt(byte, scale_bits(exponent, _select), _select)
        for t in T.unroll(TRITS_PER_BYTE):
            weight = T.reinterpret(T.cast(weight_bits(trit_digit(byte, t, _select), magnitude, _select), "uint16"), BF16)
            if transposed:
                W_shared[b * TRITS_PER_BYTE + t, i] = weight
            else:
                W_shared[i, b * TRITS_PER_BYTE + t] = weight


@T.macro
def split_gemm(A_shared, hi, mid, lo, W_shared, acc, row_scale, rows: int, cols: int, pieces: int):
    """``acc += A_shared @ W_shared.T`` with ``A_shared`` split into ``pieces`` exact bf16 parts.

    1 piece: bf16 ``A`` goes straight to the tensor cores. 2: ``A = hi + lo`` (fp16).
    3: ``row_scale[i] * A[i, :] = hi + mid + lo`` (fp32; ``row_scale`` is a power of two
    that keeps the last piece above bf16's subnormal step, see :func:`row_scales`).
    """
    if pieces == 1:
        T.gemm(A_shared, W_shared, acc, transpose_B=True)
    else:
        for i, j in T.Parallel(rows, cols):
            value = T.cast(A_shared[i, j], ACCUM)
            if pieces == 3:
                value = value * row_scale[i]
            hi[i, j] = T.cast(value, BF16)
            rest = value - T.cast(hi[i, j], ACCUM)
            if pieces == 3:
                mid[i, j] = T.cast(rest, BF16)
                rest = rest - T.cast(mid[i, j], ACCUM)
            lo[i, j] = T.cast(rest, BF16)
        T.gemm(hi, W_shared, acc, transpose_B=True)
        if pieces == 3:
            T.gemm(mid, W_shared, acc, transpose_B=True)
        T.gemm(lo, W_shared, acc, transpose_B=True)


def power_of_two(exponent):
    """fp32 ``2^exponent`` built from bits (exact; ``exponent`` in [-126, 127])."""
    return T.reinterpret(T.cast(float32_power_bits(exponent), "int32"), ACCUM)


@T.macro
def row_scales(Shift, row_scale, row0, rows: int, M, pieces: int):
    """``row_scale[i] = 2^Shift[row0 + i]`` (1 past the last row); only fp32 programs (3 pieces)."""
    if pieces == 3:
        for i in T.Parallel(rows):
            row_scale[i] = power_of_two(T.if_then_else(row0 + i < M, Shift[row0 + i], 0))


def unscaled(value, Shift, row, pieces: int):
    """``value * 2^-Shift[row]`` for fp32 programs (undoes :func:`row_scales`), else ``value``."""
    return value * power_of_two(-Shift[row]) if pieces == 3 else value


def split_buffers(rows: int, cols: int, pieces: int):
    """Shared tiles ``(hi, mid, lo, row_scale)`` for :func:`split_gemm` (placeholders when unused)."""
    shape = (rows, cols) if pieces > 1 else (1, 1)
    mid_shape = (rows, cols) if pieces == 3 else (1, 1)
    return (T.alloc_shared(shape, BF16), T.alloc_shared(mid_shape, BF16), T.alloc_shared(shape, BF16),
            T.alloc_shared((rows if pieces == 3 else 1,), ACCUM))


def forward_program(
    N: int, K: int, G: int, dtype: str, has_bias: bool, bias_frac_bits: int, tile: Tile
) -> tilelang.tvm.tirx.PrimFunc:
    """``Y [M, N] = X [M, K] @ W.T (+ bias * 2^-B)``, ``X``/``Y`` in ``dtype``; ``Bias`` int32 ``[N]``
    (a 1-element placeholder when ``has_bias`` is false); ``Shift`` int32 ``[M]`` for fp32 (the
    row shifts of the split, see the module docstring), else a 1-element placeholder."""
    M = T.dynamic("m")
    KB = -(-K // TRITS_PER_BYTE)
    groups = -(-K // G)
    bm, bn, bk = tile.block_m, tile.block_n, tile.block_k
    byte_cols = bk // TRITS_PER_BYTE
    pieces = SPLIT_PIECES[dtype]
    bias_scale = 2.0**-bias_frac_bits
    bias_len = N if has_bias else 1
    shift_len = M if pieces == 3 else 1

    @T.prim_func
    def ternary_linear_forward(
        X: T.Tensor((M, K), dtype),
        P: T.Tensor((N, KB), "uint8"),
        E: T.Tensor((N, groups), "int8"),
        Bias: T.Tensor((bias_len,), "int32"),
        Shift: T.Tensor((shift_len,), "int32"),
        Y: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm), threads=tile.threads) as (bx, by):
            X_shared = T.alloc_shared((bm, bk), dtype)
            W_shared = T.alloc_shared((bn, bk), BF16)
            X_hi, X_mid, X_lo, X_scale = split_buffers(bm, bk, pieces)
            acc = T.alloc_fragment((bm, bn), ACCUM)
            T.clear(acc)
            row_scales(Shift, X_scale, by * bm, bm, M, pieces)
            for ko in T.Pipelined(T.ceildiv(K, bk), num_stages=tile.stages):
                T.copy(X[by * bm, ko * bk], X_shared)
                dequantize_tile(P, E, W_shared, bx * bn, ko * byte_cols, bn, byte_cols, N, KB, G, False)
                split_gemm(X_shared, X_hi, X_mid, X_lo, W_shared, acc, X_scale, bm, bk, pieces)
            for i, j in T.Parallel(bm, bn):
                row, col = by * bm + i, bx * bn + j
                if row < M and col < N:
                    value = unscaled(acc[i, j], Shift, row, pieces)
                    if has_bias:
                        Y[row, col] = T.cast(value + T.cast(Bias[col], ACCUM) * T.float32(bias_scale), dtype)
                    else:
                        Y[row, col] = T.cast(value, dtype)

    return ternary_linear_forward


def grad_x_program(N: int, K: int, G: int, dtype: str, tile: Tile) -> tilelang.tvm.tirx.PrimFunc:
    """``DX [M, K] = DY [M, N] @ W``, both in ``dtype``. Here ``block_n`` is the reduction step
    and ``block_k`` the output tile width; ``Shift`` as in :func:`forward_program`."""
    M = T.dynamic("m")
    KB = -(-K // TRITS_PER_BYTE)
    groups = -(-K // G)
    bm, bn, bk = tile.block_m, tile.block_n, tile.block_k
    byte_cols = bk // TRITS_PER_BYTE
    pieces = SPLIT_PIECES[dtype]
    shift_len = M if pieces == 3 else 1

    @T.prim_func
    def ternary_linear_grad_x(
        DY: T.Tensor((M, N), dtype),
        P: T.Tensor((N, KB), "uint8"),
        E: T.Tensor((N, groups), "int8"),
        Shift: T.Tensor((shift_len,), "int32"),
        DX: T.Tensor((M, K), dtype),
    ):
        with T.Kernel(T.ceildiv(K, bk), T.ceildiv(M, bm), threads=tile.threads) as (bx, by):
            DY_shared = T.alloc_shared((bm, bn), dtype)
            W_shared = T.alloc_shared((bk, bn), BF16)  # W tile transposed: K-major for the tensor cores
            DY_hi, DY_mid, DY_lo, DY_scale = split_buffers(bm, bn, pieces)
            acc = T.alloc_fragment((bm, bk), ACCUM)
            T.clear(acc)
            row_scales(Shift, DY_scale, by * bm, bm, M, pieces)
            for no in T.Pipelined(T.ceildiv(N, bn), num_stages=tile.stages):
                T.copy(DY[by * bm, no * bn], DY_shared)
                dequantize_tile(P, E, W_shared, no * bn, bx * byte_cols, bn, byte_cols, N, KB, G, True)
                split_gemm(DY_shared, DY_hi, DY_mid, DY_lo, W_shared, acc, DY_scale, bm, bn, pieces)
            for i, j in T.Parallel(bm, bk):
                row, col = by * bm + i, bx * bk + j
                if row < M and col < K:
                    DX[row, col] = T.cast(unscaled(acc[i, j], Shift, row, pieces), dtype)

    return ternary_linear_grad_x


# TileLang 0.1.15's automatic warp specialisation releases a pipeline stage as soon as the
# consumer warps have split the activation tile, before their GEMMs have read the weight
# tile of that stage, so the producer overwrites it mid-GEMM (wrong fp32/fp16 results on
# an H200 whenever the TMA path was taken). Programs that split their activations use the
# plain cp.async pipeline instead, which was verified correct on the same GPU.
NO_WARP_SPECIALIZATION = {"tl.disable_tma_lower": True, "tl.disable_warp_specialized": True}


def compile_program(program, arch: str = TARGET_ARCH_DEFAULT, *, split_activations: bool = False):
    """Lower and compile ``program`` for CUDA ``arch`` (nvcc; cached on disk by TileLang)."""
    configs = NO_WARP_SPECIALIZATION if split_activations else None
    with warnings.catch_warnings():
        # 0.1.15 calls tl.disable_tma_lower deprecated in favour of per-copy flags; the
        # pass-level switch is what the GPU check validated, so it stays (TileLang is pinned).
        warnings.filterwarnings("ignore", message=".*tl.disable_tma_lower.*", category=DeprecationWarning)
        return tilelang.compile(program, target={"kind": "cuda", "arch": arch}, pass_configs=configs)
