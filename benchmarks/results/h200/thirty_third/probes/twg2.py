"""Probe: the tiled forward on wgmma (decoded weights as the register operand, activations staged by TMA in
shared memory), for 8 * TILES activation rows. One shared allocation holds the digit table, the scale words,
the ring's barriers and the ring, so every offset from global_smem is known."""
import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear import triton_tiled_mma as tm
from ternary.kernels.linear.gluon_words import scale_bits
from ternary.kernels.linear.triton_launch import program_splits
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

_TABLE = gl.constexpr(tm.TABLE_WORDS)
_LANE = gl.constexpr(tm.LANE_BYTES)
_ROWS = gl.constexpr(TILE_ROWS)
_STEP = gl.constexpr(STEP_BYTES)
OFFSETS = {}  # (tiles, stages) -> byte offsets from global_smem, read from the compiled kernel's LLVM IR


def offsets(tiles, stages):
    """The allocator places the largest buffer first: the ring (stages x 16 chunks x 32 x 8 tiles bytes) or
    the 32 KB digit table, then the other, then the 1 KB scale words (checked offline per launch)."""
    ring = stages * 16 * 32 * 8 * tiles
    if ring > 32768:
        return {"RING_AT": 0, "TABLE_AT": ring, "SCALES_AT": ring + 32768}
    return {"TABLE_AT": 0, "RING_AT": 32768, "SCALES_AT": 32768 + ring}


