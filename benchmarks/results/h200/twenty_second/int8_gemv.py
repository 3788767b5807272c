"""Prototype: one-row forward with int8 activations over the decode layout (dp4a + shared trit table)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_base3 import exact_exp2
from ternary.kernels.linear.triton_launch import even_splits, sm_count
from ternary.kernels.linear.triton_table_gemv import chunk_words, lane_rows
from ternary.kernels.linear.triton_tiled_gemv import _load_step, _step_scales
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

_STEP = gl.constexpr(STEP_BYTES)
_CHUNK = gl.constexpr(CHUNK_BYTES)
_ROWS = gl.constexpr(TILE_ROWS)
STEP_WEIGHTS = 5 * STEP_BYTES


@triton.jit
def quantize_kernel(x_ptr, xw_ptr, xs_ptr, K, BLOCK: tl.constexpr):
    """Step ``program_id(0)``'s 160 activations to int8 at one scale ``amax / 127``: ``xs[step]`` and,
    per byte column ``j``, ``xw[step, j] = (q[5j..5j+3] as int8x4, q[5j+4] in byte 0)``."""
    step = tl.program_id(0)
    k = step * 160 + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + k, mask=(tl.arange(0, BLOCK) < 160) & (k < K), other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(v), axis=0)
    scale = tl.math.div_rn(amax, 127.0)
    tl.store(xs_ptr + step, scale)
    j = tl.arange(0, 32)
    word0 = tl.zeros((32,), tl.int32)
    word1 = tl.zeros((32,), tl.int32)
    for d in tl.static_range(5):
        kk = step * 160 + 5 * j + d
        xv = tl.load(x_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
        q = tl.floor(tl.math.div_rn(xv, tl.where(scale > 0, scale, 1.0)) + 0.5)
        q = tl.minimum(tl.maximum(q, -127.0), 127.0).to(tl.int32) & 255
        if d < 4:
            word0 |= q << (8 * d)
        else:
            word1 = q
    tl.store(xw_ptr + step * 64 + 2 * j, word0)
    tl.store(xw_ptr + step * 64 + 2 * j + 1, word1)


@gluon.jit
def _table_base(lane_offset):
    """Shared address of each lane's copy of the trit table (the table is the kernel's only shared buffer)."""
    return gl.inline_asm_elementwise("{ .reg .u32 t; mov.u32 t, global_smem; add.u32 $0, t, $1; }", "=r,r",
                                     [lane_offset], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def _lookup(offset):
    """Words ``(lo, hi)`` at byte ``offset`` of the trit table."""
    return gl.inline_asm_elementwise("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
                                     "ld.shared.v2.b32 {$0, $1}, [a]; }", "=r,=r,r", [offset],
                                     dtype=(gl.int32, gl.int32), is_pure=False, pack=1)


@gluon.jit
def _dp4a(a, b, c):
    return gl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c], dtype=gl.int32,
                                     is_pure=True, pack=1)


@gluon.jit
def _fill_table(WARPS: gl.constexpr):
    """Trit table ``[256 bytes, 16 copies, 2 words]`` in shared memory: word 0 the byte's trits 0..3 as
    int8x4, word 1 trit 4 in byte 0, and bit 23 set for bytes > 242."""
    fill: gl.constexpr = gl.BlockedLayout([4], [32], [WARPS], [0])
    table = gl.allocate_shared_memory(gl.int32, [8192], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    idx = gl.arange(0, 8192, layout=fill)
    b = idx // 32
    w0 = ((b % 3 - 1) & 255) | (((b // 3 % 3 - 1) & 255) << 8) | (((b // 9 % 3 - 1) & 255) << 16) | \
        ((b // 27 % 3 - 1) << 24)
    w1 = gl.where(b >= 243, 0x800000, (b // 81 % 3 - 1) & 255)
    table.store(gl.where(idx % 2 == 0, w0, w1))
    gl.thread_barrier()
    return table


@gluon.jit
def _int8_gemv_kernel(xw_ptr, xs_ptr, t_ptr, e_ptr, out_ptr, N, ROWS, CHUNKS, WORDS, STEPS, stride_os,
                      STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, RPT: gl.constexpr, POISON: gl.constexpr = True,
                      CHAINS: gl.constexpr = 2):
    WARPS: gl.constexpr = gl.num_warps()
    table = _fill_table(WARPS)
    wide: gl.constexpr = gl.BlockedLayout([RPT, 1, 4], [1, 32, 1], [1, WARPS, 1], [2, 0, 1])
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad, rows = lane_rows(wide, RPT)
    lanes = gl.expand_dims(gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(0, layout)), 0)
    lane_offset = (lanes % 16) * 8
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
    words, loaded = _load_step(chunks, exponents, first, quad, layout, BYTES_PER_GROUP)
    for step in range(first, last):
        ahead, ahead_loaded = _load_step(chunks, exponents, gl.minimum(step + 1, last - 1), quad, layout,
                                         BYTES_PER_GROUP)
        scales = _step_scales(loaded, step, BYTES_PER_GROUP)
        x_scale = gl.load(xs_ptr + step)
        p0 = gl.zeros(rows.shape, gl.int32, layout)
        p1 = gl.zeros(rows.shape, gl.int32, layout)
        p2 = gl.zeros(rows.shape, gl.int32, layout)
        p3 = gl.zeros(rows.shape, gl.int32, layout)
        for j in gl.static_range(_STEP // 4):
            xw = ()
            for h in gl.static_range(2):
                xw = xw + chunk_words(gl.load(xw_ptr + step * 64 + 8 * j + 4 * h + xq), layout)
            for i in gl.static_range(4):
                if i == 0:
                    offset = ((words[j] << 7) & 0x7F80) | lane_offset
                else:
                    offset = ((words[j] >> (8 * i - 7)) & 0x7F80) | lane_offset
                lo, hi = _lookup(offset)
                if CHAINS == 4 and i % 2 == 1:
                    p2 = _dp4a(lo, xw[2 * i], p2)
                    p3 = _dp4a(hi, xw[2 * i + 1], p3)
                else:
                    p0 = _dp4a(lo, xw[2 * i], p0)
                    p1 = _dp4a(hi, xw[2 * i + 1], p1)
                if POISON:
                    bad = bad | hi
                if (4 * j + i) % CHUNK == CHUNK - 1:
                    if CHAINS == 4:
                        total = (p0 + p1) + (p2 + p3)
                        p2 = gl.zeros_like(p2)
                        p3 = gl.zeros_like(p3)
                    else:
                        total = p0 + p1
                    acc += total.to(gl.float32) * (scales[(4 * j + i) // CHUNK] * x_scale)
                    p0 = gl.zeros_like(p0)
                    p1 = gl.zeros_like(p1)
        words, loaded = ahead, ahead_loaded
    acc = gl.where((bad & 0x800000) != 0, float("nan"), acc)
    table._keep_alive()
    gl.store(out_ptr + gl.program_id(1) * stride_os + rows, acc, mask=rows < N)


def quantize(x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    xw = torch.empty((steps * 64,), dtype=torch.int32, device=x.device)
    xs = torch.empty((steps,), dtype=torch.float32, device=x.device)
    quantize_kernel[(steps,)](x[0].contiguous(), xw, xs, x.shape[1], BLOCK=256)
    return xw, xs


def int8_gemv(x, T_tiles, E_tiles, *, out_features, group_size, tile=None, poison=True, chains=2, maxnreg=0):
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    rpt, warps, per_sm = tile or (4, 4, 4)
    row_blocks = triton.cdiv(blocks * TILE_ROWS, rpt * 32 * warps)
    splits = even_splits(max(1, min(per_sm * sm_count(x.device) // row_blocks, steps)), steps)
    xw, xs = quantize(x, steps)
    ws = torch.empty((splits, 1, out_features), dtype=torch.float32, device=x.device)
    _int8_gemv_kernel[(row_blocks, splits)](
        xw, xs, T_tiles, E_tiles, ws, out_features, blocks * TILE_ROWS, chunks, E_tiles.shape[1], steps, ws.stride(0),
        triton.cdiv(steps, splits), BYTES_PER_GROUP=group_size // 5, RPT=rpt, POISON=poison, CHAINS=chains, num_warps=warps,
        **({'maxnreg': maxnreg} if maxnreg else {}),
    )
    return ws


def reference_quantize(x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q [steps * 160] int32, scales [steps] fp32)`` as the kernel computes them."""
    v = torch.zeros(steps * 160, dtype=torch.float32, device=x.device)
    v[: x.shape[1]] = x[0].float()
    v = v.view(steps, 160)
    scale = v.abs().amax(1) / torch.full_like(v[:, 0], 127.0)  # a tensor divisor: torch multiplies by 1/127 for a scalar
    q = torch.floor(v / torch.where(scale > 0, scale, 1.0)[:, None] + 0.5).clamp(-127, 127)
    return q.to(torch.int32).view(-1), scale
