"""Triton backend of the ternary linear op: reads ``T_packed`` and ``E`` directly.

Forward takes one of seven paths, picked by the number of activation rows ``M``:

- ``M = 1`` on sm_90 or newer, for layers whose storage allows aligned reads: warp-shuffle
  lookup tables (``triton_table_gemv``, a Gluon kernel; about 11 instructions per packed byte).
  A layer prepared for decoding (``ternary.state.DecodeLinearState``, :func:`forward_decode`)
  feeds the same lookups from its row-tiled copy with coalesced loads (``triton_tiled_gemv``), or
  for ``G / 5`` a multiple of 8 one shared-memory table lookup per byte (``triton_lut_gemv``), and takes
  ``2 <= M <= 64`` bf16 rows there too, for ``G / 5`` a multiple of 8: ``mma.sync``
  products on weights decoded by a shared-memory table (``triton_tiled_mma``).
- ``2 <= M <= 16`` with bf16 activations on sm_90 or newer, for layers whose groups are whole
  4-byte runs and whose storage allows aligned word reads: ``mma.sync`` products with the
  weights decoded four bytes at a time by bf16x2 FMAs (``triton_base3.WORD_WEIGHTS_ASM``) straight
  into the left operand's registers (``triton_mma_forward``, a Gluon kernel).
- ``17 <= M <= WGMMA_MAX_ROWS``, same conditions: ``wgmma`` products with the weights decoded the
  same way into the register operand and the activations staged in shared memory by TMA
  (``triton_wgmma_forward``, a Gluon kernel); from ``TWO_STEP_MIN_ROWS`` rows not for layers whose
  bf16 buffer is at most ``TWO_STEP_BYTES_PER_ROW`` per row (the two-step path below is faster there).
- ``M <= GEMV_MAX_ROWS``: a CUDA-core GEMV that never forms a weight (grad-x has its own, below).
  With shifted quotients ``r_i = floor(b / 3^i) - 1`` of a byte ``b``, the byte's dot
  product is ``sum_i d_i x_i - sum_i x_i = sum_i r_i z_i + z_5`` where ``z_0 = x_0``,
  ``z_i = x_i - 3 x_{i-1}`` and ``z_5 = sum_i z_i - sum_i x_i = -3 (x_0 + x_1 + x_2 + x_3)``;
  ``z`` depends on the activations only, so each byte costs its quotients (10 fp32
  operations, shared by the rows) plus one FMA per digit and row.
- ``M < TWO_STEP_MIN_ROWS``: a fused tensor-core kernel. Each ``[BLOCK_N, BLOCK_B]`` tile
  of packed bytes is decoded once into five scaled weight tiles, one per digit position
  (columns ``5j + d``; for bf16 activations by the PTX pair decode,
  ``triton_base3.weight_tiles_bf16``); the activations are first regrouped into plane-major digit planes
  (``triton_base3.digit_planes``) so every operand load is contiguous. Split-K keeps all
  SMs busy at small M; the partial sums go to an fp32 workspace ``[splits, M, N]`` that
  one finishing kernel reduces (and adds the bias to).
- ``M >= TWO_STEP_MIN_ROWS``: decode the layer into a transient dense buffer in the
  activation dtype (about ``N*K*2`` bytes for bf16, freed after the call), then cuBLAS. bf16
  buffers of layers with ``G`` a multiple of 20 come from the run decode (``triton_run_decode``:
  eight bytes per lane, column order, 2.2-2.4 TB/s on an H100); other layers, for
  ``M < N / PLANES_ROWS_PER_OUTPUT``, in digit-plane column order (bf16: the pair decode) with
  the activations regrouped to match (one transient copy of ``x``), else the per-weight column
  decode. On H100 the fused kernel took 64 us at 4096 x 4096, M = 128, against 15 us for bf16.
- ``DECODE_GEMM_ROWS`` with bf16 activations on sm_90, for layers the run decode takes and enough
  output tiles for every SM: the same buffer decoded inside a persistent warp-specialised GEMM
  by decoder warps while tensor-core warps multiply what is already decoded
  (``triton_decode_gemm``, a Gluon kernel); on layers below ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS``
  weights only up to ``DECODE_GEMM_SMALL_LAYER_MAX_ROWS`` rows. Grad-x takes the same kernel for layers
  of at least ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS`` weights.

``grad_x`` for ``M <= GEMV_MAX_ROWS`` runs a CUDA-core GEMV over the weight rows (each byte
read once, no buffer; ``_grad_x_gemv_kernel``); for bf16 up to ``WGMMA_GRAD_X_MAX_ROWS`` rows on
sm_90+, ``wgmma`` on weights decoded into shared memory, where its workspace pays
(``triton_wgmma_grad_x``); otherwise for ``M <= GRAD_X_FUSED_ROWS`` a fused
tensor-core kernel (``_grad_x_kernel``: the forward's tile decode, ``grad_y`` tiles as the left
operand, split over the weight rows); above that the two-step path: ``grad_y @ W`` in
cuBLAS, with ``W`` from the same decodes as the forward's (in digit-plane order, the output's
columns put back by one strided copy, where the forward would use planes), or for bf16
``DECODE_GEMM_ROWS`` rows on layers of ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS`` weights or more the
decode inside the GEMM (``triton_decode_gemm``).

See ``benchmarks/NOTES.md`` for the measured history (a faster v2 of the small-M kernels
gave wrong results on the GPU at large shapes and was reverted).

A corrupt byte (> 242) is never decoded silently: it turns the outputs it feeds into
NaN, which the non-finite guards of the training loop report.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import (
    bf16_exp2_bits,
    decode_weights,
    digit_planes,
    exact_exp2,
    shifted_quotients,
    trit_of,
    weight_tiles_bf16,
)
from ternary.kernels.layer_checks import check_layer_tensors
from ternary.kernels.linear import (triton_decode_gemm, triton_lut_gemv, triton_mma_forward, triton_run_decode,
                                   triton_table_gemv, triton_tiled_gemv, triton_tiled_mma, triton_wgmma_forward,
                                   triton_wgmma_grad_x)
from ternary.kernels.linear.triton_launch import (capability, even_splits, finish_splits, program_splits, round_up,
                                                  sm_count)
from ternary.kernels.registry import triton_interpreted
from ternary.state.decode_state import check_tiles

# Activation rows the GEMV takes (sharing each byte's decode). H100, 16384^2: M = 2 101.7 us
# against the fused kernel's ~161 us; 4 rows (the next power of two, for M = 3 or 4) took
# 252-395 us, slower than the fused kernel (benchmarks/results/h100/gemv_rows/gemv_rows.log).
GEMV_MAX_ROWS = 2
# The Gluon kernels run on cards of this compute capability or newer (measured on the H100 only):
# one activation row by warp-shuffle tables (triton_table_gemv) where the layer fits it, 16384^2
# 50 us against the GEMV's 78 us (benchmarks/results/h100/table_gemv/); 2 to 16 bf16 rows by
# register-decoded mma.sync (triton_mma_forward), 16384^2 72-95 us against the GEMV's 103 us (M = 2)
# and the fused kernel's 166 us (M = 16) (benchmarks/results/h100/mma_forward/, mma_wide/); 17 to
# WGMMA_MAX_ROWS by register-decoded wgmma (triton_wgmma_forward), but for the small layers that
# TWO_STEP_BYTES_PER_ROW leaves to the two-step path from 64 rows.
GLUON_MIN_CAPABILITY = (9, 0)
# GEMV split-K (blocks of 32 rows x 32 bytes): about GEMV_BLOCKS_PER_SPLIT byte blocks per
# program, but at least GEMV_MIN_PROGRAMS_PER_SM programs per SM, at most MAX_SPLITS splits and
# never more splits than blocks. H100 (benchmarks/results/h100/gemv_rows/m1_splits.log): 16384^2
# M = 1 78.0 us with 8 splits against 91.5 us with the fused kernel's rule (2 splits);
# 14336x4096 best with 2, 4096x14336 with 8, 4096^2 with 6, where the blocks rule alone (2
# splits) took 13.7 against 11.2 us (bench_small_m_blocks_rule_only.log). The grad-x GEMV
# splits its weight rows by the same rule, with row tiles in place of byte blocks.
GEMV_BLOCKS_PER_SPLIT = 12
GEMV_MIN_PROGRAMS_PER_SM = 4
MAX_SPLITS = 16
# (BLOCK_N, BLOCK_B, warps) of the forward GEMV (benchmarks/gemv_sweep.py).
GEMV_TILE = (32, 32, 4)
# bf16 rows above triton_mma_forward.MMA_MAX_ROWS go to the wgmma kernel up to this many. H100, against
# the mma.sync kernel / the two-step path in the same process (benchmarks/results/h100/wgmma_forward/):
# 16384^2 M = 32 / 64 / 128 / 256 113 / 147 / 176 / 311 us against 131 / 212 / 448 / 471 (M = 128
# 1.10x of bf16 cuBLAS, the two-step path 0.43x); on 4096^2 at M = 256 level with the two-step path
# (45.2 against 44.5 us). At M = 512 the two are level (676 against 690 us at 16384^2) and from
# M = 2048 the two-step path is 1.5-1.9x faster.
WGMMA_MAX_ROWS = 256
# From this many rows the forward decodes into a transient buffer for cuBLAS, unless a register-decode
# kernel takes the call (bf16 up to WGMMA_MAX_ROWS rows).
TWO_STEP_MIN_ROWS = 64
# ... and the wgmma kernel does not take layers whose bf16 buffer is at most this many bytes per
# activation row: the run decode's buffer then stays in L2 for cuBLAS. H100, same process, in turns
# (benchmarks/results/h100/bias_finish/probe18c.log; wgmma against two-step): 1024^2 M = 64 / 128
# 15.8 / 24.0 against 8.0 / 8.1 us; 2048^2 M = 64 17.3 against 12.9; 32 MiB buffers (4096^2, 2048 x
# 8192, 8192 x 2048) at M = 128 34.9-37.6 against 27.9-35.4 and at M = 64 level to 1.4x the other way
# (8192 x 2048: 25.0 against 34.1); 64 MiB buffers at M = 128 46.5 against 54.1-56.6, at M = 256 level.
TWO_STEP_BYTES_PER_ROW = 256 * 1024
# Rows for which the two-step forward decodes inside the GEMM (triton_decode_gemm) instead of before cuBLAS.
# H200, same process, in turns, against cuBLAS on the four benchmark shapes (benchmarks/results/h200/
# twenty_seventh/probes/decode_gemm_m.log): M = 2048 0.84-0.97x where the two-step path gave 0.86-0.88x,
# M = 4096 0.89-0.97x against 0.90-0.92x; M = 1024 0.60-0.72x against 0.77-0.78x (too few row tiles per
# row block to hide the decode), M = 8192 0.91-0.95x against 0.97-0.98x (the decode is a few percent of
# the two-step time there, and cuBLAS's GEMM beats ours).
DECODE_GEMM_ROWS = (2048, 6144)
# ... and grad-x (grad_y rows in DECODE_GEMM_ROWS) for layers of at least this many weights. H200, same process
# (benchmarks/results/h200/twenty_seventh/probes/decode_gemm_grad_x_waits.log): 16384^2 M = 2048 / 4096 0.90-0.91x
# / 0.96-1.00x of cuBLAS where the two-step path gave 0.85x / 0.93x; on the 58.7M-weight shapes 0.86-0.87x against
# 0.86-0.89x at M = 2048 and 0.86-0.90x against 0.92-0.93x at M = 4096, and 4096^2 M = 2048 0.80x against 0.86x: the
# decoders' share of the SMs costs more than the separate decode saves, except on the largest layers.
DECODE_GEMM_GRAD_X_MIN_WEIGHTS = 1 << 27
# ... and the forward on layers below DECODE_GEMM_GRAD_X_MIN_WEIGHTS weights only up to this many rows. H200, same
# process, in turns, with the thirty-first session's run decode (benchmarks/results/h200/thirty_first/probes/
# forward_rows_ab.log, dispatch_ab.log), two-step against the kernel on 4096^2, 14336 x 4096 and 4096 x 14336:
# M = 3072 0.926-0.948x against 0.900-0.920x of cuBLAS, M = 4096 0.932-0.961x against 0.906-0.926x (two runs),
# M = 6144 0.964-0.994x against 0.879-0.919x; at M = 2048 within 1.5 % either way (0.911-0.924x against
# 0.909-0.943x). On 16384^2 the kernel led at M = 4096 (0.980x against 0.956x).
DECODE_GEMM_SMALL_LAYER_MAX_ROWS = 2048
PLANE_BLOCK_B = 128
PLANE_BLOCK_N = 8
# Two-step forwards and grad-x with M * PLANES_ROWS_PER_OUTPUT < N decode in digit-plane order
# (regrouping x, or the grad-x output, to match); the decode saves time in proportion to N * K,
# the regrouping costs it in proportion to M * K. With the per-weight column decode (1.4-1.6 TB/s
# against the plane decode's 2.2) the break-even moved from 3 to about 8-11 (H100,
# benchmarks/results/h100/column_decode/planes_threshold.log). Layers the run decode takes (bf16,
# G a multiple of 20) never use planes: it writes columns as fast as the plane decode writes planes
# (2.2-2.4 TB/s), so planes only add the regrouping (benchmarks/results/h100/run_decode/
# planes_threshold.log: columns level or ahead at M = 512-8192 on the four benchmark shapes).
PLANES_ROWS_PER_OUTPUT = 8
# ... and only with at least this many plane blocks per row: the plane layout pads K to whole
# blocks of 5 * PLANE_BLOCK_B columns, so a narrow layer would multiply the GEMM's work.
PLANES_MIN_BLOCKS = 4
# Split-K programs per SM of the fused small-M kernel. It is latency-bound (few bytes in
# flight per program), so more programs per SM hide more latency. H100, 16384^2 at M = 16:
# 252 us with 2, 185 us with 8 (0.74x -> 1.01x of bf16); benchmarks/gemv_sweep.py.
PROGRAMS_PER_SM = 8
# (BLOCK_N, BLOCK_B, warps) of the grad-x GEMV for one row and for more rows. H100, same run
# (benchmarks/grad_x_sweep.py, benchmarks/results/h100/grad_x_gemv/grad_x_sweep_final_form.log):
# M = 1 32 x 32 gives 1.06-1.63x of bf16 cuBLAS over the four benchmark shapes (two-step:
# 0.37-0.49x); M = 2 64 x 32 gives 0.82-1.09x where 32 x 32 gave 0.68-1.02x.
GRAD_X_GEMV_TILES = ((32, 32, 4), (64, 32, 4))
# grad-x rows up to which the fused kernel runs (above: the two-step path, decode and cuBLAS), and
# the fused kernel's (BLOCK_N, BLOCK_B, warps, stages), with 16 grad_y rows per program. H100
# (benchmarks/grad_x_sweep.py, benchmarks/results/h100/grad_x_fused/): at M = 16 the fused kernel
# gives 0.79-1.02x of bf16 cuBLAS over the four benchmark shapes, the two-step path 0.38-0.58x;
# 32- and 64-row programs were slower than the two-step path (0.15-0.50x), and two 16-row
# programs re-decode every byte, which ties with the two-step path at M = 32.
GRAD_X_FUSED_ROWS = 16
# bf16 grad_y rows up to which grad-x goes to the wgmma kernel (triton_wgmma_grad_x) on sm_90+, for
# layers whose storage allows word reads and where its split-K workspace pays
# (triton_wgmma_grad_x.pays): 16384^2 M = 16 / 32 / 64 1.34x / 1.20x / 0.95x of bf16 cuBLAS where the
# fused kernel and the two-step path gave 1.03x / 0.41x / 0.41x (benchmarks/results/h100/
# wgmma_forward/gx2.log); from M = 128 the two-step path is faster on most shapes.
WGMMA_GRAD_X_MAX_ROWS = 64
GRAD_X_FUSED_TILE = (128, 32, 4, 3)
# (BLOCK_N, BLOCK_C, warps) of the column-order decode (benchmarks/decode_sweep.py).
COLUMN_DECODE_TILE = (16, 256, 4)
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _split_range(KBp, BLOCK_B: tl.constexpr, SPLITS):
    """First block and block count of this program's share (``program_id(2)``) of ``KBp / BLOCK_B`` blocks."""
    blocks = KBp // BLOCK_B
    per_split = (blocks + SPLITS - 1) // SPLITS
    first = tl.program_id(2) * per_split
    return first, tl.maximum(tl.minimum(per_split, blocks - first), 0)


