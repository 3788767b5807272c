"""Triton small-M forward by table lookup: each packed byte costs one lookup, not a decode.

For one activation row and one byte column ``j`` the 243 possible bytes have only 243
possible dot products with the five activations ``x[5j .. 5j+4]``. A first kernel writes
these tables for every byte column (``[M, blocks, 256, TABLE_B]`` fp32, entry
``(m, j, b) = sum_i x[m, 5j+i] (d_i(b) - 1)``, ~3.4 MB for K = 16384: it stays in L2);
the main kernel then turns every packed byte into its dot product with one gather
(``tl.gather`` on a flat table block, through shared memory), one multiply by the group's
``2^E`` and one add. Byte columns past the end of a row are masked (not clamped: a clamp
loses the columns' contiguity and Triton then lays lanes along rows, which measured 4x
slower on an H100 through 16-way bank conflicts in the gather). The per-row sums stay spread over a ``[BLOCK_N, TABLE_B]``
accumulator until the last byte block, so the cross-lane reduction is paid once per row.

The table block is gathered as a 1-D tensor on purpose: Triton lays a 2-D gather out
warp-locally and lowers it to ~8 shuffles per element; a 1-D gather over all warps goes
through shared memory (one store of the block, one load per element).

Grid: ``(row tiles, splits)``; each program reduces a contiguous range of byte blocks for
``BLOCK_N`` rows into an fp32 workspace ``[splits, M, N]`` that the shared finishing
kernel reduces (and adds the bias to) in a fixed order, so results do not depend on
scheduling. Entries 243..255 of each table are NaN: a corrupt byte (> 242) turns the
outputs it feeds into NaN, as in every other Triton path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import ZERO_TRITS_BYTE, block_scales
from ternary.kernels.registry import triton_interpreted

TABLE_ENTRIES = 256


@triton.jit
def _byte_tables_kernel(x_ptr, t_ptr, K, stride_xm, stride_xk, stride_tm, TABLE_B: tl.constexpr):
    """Table block ``program_id(0)`` of activation row ``program_id(1)``: ``[256, TABLE_B]``
    dot products of every byte value with the activations of its ``TABLE_B`` byte columns
    (zero past ``K``, NaN for bytes > 242)."""
    block, m = tl.program_id(0), tl.program_id(1)
    byte = tl.arange(0, 256)
    cols = 5 * (block * TABLE_B + tl.arange(0, TABLE_B))
    table = tl.zeros((256, TABLE_B), dtype=tl.float32)
    power = 1
    for digit in tl.static_range(5):
        x = tl.load(x_ptr + m * stride_xm + (cols + digit) * stride_xk, mask=cols + digit < K, other=0.0)
        trit = ((byte // power) % 3 - 1).to(tl.float32)
        table += trit[:, None] * x.to(tl.float32)[None, :]
        power *= 3
    table = tl.where((byte > 242)[:, None], float("nan"), table)
    out = t_ptr + m * stride_tm + block * 256 * TABLE_B + byte[:, None] * TABLE_B + tl.arange(0, TABLE_B)[None, :]
    tl.store(out, table)


@triton.jit
def _block_operands(rows_p, t_row, block, KB, TABLE_B: tl.constexpr):
    """Packed bytes ``[R, TABLE_B]`` of byte block ``block`` and its flat table ``[256 * TABLE_B]``."""
    jb = block * TABLE_B + tl.arange(0, TABLE_B)
    byte = tl.load(rows_p + jb[None, :], mask=(jb < KB)[None, :], other=ZERO_TRITS_BYTE)
    return byte, tl.load(t_row + block * 256 * TABLE_B + tl.arange(0, 256 * TABLE_B))


@triton.jit
def _block_dots(byte, table, rows_e, block, NG, BLOCK_N: tl.constexpr, TABLE_B: tl.constexpr,
                BYTES_PER_GROUP: tl.constexpr):
    """Scaled dot products ``[BLOCK_N, TABLE_B]`` of a byte block, one table lookup per byte."""
    cols = tl.arange(0, TABLE_B)
    entry = tl.reshape(byte.to(tl.int32) * TABLE_B + cols[None, :], (BLOCK_N * TABLE_B,))
    dots = tl.reshape(tl.gather(table, entry, axis=0), (BLOCK_N, TABLE_B))
    jb = block * TABLE_B + cols
    return dots * block_scales(rows_e, jb, block, NG, BLOCK_N, TABLE_B, BYTES_PER_GROUP)


@triton.jit
def _table_forward_kernel(
    t_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, NG, BLOCKS, SPLITS,
    stride_tm, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, TABLE_B: tl.constexpr, PREFETCH: tl.constexpr,
):
    """Partial ``out[s, m, n] = sum_k x[m, k] W[n, k]`` over split ``s = program_id(1)`` of the byte blocks."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.minimum(rn, N - 1)[:, None]
    rows_p = p_ptr + rows * stride_pn
    rows_e = e_ptr + rows * stride_en
    per_split = tl.cdiv(BLOCKS, SPLITS)
    first = tl.program_id(1) * per_split
    last = tl.minimum(first + per_split, BLOCKS)
    cols = tl.arange(0, TABLE_B)
    for m in range(0, M):
        t_row = t_ptr + m * stride_tm
        acc = tl.zeros((BLOCK_N, TABLE_B), dtype=tl.float32)
        if PREFETCH:
            byte, table = _block_operands(rows_p, t_row, tl.minimum(first, BLOCKS - 1), KB, TABLE_B)
            for block in range(first, last):
                byte_next, table_next = _block_operands(rows_p, t_row, tl.minimum(block + 1, last - 1), KB, TABLE_B)
                acc += _block_dots(byte, table, rows_e, block, NG, BLOCK_N, TABLE_B, BYTES_PER_GROUP)
                byte, table = byte_next, table_next
        else:
            for block in range(first, last):
                byte, table = _block_operands(rows_p, t_row, block, KB, TABLE_B)
                acc += _block_dots(byte, table, rows_e, block, NG, BLOCK_N, TABLE_B, BYTES_PER_GROUP)
        tl.store(out_ptr + tl.program_id(1) * stride_os + m * stride_om + rn, tl.sum(acc, axis=1), mask=rn < N)


