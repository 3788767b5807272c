"""Lookup-table GEMV of the Triton backend: one activation row, one table lookup per packed byte.

For activations ``x [K]`` the table ``L [KBp, 256]`` holds, for byte column ``j`` and every
byte value ``b``, the dot product of that byte's five trits with the five activations it
covers: ``L[j, b] = sum_i (d_i(b) - 1) x[5 j + i]`` (fp32; NaN for ``b > 242``, so a corrupt
byte turns its output NaN; zero past ``K``). Then

    y[n] = sum_j 2^E[n, j // (G / 5)] * L[j, T_packed[n, j]]

costs one byte load, one shared-memory lookup and one FMA per packed byte, where decoding
the five trits costs about 35 instructions (the T-MAC / bitnet.cpp "TL" idea, with base-3
bytes as the index). Each step of the kernel gathers from the ``BLOCK_B * 256`` table
entries of ``BLOCK_B`` byte columns (``tl.gather`` over a 1-D table places it in shared
memory) for ``BLOCK_N`` rows, so the table costs ``256 / BLOCK_N`` of the lookups.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import TRITS_PER_BYTE, exact_exp2
from ternary.kernels.registry import triton_interpreted

TABLE_WIDTH = 256
_TRITS = tl.constexpr(TRITS_PER_BYTE)
# (BLOCK_N, BLOCK_B, warps, programs per SM) on the GPU; BLOCK_B = 8 bytes is one default group.
GPU_TILE = (512, 8, 8, 4)
INTERPRETER_TILE = (16, 8, 4, 1)


@triton.jit
def _table_kernel(x_ptr, t_ptr, K, KB, BLOCK_J: tl.constexpr):
    """``t[j, b]`` (``[KBp, 256]``): byte ``b``'s trits dotted with ``x[5 j .. 5 j + 4]``."""
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    b = tl.arange(0, 256)
    rest = b
    total = tl.zeros((BLOCK_J, 256), dtype=tl.float32)
    for i in tl.static_range(_TRITS):
        col = _TRITS * j + i
        xi = tl.load(x_ptr + col, mask=col < K, other=0.0).to(tl.float32)
        total += (rest % 3 - 1).to(tl.float32)[None, :] * xi[:, None]
        rest = rest // 3
    total = tl.where((b > 242)[None, :], float("nan"), total)
    tl.store(t_ptr + j[:, None] * 256 + b[None, :], total)