@triton.jit
def _tile_scales(e_rows, block, NG, GROUPS: tl.constexpr, CONVERT: tl.constexpr):
    """``CONVERT(E)`` (``2^E`` as fp32 or as bf16 bits) of the ``GROUPS`` whole groups of byte
    block ``block``: ``[R, GROUPS]``."""
    groups = tl.minimum(block * GROUPS + tl.arange(0, GROUPS), NG - 1)
    return CONVERT(tl.load(e_rows + groups[None, :]))


@triton.jit
def _byte_scales(e_rows, jb, NG, BYTES_PER_GROUP: tl.constexpr, CONVERT: tl.constexpr):
    """``CONVERT(E)`` of every byte of a tile (groups not aligned to the block): ``[R, BLOCK_B]``."""
    groups = tl.minimum(jb // BYTES_PER_GROUP, NG - 1)
    return CONVERT(tl.load(e_rows + groups[None, :]))


@triton.jit
def _expand_groups(scale, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, BYTES_PER_GROUP: tl.constexpr):
    """``[BLOCK_N, GROUPS]`` group scales repeated over the bytes of each group."""
    wide = tl.broadcast_to(scale[:, :, None], (BLOCK_N, GROUPS, BYTES_PER_GROUP))
    return tl.reshape(wide, (BLOCK_N, GROUPS * BYTES_PER_GROUP))


@triton.jit
def _block_scales(e_rows, jb, block, NG, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                  BYTES_PER_GROUP: tl.constexpr, CONVERT: tl.constexpr = exact_exp2):
    """``CONVERT(E)`` of every byte of byte block ``block`` (default fp32 ``2^E``): one load and
    conversion per group when groups tile the block."""
    if BLOCK_B % BYTES_PER_GROUP == 0:
        GROUPS: tl.constexpr = BLOCK_B // BYTES_PER_GROUP
        return _expand_groups(_tile_scales(e_rows, block, NG, GROUPS, CONVERT), BLOCK_N, GROUPS, BYTES_PER_GROUP)
    else:
        return _byte_scales(e_rows, jb, NG, BYTES_PER_GROUP, CONVERT)


@triton.jit
def _trits(byte):
    """The five trits ``T`` (fp32, digit positions 0..4) of a tile of bytes."""
    r0, r1, r2, r3, r4 = shifted_quotients(byte)
    return trit_of(r0, r1), trit_of(r1, r2), trit_of(r2, r3), trit_of(r3, r4), r4


@triton.jit
def _scaled_digits(byte, scale):
    """The five weight tiles ``T * 2^E`` (digit positions 0..4) of a tile of bytes."""
    t0, t1, t2, t3, t4 = _trits(byte)
    return t0 * scale, t1 * scale, t2 * scale, t3 * scale, t4 * scale


@triton.jit
def _gemv_step(acc, worst, z_rows, rows_p, rows_e, block, KB, NG, stride_zi, BYTES_PER_GROUP: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, MASKED: tl.constexpr):
    """``acc [ROWS, BLOCK_N, BLOCK_B]`` plus the scaled dot products of byte block ``block``, the
    byte decode shared by the ``ROWS`` activation rows; ``worst`` the running maximum byte;
    ``MASKED`` for the one block that runs past ``KB``."""
    jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
    if MASKED:
        byte = tl.load(rows_p + jb[None, :], mask=(jb < KB)[None, :], other=121).to(tl.int32)
    else:
        byte = tl.load(rows_p + jb[None, :]).to(tl.int32)
    scale = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP)
    r0, r1, r2, r3, r4 = shifted_quotients(byte)
    z = z_rows + jb[None, :]
    part = r0[None] * tl.load(z)[:, None, :] + tl.load(z + 5 * stride_zi)[:, None, :]
    part += r1[None] * tl.load(z + stride_zi)[:, None, :]
    part += r2[None] * tl.load(z + 2 * stride_zi)[:, None, :]
    part += r3[None] * tl.load(z + 3 * stride_zi)[:, None, :]
    part += r4[None] * tl.load(z + 4 * stride_zi)[:, None, :]
    return acc + part * scale[None], tl.maximum(worst, byte)


