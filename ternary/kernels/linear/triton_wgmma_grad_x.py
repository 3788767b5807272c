"""grad-x for bf16 rows on ``wgmma`` tensor cores, the weights decoded on chip into shared memory
(a Gluon kernel: compiled sm_90 GPUs only, never under ``TRITON_INTERPRET``).

``grad_x[m, 5 j + d] = sum_n grad_y[m, n] W_d[n, j]`` is computed per digit position ``d`` as
``W_d^T [64 bytes j, 64 rows n] @ grad_y^T [64 n, BLOCK_T]``, over steps of 64 weight rows:

- each step's ``[64, 64]`` byte tile (one 4-byte run per lane and word, realigned from two aligned
  word loads) is decoded by the word decode of the forward kernels (``gluon_words.word_weights``)
  into the five digits' bf16 tiles ``[64 n, 64 j]``, which are stored to shared memory; ``wgmma``
  reads them transposed as its left operand (the decode's register layout cannot be the operand:
  a lane would need one byte from each of four rows);
- the ``grad_y`` tile ``[BLOCK_T, 64]`` of the step arrives by TMA in a ring of ``STAGES`` slots.

A corrupt byte (> 242) turns its five output columns into NaN. Split-K programs (over the weight
rows) write fp32 partial sums ``[splits, M, 5 KBp]`` that ``finish_splits`` reduces; that workspace
grows with ``M`` while the weights do not, which is what limits the kernel to small ``M``
(:func:`pays`).

H100, against the fused kernel (M <= 16) or the two-step path and bf16 cuBLAS in the same process
(``benchmarks/results/h100/wgmma_forward/gx2.log``): 16384^2 M = 16 / 32 / 64 in 130 / 146 / 186 us
(1.34x / 1.20x / 0.95x of cuBLAS) against 170 / 425 / 426 us; 4096 x 14336 and 14336 x 4096 M = 16
1.12-1.13x (was 0.81-0.85x), M = 32 0.82-0.89x (was 0.40-0.42x). On 4096^2 it is level at M = 16-32
and slower from M = 64; from M = 128 the two-step path is faster on most shapes.
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.gluon_words import corrupt_bits, run_operands, step_runs, word_weights
from ternary.kernels.linear.triton_launch import byte_span, finish_splits, program_splits, tma_rows, word_decode_takes

# Bytes of W per program (its output columns are 5 x this) and weight rows per step.
GRAD_X_BYTES = 64
GRAD_X_ROWS = 64
# (STAGES, programs per SM, warps), with BLOCK_T = M padded to a power of two (16 to 64): grad_y rows
# per program, five [64, BLOCK_T] fp32 accumulators (split between the warpgroups with 8 warps). H100
# sweeps (gx1.log, gx2.log): two programs per SM and 4 warps best at M = 16-64 on the shapes where the
# kernel is taken; 8 warps with BLOCK_T = 128 (one program for 128 rows) was best only at M = 128-256,
# where the two-step path is faster.
GRAD_X_TILE = (2, 2, 4)
GRAD_X_MAX_ROWS_PER_PROGRAM = 64
GRAD_X_MAX_SPLITS = 64
# grad_y rows the kernel takes (row tiles beyond one program's; the dispatch stops at
# triton.WGMMA_GRAD_X_MAX_ROWS).
GRAD_X_ROWS_TAKEN = (2, 65536)
# The dispatch takes the kernel while its fp32 workspace is at most this many times the packed weight
# bytes (on 132 SMs, 4096^2: M = 16 1.3x, level with the fused kernel; M = 32 2.5x, level with the
# two-step path; M = 64 5.1x, 1.6x slower; 14336 x 4096 M = 64 1.7x, 1.5x faster).
GRAD_X_MAX_WORKSPACE_RATIO = 2

_ROWS = gl.constexpr(GRAD_X_ROWS)
_BYTES = gl.constexpr(GRAD_X_BYTES)


@functools.cache
def run_layout(warps: int) -> gl.BlockedLayout:
    """``[64 rows, 16 runs, 4 bytes]`` over ``warps`` warps: each lane holds whole runs (the four
    bytes of a word in consecutive registers, as ``word_weights`` takes them)."""
    return gl.BlockedLayout(size_per_thread=[1, 1, 4], threads_per_warp=[8, 4, 1], warps_per_cta=[warps, 1, 1],
                            order=[2, 1, 0])


@gluon.jit
def _or(a, b):
    return a | b


@gluon.jit
def _fetch(g_desc, tiles, ready, step, slot, pred, t0):
    """Start the TMA copy of step ``step``'s ``grad_y`` tile (rows ``t0 ..``, columns ``64 step ..``)
    into ring slot ``slot``."""
    bar = ready.index(slot)
    mbarrier.expect(bar, g_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(g_desc, [t0, step * _ROWS], bar, tiles.index(slot), pred=pred)


@gluon.jit
def _grad_x_kernel(g_desc, p_ptr, e_ptr, out_ptr, M, N, KB, NG, stride_pn, stride_en, stride_os, stride_om,
                   words_end, STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, BLOCK_T: gl.constexpr,
                   STAGES: gl.constexpr, RUN_LAYOUT: gl.constexpr, W_LAYOUT: gl.constexpr):
    """Partial ``out[s, t, 5 j + d] = sum_n grad_y[t, n] W[n, 5 j + d]`` for bytes ``j`` of block
    ``program_id(0)`` (64 bytes), weight-row steps of split ``s = program_id(1)`` and rows ``t`` of
    tile ``program_id(2)``."""
    WARPS: gl.constexpr = gl.num_warps()
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, WARPS // 4],
                                                         instr_shape=[16, BLOCK_T // (WARPS // 4), 16])
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    block = gl.program_id(0)
    t0 = gl.program_id(2) * BLOCK_T
    local = gl.expand_dims(gl.arange(0, _ROWS, layout=gl.SliceLayout(1, RUNS)), 1)
    run = gl.expand_dims(gl.arange(0, _BYTES // 4, layout=gl.SliceLayout(0, RUNS)), 0)
    words = p_ptr.to(gl.pointer_type(gl.int32))
    row_steps = gl.cdiv(N, _ROWS)
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, row_steps)
    # one buffer per digit: stores to one buffer need no barrier before the next digit's
    w0_tile = gl.allocate_shared_memory(gl.bfloat16, [_ROWS, _BYTES], W_LAYOUT)
    w1_tile = gl.allocate_shared_memory(gl.bfloat16, [_ROWS, _BYTES], W_LAYOUT)
    w2_tile = gl.allocate_shared_memory(gl.bfloat16, [_ROWS, _BYTES], W_LAYOUT)
    w3_tile = gl.allocate_shared_memory(gl.bfloat16, [_ROWS, _BYTES], W_LAYOUT)
    w4_tile = gl.allocate_shared_memory(gl.bfloat16, [_ROWS, _BYTES], W_LAYOUT)
    g_tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_T, _ROWS], g_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for slot in gl.static_range(STAGES):
        mbarrier.init(ready.index(slot), count=1)
    fence_async_shared()
    for slot in gl.static_range(STAGES):
        _fetch(g_desc, g_tiles, ready, first + slot, slot, first + slot < last, t0)
    acc0 = gl.zeros([_BYTES, BLOCK_T], gl.float32, acc_layout)
    acc1 = gl.zeros([_BYTES, BLOCK_T], gl.float32, acc_layout)
    acc2 = gl.zeros([_BYTES, BLOCK_T], gl.float32, acc_layout)
    acc3 = gl.zeros([_BYTES, BLOCK_T], gl.float32, acc_layout)
    acc4 = gl.zeros([_BYTES, BLOCK_T], gl.float32, acc_layout)
    corrupt = gl.zeros([_ROWS, _BYTES // 4], gl.int32, RUNS)
    for step in range(first, last):
        rows = gl.minimum(step * _ROWS + local, N - 1).to(gl.int64)
        first_byte = rows * stride_pn
        shift = ((first_byte & 3) * 8).to(gl.int32)
        word, e = step_runs(words, first_byte >> 2, words_end, shift, e_ptr + rows * stride_en, run, 2 * block, KB,
                            NG, BYTES_PER_GROUP, True)
        corrupt = corrupt | corrupt_bits(word)
        word, bits = run_operands(word, e, RUN_LAYOUT)
        w0, w1, w2, w3, w4 = word_weights(word, bits)
        w0_tile.store(w0)
        w1_tile.store(w1)
        w2_tile.store(w2)
        w3_tile.store(w3)
        w4_tile.store(w4)
        fence_async_shared()
        gl.thread_barrier()
        i = step - first
        ring = i % STAGES
        mbarrier.wait(ready.index(ring), (i // STAGES) & 1)
        g = g_tiles.index(ring).permute((1, 0))
        acc0 = warpgroup_mma(w0_tile.permute((1, 0)), g, acc0, is_async=True)
        acc1 = warpgroup_mma(w1_tile.permute((1, 0)), g, acc1, is_async=True)
        acc2 = warpgroup_mma(w2_tile.permute((1, 0)), g, acc2, is_async=True)
        acc3 = warpgroup_mma(w3_tile.permute((1, 0)), g, acc3, is_async=True)
        acc4 = warpgroup_mma(w4_tile.permute((1, 0)), g, acc4, is_async=True)
        acc0, acc1, acc2, acc3, acc4 = warpgroup_mma_wait(0, deps=[acc0, acc1, acc2, acc3, acc4])
        gl.thread_barrier()
        _fetch(g_desc, g_tiles, ready, step + STAGES, ring, step + STAGES < last, t0)
    for slot in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(slot))
    # byte j = 4 r + b of the block is corrupt if bit 8 b + 7 of run r's flags is set in any row
    flags = gl.reduce(corrupt, 0, _or)
    j = gl.arange(0, _BYTES, layout=gl.SliceLayout(1, acc_layout))
    runs = gl.arange(0, _BYTES // 4, layout=gl.SliceLayout(0, acc_layout))
    pick = gl.expand_dims(j // 4, 1) == gl.expand_dims(runs, 0)
    # each byte's flag moved to the byte's low bit: non-negative, so the max picks run j // 4's flags
    run_flags = gl.expand_dims(gl.convert_layout((flags >> 7) & 0x01010101, gl.SliceLayout(0, acc_layout)), 0)
    word_of_j = gl.max(gl.where(pick, run_flags, 0), axis=1)
    bad = gl.expand_dims(((word_of_j >> (8 * (j % 4))) & 1) != 0, 1)
    tokens = gl.expand_dims(t0 + gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, acc_layout)), 0).to(gl.int64)
    columns = gl.expand_dims(5 * (block * _BYTES + j), 1)
    out = out_ptr + gl.program_id(1) * stride_os + tokens * stride_om + columns
    mask = (tokens < M) & (columns < 5 * KB)
    gl.store(out, gl.where(bad, float("nan"), acc0), mask=mask)
    gl.store(out + 1, gl.where(bad, float("nan"), acc1), mask=mask)
    gl.store(out + 2, gl.where(bad, float("nan"), acc2), mask=mask)
    gl.store(out + 3, gl.where(bad, float("nan"), acc3), mask=mask)
    gl.store(out + 4, gl.where(bad, float("nan"), acc4), mask=mask)


def takes(grad_y: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this call (the caller checks the card and the interpreter): bf16
    ``grad_y`` with at least 2 rows, groups of whole 4-byte runs, word-readable ``T_packed`` and
    unit-stride ``E`` rows (``triton_launch.word_decode_takes``)."""
    return word_decode_takes("wgmma_grad_x", grad_y, T_packed, E, group_size, GRAD_X_ROWS_TAKEN)


