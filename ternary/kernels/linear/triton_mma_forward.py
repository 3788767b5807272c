"""Forward for 2 to ``MMA_MAX_ROWS`` bf16 activation rows on ``mma.sync`` tensor cores, with the
weights decoded straight into the registers of the left operand (a Gluon kernel: compiled
NVIDIA GPUs only, never under ``TRITON_INTERPRET``).

``out[t, n] = sum_k x[t, k] W[n, k]`` is computed as ``W_tile [BLOCK_N, 32] @ x_tile [32, BLOCK_T]``
products over steps of 32 packed bytes, one product per digit position ``d``: ``x_tile[j, t] =
x[t, 5 (32 s + j) + d]``. The activations are first copied into that order
(:func:`fragment_planes`), each step's five tiles laid out as the lanes read them: a warp reads its
right-operand registers with 16-byte loads of 512 contiguous bytes, where plain digit planes took
8-byte loads spread over 8 activation rows. The left operand's layout (``k_width = 4``) gives each
lane runs of four consecutive bytes of a weight row, so:

- a run is one 32-bit word: two aligned word loads and one funnel shift realign it, since rows are
  ``ceil(K / 5)`` bytes apart and rarely aligned (``T_packed`` must start 4-byte aligned and its
  storage reach the next 4-byte boundary, :func:`takes`);
- a run lies inside one scale group when a group is a whole number of runs (``G`` a multiple of
  20), so each run needs one exponent load;
- the PTX word decode of ``triton_base3`` (``WORD_WEIGHTS_ASM``: four bytes per call, bf16x2 FMAs
  on exact small integers) writes the five digits' bf16 weights ``T * 2^E`` directly as the
  operand registers: no shared memory, no layout conversion.

A corrupt byte (> 242) is flagged per word with three integer operations (``b > 242`` iff the top
bit is set and ``(b & 127) + 13`` carries into it) and turns its row's outputs into NaN at the end.

Split-K programs write fp32 partial sums ``[splits, M, N]`` that the caller reduces (with the bias).
H100, bf16 cuBLAS in the same run (``benchmarks/results/h100/mma_prefetch/``, ``mma_wide/``):
16384 x 16384 at M = 16 in 86-94 us (2.0-2.15x; the fused Triton kernel took 164 us), at M = 2-8 in
74 us (2.5x; the two-row GEMV took 101 us); 1.2-2.1x on the smaller benchmark shapes at M = 2-16.
Above 16 rows the ``wgmma`` kernel (``triton_wgmma_forward``) is faster.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

from ternary.kernels.linear.gluon_words import (STEP_BYTES, corrupt_bits, poison_rows, row_runs, run_operands,
                                                split_steps, step_runs, word_weights)
from ternary.kernels.linear.triton_launch import byte_span, program_splits, word_decode_takes

# Activation rows the kernel takes, padded to 8 or 16 (one or two 8-column MMA tiles). The kernel ran
# up to 64 rows (16384^2 M = 24 / 32 / 48 / 64 in 129 / 133 / 208 / 215 us, benchmarks/results/h100/
# mma_wide/); the wgmma kernel took M = 32 / 64 in 113 / 147 us in the same process as this one's
# 131 / 212 (benchmarks/results/h100/wgmma_forward/), and at M = 16 this one is level or up to 10%
# faster on the four benchmark shapes.
MMA_MIN_ROWS = 2
MMA_MAX_ROWS = 16
# Packed bytes per step: one 32-bit run per lane and row in each half of the MMA's k extent.
MMA_STEP_BYTES = STEP_BYTES
# (BLOCK_N, warps) and split-K programs per SM. H100 sweeps (benchmarks/results/h100/mma_prefetch/,
# after the fragment-order activations): one 16-row MMA tile per warp, 4 warps, 16 programs per SM
# is best or within 5% of the best of 12 launches on the four benchmark shapes at M = 2, 8 and 16
# (16384^2: 86.4 / 73.7 / 73.6 us); two tiles per warp (128 x 4, 168 registers) were 3-9% slower,
# and issuing the next step's loads before the current step's products was slower at every shape
# but 16384^2 M = 2-8. ncu at 16384^2 M = 16: 2.7 of 4 issue slots used, yet decodes with 6-10%
# fewer instructions ran no faster (benchmarks/NOTES.md, "ninth").
MMA_TILE = (64, 4)
MMA_PROGRAMS_PER_SM = 16
MMA_MAX_SPLITS = 64

_STEP = gl.constexpr(MMA_STEP_BYTES)


@functools.cache
def run_layout(block_n: int, warps: int) -> gl.DistributedLinearLayout:
    """``[block_n, 8 runs, 4 bytes]``: the layout of the MMA's left operand (``k_width = 4``, 16-row
    tiles stacked over the warps, then repeated in registers) over a step's 32 bytes, with each
    row's bytes split into runs of four. Reshaped to ``[block_n, 32]`` it is that operand layout."""
    repeats = block_n // (16 * warps)
    registers = [[0, 0, 1], [0, 0, 2], [8, 0, 0], [0, 4, 0]] + [[(16 * warps) << i, 0, 0]
                                                                 for i in range(repeats.bit_length() - 1)]
    return gl.DistributedLinearLayout(
        reg_bases=registers, lane_bases=[[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]],
        warp_bases=[[16 << i, 0, 0] for i in range(warps.bit_length() - 1)], block_bases=[],
        shape=[block_n, MMA_STEP_BYTES // 4, 4])


@gluon.jit
def _x_tile(x_tiles, B: gl.constexpr, BLOCK_T: gl.constexpr):
    """One step's right operand ``[32, BLOCK_T]`` of one digit, loaded as ``[4 BLOCK_T, 8]`` rows of
    16 contiguous bytes (one per lane and 8-token half, :func:`fragment_layout`) and relabelled."""
    tile = gl.reshape(gl.load(x_tiles), [BLOCK_T, 4, 2, 4])
    return gl.convert_layout(gl.reshape(gl.permute(tile, [2, 1, 3, 0]), [_STEP, BLOCK_T]), B, assert_trivial=True)


@gluon.jit
def _step(acc, corrupt, word, e, x_tiles, step, RUN_LAYOUT: gl.constexpr, A: gl.constexpr, B: gl.constexpr,
          BLOCK_T: gl.constexpr):
    """``acc`` plus the five digit products of one step; ``corrupt`` collects flagged bytes."""
    corrupt = corrupt | corrupt_bits(word)
    word, bits = run_operands(word, e, RUN_LAYOUT)
    word = gl.convert_layout(word, A, assert_trivial=True)
    bits = gl.convert_layout(bits, A, assert_trivial=True)
    w0, w1, w2, w3, w4 = word_weights(word, bits)
    TILE: gl.constexpr = _STEP * BLOCK_T
    x = x_tiles + step * (5 * TILE)
    acc = mma_v2(w0, _x_tile(x, B, BLOCK_T), acc)
    acc = mma_v2(w1, _x_tile(x + TILE, B, BLOCK_T), acc)
    acc = mma_v2(w2, _x_tile(x + 2 * TILE, B, BLOCK_T), acc)
    acc = mma_v2(w3, _x_tile(x + 3 * TILE, B, BLOCK_T), acc)
    acc = mma_v2(w4, _x_tile(x + 4 * TILE, B, BLOCK_T), acc)
    return acc, corrupt


@triton.jit
def _fragment_offsets(token, byte):
    """Element offset of ``(byte, token)`` in one step's digit tile in fragment order: 8-row halves
    of the tokens, then token, byte quad ``(byte mod 16) / 4``, byte half ``byte / 16``, byte mod 4,
    so that a lane's eight right-operand values (``k_width = 4``: bytes ``4 q .. 4 q + 3`` and
    ``16 + 4 q ..`` of token ``t``) are 16 contiguous bytes and a warp's are 512."""
    return ((token // 8) * 32 + (token % 8) * 4 + (byte % 16) // 4) * 8 + (byte // 16) * 4 + byte % 4


@triton.jit
def _fragment_planes_kernel(x_ptr, out_ptr, M, K, stride_xm, stride_xk, BLOCK_T: tl.constexpr,
                            STEP: tl.constexpr):
    """Step ``s = program_id(0)`` of :func:`fragment_planes`: ``out[s, d, f(t, j)] = x[t, 5 (STEP s +
    j) + d]`` in bf16, zero for rows ``t >= M`` and columns past ``K``."""
    step = tl.program_id(0)
    token = tl.arange(0, BLOCK_T)[:, None]
    byte = tl.arange(0, STEP)[None, :]
    column = 5 * (STEP * step + byte)
    rows = x_ptr + token * stride_xm
    out = out_ptr + step * (5 * STEP * BLOCK_T) + _fragment_offsets(token, byte)
    for digit in tl.static_range(5):
        value = tl.load(rows + (column + digit) * stride_xk, mask=(token < M) & (column + digit < K), other=0.0)
        tl.store(out + digit * (STEP * BLOCK_T), value.to(tl.bfloat16))


def fragment_planes(x: torch.Tensor, block_t: int, steps: int) -> torch.Tensor:
    """Activations ``x [M, K]`` (M <= ``block_t``) regrouped for the kernel: ``[steps, 5, block_t *
    32]`` bf16, step ``s`` digit ``d`` holding ``x[t, 5 (32 s + j) + d]`` at
    ``_fragment_offsets(t, j)``, zero-padded."""
    out = torch.empty((steps, 5, block_t * MMA_STEP_BYTES), dtype=torch.bfloat16, device=x.device)
    _fragment_planes_kernel[(steps,)](x, out, x.shape[0], x.shape[1], x.stride(0), x.stride(1), BLOCK_T=block_t,
                                      STEP=MMA_STEP_BYTES)
    return out


@functools.cache
def fragment_layout(block_t: int, warps: int) -> gl.DistributedLinearLayout:
    """``[4 block_t, 8]``: row ``4 t + q`` of a step's fragment-order tile read by lane ``(t mod 8, q)``
    (16 contiguous bytes; every warp reads the whole tile)."""
    registers = [[0, 1], [0, 2], [0, 4]] + [[32 << i, 0] for i in range((block_t // 8).bit_length() - 1)]
    return gl.DistributedLinearLayout(reg_bases=registers, lane_bases=[[1, 0], [2, 0], [4, 0], [8, 0], [16, 0]],
                                      warp_bases=[[0, 0]] * (warps.bit_length() - 1), block_bases=[],
                                      shape=[4 * block_t, 8])


@gluon.jit
def _mma_forward_kernel(planes_ptr, p_ptr, e_ptr, out_ptr, M, N, KB, NG, stride_pn, stride_en, stride_os, stride_om,
                        words_end, STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr,
                        BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr, RUN_LAYOUT: gl.constexpr,
                        X_LAYOUT: gl.constexpr):
    """Partial ``out[s, t, n] = sum_k x[t, k] W[n, k]`` over split ``s = program_id(1)`` of the
    steps, for weight rows ``program_id(0) * BLOCK_N ..`` and ``BLOCK_T`` (8 or 16) activation rows
    of the activations in fragment order (:func:`fragment_planes`)."""
    WARPS: gl.constexpr = gl.num_warps()
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, 8])
    A: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    B: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=4)
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    words, word0, shift, e_rows, run = row_runs(p_ptr, e_ptr, N, stride_pn, stride_en, BLOCK_N, RUN_LAYOUT)
    lane_rows = gl.expand_dims(gl.arange(0, 4 * BLOCK_T, layout=gl.SliceLayout(1, X_LAYOUT)), 1)
    x_tiles = planes_ptr + lane_rows * 8 + gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, X_LAYOUT)), 0)
    first, last, whole = split_steps(KB, STEPS_PER_SPLIT)
    acc = gl.zeros([BLOCK_N, BLOCK_T], gl.float32, mma)
    corrupt = gl.zeros([BLOCK_N, _STEP // 4], gl.int32, RUNS)
    for step in range(first, whole):
        word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, False)
        acc, corrupt = _step(acc, corrupt, word, e, x_tiles, step, RUN_LAYOUT, A, B, BLOCK_T)
    for step in range(whole, last):
        word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, True)
        acc, corrupt = _step(acc, corrupt, word, e, x_tiles, step, RUN_LAYOUT, A, B, BLOCK_T)
    acc = poison_rows(acc, corrupt, mma)
    out_rows = gl.expand_dims(gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, mma)), 1)
    out_tokens = gl.expand_dims(gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, mma)), 0)
    gl.store(out_ptr + gl.program_id(1) * stride_os + out_tokens * stride_om + out_rows, acc,
             mask=(out_rows < N) & (out_tokens < M))


def takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this call (the caller checks the card and the interpreter): bf16
    activations with ``MMA_MIN_ROWS .. MMA_MAX_ROWS`` rows on whole-run groups and word-readable ``T_packed``
    (``triton_launch.word_decode_takes``)."""
    return word_decode_takes("mma_forward", x, T_packed, E, group_size, (MMA_MIN_ROWS, MMA_MAX_ROWS))


def mma_forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, group_size: int,
                tile: tuple[int, int, int] | None = None, validated: bool = False) -> torch.Tensor:
    """Partial sums ``[splits, M, N]`` (fp32) of ``x [M, K] @ W.T`` for a call the kernel
    :func:`takes` (else ``ValueError``; ``validated`` skips that check for a caller that made it);
    ``tile = (BLOCK_N, warps, programs per SM)`` overrides the launch (benchmark sweeps; BLOCK_N a
    power-of-two multiple of 16 * warps)."""
    if not validated:
        word_decode_takes("mma_forward", x, T_packed, E, group_size, (MMA_MIN_ROWS, MMA_MAX_ROWS), raise_error=True)
    m = x.shape[0]
    n, kb = T_packed.shape
    block_n, warps, per_sm = tile if tile is not None else (*MMA_TILE, MMA_PROGRAMS_PER_SM)
    block_t = max(8, triton.next_power_of_2(m))
    steps = triton.cdiv(kb, MMA_STEP_BYTES)
    planes = fragment_planes(x, block_t, steps)
    tiles = triton.cdiv(n, block_n)
    splits = program_splits(per_sm, tiles, min(max(steps // 2, 1), MMA_MAX_SPLITS), steps, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _mma_forward_kernel[(tiles, splits)](
        planes, T_packed, E, ws, m, n, kb, E.shape[1], T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        triton.cdiv(byte_span(T_packed), 4), triton.cdiv(steps, splits),
        BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_T=block_t, RUN_LAYOUT=run_layout(block_n, warps),
        X_LAYOUT=fragment_layout(block_t, warps), num_warps=warps,
    )
    return ws