@triton.jit
def _gemv_kernel(
    z_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, KBp, NG,
    stride_zi, stride_zm, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, SPLIT_K,
):
    """Partial ``out[s, m, n] = sum_k x[m, k] W[n, k]`` over split ``s`` of the bytes, for the
    ``M <= ROWS`` activation rows (z planes ``[6, ROWS, KBp]``, zero past ``M``).

    Rows of ``W`` past the end are clamped (their results are not stored). Whole byte blocks
    load unmasked; in the last, partial one the bytes past the end are masked to all-zero
    trits (the padded activation planes are zero there anyway). Sums stay per lane in a
    ``[ROWS, BLOCK_N, BLOCK_B]`` accumulator until the end.
    """
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, ROWS)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    z_rows = z_ptr + rm[:, None] * stride_zm
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    whole = tl.minimum(count, tl.maximum(KB // BLOCK_B - first, 0))
    acc = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, whole):
        acc, worst = _gemv_step(acc, worst, z_rows, rows_p, rows_e, first + step, KB, NG, stride_zi,
                                BYTES_PER_GROUP, BLOCK_N, BLOCK_B, False)
    for step in range(whole, count):
        acc, worst = _gemv_step(acc, worst, z_rows, rows_p, rows_e, first + step, KB, NG, stride_zi,
                                BYTES_PER_GROUP, BLOCK_N, BLOCK_B, True)
    total = tl.where((tl.max(worst, axis=1) > 242)[None, :], float("nan"), tl.sum(acc, axis=2))
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, total, mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _grad_x_gemv_kernel(
    g_ptr, p_ptr, e_ptr, out_ptr,
    M, N, Np, KB, NG, stride_gm, stride_gn, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, SPLIT_N,
):
    """Partial ``out[s, m, 5 j + d] = sum_n grad_y[m, n] W[n, 5 j + d]`` for the byte block
    ``program_id(0)`` over split ``s = program_id(2)`` of the weight rows (``Np`` = N padded to
    ``BLOCK_N``), for the ``M <= ROWS`` rows of ``grad_y``.

    Each byte's five trits (from its shifted quotients, shared by the rows) multiply
    ``grad_y[m, n] 2^E`` into five per-lane sums, reduced over the rows at the end; every term is
    an exact product, as in the reference. A corrupt byte turns its five output columns into NaN.
    """
    block = tl.program_id(0)
    jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = tl.arange(0, ROWS)
    b_ok = (jb < KB)[None, :]
    first, count = _split_range(Np, BLOCK_N, SPLIT_N)
    acc0 = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    acc1 = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    acc2 = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    acc3 = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    acc4 = tl.zeros((ROWS, BLOCK_N, BLOCK_B), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        rn = (first + step) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = tl.minimum(rn, N - 1)[:, None]
        byte = tl.load(p_ptr + rows * stride_pn + jb[None, :], mask=b_ok, other=121).to(tl.int32)
        scale = _block_scales(e_ptr + rows * stride_en, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP)
        g = tl.load(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                    mask=(rm < M)[:, None] & (rn < N)[None, :], other=0.0).to(tl.float32)
        weighted = g[:, :, None] * scale[None]
        t0, t1, t2, t3, t4 = _trits(byte)
        acc0 += t0[None] * weighted
        acc1 += t1[None] * weighted
        acc2 += t2[None] * weighted
        acc3 += t3[None] * weighted
        acc4 += t4[None] * weighted
        worst = tl.maximum(worst, byte)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + 5 * jb[None, :]
    _store_digit_columns(out, (rm < M)[:, None] & b_ok, worst, tl.sum(acc0, axis=1), tl.sum(acc1, axis=1),
                         tl.sum(acc2, axis=1), tl.sum(acc3, axis=1), tl.sum(acc4, axis=1))


@triton.jit
def _store_digit_columns(out, keep, worst, c0, c1, c2, c3, c4):
    """Store the five digit columns ``c0 .. c4`` (``[rows, BLOCK_B]``) of byte columns ``j`` at
    ``out + d`` (output columns ``5 j + d``) where ``keep``; a column whose bytes include a corrupt
    one (``worst [BLOCK_N, BLOCK_B]``, the running maximum byte, > 242) is stored as NaN."""
    bad = (tl.max(worst, axis=0) > 242)[None, :]
    tl.store(out, tl.where(bad, float("nan"), c0), mask=keep)
    tl.store(out + 1, tl.where(bad, float("nan"), c1), mask=keep)
    tl.store(out + 2, tl.where(bad, float("nan"), c2), mask=keep)
    tl.store(out + 3, tl.where(bad, float("nan"), c3), mask=keep)
    tl.store(out + 4, tl.where(bad, float("nan"), c4), mask=keep)


@triton.jit
def _weight_tiles(rows_p, rows_e, jb, block, KB, NG, worst, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                  BYTES_PER_GROUP: tl.constexpr, PAIRS: tl.constexpr):
    """The five scaled weight tiles ``[BLOCK_N, BLOCK_B]`` (digit positions 0..4) of byte block
    ``block`` of the weight rows ``rows_p`` / ``rows_e`` (pointers ``[BLOCK_N, 1]``), and the
    running maximum byte ``worst``. ``PAIRS``: bf16 tiles from the PTX pair decode (NaN for a
    corrupt byte, ``worst`` unused); otherwise fp32 tiles from the shifted quotients."""
    byte = tl.load(rows_p + tl.minimum(jb, KB - 1)[None, :])
    if PAIRS:
        bits = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP, bf16_exp2_bits)
        w0, w1, w2, w3, w4 = weight_tiles_bf16(byte, bits)
    else:
        byte = byte.to(tl.int32)
        worst = tl.maximum(worst, byte)
        scale = _block_scales(rows_e, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP)
        w0, w1, w2, w3, w4 = _scaled_digits(byte, scale)
    return w0, w1, w2, w3, w4, worst


@triton.jit
def _forward_kernel(
    x_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, KBp, NG,
    stride_xd, stride_xm, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_K, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, PAIRS: tl.constexpr,
):
    """Partial ``out[s, m, n] = sum_k x[m, k] W[n, k]`` from plane-major padded activation planes.

    ``PAIRS`` (bf16, compiled): the weight tiles come from the PTX pair decode
    (:func:`weight_tiles_bf16`, NaN for a corrupt byte); otherwise from fp32 shifted quotients, with a
    running maximum for the corrupt-byte check."""
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        block = first + step
        jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
        w0, w1, w2, w3, w4, worst = _weight_tiles(rows_p, rows_e, jb, block, KB, NG, worst,
                                                  BLOCK_N, BLOCK_B, BYTES_PER_GROUP, PAIRS)
        x_cols = x_rows + jb[None, :]
        acc = tl.dot(tl.load(x_cols), tl.trans(w0.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + stride_xd), tl.trans(w1.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 2 * stride_xd), tl.trans(w2.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 3 * stride_xd), tl.trans(w3.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 4 * stride_xd), tl.trans(w4.to(DOT_DTYPE)), acc, input_precision=PRECISION)
    if not PAIRS:
        acc = tl.where((tl.max(worst, axis=1) > 242)[None, :], float("nan"), acc)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc, mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _grad_x_kernel(
    g_ptr, p_ptr, e_ptr, out_ptr,
    M, N, Np, KB, NG, stride_gm, stride_gn, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_N, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, PAIRS: tl.constexpr,
):
    """Partial ``out[s, m, 5 j + d] = sum_n grad_y[m, n] W[n, 5 j + d]`` on tensor cores: byte
    block ``program_id(0)``, rows ``program_id(1)`` of ``grad_y``, split ``s = program_id(2)``
    of the weight rows (``Np`` = N padded to ``BLOCK_N``). Each ``[BLOCK_N, BLOCK_B]`` byte tile is
    decoded once (:func:`_weight_tiles`) into the five digit operands of five products
    ``grad_y [BLOCK_M, BLOCK_N] @ W_d [BLOCK_N, BLOCK_B]``. A corrupt byte turns its five output
    columns into NaN."""
    block = tl.program_id(0)
    jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    first, count = _split_range(Np, BLOCK_N, SPLIT_N)
    acc0 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc4 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        rn = (first + step) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = tl.minimum(rn, N - 1)[:, None]
        w0, w1, w2, w3, w4, worst = _weight_tiles(p_ptr + rows * stride_pn, e_ptr + rows * stride_en, jb, block,
                                                  KB, NG, worst, BLOCK_N, BLOCK_B, BYTES_PER_GROUP, PAIRS)
        g = tl.load(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                    mask=(rm < M)[:, None] & (rn < N)[None, :], other=0.0).to(DOT_DTYPE)
        acc0 = tl.dot(g, w0.to(DOT_DTYPE), acc0, input_precision=PRECISION)
        acc1 = tl.dot(g, w1.to(DOT_DTYPE), acc1, input_precision=PRECISION)
        acc2 = tl.dot(g, w2.to(DOT_DTYPE), acc2, input_precision=PRECISION)
        acc3 = tl.dot(g, w3.to(DOT_DTYPE), acc3, input_precision=PRECISION)
        acc4 = tl.dot(g, w4.to(DOT_DTYPE), acc4, input_precision=PRECISION)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + 5 * jb[None, :]
    _store_digit_columns(out, (rm < M)[:, None] & (jb < KB)[None, :], worst, acc0, acc1, acc2, acc3, acc4)


@triton.jit
def _dequantize_kernel(p_ptr, e_ptr, w_ptr, N, K, stride_pn, stride_en, stride_wn,
                       GROUP_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Dense ``w [N, Kp] = T * 2^E`` in ``w``'s dtype, in column order, for a row stride
    ``Kp`` that is a multiple of ``BLOCK_C`` (columns past ``K`` repeat column ``K - 1``).

    The tile is held as ``[BLOCK_C, BLOCK_N]`` (columns first): each lane then owns a run of
    consecutive columns of a few rows, so the per-column digit constants are shared by those
    rows and the run is stored as whole 16-byte vectors (no column mask: the padding columns
    take clamped, finite values instead)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    w = decode_weights(p_ptr, e_ptr, tl.minimum(rn, N - 1)[None, :], tl.minimum(cols, K - 1)[:, None], True,
                       stride_pn, stride_en, GROUP_SIZE)
    tl.store(w_ptr + rn.to(tl.int64)[None, :] * stride_wn + cols[:, None], w.to(w_ptr.dtype.element_ty),
             mask=(rn < N)[None, :])


@triton.jit
def _dequantize_planes_kernel(p_ptr, e_ptr, w_ptr, N, KB, NG, stride_pn, stride_en, stride_wn,
                              BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                              BF16_PAIRS: tl.constexpr):
    """Dense weights in digit-plane order ``[N, blocks, 5, BLOCK_B]``: entry ``(n, b, d, i)`` is
    ``W[n, 5 (b BLOCK_B + i) + d]`` (zero past ``K``).

    Each packed byte is loaded once and gives all five weights; each digit of a
    ``[BLOCK_N, BLOCK_B]`` byte tile is stored as one contiguous run. Corrupt bytes (> 242)
    give NaN. ``BF16_PAIRS`` (bf16 output, compiled): two bytes per register through
    :func:`weight_tiles_bf16`; otherwise fp32 quotients.
    """
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    block = tl.program_id(1)
    jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
    rows = tl.minimum(rn, N - 1)[:, None]
    b_ok = (jb < KB)[None, :]
    run = w_ptr + rn[:, None] * stride_wn + block * 5 * BLOCK_B + tl.arange(0, BLOCK_B)[None, :]
    keep = (rn < N)[:, None]
    dtype = w_ptr.dtype.element_ty
    if BF16_PAIRS:
        byte = tl.load(p_ptr + rows * stride_pn + jb[None, :], mask=b_ok, other=121)
        bits = _block_scales(e_ptr + rows * stride_en, jb, block, NG, BLOCK_N, BLOCK_B, BYTES_PER_GROUP,
                             bf16_exp2_bits)
        w0, w1, w2, w3, w4 = weight_tiles_bf16(byte, bits)
        tl.store(run, w0, mask=keep)
        tl.store(run + BLOCK_B, w1, mask=keep)
        tl.store(run + 2 * BLOCK_B, w2, mask=keep)
        tl.store(run + 3 * BLOCK_B, w3, mask=keep)
        tl.store(run + 4 * BLOCK_B, w4, mask=keep)
    else:
        byte = tl.load(p_ptr + rows * stride_pn + jb[None, :], mask=b_ok, other=121).to(tl.int32)
        scale = exact_exp2(tl.load(e_ptr + rows * stride_en + (jb // BYTES_PER_GROUP)[None, :], mask=b_ok, other=0))
        scale = tl.where(byte > 242, float("nan"), scale)
        # Written out rather than through ``_scaled_digits``: with the helper the stores compiled to
        # predicated code that measured 10% slower on an H100 (16384^2: 310 vs 280 us, same run).
        r0, r1, r2, r3, r4 = shifted_quotients(byte)
        tl.store(run, (trit_of(r0, r1) * scale).to(dtype), mask=keep)
        tl.store(run + BLOCK_B, (trit_of(r1, r2) * scale).to(dtype), mask=keep)
        tl.store(run + 2 * BLOCK_B, (trit_of(r2, r3) * scale).to(dtype), mask=keep)
        tl.store(run + 3 * BLOCK_B, (trit_of(r3, r4) * scale).to(dtype), mask=keep)
        tl.store(run + 4 * BLOCK_B, (r4 * scale).to(dtype), mask=keep)


# --------------------------------------------------------------------------- launchers


def _check(name: str, a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, in_features: int,
           group_size: int, width: int, width_name: str, bias: torch.Tensor | None = None) -> None:
    """Raise a one-line error naming the tensor at fault."""
    check_layer_tensors(f"triton {name}", in_features=in_features, group_size=group_size, device=a.device,
                        T_packed=T_packed, E=E, bias=bias)
    if a.dim() != 2 or a.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"triton {name}: activations must be a 2-D float tensor, got {a.dtype} {list(a.shape)}")
    if a.shape[1] != width:
        raise ValueError(f"triton {name}: activations have {a.shape[1]} columns, expected {width_name}={width}")


def _dot_config(dtype: torch.dtype) -> tuple[tl.dtype, torch.dtype, str]:
    """Tensor-core operand dtype (Triton and torch) and fp32 precision mode for activations of ``dtype``."""
    if dtype == torch.bfloat16 and not triton_interpreted():
        return tl.bfloat16, torch.bfloat16, "tf32x3"
    return tl.float32, torch.float32, "tf32x3"


def _check_pairs(name: str, pairs: bool, dtype: torch.dtype) -> None:
    """The PTX pair decode runs only compiled and only writes bf16."""
    if pairs and (triton_interpreted() or dtype != torch.bfloat16):
        raise ValueError(f"triton {name}: the PTX pair decode needs a GPU and bf16 (pairs=True with {dtype}, "
                         f"TRITON_INTERPRET={int(triton_interpreted())})")


def _splits(tiles: int, blocks: int, device: torch.device) -> int:
    """Reduction splits of the fused kernel: about ``PROGRAMS_PER_SM`` programs per SM, at least 4
    blocks each."""
    if triton_interpreted():
        return min(2, blocks)
    return program_splits(PROGRAMS_PER_SM, max(tiles, 1), min(blocks // 4, MAX_SPLITS), blocks, device)


def _gemv_splits(tiles: int, blocks: int, device: torch.device) -> int:
    """Reduction splits of the GEMV (see ``GEMV_BLOCKS_PER_SPLIT``)."""
    if triton_interpreted():
        return min(2, blocks)
    sms = sm_count(device)
    wanted = max(blocks // GEMV_BLOCKS_PER_SPLIT, -(-GEMV_MIN_PROGRAMS_PER_SM * sms // tiles))
    return even_splits(max(1, min(MAX_SPLITS, blocks, wanted)), blocks)


def dequantize(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
               dtype: torch.dtype = torch.bfloat16, tile: tuple[int, int, int] | None = None,
               runs: bool | None = None) -> torch.Tensor:
    """Dense ``W [N, K] = T * 2^E`` in ``dtype`` (the transient buffer of the two-step path).

    The result is a view of a buffer whose rows are padded (row stride ``Kp >= K``), which cuBLAS
    takes as its leading dimension. bf16 buffers of layers whose groups are whole 4-byte runs are
    decoded eight bytes at a time by PTX on the GPU (``triton_run_decode``: ``Kp`` holds whole runs of 40
    columns and whole 128-byte lines, zeros past ``K``). ``runs=False`` forces the per-weight decode, whose
    rows are whole column tiles (fewer than ``min(BLOCK_C, next_power_of_2(K))`` columns more) and whose launch
    ``tile = (BLOCK_N, BLOCK_C, warps)`` overrides (benchmark sweeps; a tile also picks that decode).
    """
    if runs is None:
        runs = tile is None and triton_run_decode.takes(T_packed, group_size, dtype)
    if runs:
        if dtype != torch.bfloat16:
            raise ValueError(f"dequantize: the run decode writes bf16 only (asked for {dtype})")
        if tile is not None:
            raise ValueError("dequantize: tile is the per-weight decode's launch; the run decode takes "
                             "triton_run_decode.dequantize_runs(..., block=)")
        return triton_run_decode.dequantize_runs(T_packed, E, in_features=in_features, group_size=group_size)
    n = T_packed.shape[0]
    block_n, block_c, warps = (16, 32, 4) if triton_interpreted() else COLUMN_DECODE_TILE
    if tile is not None:
        block_n, block_c, warps = tile
    block_c = min(block_c, max(8, triton.next_power_of_2(in_features)))  # a narrow layer pads little
    w = torch.empty((n, round_up(in_features, block_c)), dtype=dtype, device=T_packed.device)
    _dequantize_kernel[(triton.cdiv(n, block_n), w.shape[1] // block_c)](
        T_packed, E, w, n, in_features, T_packed.stride(0), E.stride(0), w.stride(0),
        GROUP_SIZE=group_size, BLOCK_N=block_n, BLOCK_C=block_c, num_warps=warps,
    )
    return w[:, :in_features]


def plane_block() -> int:
    """Bytes per digit run of the digit-plane layout of the two-step forward and grad-x."""
    return 16 if triton_interpreted() else PLANE_BLOCK_B


def _plane_order(rows: int, T_packed: torch.Tensor, group_size: int, dtype: torch.dtype) -> bool:
    """Whether a two-step call with ``rows`` activation rows and a ``dtype`` buffer decodes in
    digit-plane order (never where the run decode takes the layer)."""
    n, kb = T_packed.shape
    if triton_run_decode.takes(T_packed, group_size, dtype):
        return False
    return rows * PLANES_ROWS_PER_OUTPUT < n and kb >= PLANES_MIN_BLOCKS * plane_block()


def dequantize_planes(T_packed: torch.Tensor, E: torch.Tensor, *, group_size: int, dtype: torch.dtype,
                      bf16_pairs: bool | None = None) -> torch.Tensor:
    """Dense weights ``[N, blocks * 5 * BB]`` in digit-plane order (``BB = plane_block()``), the
    column order :func:`digit_planes` gives the activations with ``blocked=True``.

    ``bf16_pairs`` (default: bf16 output on the GPU) picks the PTX pair decode; ``False``
    forces the fp32 quotients (benchmarks compare the two)."""
    n, kb = T_packed.shape
    block_b = plane_block()
    blocks = triton.cdiv(kb, block_b)
    w = torch.empty((n, blocks * 5 * block_b), dtype=dtype, device=T_packed.device)
    block_n = 16 if triton_interpreted() else PLANE_BLOCK_N
    if bf16_pairs is None:
        bf16_pairs = dtype == torch.bfloat16 and not triton_interpreted()
    _check_pairs("dequantize_planes", bf16_pairs, dtype)
    _dequantize_planes_kernel[(triton.cdiv(n, block_n), blocks)](
        T_packed, E, w, n, kb, E.shape[1], T_packed.stride(0), E.stride(0), w.stride(0),
        BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_B=block_b, BF16_PAIRS=bf16_pairs,
    )
    return w


def _gemv_tile(name: str, m: int, tile, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """``(BLOCK_N, BLOCK_B, warps)`` of a GEMV launch (``tile[:3]`` overrides), after checking
    that it takes ``m`` rows."""
    if not 1 <= m <= GEMV_MAX_ROWS:
        raise ValueError(f"triton {name}: takes 1 to {GEMV_MAX_ROWS} rows, got {m}")
    if tile is not None:
        return tuple(tile[:3])
    return (16, 16, 4) if triton_interpreted() else default


def _gemv_split_count(tile, tiles: int, blocks: int, device: torch.device) -> int:
    """Splits of a GEMV's ``blocks`` reduction blocks: ``tile[3]`` (capped, 0 meaning one) or
    ``_gemv_splits``."""
    if tile is not None:
        return even_splits(max(1, min(tile[3], blocks)), blocks)
    return _gemv_splits(tiles, blocks, device)


def forward_gemv(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits, tile=None):
    """CUDA-core path for up to ``GEMV_MAX_ROWS`` activation rows, which share each byte's
    decode (see the module docstring).

    ``tile = (BLOCK_N, BLOCK_B, warps, splits)`` overrides the launch (benchmark sweeps).
    """
    m = x.shape[0]
    block_n, block_b, warps = _gemv_tile("forward_gemv", m, tile, GEMV_TILE)
    n, kb = T_packed.shape
    rows = triton.next_power_of_2(m)
    kb_padded = round_up(kb, block_b)
    z = digit_planes(x, rows, kb_padded, block_b, z_form=True, dtype=torch.float32, blocked=False)
    tiles, blocks = triton.cdiv(n, block_n), kb_padded // block_b
    splits = _gemv_split_count(tile, tiles, blocks, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _gemv_kernel[(tiles, 1, splits)](
        z, T_packed, E, ws, m, n, kb, kb_padded, E.shape[1], z.stride(0), z.stride(1), T_packed.stride(0),
        E.stride(0), ws.stride(0), ws.stride(1), BYTES_PER_GROUP=group_size // 5, ROWS=rows, BLOCK_N=block_n,
        BLOCK_B=block_b, SPLIT_K=splits, num_warps=warps,
    )
    return finish_splits(ws, bias, bias_frac_bits, x.dtype)


def gluon_runs(x: torch.Tensor) -> bool:
    """Whether a Gluon kernel can take a call on ``x``: compiled (Gluon has no interpreter), on a
    card of compute capability ``GLUON_MIN_CAPABILITY`` or newer (where they were measured)."""
    return not triton_interpreted() and x.is_cuda and capability(x.device) >= GLUON_MIN_CAPABILITY


def table_gemv_takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the one-row forward goes to the shuffle-table kernel: a Gluon card, for a layer
    ``triton_table_gemv.fits``."""
    return gluon_runs(x) and triton_table_gemv.fits(T_packed, E, group_size)


def forward_table_gemv(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits, tile=None):
    """One activation row by warp-shuffle lookup tables (``triton_table_gemv``); ``tile = (rows
    per lane, warps, splits)`` overrides the launch (benchmark sweeps)."""
    ws = triton_table_gemv.table_gemv(x, T_packed, E, group_size=group_size, tile=tile)
    return finish_splits(ws, bias, bias_frac_bits, x.dtype)


def mma_forward_takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether a forward goes to the register-decode ``mma.sync`` kernel: a Gluon card, for a call
    ``triton_mma_forward.takes``."""
    return gluon_runs(x) and triton_mma_forward.takes(x, T_packed, E, group_size)


def forward_mma(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits, tile=None, validated=False):
    """2 to 16 bf16 activation rows by ``mma.sync`` on register-decoded weights
    (``triton_mma_forward``); ``tile = (BLOCK_N, warps, programs per SM)`` overrides the launch;
    ``validated``: the caller has already checked ``mma_forward_takes`` (the dispatch)."""
    ws = triton_mma_forward.mma_forward(x, T_packed, E, group_size=group_size, tile=tile, validated=validated)
    return finish_splits(ws, bias, bias_frac_bits, x.dtype)


def wgmma_forward_takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether a forward goes to the register-decode ``wgmma`` kernel: a Gluon card, for a call
    ``triton_wgmma_forward.takes``."""
    return gluon_runs(x) and triton_wgmma_forward.takes(x, T_packed, E, group_size)


def forward_wgmma(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits, tile=None, validated=False):
    """bf16 activation rows (at least 2; the dispatch sends 17 to ``WGMMA_MAX_ROWS``, small layers from
    ``TWO_STEP_MIN_ROWS`` excepted, see ``buffer_stays_in_l2``) by ``wgmma`` on
    register-decoded weights and TMA-staged activations (``triton_wgmma_forward``); ``tile =
    (BLOCK_T, BLOCK_N, warps, stages, programs per SM)`` overrides the launch; ``validated``: the
    caller has already checked ``wgmma_forward_takes``."""
    return triton_wgmma_forward.wgmma_forward(x, T_packed, E, bias, group_size=group_size,
                                              bias_frac_bits=bias_frac_bits, tile=tile, validated=validated)


def forward_fused(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits, pairs=None, tile=None):
    """Tensor-core path: weights decoded tile by tile on chip; ``pairs`` (default: bf16
    activations, compiled) picks the PTX pair decode over the fp32 quotients.

    ``tile = (BLOCK_N, BLOCK_B, warps, stages)`` overrides the launch (benchmark sweeps).
    """
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, plane_dtype, precision = _dot_config(x.dtype)
    stages = 3
    if triton_interpreted():
        block_m, block_n, block_b, warps = 16, 16, 16, 4
    else:
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n, block_b, warps = (64, 32, 4) if m <= 64 else (128, 32, 8)
    if tile is not None:
        block_n, block_b, warps, stages = tile
    rows, kb_padded = round_up(m, block_m), round_up(kb, block_b)
    planes = digit_planes(x, rows, kb_padded, block_b, z_form=False, dtype=plane_dtype, blocked=False)
    tiles = triton.cdiv(n, block_n) * (rows // block_m)
    splits = _splits(tiles, kb_padded // block_b, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    if pairs is None:
        pairs = dot_dtype == tl.bfloat16
    _check_pairs("forward_fused", pairs, plane_dtype)
    _forward_kernel[(triton.cdiv(n, block_n), rows // block_m, splits)](
        planes, T_packed, E, ws, m, n, kb, kb_padded, E.shape[1],
        planes.stride(0), planes.stride(1), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        BYTES_PER_GROUP=group_size // 5, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_K=splits, DOT_DTYPE=dot_dtype, PRECISION=precision, PAIRS=pairs, num_warps=warps, num_stages=stages,
    )
    return finish_splits(ws, bias, bias_frac_bits, x.dtype)


def _buffer_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the two-step buffer: the activations', except fp16, whose range cannot hold
    ``2^E`` for E >= 16 (fp16 inputs are computed in fp32 and the result cast back)."""
    return torch.float32 if dtype == torch.float16 else dtype


def forward_two_step(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """Dense decode into a transient buffer in ``x.dtype`` (fp32 for fp16), then cuBLAS.

    Where :func:`_plane_order` says so (``M * PLANES_ROWS_PER_OUTPUT < N``, a layer at least
    ``PLANES_MIN_BLOCKS`` plane blocks wide, and not one the run decode takes) the buffer is in
    digit-plane order (each digit of a byte block is one contiguous run, so the decode stores whole
    runs: 1.4x faster than the per-weight column decode on an H100) and the activations are
    regrouped into the same order; the product is the same sum. Otherwise column order (no
    regrouping of ``x``).
    """
    out_dtype, dtype = x.dtype, _buffer_dtype(x.dtype)
    if _plane_order(x.shape[0], T_packed, group_size, dtype):
        w = dequantize_planes(T_packed, E, group_size=group_size, dtype=dtype)
        kb_padded = w.shape[1] // 5
        x = digit_planes(x, x.shape[0], kb_padded, plane_block(), z_form=False, dtype=dtype, blocked=True)
        x = x.view(x.shape[0], -1)
    else:
        w = dequantize(T_packed, E, in_features=in_features, group_size=group_size, dtype=dtype)
        x = x.to(dtype)
    y = torch.nn.functional.linear(x, w)
    if bias is None:
        return y.to(out_dtype)
    return finish_splits(y[None], bias, bias_frac_bits, out_dtype)


def decode_gemm_takes(a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int,
                      in_features: int | None = None) -> bool:
    """Whether a forward (``a = x``) or, given ``in_features``, a grad-x (``a = grad_y``) goes to the
    decode-in-GEMM kernel: ``DECODE_GEMM_ROWS`` rows, at least one output tile per SM, a call
    ``triton_decode_gemm.takes``; on layers of fewer than ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS`` weights only
    a forward of at most ``DECODE_GEMM_SMALL_LAYER_MAX_ROWS`` rows."""
    m, n = a.shape[0], T_packed.shape[0]
    grad_x = in_features is not None
    large = n * (in_features if grad_x else a.shape[1]) >= DECODE_GEMM_GRAD_X_MIN_WEIGHTS
    most = DECODE_GEMM_ROWS[1] if large else DECODE_GEMM_SMALL_LAYER_MAX_ROWS
    return (DECODE_GEMM_ROWS[0] <= m <= most and gluon_runs(a) and (large or not grad_x)
            and triton_decode_gemm.takes(a, T_packed, E, group_size)
            and triton_decode_gemm.output_tiles(m, in_features if grad_x else n) >= sm_count(a.device))


def buffer_stays_in_l2(m: int, n: int, k: int) -> bool:
    """Whether a forward of ``m`` rows through an ``[n, k]`` layer takes the two-step path rather than
    the wgmma kernel for the size of its bf16 buffer (``TWO_STEP_BYTES_PER_ROW``)."""
    return m >= TWO_STEP_MIN_ROWS and 2 * n * k <= m * TWO_STEP_BYTES_PER_ROW


def forward(
    x: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    in_features: int,
    group_size: int,
    bias_frac_bits: int,
) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-B`` in ``x.dtype``."""
    _check("forward", x, T_packed, E, in_features, group_size, in_features, "in_features", bias)
    kwargs = dict(in_features=in_features, group_size=group_size, bias_frac_bits=bias_frac_bits)
    m = x.shape[0]
    if m == 0 or T_packed.shape[0] == 0:
        return torch.zeros((m, T_packed.shape[0]), dtype=x.dtype, device=x.device)
    if mma_forward_takes(x, T_packed, E, group_size):
        return forward_mma(x, T_packed, E, bias, validated=True, **kwargs)
    if (m <= WGMMA_MAX_ROWS and not buffer_stays_in_l2(m, T_packed.shape[0], in_features)
            and wgmma_forward_takes(x, T_packed, E, group_size)):
        return forward_wgmma(x, T_packed, E, bias, validated=True, **kwargs)
    if decode_gemm_takes(x, T_packed, E, group_size):
        return triton_decode_gemm.forward(x, T_packed, E, bias, **kwargs)
    if m >= TWO_STEP_MIN_ROWS:
        return forward_two_step(x, T_packed, E, bias, **kwargs)
    if m == 1 and table_gemv_takes(x, T_packed, E, group_size):
        return forward_table_gemv(x, T_packed, E, bias, **kwargs)
    if m <= GEMV_MAX_ROWS:
        return forward_gemv(x, T_packed, E, bias, **kwargs)
    return forward_fused(x, T_packed, E, bias, **kwargs)


def forward_decode(
    x: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    T_tiles: torch.Tensor,
    E_tiles: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    in_features: int,
    group_size: int,
    bias_frac_bits: int,
    tile: tuple[int, ...] | None = None,
    validated: bool = False,
) -> torch.Tensor:
    """:func:`forward` of a layer that also holds the decode layout's ``T_tiles [ceil(N / 32),
    KB32 / 16, 32, 16]`` / ``E_tiles`` (``ternary.state.decode_state``). On a Gluon card one activation
    row reads the tiles by one shared-memory table lookup per byte (``triton_lut_gemv``, for ``G / 5``
    a multiple of 8) or else by shuffle lookups
    (``triton_tiled_gemv``), and 2 to 64 bf16 rows by ``mma.sync`` on table-decoded weights
    (``triton_tiled_mma``, for ``G / 5`` a multiple of 8); anything else is :func:`forward` on
    ``T_packed`` and ``E``. ``tile`` overrides the launch of the kernel the call takes (benchmark
    sweeps) and picks it for one row by its length: ``(programs per SM,)`` the table lookup,
    ``(rows per lane, warps, programs per SM)`` the shuffles; ``(warps, programs per SM)`` (no register
    cap, whatever ``TILED_MMA_LAUNCHES`` caps) or ``(warps, programs per SM, register cap)`` for more rows.
    ``validated``: the caller has already checked the tiles against the layer (a ``DecodeLinearState``
    does on construction)."""
    if not validated:
        check_tiles(T_tiles, E_tiles, T_packed.shape[0], in_features, group_size, "triton forward")
    one_row = x.dim() == 2 and x.shape[0] == 1
    if (x.dim() != 2 or T_packed.shape[0] == 0 or not gluon_runs(x)
            or not (one_row or triton_tiled_mma.takes(x, group_size))):
        return forward(x, T_packed, E, bias, in_features=in_features, group_size=group_size,
                       bias_frac_bits=bias_frac_bits)
    _check("forward", x, T_packed, E, in_features, group_size, in_features, "in_features", bias)
    for name, tiles, align in (("T_tiles", T_tiles, 16), ("E_tiles", E_tiles, 4)):
        if tiles.device != x.device or not tiles.is_contiguous() or tiles.data_ptr() % align:
            raise ValueError(f"triton forward: {name} must be contiguous on {x.device} and start {align}-byte "
                             f"aligned, got {tiles.device} with strides {list(tiles.stride())} at address "
                             f"{tiles.data_ptr():#x}")
    if one_row and tile is not None and len(tile) not in (1, 3):
        raise ValueError(f"triton forward: tile={tile} for one row must be (programs per SM,) for the table lookup "
                         "or (rows per lane, warps, programs per SM) for the shuffle GEMV")
    if not one_row and tile is not None and len(tile) not in (2, 3):
        raise ValueError(f"triton forward: tile={tile} for {x.shape[0]} rows must be (warps, programs per SM) or "
                         "(warps, programs per SM, register cap)")
    if one_row and (len(tile) == 1 if tile is not None else triton_lut_gemv.takes(x, T_tiles, group_size)):
        ws = triton_lut_gemv.lut_gemv(x, T_tiles, E_tiles, out_features=T_packed.shape[0], group_size=group_size,
                                      tile=tile)
    elif one_row:
        ws = triton_tiled_gemv.tiled_gemv(x, T_tiles, E_tiles, out_features=T_packed.shape[0], group_size=group_size,
                                          tile=tile)
    else:
        ws = triton_tiled_mma.tiled_mma(x, T_tiles, E_tiles, out_features=T_packed.shape[0], group_size=group_size,
                                        tile=tile)
    return finish_splits(ws, bias, bias_frac_bits, x.dtype)


def grad_x_gemv_tile(m: int) -> tuple[int, int, int]:
    """The grad-x GEMV's default ``(BLOCK_N, BLOCK_B, warps)`` for ``m`` rows (``GRAD_X_GEMV_TILES``)."""
    return GRAD_X_GEMV_TILES[0 if m <= 1 else 1]


def grad_x_gemv(grad_y, T_packed, E, *, in_features, group_size, tile=None):
    """CUDA-core grad-x for up to ``GEMV_MAX_ROWS`` rows of ``grad_y``: the weight bytes are
    read once and never decoded into a buffer (see ``_grad_x_gemv_kernel``); splits over the
    weight rows go to an fp32 workspace that the finishing kernel reduces.

    ``tile = (BLOCK_N, BLOCK_B, warps, splits)`` overrides the launch (benchmark sweeps).
    """
    m = grad_y.shape[0]
    block_n, block_b, warps = _gemv_tile("grad_x_gemv", m, tile, grad_x_gemv_tile(m))
    n, kb = T_packed.shape
    blocks, row_tiles = triton.cdiv(kb, block_b), triton.cdiv(n, block_n)
    splits = _gemv_split_count(tile, blocks, row_tiles, grad_y.device)
    ws = torch.empty((splits, m, 5 * blocks * block_b), dtype=torch.float32, device=grad_y.device)
    _grad_x_gemv_kernel[(blocks, 1, splits)](
        grad_y, T_packed, E, ws, m, n, row_tiles * block_n, kb, E.shape[1], grad_y.stride(0), grad_y.stride(1),
        T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1), BYTES_PER_GROUP=group_size // 5,
        ROWS=triton.next_power_of_2(m), BLOCK_N=block_n, BLOCK_B=block_b, SPLIT_N=splits, num_warps=warps,
    )
    return finish_splits(ws[:, :, :in_features], None, 0, grad_y.dtype)


def grad_x_fused(grad_y, T_packed, E, *, in_features, group_size, pairs=None, tile=None):
    """Tensor-core grad-x for small M: weights decoded tile by tile on chip (no buffer), split
    over the weight rows into an fp32 workspace ``[splits, M, 5 KBp]`` that the finishing kernel
    reduces; ``pairs`` (default: bf16 ``grad_y``, compiled) picks the PTX pair decode.

    ``tile = (BLOCK_N, BLOCK_B, warps, stages)`` overrides the launch (benchmark sweeps).
    """
    m, n, kb = grad_y.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, operand_dtype, precision = _dot_config(grad_y.dtype)
    block_n, block_b, warps, stages = (16, 16, 4, 3) if triton_interpreted() else GRAD_X_FUSED_TILE
    if tile is not None:
        block_n, block_b, warps, stages = tile
    block_m = GRAD_X_FUSED_ROWS
    blocks, row_tiles, n_padded = triton.cdiv(kb, block_b), triton.cdiv(m, block_m), round_up(n, block_n)
    splits = _splits(blocks * row_tiles, n_padded // block_n, grad_y.device)
    ws = torch.empty((splits, m, 5 * blocks * block_b), dtype=torch.float32, device=grad_y.device)
    if pairs is None:
        pairs = dot_dtype == tl.bfloat16
    _check_pairs("grad_x_fused", pairs, operand_dtype)
    _grad_x_kernel[(blocks, row_tiles, splits)](
        grad_y, T_packed, E, ws, m, n, n_padded, kb, E.shape[1], grad_y.stride(0), grad_y.stride(1),
        T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1), BYTES_PER_GROUP=group_size // 5,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b, SPLIT_N=splits, DOT_DTYPE=dot_dtype,
        PRECISION=precision, PAIRS=pairs, num_warps=warps, num_stages=stages,
    )
    return finish_splits(ws[:, :, :in_features], None, 0, grad_y.dtype)


def wgmma_grad_x_takes(grad_y: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether grad-x goes to the ``wgmma`` kernel: a Gluon card, a call
    ``triton_wgmma_grad_x.takes``, and a workspace that pays (``triton_wgmma_grad_x.pays``)."""
    return (gluon_runs(grad_y) and triton_wgmma_grad_x.takes(grad_y, T_packed, E, group_size)
            and triton_wgmma_grad_x.pays(grad_y, T_packed))


def grad_x_wgmma(grad_y, T_packed, E, *, in_features, group_size, tile=None, validated=False):
    """bf16 grad-x by ``wgmma`` on weights decoded into shared memory (``triton_wgmma_grad_x``);
    ``tile = (BLOCK_T, STAGES, programs per SM, warps)`` overrides the launch; ``validated``: the
    caller has already checked ``wgmma_grad_x_takes``."""
    return triton_wgmma_grad_x.wgmma_grad_x(grad_y, T_packed, E, in_features=in_features, group_size=group_size,
                                            tile=tile, validated=validated)


def grad_x_two_step(grad_y, T_packed, E, *, in_features, group_size):
    """Dense decode into a transient buffer in ``grad_y.dtype`` (fp32 for fp16), then cuBLAS.

    Under the forward's rule (:func:`forward_two_step`) the buffer is in digit-plane order (where that
    decode pays) and the product's columns are put back in order by one strided copy of the
    ``[M, K]`` output (the slice past ``K`` makes the result a strided view ``[M, K]`` with row
    stride ``5 * plane_block() * blocks``, at most ``1 / PLANES_MIN_BLOCKS`` wider than ``K``);
    otherwise column order.
    """
    dtype = _buffer_dtype(grad_y.dtype)
    m = grad_y.shape[0]
    if _plane_order(m, T_packed, group_size, dtype):
        w = dequantize_planes(T_packed, E, group_size=group_size, dtype=dtype)
        block_b = plane_block()
        planes = (grad_y.to(dtype) @ w).view(m, -1, 5, block_b)
        columns = torch.empty((m, w.shape[1]), dtype=dtype, device=grad_y.device)
        columns.view(m, -1, block_b, 5).copy_(planes.transpose(2, 3))
        return columns[:, :in_features].to(grad_y.dtype)
    w = dequantize(T_packed, E, in_features=in_features, group_size=group_size, dtype=dtype)
    return (grad_y.to(dtype) @ w).to(grad_y.dtype)


def grad_x(
    grad_y: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
) -> torch.Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W`` in ``grad_y.dtype``."""
    _check("grad_x", grad_y, T_packed, E, in_features, group_size, T_packed.shape[0], "out_features")
    m = grad_y.shape[0]
    if m == 0 or T_packed.shape[0] == 0:
        return torch.zeros((m, in_features), dtype=grad_y.dtype, device=grad_y.device)
    kwargs = dict(in_features=in_features, group_size=group_size)
    if m <= GEMV_MAX_ROWS:
        return grad_x_gemv(grad_y, T_packed, E, **kwargs)
    if m <= WGMMA_GRAD_X_MAX_ROWS and wgmma_grad_x_takes(grad_y, T_packed, E, group_size):
        return grad_x_wgmma(grad_y, T_packed, E, validated=True, **kwargs)
    if m <= GRAD_X_FUSED_ROWS:
        return grad_x_fused(grad_y, T_packed, E, **kwargs)
    if decode_gemm_takes(grad_y, T_packed, E, group_size, in_features):
        return triton_decode_gemm.grad_x(grad_y, T_packed, E, **kwargs)
    return grad_x_two_step(grad_y, T_packed, E, **kwargs)
