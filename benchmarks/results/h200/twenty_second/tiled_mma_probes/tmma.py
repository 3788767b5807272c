"""Prototype: forward for 2..16 bf16 rows over the decode layout, weights decoded by a shared-memory
table (t0..t3 as bf16, one 8-byte lookup per byte) and a SWAR digit 4, fed to mma.sync m16n8k16 by
inline PTX (thread-centric: every tensor is one element per thread)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.gluon_words import scale_bits
from ternary.kernels.linear.triton_launch import program_splits
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

WORDS_PER_TILE = 20  # B-operand words per lane, n-tile and step: 8 (t0..t3) MMAs x 2 + 2 (t4) MMAs x 2


@triton.jit
def _x_fragments_kernel(x_ptr, out_ptr, M, K, stride_xm, NT: tl.constexpr):
    """``out[s, nt, lane, w]`` (bf16 pairs as int32): the B-operand words of lane ``(g, q)`` for x-row
    ``8 nt + g`` of step ``s``; words 0..15: (t0,t1) / (t2,t3) positions of byte ``8 q + w // 2``,
    words 16..19: digit-4 positions of bytes ``8 q + 4 v + 2 h``, ``+ 1`` (``w = 16 + 2 v + h``)."""
    s = tl.program_id(0)
    nt = tl.program_id(1)
    lane = tl.arange(0, 32)[:, None]
    w = tl.arange(0, 32)[None, :]
    g = lane // 4
    q = lane % 4
    row = 8 * nt + g
    low_byte = 32 * s + 8 * q + w // 2
    low_k = 5 * low_byte + 2 * (w % 2)
    t4_byte = 32 * s + 8 * q + 4 * ((w - 16) // 2) + 2 * (w % 2)
    k0 = tl.where(w < 16, low_k, 5 * t4_byte + 4)
    k1 = tl.where(w < 16, low_k + 1, 5 * (t4_byte + 1) + 4)
    ok = (row < M) & (w < WORDS)
    v0 = tl.load(x_ptr + row * stride_xm + k0, mask=ok & (k0 < K), other=0.0).to(tl.bfloat16)
    v1 = tl.load(x_ptr + row * stride_xm + k1, mask=ok & (k1 < K), other=0.0).to(tl.bfloat16)
    bits = (v0.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (v1.to(tl.int16, bitcast=True).to(tl.int32) << 16)
    tl.store(out_ptr + ((s * NT + nt) * 32 + lane) * WORDS + w, bits, mask=w < WORDS)


WORDS = tl.constexpr(WORDS_PER_TILE)


@gluon.jit
def _fill_table(WARPS: gl.constexpr):
    """``[256 bytes, 16 copies, 2 words]``: (t0, t1) and (t2, t3) of the byte as bf16 pairs; NaN past 242."""
    fill: gl.constexpr = gl.BlockedLayout([4], [32], [WARPS], [0])
    table = gl.allocate_shared_memory(gl.int32, [8192], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    idx = gl.arange(0, 8192, layout=fill)
    b = idx // 32
    second = idx % 2
    first_digit = b // gl.where(second == 0, 1, 9) % 3
    next_digit = b // gl.where(second == 0, 3, 27) % 3
    lo = gl.where(first_digit == 0, 0xBF80, gl.where(first_digit == 2, 0x3F80, 0))
    hi = gl.where(next_digit == 0, 0xBF80, gl.where(next_digit == 2, 0x3F80, 0))
    table.store(gl.where(b >= 243, 0x7FC07FC0, lo | (hi << 16)))
    gl.thread_barrier()
    return table


@gluon.jit
def _lookup(offset):
    return gl.inline_asm_elementwise("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
                                     "ld.shared.v2.b32 {$0, $1}, [a]; }", "=r,=r,r", [offset],
                                     dtype=(gl.int32, gl.int32), is_pure=False, pack=1)


@gluon.jit
def _hmul2(a, b):
    return gl.inline_asm_elementwise("mul.rn.bf16x2 $0, $1, $2;", "=r,r,r", [a, b], dtype=gl.int32, is_pure=True,
                                     pack=1)


@gluon.jit
def _mma(a0, a1, a2, a3, b0, b1, c):
    d0, d1, d2, d3 = gl.inline_asm_elementwise(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, "
        "{$10, $11, $12, $13};", "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", [a0, a1, a2, a3, b0, b1, c[0], c[1], c[2], c[3]],
        dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=True, pack=1)
    return d0, d1, d2, d3


@gluon.jit
def _t4_pairs(w):
    """Digit 4 of the bytes of ``w`` as bf16 trits: ``(bytes 0, 1)`` and ``(bytes 2, 3)``."""
    high = -2139062144
    ge81 = (((w | high) - 0x51515151) | w) & high
    ge162 = (((w & 0x7F7F7F7F) | high) - 0x22222222) & w & high
    m81a = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0x9988;", "=r,r", [ge81], dtype=gl.int32, is_pure=True,
                                     pack=1)
    m162a = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0x9988;", "=r,r", [ge162], dtype=gl.int32, is_pure=True,
                                      pack=1)
    m81b = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0xBBAA;", "=r,r", [ge81], dtype=gl.int32, is_pure=True,
                                     pack=1)
    m162b = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0xBBAA;", "=r,r", [ge162], dtype=gl.int32, is_pure=True,
                                      pack=1)
    pairs = (((~m81a) & -1082081408) ^ (m162a & 0x3F803F80), ((~m81b) & -1082081408) ^ (m162b & 0x3F803F80))
    return pairs


@gluon.jit
def _row_operands(w0, w1, bits, lane_offset):
    """A-operand words of one row's eight bytes: ``lows[u]`` (t0, t1), ``highs[u]`` (t2, t3) of byte ``u``
    and ``t4[p]`` the digit-4 pairs (bytes 2p, 2p + 1), all times ``2^E``."""
    lows = ()
    highs = ()
    for u in gl.static_range(8):
        w = w0 if u < 4 else w1
        i = u % 4
        if i == 0:
            offset = ((w << 7) & 0x7F80) | lane_offset
        else:
            offset = ((w >> (8 * i - 7)) & 0x7F80) | lane_offset
        lo, hi = _lookup(offset)
        lows = lows + (_hmul2(lo, bits),)
        highs = highs + (_hmul2(hi, bits),)
    p0, p1 = _t4_pairs(w0)
    p2, p3 = _t4_pairs(w1)
    return lows, highs, (_hmul2(p0, bits), _hmul2(p1, bits), _hmul2(p2, bits), _hmul2(p3, bits))


@gluon.jit
def _step_loads(xf_ptr, words, e_ptr, step, block, block2, q2, g2, two, g, q, lane4, four, CHUNKS, EWORDS,
                BYTES_PER_GROUP: gl.constexpr, NT: gl.constexpr, one: gl.constexpr):
    """What step ``step`` reads: the activation fragments (``NT * 20`` words per lane) and, for each of the
    lane's four rows, its two weight words and its exponent."""
    WARPS: gl.constexpr = gl.num_warps()
    xs = ()
    for nt in gl.static_range(NT):
        base = ((step * NT + nt) * 32 + lane4) * 20
        for c in gl.static_range(5):
            v = gl.load(xf_ptr + base + 4 * c + four)
            a, b = gl.split(gl.reshape(v, [32 * WARPS, 2, 2]))
            a0, a1 = gl.split(a)
            b0, b1 = gl.split(b)
            xs = xs + (gl.convert_layout(a0, one, assert_trivial=True), gl.convert_layout(b0, one, assert_trivial=True),
                       gl.convert_layout(a1, one, assert_trivial=True), gl.convert_layout(b1, one, assert_trivial=True))
    group = (step * 32 + 8 * q) // BYTES_PER_GROUP
    rows = ()
    for k in gl.static_range(4):
        r = 8 * k + g
        r2 = 8 * k + g2
        v = gl.load(words + ((block2 * CHUNKS + 2 * step + q2 // 2) * 32 + r2) * 4 + 2 * (q2 % 2) + two)
        w0, w1 = gl.split(v)
        e = gl.load(e_ptr + ((block * EWORDS + group // 4) * 32 + r) * 4 + group % 4)
        rows = rows + ((gl.convert_layout(w0, one, assert_trivial=True), gl.convert_layout(w1, one, assert_trivial=True),
                        e),)
    return xs, rows


@gluon.jit
def _tmma_kernel(xf_ptr, t_ptr, e_ptr, out_ptr, M, N, BLOCKS, CHUNKS, EWORDS, STEPS, stride_os, stride_om, STEPS_PER_SPLIT,
                 BYTES_PER_GROUP: gl.constexpr, NT: gl.constexpr, PREFETCH: gl.constexpr = True):
    WARPS: gl.constexpr = gl.num_warps()
    table = _fill_table(WARPS)
    one: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    pair: gl.constexpr = gl.BlockedLayout([1, 2], [32, 1], [WARPS, 1], [1, 0])
    quad: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [WARPS, 1], [1, 0])
    t = gl.arange(0, 32 * WARPS, layout=one)
    lane = t % 32
    g = lane // 4
    q = lane % 4
    row_block = gl.program_id(0) * WARPS + t // 32
    block = gl.minimum(row_block, BLOCKS - 1).to(gl.int64)
    lane_offset = (lane % 16) * 8
    words = t_ptr.to(gl.pointer_type(gl.int32))
    t2 = gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(1, pair))
    block2 = gl.expand_dims(gl.minimum(gl.program_id(0) * WARPS + t2 // 32, BLOCKS - 1).to(gl.int64), 1)
    q2 = gl.expand_dims(t2 % 32 % 4, 1)
    g2 = gl.expand_dims(t2 % 32 // 4, 1)
    two = gl.expand_dims(gl.arange(0, 2, layout=gl.SliceLayout(0, pair)), 0)
    t4 = gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(1, quad))
    lane4 = gl.expand_dims(t4 % 32, 1)
    four = gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, quad)), 0)
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    zero = gl.zeros([32 * WARPS], gl.float32, one)
    acc = ()
    for _ in gl.static_range(2 * NT):
        acc = acc + ((zero, zero, zero, zero),)
    loaded = _step_loads(xf_ptr, words, e_ptr, first, block, block2, q2, g2, two, g, q, lane4, four, CHUNKS, EWORDS,
                         BYTES_PER_GROUP, NT, one)
    for step in range(first, last):
        if PREFETCH:
            ahead = _step_loads(xf_ptr, words, e_ptr, gl.minimum(step + 1, last - 1), block, block2, q2, g2, two, g, q,
                                lane4, four, CHUNKS, EWORDS, BYTES_PER_GROUP, NT, one)
        else:
            loaded = _step_loads(xf_ptr, words, e_ptr, step, block, block2, q2, g2, two, g, q, lane4, four, CHUNKS,
                                 EWORDS, BYTES_PER_GROUP, NT, one)
        xs = loaded[0]
        new_acc = ()
        for mt in gl.static_range(2):
            row0 = _row_operands(loaded[1][2 * mt][0], loaded[1][2 * mt][1], scale_bits(loaded[1][2 * mt][2]),
                                 lane_offset)
            row1 = _row_operands(loaded[1][2 * mt + 1][0], loaded[1][2 * mt + 1][1],
                                 scale_bits(loaded[1][2 * mt + 1][2]), lane_offset)
            for nt in gl.static_range(NT):
                c = acc[mt * NT + nt]
                for u in gl.static_range(8):
                    c = _mma(row0[0][u], row1[0][u], row0[1][u], row1[1][u], xs[nt * 20 + 2 * u],
                             xs[nt * 20 + 2 * u + 1], c)
                for v in gl.static_range(2):
                    c = _mma(row0[2][2 * v], row1[2][2 * v], row0[2][2 * v + 1], row1[2][2 * v + 1],
                             xs[nt * 20 + 16 + 2 * v], xs[nt * 20 + 17 + 2 * v], c)
                new_acc = new_acc + (c,)
        acc = new_acc
        if PREFETCH:
            loaded = ahead
    table._keep_alive()
    for mt in gl.static_range(2):
        for nt in gl.static_range(NT):
            c = acc[mt * NT + nt]
            for j in gl.static_range(4):
                n = row_block * 32 + 16 * mt + 8 * (j // 2) + g
                col = 8 * nt + 2 * q + j % 2
                gl.store(out_ptr + gl.program_id(1) * stride_os + col * stride_om + n, c[j], mask=(n < N) & (col < M))


def x_fragments(x: torch.Tensor, steps: int, nt: int) -> torch.Tensor:
    out = torch.empty((steps, nt, 32, WORDS_PER_TILE), dtype=torch.int32, device=x.device)
    _x_fragments_kernel[(steps, nt)](x, out, x.shape[0], x.shape[1], x.stride(0), NT=nt)
    return out


def tmma_forward(x, T_tiles, E_tiles, *, out_features, group_size, warps=8, per_sm=4, splits=None, prefetch=True):
    """Partial sums ``[splits, M, N]`` fp32 of ``x [M, K] @ W.T`` (M <= 16, G / 5 a multiple of 8)."""
    m = x.shape[0]
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    nt = 1 if m <= 8 else 2
    xf = x_fragments(x, steps, nt)
    tiles = triton.cdiv(blocks, warps)
    if splits is None:
        splits = program_splits(per_sm, tiles, steps, steps, x.device)
    ws = torch.empty((splits, m, out_features), dtype=torch.float32, device=x.device)
    _tmma_kernel[(tiles, splits)](
        xf, T_tiles, E_tiles, ws, m, out_features, blocks, chunks, E_tiles.shape[1], steps, ws.stride(0), ws.stride(1),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=group_size // 5, NT=nt, PREFETCH=prefetch, num_warps=warps,
    )
    return ws