@triton.jit
def _load_step(t_ptr, rows_p, rows_e, c, v, j0, KB, NG, BYTES_PER_GROUP: tl.constexpr, BLOCK_B: tl.constexpr,
               MASKED: tl.constexpr):
    """Bytes and exponents ``[BLOCK_N * BLOCK_B]`` and table ``[BLOCK_B * 256]`` of the byte
    columns ``j0 .. j0 + BLOCK_B``."""
    if MASKED:
        byte = tl.load(rows_p + j0, mask=c + j0 < KB, other=121)
    else:
        byte = tl.load(rows_p + j0)
    if BYTES_PER_GROUP % BLOCK_B == 0:
        e = tl.load(rows_e + tl.minimum(j0 // BYTES_PER_GROUP, NG - 1))
    else:
        e = tl.load(rows_e + tl.minimum((j0 + c) // BYTES_PER_GROUP, NG - 1))
    return byte, e, tl.load(t_ptr + j0 * 256 + v)


@triton.jit
def _accumulate(acc, byte, e, table, c):
    """``acc + 2^E * L[j, byte]`` (one lookup per byte)."""
    return acc + tl.gather(table, byte.to(tl.int32) + c * 256, 0) * exact_exp2(e)


@triton.jit
def _lut_gemv_kernel(t_ptr, p_ptr, e_ptr, out_ptr, N, KB, NG, stride_pn, stride_en, stride_os, SPLIT_K,
                     BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s`` of the byte columns.

    Element ``i`` of the flat ``[BLOCK_N * BLOCK_B]`` tiles is row ``i // BLOCK_B``, column
    ``i % BLOCK_B`` of a step; rows past ``N`` are clamped (never stored). Whole steps run
    unmasked; the one partial step at the end of a row is masked to all-zero trits (byte 121).
    """
    i = tl.arange(0, BLOCK_N * BLOCK_B)
    c = i % BLOCK_B
    rn = tl.minimum(tl.program_id(0) * BLOCK_N + i // BLOCK_B, N - 1)
    rows_p = p_ptr + rn * stride_pn + c
    rows_e = e_ptr + rn * stride_en
    steps = tl.cdiv(KB, BLOCK_B)
    per_split = tl.cdiv(steps, SPLIT_K)
    first = tl.program_id(1) * per_split
    last = tl.minimum(first + per_split, steps)
    whole = tl.maximum(tl.minimum(last, KB // BLOCK_B), first)
    v = tl.arange(0, 256 * BLOCK_B)
    acc = tl.zeros((BLOCK_N * BLOCK_B,), dtype=tl.float32)
    byte, e, table = _load_step(t_ptr, rows_p, rows_e, c, v, tl.minimum(first, steps - 1) * BLOCK_B, KB, NG,
                                BYTES_PER_GROUP, BLOCK_B, True)
    for step in range(first, whole):
        ahead = tl.minimum(step + 1, whole - 1) * BLOCK_B
        byte_next, e_next, table_next = _load_step(t_ptr, rows_p, rows_e, c, v, ahead, KB, NG, BYTES_PER_GROUP,
                                                   BLOCK_B, False)
        acc = _accumulate(acc, byte, e, table, c)
        byte, e, table = byte_next, e_next, table_next
    if whole < last:
        byte, e, table = _load_step(t_ptr, rows_p, rows_e, c, v, whole * BLOCK_B, KB, NG, BYTES_PER_GROUP, BLOCK_B,
                                    True)
        acc = _accumulate(acc, byte, e, table, c)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    total = tl.sum(tl.reshape(acc, (BLOCK_N, BLOCK_B)), axis=1)
    tl.store(out_ptr + tl.program_id(1) * stride_os + rows, total, mask=rows < N)


def byte_dot_table(x: torch.Tensor, byte_columns: int) -> torch.Tensor:
    """``L [byte_columns, 256]`` fp32 for one activation row ``x [K]`` (see the module docstring);
    columns past ``ceil(K / 5)`` are zero (NaN for corrupt bytes)."""
    block_j = 8
    table = torch.empty((byte_columns, TABLE_WIDTH), dtype=torch.float32, device=x.device)
    _table_kernel[(byte_columns // block_j,)](x, table, x.shape[0], byte_columns, BLOCK_J=block_j)
    return table


def lut_gemv(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, group_size: int,
             tile: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Split partial sums ``[S, 1, N]`` fp32 of ``x [1, K] @ W.T`` (no bias; reduce with the
    linear kernels' ``_finish``).

    ``tile = (BLOCK_N, BLOCK_B, warps, programs per SM)`` overrides the launch (benchmark sweeps).
    """
    n, kb = T_packed.shape
    block_n, block_b, warps, per_sm = tile or (INTERPRETER_TILE if triton_interpreted() else GPU_TILE)
    steps = triton.cdiv(kb, block_b)
    table = byte_dot_table(x[0].contiguous(), steps * block_b)
    tiles = triton.cdiv(n, block_n)
    if triton_interpreted():
        splits = min(2, steps)
    else:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        splits = max(1, min(steps, (per_sm * sms) // tiles))
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    _lut_gemv_kernel[(tiles, splits)](
        table, T_packed, E, ws, n, kb, E.shape[1], T_packed.stride(0), E.stride(0), ws.stride(0), splits,
        BYTES_PER_GROUP=group_size // TRITS_PER_BYTE, BLOCK_N=block_n, BLOCK_B=block_b, num_warps=warps,
    )
    return ws