def table_forward_partials(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int,
                           group_size: int, block_n: int | None = None, table_b: int | None = None,
                           num_warps: int | None = None, splits: int | None = None,
                           prefetch: bool = False) -> torch.Tensor:
    """fp32 partial sums ``[splits, M, N]`` of ``x [M, K] @ W.T``.

    ``block_n`` / ``table_b`` / ``num_warps`` / ``splits`` override the defaults (the
    benchmark sweeps them).
    """
    m, (n, kb) = x.shape[0], T_packed.shape
    if triton_interpreted():
        block_n, table_b, num_warps = block_n or 16, table_b or 8, num_warps or 4
    else:
        block_n, table_b, num_warps = block_n or 512, table_b or 16, num_warps or 8
    blocks = triton.cdiv(kb, table_b)
    tables = torch.empty((m, blocks, TABLE_ENTRIES, table_b), dtype=torch.float32, device=x.device)
    _byte_tables_kernel[(blocks, m)](x, tables, in_features, x.stride(0), x.stride(1), tables.stride(0),
                                     TABLE_B=table_b)
    tiles = triton.cdiv(n, block_n)
    splits = splits or _table_splits(tiles, blocks, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _table_forward_kernel[(tiles, splits)](
        tables, T_packed, E, ws, m, n, kb, E.shape[1], blocks, splits,
        tables.stride(0), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, TABLE_B=table_b, PREFETCH=prefetch, num_warps=num_warps,
    )
    return ws


def _table_splits(tiles: int, blocks: int, device: torch.device) -> int:
    """Byte-block splits: about four programs per SM in all, at least four blocks per split."""
    if triton_interpreted():
        return min(2, blocks)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(4 * sms, tiles), blocks // 4))
