"""Tensor-core forward for one activation row (``M == 1``), Triton.

The CUDA-core GEMV (``triton.forward_gemv``) spends ~35 instructions per packed byte and is
issue-bound. Here each packed byte costs ~12: :func:`triton_base3.trit_tiles` turns two
bytes at a time into bf16 trit pairs (one ``prmt`` and one bf16 add per digit pair), and the
tensor cores do every multiply-add, with the weight tile as the register operand of
``wgmma`` (``acc [BLOCK_N, NCOL] += T_d [BLOCK_N, BLOCK_B] @ X_d [BLOCK_B, NCOL]``).

Scales without decoding them per weight: ``X_d`` is the activation row spread over ``NCOL``
columns by group, ``X_d[j, g mod NCOL] = x[5 j + d]`` for the group ``g`` of byte ``j``
(zero elsewhere), so column ``c`` of ``acc`` is the unscaled partial sum of the one group
of the block that maps to ``c``; each block then adds ``acc * 2^E`` to the row's sums.

Loads: rows are ``ceil(K/5)`` bytes apart, never 16-byte aligned, but rows ``n`` and
``n + 16`` are ``16 ceil(K/5)`` bytes apart. A program takes ``BLOCK_N`` rows of one
residue class ``n = c (mod 16)`` through one TMA descriptor with a 16-byte aligned base,
so its byte blocks start ``shift = (c ceil(K/5)) mod 16`` bytes early; the first block's
leading bytes belong to the previous row and are neutralised (their activations are zero,
and they are kept out of the corrupt-byte check). A corrupt byte (> 242) turns its row's
output into NaN, like the other kernels.

Partial sums over ``SPLIT_K`` ranges of blocks go to an fp32 workspace ``[splits, 1, N]``
that ``triton._finish`` reduces.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import exact_exp2, trit_tiles
from ternary.kernels.registry import triton_interpreted

# Activation rows before byte 0 in each plane of the spread activations (> the largest shift).
HEAD_ROWS = 16
CLASSES = 16
NCOL = 16
# Split-K programs per SM (see triton.PROGRAMS_PER_SM).
PROGRAMS_PER_SM = 8


@triton.jit
def _spread_kernel(x_ptr, out_ptr, K, KB, ROWS, stride_op, BYTES_PER_GROUP: tl.constexpr,
                   HEAD: tl.constexpr, COLS: tl.constexpr, BLOCK: tl.constexpr):
    """``out [5, ROWS, COLS]``: row ``HEAD + j`` of plane ``d`` holds ``x[5 j + d]`` in column
    ``(j // BYTES_PER_GROUP) mod COLS`` and zeros elsewhere (all zero outside ``0 <= j < KB``)."""
    d = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    j = rows - HEAD
    col = 5 * j + d
    value = tl.load(x_ptr + col, mask=(j >= 0) & (j < KB) & (col < K), other=0.0)
    target = (tl.maximum(j, 0) // BYTES_PER_GROUP) % COLS
    cols = tl.arange(0, COLS)
    tile = tl.where(cols[None, :] == target[:, None], value[:, None], 0.0)
    tl.store(out_ptr + d * stride_op + rows[:, None] * COLS + cols[None, :], tile.to(out_ptr.dtype.element_ty),
             mask=(rows < ROWS)[:, None])


@triton.jit
def _block_exponents(e_rows, block, shift, NG, BYTES_PER_GROUP: tl.constexpr, BLOCK_B: tl.constexpr,
                     COLS: tl.constexpr):
    """``E [BLOCK_N, COLS]`` of the groups block ``block`` touches, column ``g mod COLS`` for
    group ``g`` (0 where a column maps to no group of the block)."""
    j0 = block * BLOCK_B - shift
    low = (j0 + 16 * BYTES_PER_GROUP) // BYTES_PER_GROUP - 16
    high = (j0 + BLOCK_B - 1) // BYTES_PER_GROUP
    group = low + ((tl.arange(0, COLS) - low) & (COLS - 1))
    ok = (group <= high) & (group >= 0) & (group < NG)
    return tl.load(e_rows + group[None, :], mask=ok[None, :], other=0)


@triton.jit
def _block_step(desc, xdesc, row0, block, shift, exponents, acc, ROWS, BLOCK_B: tl.constexpr, HEAD: tl.constexpr,
                FIRST: tl.constexpr, USE_ASM: tl.constexpr, INDEPENDENT: tl.constexpr):
    """Add block ``block`` of the program's rows (bytes ``block BLOCK_B - shift ..``) to ``acc``."""
    byte = desc.load([row0, block * BLOCK_B])
    if FIRST:
        byte = tl.where((tl.arange(0, BLOCK_B) >= shift)[None, :], byte, 0)
    t0, t1, t2, t3, t4 = trit_tiles(byte, USE_ASM)
    x_row = HEAD + block * BLOCK_B - shift
    if INDEPENDENT:
        p0 = tl.dot(t0, xdesc.load([x_row, 0]))
        p1 = tl.dot(t1, xdesc.load([ROWS + x_row, 0]))
        p2 = tl.dot(t2, xdesc.load([2 * ROWS + x_row, 0]))
        p3 = tl.dot(t3, xdesc.load([3 * ROWS + x_row, 0]))
        p4 = tl.dot(t4, xdesc.load([4 * ROWS + x_row, 0]))
        part = (p0 + p1) + (p2 + p3) + p4
    else:
        part = tl.dot(t0, xdesc.load([x_row, 0]))
        part = tl.dot(t1, xdesc.load([ROWS + x_row, 0]), part)
        part = tl.dot(t2, xdesc.load([2 * ROWS + x_row, 0]), part)
        part = tl.dot(t3, xdesc.load([3 * ROWS + x_row, 0]), part)
        part = tl.dot(t4, xdesc.load([4 * ROWS + x_row, 0]), part)
    return acc + part * exact_exp2(exponents)


@triton.jit
def _tensor_gemv_kernel(xe_ptr, p_ptr, e_ptr, out_ptr, N, KB, NG, ROWS, BLOCKS, stride_en, stride_os,
                        BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                        COLS: tl.constexpr, HEAD: tl.constexpr, SPLIT_K, USE_ASM: tl.constexpr,
                        INDEPENDENT: tl.constexpr = False):
    """Partial ``out[s, 0, n] = sum_k x[k] W[n, k]`` over split ``s`` of the blocks, for the
    ``BLOCK_N`` rows ``n = c + 16 r`` of residue class ``c = program_id(0) % 16``."""
    cls = tl.program_id(0) % 16
    chunk = tl.program_id(0) // 16
    class_rows = (N - cls + 15) // 16
    if chunk * BLOCK_N < class_rows:
        shift = (cls * KB) % 16
        desc = tl.make_tensor_descriptor(p_ptr + (cls * KB - shift), shape=[class_rows, KB + shift],
                                         strides=[16 * KB, 1], block_shape=[BLOCK_N, BLOCK_B])
        xdesc = tl.make_tensor_descriptor(xe_ptr, shape=[5 * ROWS, COLS], strides=[COLS, 1],
                                          block_shape=[BLOCK_B, COLS])
        r = chunk * BLOCK_N + tl.arange(0, BLOCK_N)
        rn = cls + 16 * r
        e_rows = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
        per_split = (BLOCKS + SPLIT_K - 1) // SPLIT_K
        first = tl.program_id(2) * per_split
        last = tl.minimum(first + per_split, BLOCKS)
        acc = tl.zeros((BLOCK_N, COLS), dtype=tl.float32)
        start = first
        if first == 0:
            exponents = _block_exponents(e_rows, 0, shift, NG, BYTES_PER_GROUP, BLOCK_B, COLS)
            acc = _block_step(desc, xdesc, chunk * BLOCK_N, 0, shift, exponents, acc, ROWS, BLOCK_B, HEAD, True,
                              USE_ASM, INDEPENDENT)
            start = 1
        exponents = _block_exponents(e_rows, start, shift, NG, BYTES_PER_GROUP, BLOCK_B, COLS)
        for block in range(start, last):
            following = _block_exponents(e_rows, block + 1, shift, NG, BYTES_PER_GROUP, BLOCK_B, COLS)
            acc = _block_step(desc, xdesc, chunk * BLOCK_N, block, shift, exponents, acc, ROWS, BLOCK_B, HEAD,
                              False, USE_ASM, INDEPENDENT)
            exponents = following
        tl.store(out_ptr + tl.program_id(2) * stride_os + rn, tl.sum(acc, axis=1), mask=r < class_rows)


def block_bytes(group_size: int) -> int:
    """Bytes per block: a block may straddle at most ``NCOL`` groups (it starts up to 15
    bytes before a group boundary), and TMA rows need at least 16 bytes."""
    per_group = group_size // 5
    widest = (NCOL - 1) * per_group + 1
    return max(16, min(64, 1 << (widest.bit_length() - 1)))


def usable(T_packed: torch.Tensor) -> bool:
    """Whether the packed rows can be read by the class descriptors: contiguous rows and a
    16-byte aligned base (any fresh allocation; not an offset view)."""
    return T_packed.is_contiguous() and T_packed.data_ptr() % 16 == 0 and T_packed.shape[1] > 0


def _ensure_allocator() -> None:
    """Device-side TMA descriptors need Triton's scratch allocator; install a torch one if
    none is set (a user's own allocator is kept)."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def _splits(tiles: int, blocks: int, device: torch.device) -> int:
    if triton_interpreted():
        return min(2, blocks)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(PROGRAMS_PER_SM * sms // max(tiles, 1), blocks // 4, 16))


def partial_sums(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
                 tile: tuple[int, int, int | None, int] | None = None, independent: bool = False) -> torch.Tensor:
    """Split partial sums ``[splits, 1, N]`` fp32 of ``x [1, K] @ W.T`` (reduce with ``triton._finish``).

    ``tile = (BLOCK_N, warps, splits or None, stages)`` overrides the launch (benchmark sweeps).
    """
    n, kb = T_packed.shape
    interpreted = triton_interpreted()
    block_b = block_bytes(group_size)
    blocks = triton.cdiv(kb + CLASSES - 1, block_b)
    rows = HEAD_ROWS + blocks * block_b
    dtype = torch.float32 if interpreted else torch.bfloat16
    spread = torch.empty((5, rows, NCOL), dtype=dtype, device=x.device)
    spread_block = 64 if interpreted else 256
    _spread_kernel[(triton.cdiv(rows, spread_block), 5)](
        x, spread, in_features, kb, rows, spread.stride(0), BYTES_PER_GROUP=group_size // 5, HEAD=HEAD_ROWS,
        COLS=NCOL, BLOCK=spread_block,
    )
    block_n, warps, splits, stages = (16, 4, None, 2) if interpreted else (128, 4, None, 2)
    if tile is not None:
        block_n, warps, splits, stages = tile
    tiles = CLASSES * triton.cdiv(triton.cdiv(n, CLASSES), block_n)
    splits = min(splits, blocks) if splits is not None else _splits(tiles, blocks, x.device)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    if not interpreted:
        _ensure_allocator()
    _tensor_gemv_kernel[(tiles, 1, splits)](
        spread, T_packed, E, ws, n, kb, E.shape[1], rows, blocks, E.stride(0), ws.stride(0),
        BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_B=block_b, COLS=NCOL, HEAD=HEAD_ROWS,
        SPLIT_K=splits, USE_ASM=not interpreted, num_warps=warps, num_stages=stages,
        INDEPENDENT=independent,
    )
    return ws
