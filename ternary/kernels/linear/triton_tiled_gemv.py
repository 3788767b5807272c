"""Forward for one activation row over the row-tiled decode layout (a Gluon kernel: compiled
NVIDIA GPUs only, never under ``TRITON_INTERPRET``).

Layers with ``G / 5`` a multiple of 8 take the one-lookup kernel of ``triton_lut_gemv`` instead (faster
on every measured shape); this one serves the other group sizes.

The arithmetic is the warp-shuffle table lookup of ``triton_table_gemv``: lane ``L`` of a warp owns
weight rows, all 32 lanes walk the same byte columns, and a byte ``b = lo + 27 hi`` costs two
``shfl.sync.idx`` (``low[lo] + high[hi]``). What changes is where the bytes come from.
``T_packed`` keeps a row's bytes together, so each 16-byte load of a warp touches 32 rows, i.e. 32
cache lines, and rows rarely start aligned (two selects and a funnel shift per word). The decode
layout (``ternary.state.decode_state``) puts the 16-byte chunks of 32 consecutive rows side by side,
so the same warp load is one contiguous 512-byte run (4 L1 wavefronts instead of 32), and every
chunk starts aligned; rows are padded to whole 32-byte steps with zero-trit bytes and the row count
to whole 32-row tiles, so the main loop needs no masks.

Exponents come as 4-byte words of ``E_tiles``, each a coalesced 128-byte warp load per row tile: one
word per step for ``G = 40``, two, four or eight for ``G = 20, 10, 5``, and for larger groups the
word of the step's group (steps inside one group read the same word again). The tables are built
once per call into a small fp32 workspace (``triton_table_gemv.build_tables``), and the partial
sums of each split are added, with the bias, by ``finish_splits``.

H200, bf16 activations, bf16 cuBLAS in the same run (``benchmarks/NOTES.md``, "twenty-first"):
16384 x 16384 33.2 us (3.73x; the table GEMV on ``T_packed`` 47.9 us), 1.5-2.4x on the smaller
benchmark shapes. The kernel is bound by issue and the shuffles now, not by its loads.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_base3 import exact_exp2
from ternary.kernels.linear.triton_launch import even_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import build_tables, chunk_words, lane_rows, words_dot
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

_STEP = gl.constexpr(STEP_BYTES)
_CHUNK = gl.constexpr(CHUNK_BYTES)
_ROWS = gl.constexpr(TILE_ROWS)
# Rows per lane, warps per program and programs per SM of the launch (benchmarks/NOTES.md,
# "twenty-first": H200, 16384^2).
TILED_ROWS_PER_LANE = 4
TILED_WARPS = 4
TILED_PROGRAMS_PER_SM = 4


@gluon.jit
def _load_step(chunks, exponents, step, quad, layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr):
    """Step ``step``'s eight words of each lane's rows (two 16-byte chunks, each one contiguous
    512-byte warp load per row tile) and the exponent words that cover its groups."""
    words = ()
    for c in gl.static_range(_STEP // _CHUNK):
        offsets = (step * (_STEP // _CHUNK) + c) * (_ROWS * _CHUNK // 4)
        pointers = gl.expand_dims(chunks + offsets, 2) + gl.expand_dims(gl.expand_dims(quad, 0), 0)
        words = words + chunk_words(gl.load(pointers), layout)
    GROUPS: gl.constexpr = _STEP // BYTES_PER_GROUP
    loaded = ()
    if GROUPS >= 4:
        for w in gl.static_range(GROUPS // 4):
            loaded = loaded + (gl.load(exponents + (step * (GROUPS // 4) + w) * _ROWS),)
    else:
        loaded = loaded + (gl.load(exponents + (step * _STEP // BYTES_PER_GROUP // 4) * _ROWS),)
    return words, loaded


@gluon.jit
def _step_scales(loaded, step, BYTES_PER_GROUP: gl.constexpr):
    """``2^E`` (fp32) of each group of step ``step``, in byte order (one for a step inside a group)."""
    GROUPS: gl.constexpr = _STEP // BYTES_PER_GROUP
    scales = ()
    if GROUPS >= 4:
        for w in gl.static_range(GROUPS // 4):
            for i in gl.static_range(4):
                scales = scales + (exact_exp2((loaded[w] << (24 - 8 * i)) >> 24),)
    else:
        first = step * _STEP // BYTES_PER_GROUP
        COUNT: gl.constexpr = GROUPS if GROUPS > 0 else 1
        for i in gl.static_range(COUNT):
            scales = scales + (exact_exp2((loaded[0] << (24 - 8 * ((first + i) % 4))) >> 24),)
    return scales


@gluon.jit
def _tiled_gemv_kernel(tab_ptr, t_ptr, e_ptr, out_ptr, N, ROWS, CHUNKS, WORDS, STEPS, stride_os, STEPS_PER_SPLIT,
                       BYTES_PER_GROUP: gl.constexpr, RPT: gl.constexpr):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s = program_id(1)`` of the 32-byte steps,
    for ``RPT * 32 * warps`` weight rows per program (``program_id(0)``); ``ROWS`` is the tiles' padded
    row count, ``CHUNKS`` / ``WORDS`` their chunk and exponent-word counts per row."""
    wide: gl.constexpr = gl.BlockedLayout([RPT, 1, 4], [1, 32, 1], [1, gl.num_warps(), 1], [2, 0, 1])
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad, rows = lane_rows(wide, RPT)
    clamped = gl.minimum(rows, ROWS - 1)
    tile = (clamped // _ROWS).to(gl.int64)
    lane = clamped % _ROWS
    chunks = t_ptr.to(gl.pointer_type(gl.int32)) + tile * (CHUNKS * (_ROWS * _CHUNK // 4)) + lane * (_CHUNK // 4)
    exponents = e_ptr.to(gl.pointer_type(gl.int32)) + tile * (WORDS * _ROWS) + lane
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    acc = gl.zeros(rows.shape, gl.float32, layout)
    words, loaded = _load_step(chunks, exponents, first, quad, layout, BYTES_PER_GROUP)
    for step in range(first, last):
        ahead, ahead_loaded = _load_step(chunks, exponents, gl.minimum(step + 1, last - 1), quad, layout,
                                         BYTES_PER_GROUP)
        acc = words_dot(acc, words, _step_scales(loaded, step, BYTES_PER_GROUP), tab_ptr, step * _STEP, 0, layout,
                        BYTES_PER_GROUP, _STEP, False)
        words, loaded = ahead, ahead_loaded
    gl.store(out_ptr + gl.program_id(1) * stride_os + rows, acc, mask=rows < N)


def tiled_gemv(x: torch.Tensor, T_tiles: torch.Tensor, E_tiles: torch.Tensor, *, out_features: int, group_size: int,
               tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Partial sums ``[splits, 1, N]`` (fp32) of ``x [1, K] @ W.T`` from the decode layout's
    ``T_tiles`` / ``E_tiles`` (``ternary.state.decode_state``, contiguous); ``tile = (rows per lane,
    warps, programs per SM)`` overrides the launch (benchmark sweeps)."""
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    rpt, warps, per_sm = tile or (TILED_ROWS_PER_LANE, TILED_WARPS, TILED_PROGRAMS_PER_SM)
    row_blocks = triton.cdiv(blocks * TILE_ROWS, rpt * 32 * warps)
    splits = even_splits(max(1, min(per_sm * sm_count(x.device) // row_blocks, steps)), steps)
    tables = build_tables(x, steps * STEP_BYTES)
    ws = torch.empty((splits, 1, out_features), dtype=torch.float32, device=x.device)
    _tiled_gemv_kernel[(row_blocks, splits)](
        tables, T_tiles, E_tiles, ws, out_features, blocks * TILE_ROWS, chunks, E_tiles.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=group_size // 5, RPT=rpt, num_warps=warps,
    )
    return ws