@triton.jit
def _images_kernel(x_ptr, out_ptr, M, K, stride_xm, stride_xk, NCOL: tl.constexpr):
    """Step ``program_id(0)``, chunk ``program_id(1)`` (10): the ``[NCOL, 16]`` right operand as no-swizzle
    K-major core matrices ``[NCOL / 8, 2, 8, 8]``; chunk c < 8 holds digits 0..3 of byte 8 q + c (two
    columns per k pair), chunks 8, 9 digit 4 (the column order of the tiled kernel's left operand)."""
    step = tl.program_id(0)
    chunk = tl.program_id(1)
    n = tl.arange(0, NCOL)[:, None]
    k = tl.arange(0, 16)[None, :]
    q = (k % 8) // 2
    i = k % 2
    hi = k // 8
    digit = 5 * (32 * step + 8 * q + chunk) + 2 * hi + i
    four = 5 * (32 * step + 8 * q + 4 * (chunk - 8) + 2 * hi + i) + 4
    col = tl.where(chunk < 8, digit, four)
    v = tl.load(x_ptr + n.to(tl.int64) * stride_xm + col.to(tl.int64) * stride_xk, mask=(n < M) & (col < K), other=0)
    offset = ((((step * 10 + chunk) * (NCOL // 8) + n // 8) * 2 + hi) * 8 + n % 8) * 8 + k % 8
    tl.store(out_ptr + offset.to(tl.int64), v)


def images(x: torch.Tensor, steps: int, ncol: int) -> torch.Tensor:
    """``[steps * 10 * 2 * ncol, 8]`` int16: 16-byte rows, each step's ten chunks of ``2 ncol`` rows."""
    out = torch.empty((steps * 10 * 2 * ncol, 8), dtype=torch.int16, device=x.device)
    bits = x.view(torch.int16)
    _images_kernel[(steps, 10)](bits, out, x.shape[0], x.shape[1], bits.stride(0), bits.stride(1), NCOL=ncol)
    return out


def _wgmma_asm(n: int, wait: bool) -> str:
    """Ten ``m64nNk16`` products of one half-tile: accumulators $0.. (outputs) / $d.. (inputs), the 40 operand
    words, then the ring slot's shared address; LBO 128 B along K, SBO 256 B along N, no swizzle."""
    d = n // 2
    acc = ", ".join(f"${j}" for j in range(d))
    lines = ["{", ".reg .pred p;", ".reg .b64 desc;", ".reg .b32 lo, hi;", "setp.eq.u32 p, 1, 1;"]
    lines += [f"mov.b32 ${j}, ${d + j};" for j in range(d)]
    addr = f"${2 * d + 40}"
    lines += [f"shr.u32 lo, {addr}, 4;", "and.b32 lo, lo, 16383;", f"or.b32 lo, lo, {(128 >> 4) << 16};",
              f"mov.b32 hi, {256 >> 4};", "wgmma.fence.sync.aligned;"]
    for c in range(10):
        a = ", ".join(f"${2 * d + 4 * c + r}" for r in range(4))
        lines += ["mov.b64 desc, {lo, hi};",
                  f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 {{{acc}}}, {{{a}}}, desc, p, 1, 1, 0;",
                  f"add.u32 lo, lo, {(n * 32) >> 4};"]
    lines += ["wgmma.commit_group.sync.aligned;"] + (["wgmma.wait_group.sync.aligned 0;"] if wait else []) + ["}"]
    return " ".join(lines)


def _wait_asm(n: int) -> str:
    d = n // 2
    return " ".join(["{", "wgmma.wait_group.sync.aligned 0;"] + [f"mov.b32 ${j}, ${2 * d + j};" for j in range(2 * d)]
                    + ["}"])


def _wait_one_asm(n: int) -> str:
    d = n // 2
    return " ".join(["{", "wgmma.wait_group.sync.aligned 1;"] + [f"mov.b32 ${j}, ${d + j};" for j in range(d)] + ["}"])


def _wait_none_asm(n: int) -> str:
    d = n // 2
    return " ".join(["{", "wgmma.wait_group.sync.aligned 0;"] + [f"mov.b32 ${j}, ${d + j};" for j in range(d)] + ["}"])


_TILE_COUNTS = tuple(range(1, 17))
_ISSUE = gl.constexpr(tuple(_wgmma_asm(8 * t, wait=False) for t in _TILE_COUNTS))
_WAIT = gl.constexpr(tuple(_wait_asm(8 * t) for t in _TILE_COUNTS))
_ISSUE_CONSTRAINTS = gl.constexpr(tuple(",".join(["=f"] * (4 * t) + ["f"] * (4 * t) + ["r"] * 41) for t in _TILE_COUNTS))
_WAIT_ONE = gl.constexpr(tuple(_wait_one_asm(8 * t) for t in _TILE_COUNTS))
_WAIT_NONE = gl.constexpr(tuple(_wait_none_asm(8 * t) for t in _TILE_COUNTS))
_ONE_CONSTRAINTS = gl.constexpr(tuple(",".join(["=f"] * (4 * t) + ["f"] * (4 * t)) for t in _TILE_COUNTS))
_WAIT_CONSTRAINTS = gl.constexpr(tuple(",".join(["=f"] * (8 * t) + ["f"] * (8 * t)) for t in _TILE_COUNTS))


@gluon.jit
def _issue(a, b, acc, address, TILES: gl.constexpr):
    ASM: gl.constexpr = _ISSUE[TILES - 1]
    CON: gl.constexpr = _ISSUE_CONSTRAINTS[TILES - 1]
    ops = ()
    for u in gl.static_range(_LANE):
        ops = ops + (a[0][u], b[0][u], a[1][u], b[1][u])
    for v in gl.static_range(2):
        ops = ops + (a[2][2 * v], b[2][2 * v], a[2][2 * v + 1], b[2][2 * v + 1])
    return gl.inline_asm_elementwise(ASM, CON, acc + ops + (address,), dtype=(gl.float32,) * (4 * TILES),
                                     is_pure=False, pack=1)


@gluon.jit
def _wait(acc0, acc1, TILES: gl.constexpr):
    ASM: gl.constexpr = _WAIT[TILES - 1]
    CON: gl.constexpr = _WAIT_CONSTRAINTS[TILES - 1]
    D: gl.constexpr = 4 * TILES
    out = gl.inline_asm_elementwise(ASM, CON, acc0 + acc1, dtype=(gl.float32,) * (2 * D), is_pure=False, pack=1)
    first = ()
    second = ()
    for j in gl.static_range(D):
        first = first + (out[j],)
        second = second + (out[D + j],)
    return first, second


@gluon.jit
def _wait_acc(acc, TILES: gl.constexpr, PENDING: gl.constexpr):
    """``acc`` once at most ``PENDING`` (0 or 1) product groups of this warp are still in flight."""
    ASM: gl.constexpr = _WAIT_ONE[TILES - 1] if PENDING == 1 else _WAIT_NONE[TILES - 1]
    CON: gl.constexpr = _ONE_CONSTRAINTS[TILES - 1]
    return gl.inline_asm_elementwise(ASM, CON, acc, dtype=(gl.float32,) * (4 * TILES), is_pure=False, pack=1)


@gluon.jit
def _step_rows(words, e_ptr, step, block, lane, CHUNKS, EWORDS, BYTES_PER_GROUP: gl.constexpr, ONE: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    pair: gl.constexpr = gl.BlockedLayout([1, 2], [32, 1], [WARPS, 1], [1, 0])
    g = lane // 4
    q = lane % 4
    group = (step * _STEP + _LANE * q) // BYTES_PER_GROUP
    block2 = gl.expand_dims(gl.convert_layout(block, gl.SliceLayout(1, pair), assert_trivial=True), 1)
    q2 = gl.expand_dims(gl.convert_layout(q, gl.SliceLayout(1, pair), assert_trivial=True), 1)
    g2 = gl.expand_dims(gl.convert_layout(g, gl.SliceLayout(1, pair), assert_trivial=True), 1)
    two = gl.expand_dims(gl.arange(0, 2, layout=gl.SliceLayout(0, pair)), 0)
    rows = ()
    for r in gl.static_range(4):
        chunk = (block2 * CHUNKS + 2 * step + q2 // 2) * _ROWS + 8 * r + g2
        first, second = gl.split(gl.load(words + chunk * 4 + 2 * (q2 % 2) + two))
        e = gl.load(e_ptr + ((block * EWORDS + group // 4) * _ROWS + 8 * r + g) * 4 + group % 4)
        rows = rows + ((gl.convert_layout(first, ONE, assert_trivial=True),
                        gl.convert_layout(second, ONE, assert_trivial=True), e),)
    return rows


@gluon.jit
def _fetch(x_desc, ring, bars, step, slot, pred, NCOL: gl.constexpr):
    bar = bars.index(slot)
    mbarrier.expect(bar, 10 * x_desc.block_type.nbytes, pred=pred)
    for c in gl.static_range(10):
        tma.async_copy_global_to_shared(x_desc, [(step * 10 + c) * 2 * NCOL, 0], bar, ring.index(slot * 16 + c),
                                        pred=pred)


@triton.constexpr_function
def _pairs_asm(table_at):
    return ("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
            f"ld.shared.v2.b32 {{$0, $1}}, [a+{table_at}]; }}")


@triton.constexpr_function
def _scale_asm(scales_at):
    return ("{ .reg .u32 a; mov.u32 a, global_smem; mad.lo.u32 a, $1, 4, a; "
            f"ld.shared.b32 $0, [a+{scales_at + 512}]; }}")


@gluon.jit
def _pairs_at(offset, TABLE_AT: gl.constexpr):
    ASM: gl.constexpr = _pairs_asm(TABLE_AT)
    return gl.inline_asm_elementwise(ASM, "=r,=r,r", [offset], dtype=(gl.int32, gl.int32), is_pure=False, pack=1)


@gluon.jit
def _scale_at(e, SCALES_AT: gl.constexpr):
    ASM: gl.constexpr = _scale_asm(SCALES_AT)
    return gl.inline_asm_elementwise(ASM, "=r,r", [e.to(gl.int32)], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _operands(first_word, second_word, scale, lane_offset, TABLE_AT: gl.constexpr):
    lows = ()
    highs = ()
    for u in gl.static_range(_LANE):
        low, high = _pairs_at(tm._table_offset(first_word if u < 4 else second_word, lane_offset, u % 4), TABLE_AT)
        lows = lows + (tm._times(low, scale),)
        highs = highs + (tm._times(high, scale),)
    p0, p1 = tm._digit4_pairs(first_word)
    p2, p3 = tm._digit4_pairs(second_word)
    return lows, highs, (tm._times(p0, scale), tm._times(p1, scale), tm._times(p2, scale), tm._times(p3, scale))


@gluon.jit
def _twg_kernel(digit_table, x_desc, t_ptr, e_ptr, out_ptr, M, N, BLOCKS, CHUNKS, EWORDS, STEPS, stride_os,
                stride_om, STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, TILES: gl.constexpr,
                STAGES: gl.constexpr, TABLE_AT: gl.constexpr, SCALES_AT: gl.constexpr, RING_AT: gl.constexpr,
                PIPE: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    NCOL: gl.constexpr = 8 * TILES
    table = gl.allocate_shared_memory(gl.int32, [_TABLE], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    table.store(gl.load(digit_table + gl.arange(0, _TABLE, layout=gl.BlockedLayout([4], [32], [WARPS], [0]))))
    scales = gl.allocate_shared_memory(gl.int32, [256], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    scales.store(scale_bits(gl.arange(0, 256, layout=gl.BlockedLayout([1], [32], [WARPS], [0])) - 128))
    ring = gl.allocate_shared_memory(gl.int16, [STAGES * 16, 2 * NCOL, 8], x_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(bars.index(s), count=1)
    fence_async_shared()
    gl.thread_barrier()
    ONE: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    thread = gl.arange(0, 32 * WARPS, layout=ONE)
    lane = thread % 32
    row_tile = gl.program_id(0) * WARPS + thread // 32
    block = gl.minimum(row_tile, BLOCKS - 1).to(gl.int64)
    lane_offset = (lane % 16) * 8
    words = t_ptr.to(gl.pointer_type(gl.int32))
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    for s in gl.static_range(STAGES):
        _fetch(x_desc, ring, bars, first + s, s, first + s < last, NCOL)
    zero = gl.zeros([32 * WARPS], gl.float32, ONE)
    acc0 = ()
    for _ in gl.static_range(4 * TILES):
        acc0 = acc0 + (zero,)
    acc1 = acc0
    base = gl.inline_asm_elementwise("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 $0, a, $1; }", "=r,r",
                                     [gl.full([32 * WARPS], RING_AT, gl.int32, ONE)], dtype=gl.int32,
                                     is_pure=True, pack=1)
    loaded = _step_rows(words, e_ptr, gl.minimum(first, STEPS - 1), block, lane, CHUNKS, EWORDS, BYTES_PER_GROUP, ONE)
    for step in range(first, last):
        i = step - first
        ahead = _step_rows(words, e_ptr, gl.minimum(step + 1, last - 1), block, lane, CHUNKS, EWORDS,
                           BYTES_PER_GROUP, ONE)
        slot = i % STAGES
        address = base + slot * (16 * 32 * NCOL)
        top = loaded[0]
        bottom = loaded[1]
        a = _operands(top[0], top[1], _scale_at(top[2], SCALES_AT), lane_offset, TABLE_AT)
        b = _operands(bottom[0], bottom[1], _scale_at(bottom[2], SCALES_AT), lane_offset, TABLE_AT)
        mbarrier.wait(bars.index(slot), (i // STAGES) & 1)
        acc0 = _issue(a, b, acc0, address, TILES)
        if PIPE:  # the previous step's second half has landed: its slot can be refilled
            acc1 = _wait_acc(acc1, TILES, 1)
            gl.thread_barrier()
            before = (i + STAGES - 1) % STAGES
            _fetch(x_desc, ring, bars, step - 1 + STAGES, before, (i > 0) & (step - 1 + STAGES < last), NCOL)
        top = loaded[2]
        bottom = loaded[3]
        a = _operands(top[0], top[1], _scale_at(top[2], SCALES_AT), lane_offset, TABLE_AT)
        b = _operands(bottom[0], bottom[1], _scale_at(bottom[2], SCALES_AT), lane_offset, TABLE_AT)
        acc1 = _issue(a, b, acc1, address, TILES)
        if PIPE:
            acc0 = _wait_acc(acc0, TILES, 1)
        else:
            acc0, acc1 = _wait(acc0, acc1, TILES)
            gl.thread_barrier()
            _fetch(x_desc, ring, bars, step + STAGES, slot, step + STAGES < last, NCOL)
        loaded = ahead
    if PIPE:
        acc1 = _wait_acc(acc1, TILES, 0)
    table._keep_alive()
    scales._keep_alive()
    ring._keep_alive()
    accs = (acc0, acc1)
    g = lane // 4
    for half in gl.static_range(2):
        for tile in gl.static_range(TILES):
            for j in gl.static_range(4):
                n = row_tile * _ROWS + 16 * half + 8 * (j // 2) + g
                column = 8 * tile + 2 * (lane % 4) + j % 2
                gl.store(out_ptr + gl.program_id(1) * stride_os + column * stride_om + n, accs[half][4 * tile + j],
                         mask=(n < N) & (column < M))


def twg_forward(x, T_tiles, E_tiles, *, out_features, group_size, tile=(4, 2, 2, 0), pipe=False):
    """Partial sums ``[splits, M, N]``; ``tile = (warps, programs per SM, stages, register cap)``."""
    warps, per_sm, stages, cap = tile
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    tiles = triton.cdiv(x.shape[0], 8)
    ncol = 8 * tiles
    img = images(x, steps, ncol)
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    x_desc = TensorDescriptor.from_tensor(img, [2 * ncol, 8], layout)
    row_programs = triton.cdiv(blocks, warps)
    splits = program_splits(per_sm, row_programs, steps, steps, x.device) if per_sm > 0 else 1
    ws = torch.empty((splits, x.shape[0], out_features), dtype=torch.float32, device=x.device)
    _twg_kernel[(row_programs, splits)](
        tm.digit_table(x.device), x_desc, T_tiles, E_tiles, ws, x.shape[0], out_features, blocks, chunks,
        E_tiles.shape[1], steps, ws.stride(0), ws.stride(1), triton.cdiv(steps, splits),
        BYTES_PER_GROUP=group_size // 5, TILES=tiles, STAGES=stages, **offsets(tiles, stages), PIPE=pipe, num_warps=warps,
        **({"maxnreg": cap} if cap else {}))
    return ws