def default_rows(m: int) -> int:
    """``BLOCK_T`` for ``m`` rows: ``m`` padded to a power of two, 16 to 64 (larger ``m`` runs in row
    tiles)."""
    return min(GRAD_X_MAX_ROWS_PER_PROGRAM, max(16, triton.next_power_of_2(m)))


def _grid(m: int, n: int, kb: int, block_t: int, per_sm: int, device: torch.device) -> tuple[int, int, int, int]:
    """``(byte blocks, splits, row tiles, weight-row steps)`` of a launch: splits over the row steps
    for about ``per_sm`` programs per SM, at most one per row step."""
    blocks, t_tiles, row_steps = triton.cdiv(kb, GRAD_X_BYTES), triton.cdiv(m, block_t), triton.cdiv(n, GRAD_X_ROWS)
    splits = program_splits(per_sm, blocks * t_tiles, min(row_steps, GRAD_X_MAX_SPLITS), row_steps, device)
    return blocks, splits, t_tiles, row_steps


def pays(grad_y: torch.Tensor, T_packed: torch.Tensor) -> bool:
    """Whether the default launch's fp32 workspace ``[splits, M, 5 KBp]`` stays within
    ``GRAD_X_MAX_WORKSPACE_RATIO`` times the packed weight bytes (the dispatch's rule)."""
    m, (n, kb) = grad_y.shape[0], T_packed.shape
    blocks, splits, _, _ = _grid(m, n, kb, default_rows(m), GRAD_X_TILE[1], grad_y.device)
    return splits * m * 5 * blocks * GRAD_X_BYTES * 4 <= GRAD_X_MAX_WORKSPACE_RATIO * n * kb


