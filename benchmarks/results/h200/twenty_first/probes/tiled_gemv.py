"""Prototype: M = 1 forward over a row-tiled copy of T_packed / E (chunks of 32 rows contiguous)."""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_base3 import exact_exp2
from ternary.kernels.linear.triton_launch import even_splits, finish_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import TABLE_BLOCK_C, lane_entry, pair_tables as _pair_tables, tables_kernel as _tables_kernel


@gluon.jit
def _byte_dot(byte, low, high):
    hi = (byte * 19) >> 9
    low, lo = gl.broadcast(low, byte - 27 * hi)
    high, hi = gl.broadcast(high, hi)
    return lane_entry(low, lo) + lane_entry(high, hi)


CB = gl.constexpr(32)  # bytes per step


def tile_layer(T_packed: torch.Tensor, E: torch.Tensor, group_size: int):
    """``T_tiles [ceil(N/32), KB_pad/16, 32, 16]`` uint8 (pad bytes 121) and ``E_tiles [ceil(N/32),
    NG_pad/4, 32, 4]`` int8 (pad 0), KB_pad a multiple of 32."""
    n, kb = T_packed.shape
    bpg = group_size // 5
    nb = -(-n // 32)
    kb_pad = -(-kb // 32) * 32
    p = torch.full((nb * 32, kb_pad), 121, dtype=torch.uint8, device=T_packed.device)
    p[:n, :kb] = T_packed
    t = p.view(nb, 32, kb_pad // 16, 16).permute(0, 2, 1, 3).contiguous()
    ng_pad = -(-max(kb_pad // bpg, E.shape[1]) // 4) * 4
    e = torch.zeros((nb * 32, ng_pad), dtype=torch.int8, device=E.device)
    e[:n, : E.shape[1]] = E
    et = e.view(nb, 32, ng_pad // 4, 4).permute(0, 2, 1, 3).contiguous()
    return t, et


@gluon.jit
def _load_step(words, e_words, step, quad, layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr):
    """The 8 words of each lane's row for step ``step`` (two coalesced 16-byte chunk loads) and the
    exponent word(s)."""
    loaded = ()
    for c in gl.static_range(2):
        ptrs = gl.expand_dims(words + (step * 2 + c) * 128, 2) + gl.expand_dims(gl.expand_dims(quad, 0), 0)
        vector = gl.load(ptrs)
        evens, odds = gl.split(gl.reshape(vector, [vector.shape[0], vector.shape[1], 2, 2]))
        w0, w2 = gl.split(evens)
        w1, w3 = gl.split(odds)
        loaded = loaded + (gl.convert_layout(w0, layout, assert_trivial=True),
                           gl.convert_layout(w1, layout, assert_trivial=True),
                           gl.convert_layout(w2, layout, assert_trivial=True),
                           gl.convert_layout(w3, layout, assert_trivial=True))
    GROUPS: gl.constexpr = CB // BYTES_PER_GROUP
    exponents = ()
    if GROUPS >= 4:
        for w in gl.static_range(GROUPS // 4):
            exponents = exponents + (gl.load(e_words + (step * (GROUPS // 4) + w) * 32),)
    else:
        g = step * CB // BYTES_PER_GROUP
        exponents = exponents + (gl.load(e_words + (g // 4) * 32),)
    return loaded, exponents


@gluon.jit
def _scales(exponents, step, BYTES_PER_GROUP: gl.constexpr):
    GROUPS: gl.constexpr = CB // BYTES_PER_GROUP
    scales = ()
    if GROUPS >= 4:
        for w in gl.static_range(GROUPS // 4):
            for i in gl.static_range(4):
                scales = scales + (exact_exp2((exponents[w] << (24 - 8 * i)) >> 24),)
    elif GROUPS >= 1:
        for i in gl.static_range(GROUPS):
            g = step * GROUPS + i
            scales = scales + (exact_exp2((exponents[0] << (24 - 8 * (g % 4))) >> 24),)
    else:
        g = step * CB // BYTES_PER_GROUP
        scales = scales + (exact_exp2((exponents[0] << (24 - 8 * (g % 4))) >> 24),)
    return scales


@gluon.jit
def _compute(acc, loaded, exponents, tab_ptr, step, layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr):
    CHUNK: gl.constexpr = CB if CB < BYTES_PER_GROUP else BYTES_PER_GROUP
    scales = _scales(exponents, step, BYTES_PER_GROUP)
    part = gl.zeros_like(acc)
    for j in gl.static_range(CB // 4):
        for h in gl.static_range(2):
            low0, high0, low1, high1 = _pair_tables(tab_ptr, step * (CB // 2) + 2 * j + h, layout)
            for i in gl.static_range(2):
                byte = (loaded[j] >> (8 * (2 * h + i))) & 0xFF
                if i == 0:
                    part += _byte_dot(byte, low0, high0)
                else:
                    part += _byte_dot(byte, low1, high1)
                if (4 * j + 2 * h + i) % CHUNK == CHUNK - 1:
                    acc += part * scales[(4 * j + 2 * h + i) // CHUNK]
                    part = gl.zeros_like(acc)
    return acc


@gluon.jit
def _tiled_gemv_kernel(tab_ptr, t_ptr, e_ptr, out_ptr, N, NR, KC, NGW, steps, stride_os, STEPS_PER_SPLIT,
                       BYTES_PER_GROUP: gl.constexpr, RPT: gl.constexpr, AHEAD: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    LANES: gl.constexpr = 32 * WARPS
    wide: gl.constexpr = gl.BlockedLayout([RPT, 1, 4], [1, 32, 1], [1, WARPS, 1], [2, 0, 1])
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, wide)))
    rows = (gl.program_id(0) * (RPT * LANES)
            + gl.expand_dims(gl.arange(0, RPT, layout=gl.SliceLayout(1, layout)), 1) * LANES
            + gl.expand_dims(gl.arange(0, LANES, layout=gl.SliceLayout(0, layout)), 0))
    clamped = gl.minimum(rows, NR - 1)
    block = (clamped // 32).to(gl.int64)
    lane = clamped % 32
    words = t_ptr.to(gl.pointer_type(gl.int32)) + block * (KC * 128) + lane * 4
    e_words = e_ptr.to(gl.pointer_type(gl.int32)) + block * (NGW * 32) + lane
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, steps)
    acc = gl.zeros([RPT, LANES], gl.float32, layout)
    loaded, exponents = _load_step(words, e_words, first, quad, layout, BYTES_PER_GROUP)
    if AHEAD == 1:
        for step in range(first, last):
            nxt = gl.minimum(step + 1, last - 1)
            ahead, ahead_e = _load_step(words, e_words, nxt, quad, layout, BYTES_PER_GROUP)
            acc = _compute(acc, loaded, exponents, tab_ptr, step, layout, BYTES_PER_GROUP)
            loaded, exponents = ahead, ahead_e
    else:
        loaded1, exponents1 = _load_step(words, e_words, gl.minimum(first + 1, last - 1), quad, layout,
                                         BYTES_PER_GROUP)
        for step in range(first, last):
            nxt = gl.minimum(step + 2, last - 1)
            ahead, ahead_e = _load_step(words, e_words, nxt, quad, layout, BYTES_PER_GROUP)
            acc = _compute(acc, loaded, exponents, tab_ptr, step, layout, BYTES_PER_GROUP)
            loaded, exponents = loaded1, exponents1
            loaded1, exponents1 = ahead, ahead_e
    gl.store(out_ptr + gl.program_id(1) * stride_os + rows, acc, mask=rows < N)


def tiled_gemv(x, T_tiles, E_tiles, n, group_size, rpt=2, warps=4, programs_per_sm=4, splits=0, ahead=1,
               parts=None):
    nb, kc, _, _ = T_tiles.shape
    steps = kc // 2
    row_blocks = triton.cdiv(nb * 32, rpt * 32 * warps)
    if splits <= 0:
        splits = programs_per_sm * sm_count(x.device) // row_blocks
    splits = even_splits(max(1, min(splits, steps)), steps)
    tables = torch.empty((steps * 16, 32, 4), dtype=torch.float32, device=x.device)
    _tables_kernel[(steps * 32 // TABLE_BLOCK_C,)](x[0].contiguous(), tables, x.shape[1], BLOCK_C=TABLE_BLOCK_C)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    _tiled_gemv_kernel[(row_blocks, splits)](
        tables, T_tiles, E_tiles, ws, n, nb * 32, kc, E_tiles.shape[1], steps, ws.stride(0), triton.cdiv(steps, splits),
        BYTES_PER_GROUP=group_size // 5, RPT=rpt, AHEAD=ahead, num_warps=warps)
    return finish_splits(ws, None, 16, x.dtype)
