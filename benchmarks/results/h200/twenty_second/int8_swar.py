"""Prototype B: int8 one-row forward, 4-trit shared table (LDS.32) + SWAR digit 4 (G >= 20)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_launch import even_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import chunk_words, lane_rows
from ternary.kernels.linear.triton_tiled_gemv import _load_step, _step_scales
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

_STEP = gl.constexpr(STEP_BYTES)
_CHUNK = gl.constexpr(CHUNK_BYTES)
_ROWS = gl.constexpr(TILE_ROWS)


@triton.jit
def quantize_kernel(x_ptr, xw_ptr, xs_ptr, K, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Per step of 160 activations: ``xs[step] = amax / 127`` and 64 words ``xw[step]``: [0, 32) byte j's
    q[5j..5j+3] as int8x4, [32, 40) the q[5j+4] of bytes 4w..4w+3 as int8x4, [40, 40 + 32 / CHUNK) the
    sum of q[5j+4] over each CHUNK-byte chunk."""
    step = tl.program_id(0)
    k = step * 160 + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + k, mask=(tl.arange(0, BLOCK) < 160) & (k < K), other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(v), axis=0)
    scale = tl.math.div_rn(amax, 127.0)
    tl.store(xs_ptr + step, scale)
    j = tl.arange(0, 32)
    word0 = tl.zeros((32,), tl.int32)
    q4 = tl.zeros((32,), tl.int32)
    for d in tl.static_range(5):
        kk = step * 160 + 5 * j + d
        xv = tl.load(x_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
        q = tl.floor(tl.math.div_rn(xv, tl.where(scale > 0, scale, 1.0)) + 0.5)
        q = tl.minimum(tl.maximum(q, -127.0), 127.0).to(tl.int32)
        if d < 4:
            word0 |= (q & 255) << (8 * d)
        else:
            q4 = q
    tl.store(xw_ptr + step * 64 + j, word0)
    packed = tl.sum(tl.reshape((q4 & 255) << (8 * (j % 4)), (8, 4)), axis=1)
    tl.store(xw_ptr + step * 64 + 32 + tl.arange(0, 8), packed)
    sums = tl.sum(tl.reshape(q4, (32 // CHUNK, CHUNK)), axis=1)
    tl.store(xw_ptr + step * 64 + 40 + tl.arange(0, 32 // CHUNK), sums)


@gluon.jit
def _lookup(offset):
    return gl.inline_asm_elementwise("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $1; "
                                     "ld.shared.b32 $0, [a]; }", "=r,r", [offset],
                                     dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _dp4a(a, b, c):
    return gl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c], dtype=gl.int32,
                                     is_pure=True, pack=1)


@gluon.jit
def _fill_table(WARPS: gl.constexpr):
    """``[256 bytes, 32 copies]`` int32: the byte's trits 0..3 as int8x4."""
    fill: gl.constexpr = gl.BlockedLayout([4], [32], [WARPS], [0])
    table = gl.allocate_shared_memory(gl.int32, [8192], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    b = gl.arange(0, 8192, layout=fill) // 32
    table.store(((b % 3 - 1) & 255) | (((b // 3 % 3 - 1) & 255) << 8) | (((b // 9 % 3 - 1) & 255) << 16)
                | ((b // 27 % 3 - 1) << 24))
    gl.thread_barrier()
    return table


@gluon.jit
def _xwords(xw_ptr, offset, xq, layout: gl.constexpr):
    return chunk_words(gl.load(xw_ptr + offset + xq), layout)


@gluon.jit
def _swar_kernel(xw_ptr, xs_ptr, t_ptr, e_ptr, out_ptr, N, ROWS, CHUNKS, WORDS, STEPS, stride_os,
                 STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, RPT: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    table = _fill_table(WARPS)
    wide: gl.constexpr = gl.BlockedLayout([RPT, 1, 4], [1, 32, 1], [1, WARPS, 1], [2, 0, 1])
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad, rows = lane_rows(wide, RPT)
    lanes = gl.expand_dims(gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(0, layout)), 0)
    lane_offset = (lanes % 32) * 4
    clamped = gl.minimum(rows, ROWS - 1)
    tile = (clamped // _ROWS).to(gl.int64)
    lane = clamped % _ROWS
    chunks = t_ptr.to(gl.pointer_type(gl.int32)) + tile * (CHUNKS * (_ROWS * _CHUNK // 4)) + lane * (_CHUNK // 4)
    exponents = e_ptr.to(gl.pointer_type(gl.int32)) + tile * (WORDS * _ROWS) + lane
    wide_x: gl.constexpr = gl.BlockedLayout([1, 1, 4], [1, 32, 1], [1, WARPS, 1], [2, 0, 1])
    quad_x = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, wide_x)))
    lanes_x = gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(0, gl.SliceLayout(2, wide_x)))
    xq = gl.expand_dims(gl.expand_dims(quad_x, 0), 0) + gl.expand_dims(gl.expand_dims(lanes_x * 0, 0), 2)
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    acc = gl.zeros(rows.shape, gl.float32, layout)
    bad = gl.zeros(rows.shape, gl.int32, layout)
    CHUNK: gl.constexpr = _STEP if _STEP < BYTES_PER_GROUP else BYTES_PER_GROUP
    gl.static_assert(CHUNK % 4 == 0)
    words, loaded = _load_step(chunks, exponents, first, quad, layout, BYTES_PER_GROUP)
    for step in range(first, last):
        ahead, ahead_loaded = _load_step(chunks, exponents, gl.minimum(step + 1, last - 1), quad, layout,
                                         BYTES_PER_GROUP)
        scales = _step_scales(loaded, step, BYTES_PER_GROUP)
        x_scale = gl.load(xs_ptr + step)
        x4 = _xwords(xw_ptr, step * 64 + 32, xq, layout) + _xwords(xw_ptr, step * 64 + 36, xq, layout)
        sums = _xwords(xw_ptr, step * 64 + 40, xq, layout) + _xwords(xw_ptr, step * 64 + 44, xq, layout)
        p0 = gl.zeros(rows.shape, gl.int32, layout)
        p1 = gl.zeros(rows.shape, gl.int32, layout)
        for j in gl.static_range(_STEP // 4):
            x0 = _xwords(xw_ptr, step * 64 + 4 * j, xq, layout)
            w = words[j]
            for i in gl.static_range(4):
                if i == 0:
                    offset = ((w << 7) & 0x7F80) | lane_offset
                else:
                    offset = ((w >> (8 * i - 7)) & 0x7F80) | lane_offset
                p0 = _dp4a(_lookup(offset), x0[i], p0)
            ge81 = (((w | -2139062144) - 0x51515151) | w) & -2139062144
            low7 = (w & 0x7F7F7F7F) | -2139062144
            ge162 = (low7 - 0x22222222) & w & -2139062144
            p1 = _dp4a(ge81, x4[j], p1)
            p1 = _dp4a(ge162, x4[j], p1)
            bad = bad | ((low7 - 0x73737373) & w)
            if (4 * j + 4) % CHUNK == 0:
                total = p0 - (p1 >> 7) - sums[(4 * j + 3) // CHUNK]
                acc += total.to(gl.float32) * (scales[(4 * j + 3) // CHUNK] * x_scale)
                p0 = gl.zeros_like(p0)
                p1 = gl.zeros_like(p1)
        words, loaded = ahead, ahead_loaded
    acc = gl.where((bad & -2139062144) != 0, float("nan"), acc)
    table._keep_alive()
    gl.store(out_ptr + gl.program_id(1) * stride_os + rows, acc, mask=rows < N)


def quantize(x, steps, group_size):
    xw = torch.zeros((steps * 64,), dtype=torch.int32, device=x.device)
    xs = torch.empty((steps,), dtype=torch.float32, device=x.device)
    quantize_kernel[(steps,)](x[0].contiguous(), xw, xs, x.shape[1], CHUNK=min(group_size // 5, 32), BLOCK=256)
    return xw, xs


def swar_gemv(x, T_tiles, E_tiles, *, out_features, group_size, tile=None, maxnreg=0):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    rpt, warps, per_sm = tile or (4, 4, 4)
    row_blocks = triton.cdiv(blocks * TILE_ROWS, rpt * 32 * warps)
    splits = even_splits(max(1, min(per_sm * sm_count(x.device) // row_blocks, steps)), steps)
    xw, xs = quantize(x, steps, group_size)
    ws = torch.empty((splits, 1, out_features), dtype=torch.float32, device=x.device)
    _swar_kernel[(row_blocks, splits)](
        xw, xs, T_tiles, E_tiles, ws, out_features, blocks * TILE_ROWS, chunks, E_tiles.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=group_size // 5, RPT=rpt, num_warps=warps,
        **({'maxnreg': maxnreg} if maxnreg else {}),
    )
    return ws