@functools.cache
def g_layout(block_t: int) -> gl.NVMMASharedLayout:
    """Shared layout of a ``grad_y`` tile ``[block_t, 64]`` bf16 (128-byte rows and swizzle)."""
    return gl.NVMMASharedLayout.get_default_for([block_t, GRAD_X_ROWS], gl.bfloat16)


@functools.cache
def w_layout() -> gl.NVMMASharedLayout:
    """Shared layout of a step's decoded weight tiles ``[64 rows, 64 bytes]`` bf16."""
    return gl.NVMMASharedLayout.get_default_for([GRAD_X_ROWS, GRAD_X_BYTES], gl.bfloat16)


def wgmma_grad_x(grad_y: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int,
                 group_size: int, tile: tuple[int, int, int, int] | None = None,
                 validated: bool = False) -> torch.Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W`` in bf16 for a call the kernel :func:`takes` (else
    ``ValueError``); ``tile = (BLOCK_T, STAGES, programs per SM, warps)`` overrides the default
    (:func:`default_rows`, ``GRAD_X_TILE``). A ``grad_y`` whose rows TMA cannot address (row stride
    not a multiple of 16 bytes) is first copied into one that it can."""
    if not validated:
        word_decode_takes("wgmma_grad_x", grad_y, T_packed, E, group_size, GRAD_X_ROWS_TAKEN, raise_error=True)
    m = grad_y.shape[0]
    n, kb = T_packed.shape
    block_t, stages, per_sm, warps = tile if tile is not None else (default_rows(m), *GRAD_X_TILE)
    grad_y = tma_rows(grad_y)
    g_desc = TensorDescriptor.from_tensor(grad_y, [block_t, GRAD_X_ROWS], g_layout(block_t))
    blocks, splits, t_tiles, row_steps = _grid(m, n, kb, block_t, per_sm, grad_y.device)
    ws = torch.empty((splits, m, 5 * blocks * GRAD_X_BYTES), dtype=torch.float32, device=grad_y.device)
    _grad_x_kernel[(blocks, splits, t_tiles)](
        g_desc, T_packed, E, ws, m, n, kb, E.shape[1], T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        triton.cdiv(byte_span(T_packed), 4), triton.cdiv(row_steps, splits), BYTES_PER_GROUP=group_size // 5,
        BLOCK_T=block_t, STAGES=stages, RUN_LAYOUT=run_layout(warps),
        W_LAYOUT=w_layout(), num_warps=warps,
    )
    return finish_splits(ws[:, :, :in_features], None, 0, grad_y.dtype)
