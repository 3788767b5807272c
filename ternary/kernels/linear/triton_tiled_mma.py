"""Forward for 2 to 64 bf16 activation rows over the row-tiled decode layout, on ``mma.sync`` tensor
cores with the weights decoded by a lookup table (a Gluon kernel: compiled NVIDIA GPUs only, never
under ``TRITON_INTERPRET``).

``out[t, n] = sum_k x[t, k] W[n, k]`` as ``m16n8k16`` bf16 products with the weights as the left
operand. Each warp takes one 32-row tile of ``T_tiles`` (two 16-row operand tiles) and every lane
``(g, q) = (lane / 4, lane mod 4)`` decodes, per 32-byte step, bytes ``8 q .. 8 q + 7`` of its rows
``g, g + 8, g + 16, g + 24``: one 8-byte load per row (the tile layout keeps a row's 16-byte chunk
whole), and those eight bytes lie in one scale group when ``G / 5`` is a multiple of 8, so one
exponent per row and step. The product's k order is free (the activations are laid out to match), so
each byte feeds one product with its digits 0..3 and a lane's eight bytes feed two more with their
digit 4:

- digits 0..3 come from a table in shared memory, ``(t0, t1)`` and ``(t2, t3)`` of every byte value as
  bf16 pairs (one ``ld.shared.v2`` per byte; 16 copies side by side so that the lanes of a
  half-warp read 16 different banks); a corrupt byte (> 242) reads NaN, so its row's outputs are NaN;
- digit 4 of four bytes at a time by byte-parallel arithmetic: ``b < 81`` and ``b >= 162`` as the
  top bit of each byte (no borrow between bytes), and three ``prmt`` turn them into the bf16 bits of
  ``-1 / 0 / +1`` (ten integer instructions per four bytes, :func:`_digit4_pairs`);
- every operand word is multiplied by ``2^E`` in bf16 (exact: ``E`` is an int8 and bf16 has fp32's
  exponent range, subnormals included); the bf16 pair of ``2^E`` is read from a second table of the
  256 exponents, right after the digit table.

With one column tile (``M <= 8``) the loop takes two steps a turn, so that the next step's loads
alternate between two sets of registers instead of being copied at the end of every step; with two,
the registers for that are not there (156 per thread, one program per SM: slower). Each column tile of
8 activation rows holds 20 more fragment words per lane, and the next step's as well, so from three
column tiles (17 to 48 rows) the kernel needs 168-248 registers and runs fewer warps per SM
(``TILED_MMA_LAUNCHES``); the decoded weights of a step are still formed once and feed every column tile.
From seven column tiles (49 to 64 rows) the fragments are loaded in the step that uses them
(``FRAGMENTS_AHEAD_TILES``): one step ahead they would not fit in registers (at eight tiles 120 bytes a
thread spill, 33 local loads and stores a step), in the step they take 238-254 registers and nothing spills.
The products are the same either way, bit for bit.

The activations are regrouped first (:func:`fragments`, a small Triton kernel) into the right
operand's registers: per step, column tile and lane, 20 words (bf16 pairs) read as five 16-byte loads.
The products accumulate in fp32; split-K programs write partial sums ``[splits, M, N]`` that the
caller reduces with the bias (``finish_splits``).

The kernel's only shared buffers are the two tables: each program copies the digit table from a kept
global copy (:func:`digit_table`) and computes the 256 scale words. PTX reads both at fixed offsets from
``global_smem`` (the start of the kernel's shared memory): ``tests/test_triton_tiled_mma.py`` compiles
it offline and checks that they are all the shared memory there is and that the scale words land
right after the digit table.

H200, bf16 cuBLAS in the same process, whole forward calls (``benchmarks/NOTES.md``, "twenty-third"):
16384 x 16384 at M = 16 in 49.8 us (2.54x; the ``mma.sync`` kernel on ``T_packed``, ``triton_mma_forward``,
90.2 us, 1.40x), at M = 2 and 8 in 41-42 us (3.0-3.1x), 1.16-1.79x on the smaller benchmark shapes at M = 16.
Copying the digit table instead of computing it in each program (thirty-second session, same process, bit for bit):
level at 16384^2, 1.5-7.4 % off the whole call on the three smaller benchmark shapes at M = 2, 8 and 16.
17 to 48 rows (thirty-third session's benchmark, whole calls): 16384^2 M = 24 / 32 / 48 in 63.9 / 72.7 / 98.0 us
(1.90x / 1.68x / 1.25x bf16) against 111.5 / 113.1 / 144.0 us for the forward on ``T_packed`` these rows took
before; 1.39-1.75x faster than that on every benchmark shape at 24, 32 and 48 rows. 49 to 64 rows (the same
session, fragments in the step): 16384^2 M = 56 / 64 in 115.0 / 123.8 us (1.10x / 1.07x bf16) against 144.4 / 144.7 us
on ``T_packed``, 1.17-1.40x faster than that on every benchmark shape.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.kept_tensors import kept
from ternary.kernels.linear.gluon_words import scale_bits
from ternary.kernels.linear.triton_launch import program_splits
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

TILED_MMA_MIN_ROWS = 2
TILED_MMA_MAX_ROWS = 64
# Bytes of a lane's run in one step: a group must hold whole runs (one exponent per row and step).
LANE_BYTES = 8
# Right-operand words per lane, column tile and step: 8 digit-0..3 products and 2 digit-4 products,
# two words each.
FRAGMENT_WORDS = 20
# (warps, programs per SM, register cap or 0 for none) of the launch by column tiles (8 activation rows each).
# H200, same process: for one and two column tiles (benchmarks/results/h200/twenty_second/) 8 warps and 2
# programs per SM were best or within 3% of the best of six launches on 16384^2, 4096 x 14336 and 4096^2 at
# M = 2 and 16 (96 and 128 registers); for three to six (thirty_third/) the best or within 1.4% of it of two or
# three launches on the four benchmark shapes at M = 24, 32 and 48: three programs of 4 warps under 168
# registers (four column tiles spill two words, reloaded every step, and still beat 2 programs of 176), one
# program of 8 warps with 242-248; for seven and eight (fragments in the step) 8 warps x 1 beat 4 x 2 on all four
# shapes at M = 56 and 64.
TILED_MMA_LAUNCHES = {1: (8, 2, 0), 2: (8, 2, 0), 3: (4, 3, 168), 4: (4, 3, 168), 5: (8, 1, 0), 6: (8, 1, 0),
                      7: (8, 1, 0), 8: (8, 1, 0)}
# Column tiles up to which each step's activation fragments are loaded one step ahead (more: in the step). H200,
# same process (thirty_third/probe_in_step.log): for three to six tiles, on the same launch, loading them in the step
# was level to 12 % slower at 16384^2 (up to 5 % faster on 4096^2), so it is kept for seven and eight, where ahead
# spills.
FRAGMENTS_AHEAD_TILES = 6
# int32 words of the digit table: byte values (all of them: values past 242 decode to NaN), copies side by
# side, two words each. The 256 scale words follow it in shared memory.
TABLE_WORDS = 256 * 16 * 2

# The scale words follow the digit table in shared memory (the offline-compile test checks where they land).
_SCALE_ASM = gl.constexpr("{ .reg .u32 a; mov.u32 a, global_smem; mad.lo.u32 a, $1, 4, a; "
                          f"ld.shared.b32 $0, [a+{4 * TABLE_WORDS + 4 * 128}]; }}")
_WORDS = gl.constexpr(FRAGMENT_WORDS)
_LANE = gl.constexpr(LANE_BYTES)
_TABLE = gl.constexpr(TABLE_WORDS)
_ROWS = gl.constexpr(TILE_ROWS)
_STEP = gl.constexpr(STEP_BYTES)
_HIGH_BITS = gl.constexpr(-2139062144)  # 0x80808080
_BYTE_SELECT = gl.constexpr(tuple(f"prmt.b32 $0, $1, $2, 0x444{u};" for u in range(4)))  # byte u, zeros above


def takes(x: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes ``x [M, K]`` (the caller checks the card and the tiles): bf16, ``M`` in
    ``TILED_MMA_MIN_ROWS .. TILED_MMA_MAX_ROWS``, ``G / 5`` a multiple of ``LANE_BYTES``."""
    return (x.dtype == torch.bfloat16 and TILED_MMA_MIN_ROWS <= x.shape[0] <= TILED_MMA_MAX_ROWS
            and (group_size // 5) % LANE_BYTES == 0)


def _trit_bits(digit: torch.Tensor) -> torch.Tensor:
    """bf16 bits of the trit ``digit - 1`` (``digit`` in 0..2): ``0xBF80``, 0 or ``0x3F80``."""
    return torch.where(digit == 0, 0xBF80, torch.where(digit == 2, 0x3F80, 0))


def _build_digit_table(device: torch.device) -> torch.Tensor:
    byte = torch.arange(256, dtype=torch.int64, device=device)
    bits = [_trit_bits(byte // 3**i % 3) for i in range(4)]
    words = torch.stack([bits[0] | bits[1] << 16, bits[2] | bits[3] << 16], dim=-1)
    words = torch.where((byte >= 243)[:, None], 0x7FC07FC0, words)
    words = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)
    return words[:, None, :].expand(256, TABLE_WORDS // 512, 2).contiguous()


_DIGIT_TABLES: dict[torch.device, torch.Tensor] = {}


def digit_table(device: torch.device) -> torch.Tensor:
    """The kernel's digit table ``[256 byte values, 16 copies, 2 words]`` (int32) on ``device``: word 0 the
    bf16 pair ``(t0, t1)`` of the byte's trits, word 1 ``(t2, t3)``, NaN pairs for bytes past 242 (so a
    corrupt byte's row comes out NaN). Each program copies these 32 KB into shared memory with 16-byte
    loads, which costs it ~110 instructions against ~580 to compute them (offline sm_90). Built by device
    operations and kept (``kept_tensors.kept``: a call after the first, captured or not, builds nothing)."""
    return kept(_DIGIT_TABLES, device, device, lambda: _build_digit_table(device))


@triton.jit
def _fragments_kernel(x_ptr, out_ptr, M, K, stride_xm, stride_xk, TILES: tl.constexpr, WORDS: tl.constexpr):
    """``out[s, c, lane, w]`` for step ``s = program_id(0)`` and column tile ``c = program_id(1)``: lane
    ``(g, q)``'s right-operand word ``w`` for activation row ``8 c + g``, two bf16 (as int16 bits of
    ``x``) in one int32; zero past ``K`` and for rows past ``M``. Words ``2 u``, ``2 u + 1`` (``u < 8``)
    hold columns ``5 j``, ``5 j + 1`` and ``5 j + 2``, ``5 j + 3`` of byte ``j = 32 s + 8 q + u``;
    words ``16 + 2 v + h`` column ``5 j + 4`` of bytes ``j = 32 s + 8 q + 4 v + 2 h`` and ``j + 1``."""
    step = tl.program_id(0)
    tile = tl.program_id(1)
    lane = tl.arange(0, 32)[:, None]
    word = tl.arange(0, 32)[None, :]
    row = 8 * tile + lane // 4
    first_byte = 32 * step + 8 * (lane % 4)
    low = 5 * (first_byte + word // 2) + 2 * (word % 2)
    digit4_byte = first_byte + 4 * ((word - 16) // 2) + 2 * (word % 2)
    k0 = tl.where(word < 16, low, 5 * digit4_byte + 4)
    k1 = tl.where(word < 16, low + 1, 5 * digit4_byte + 9)
    keep = (row < M) & (word < WORDS)
    rows = x_ptr + row.to(tl.int64) * stride_xm  # int64: a strided view may span more than 2^31 elements
    first = tl.load(rows + k0.to(tl.int64) * stride_xk, mask=keep & (k0 < K), other=0).to(tl.int32)
    second = tl.load(rows + k1.to(tl.int64) * stride_xk, mask=keep & (k1 < K), other=0).to(tl.int32)
    tl.store(out_ptr + ((step * TILES + tile) * 32 + lane) * WORDS + word, (first & 0xFFFF) | (second << 16),
             mask=word < WORDS)


def fragments(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The right-operand words ``[steps, tiles, 32, FRAGMENT_WORDS]`` (int32) of bf16 ``x [M, K]``,
    ``tiles = ceil(M / 8)`` column tiles of 8 rows (see :func:`_fragments_kernel`)."""
    tiles = triton.cdiv(x.shape[0], 8)
    out = torch.empty((steps, tiles, 32, FRAGMENT_WORDS), dtype=torch.int32, device=x.device)
    bits = x.view(torch.int16)
    _fragments_kernel[(steps, tiles)](bits, out, x.shape[0], x.shape[1], bits.stride(0), bits.stride(1), TILES=tiles,
                                      WORDS=FRAGMENT_WORDS)
    return out


@gluon.jit
def _fill_tables(digit_table, WARPS: gl.constexpr):
    """The tables in shared memory (int32): the digit table, copied from ``digit_table``
    (:func:`digit_table`, ``[256 byte values, 16 copies, 2 words]``), then the scale words ``[256]``,
    ``scale_bits(e)`` for ``e = -128 .. 127``."""
    table = gl.allocate_shared_memory(gl.int32, [_TABLE], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    table.store(gl.load(digit_table + gl.arange(0, _TABLE, layout=gl.BlockedLayout([4], [32], [WARPS], [0]))))
    scales = gl.allocate_shared_memory(gl.int32, [256], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    scales.store(scale_bits(gl.arange(0, 256, layout=gl.BlockedLayout([1], [32], [WARPS], [0])) - 128))
    gl.thread_barrier()
    return table, scales


@gluon.jit
def _table_pairs(offset):
    """The table's two words at byte ``offset`` (``ld.shared.v2``; the table starts at ``global_smem``)."""
    return gl.inline_asm_elementwise("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
                                     "ld.shared.v2.b32 {$0, $1}, [a]; }", "=r,=r,r", [offset],
                                     dtype=(gl.int32, gl.int32), is_pure=False, pack=1)


@gluon.jit
def _table_scale(e):
    """The scale word of exponent ``e`` (int8, sign-extended: the address steps back from the middle of the
    table) from the table after the digit table."""
    return gl.inline_asm_elementwise(_SCALE_ASM, "=r,r", [e.to(gl.int32)], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _times(pair, scale):
    """bf16 pair ``pair`` times ``scale`` (both int32 bits; exact for trits and powers of two)."""
    return gl.inline_asm_elementwise("mul.rn.bf16x2 $0, $1, $2;", "=r,r,r", [pair, scale], dtype=gl.int32,
                                     is_pure=True, pack=1)


@gluon.jit
def _prmt(a, b, SELECT: gl.constexpr):
    """``prmt.b32`` of ``a`` and ``b`` with the selector in the asm string ``SELECT``."""
    return gl.inline_asm_elementwise(SELECT, "=r,r,r", [a, b], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def _table_offset(word, lane_offset, U: gl.constexpr):
    """Byte offset in the table of byte ``U`` of ``word``: the byte's 16 copies of 8 bytes start at
    ``value * 128`` (one ``prmt`` moves the byte down, one integer multiply-add places it)."""
    SELECT: gl.constexpr = _BYTE_SELECT[U]
    return _prmt(word, 0, SELECT) * 128 + lane_offset


@gluon.jit
def _digit4_pairs(word):
    """Digit 4 of the four bytes of ``word`` as bf16 trits: pairs (bytes 0, 1) and (bytes 2, 3).

    The trit's bf16 is ``0xBF80`` (digit 0, ``b < 81``), ``0`` (digit 1) or ``0x3F80`` (digit 2,
    ``b >= 162``): its low byte is ``0x80`` unless the digit is 1, its high byte ``0xBF``, ``0`` or
    ``0x3F``. With every byte's top bit set, subtracting 81 or 34 from each byte borrows nothing
    across bytes and keeps the top bit iff ``b & 127`` reaches 81 or 34, so (top bits only):
    ``b < 81`` iff neither ``b`` nor ``(b | 128) - 81`` has it, ``b >= 162`` iff both ``b`` and
    ``(b | 128) - 34`` have it, and ``low`` (either) is the low bytes. A sign-replicating ``prmt``
    widens ``low`` to whole bytes for the high bytes' ``0x3F``; two more ``prmt`` interleave low
    and high bytes into the pairs."""
    raised = word | _HIGH_BITS
    below_81 = ~((raised - 0x51515151) | word) & _HIGH_BITS
    from_162 = (raised - 0x22222222) & word & _HIGH_BITS
    low = below_81 | from_162
    high = (_prmt(low, low, "prmt.b32 $0, $1, $2, 0xBA98;") & 0x3F3F3F3F) | below_81
    return (_prmt(low, high, "prmt.b32 $0, $1, $2, 0x5140;"),
            _prmt(low, high, "prmt.b32 $0, $1, $2, 0x7362;"))


@gluon.jit
def _row_operands(first_word, second_word, scale, lane_offset):
    """One row's left-operand words for a step, times ``scale`` (the bf16 pair of ``2^E``): for each of
    the lane's 8 bytes ``u`` the pairs ``(t0, t1)`` and ``(t2, t3)``, and the digit-4 pairs of bytes
    ``(0, 1), (2, 3), (4, 5), (6, 7)``."""
    lows = ()
    highs = ()
    for u in gl.static_range(_LANE):
        low, high = _table_pairs(_table_offset(first_word if u < 4 else second_word, lane_offset, u % 4))
        lows = lows + (_times(low, scale),)
        highs = highs + (_times(high, scale),)
    p0, p1 = _digit4_pairs(first_word)
    p2, p3 = _digit4_pairs(second_word)
    return lows, highs, (_times(p0, scale), _times(p1, scale), _times(p2, scale), _times(p3, scale))


@gluon.jit
def _mma(a0, a1, a2, a3, b0, b1, c):
    """``c + A @ B`` of one ``m16n8k16`` bf16 product, per lane: its four left-operand words, two
    right-operand words and four fp32 accumulators (``c``, a tuple)."""
    return gl.inline_asm_elementwise(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, "
        "{$10, $11, $12, $13};", "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", [a0, a1, a2, a3, b0, b1, c[0], c[1], c[2], c[3]],
        dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=True, pack=1)


@gluon.jit
def _step_fragments(fragment_ptr, step, lane, TILES: gl.constexpr, ONE: gl.constexpr):
    """Step ``step``'s right-operand words, ``TILES * 20`` per lane (five 16-byte loads per column tile)."""
    WARPS: gl.constexpr = gl.num_warps()
    quad: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [WARPS, 1], [1, 0])
    fragments = ()
    lane4 = gl.expand_dims(gl.convert_layout(lane, gl.SliceLayout(1, quad), assert_trivial=True), 1)
    four = gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, quad)), 0)
    for tile in gl.static_range(TILES):
        base = ((step * TILES + tile) * 32 + lane4) * _WORDS
        for c in gl.static_range(_WORDS // 4):
            evens, odds = gl.split(gl.reshape(gl.load(fragment_ptr + base + 4 * c + four), [32 * WARPS, 2, 2]))
            w0, w2 = gl.split(evens)
            w1, w3 = gl.split(odds)
            fragments = fragments + (gl.convert_layout(w0, ONE, assert_trivial=True),
                                     gl.convert_layout(w1, ONE, assert_trivial=True),
                                     gl.convert_layout(w2, ONE, assert_trivial=True),
                                     gl.convert_layout(w3, ONE, assert_trivial=True))
    return fragments


@gluon.jit
def _step_loads(fragment_ptr, words, e_ptr, step, block, lane, CHUNKS, EWORDS, BYTES_PER_GROUP: gl.constexpr,
                TILES: gl.constexpr, ONE: gl.constexpr, FRAGMENTS: gl.constexpr):
    """What step ``step`` reads: with ``FRAGMENTS`` the right-operand words (:func:`_step_fragments`, else
    none), and for each of the lane's rows ``g, g + 8, g + 16, g + 24`` its two weight words and exponent."""
    WARPS: gl.constexpr = gl.num_warps()
    pair: gl.constexpr = gl.BlockedLayout([1, 2], [32, 1], [WARPS, 1], [1, 0])
    g = lane // 4
    q = lane % 4
    fragments = ()
    if FRAGMENTS:
        fragments = _step_fragments(fragment_ptr, step, lane, TILES, ONE)
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
    return fragments, rows


@gluon.jit
def _step_products(loaded, acc, lane_offset, TILES: gl.constexpr):
    """``acc`` (``2 * TILES`` accumulator quadruples: operand tile ``half``, column tile ``tile`` at
    ``half * TILES + tile``) plus one step's products from what :func:`_step_loads` read."""
    x = loaded[0]
    updated = ()
    for half in gl.static_range(2):  # the warp's two 16-row operand tiles: rows g, g + 8 / g + 16, g + 24
        top = loaded[1][2 * half]
        bottom = loaded[1][2 * half + 1]
        a = _row_operands(top[0], top[1], _table_scale(top[2]), lane_offset)
        b = _row_operands(bottom[0], bottom[1], _table_scale(bottom[2]), lane_offset)
        for tile in gl.static_range(TILES):
            c = acc[half * TILES + tile]
            for u in gl.static_range(_LANE):
                c = _mma(a[0][u], b[0][u], a[1][u], b[1][u], x[tile * _WORDS + 2 * u], x[tile * _WORDS + 2 * u + 1], c)
            for v in gl.static_range(2):
                c = _mma(a[2][2 * v], b[2][2 * v], a[2][2 * v + 1], b[2][2 * v + 1], x[tile * _WORDS + 16 + 2 * v],
                         x[tile * _WORDS + 17 + 2 * v], c)
            updated = updated + (c,)
    return updated


@gluon.jit
def _tiled_mma_kernel(digit_table, fragment_ptr, t_ptr, e_ptr, out_ptr, M, N, BLOCKS, CHUNKS, EWORDS, STEPS,
                      stride_os, stride_om, STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, TILES: gl.constexpr,
                      AHEAD: gl.constexpr):
    """Partial ``out[s, t, n] = sum_k x[t, k] W[n, k]`` over split ``s = program_id(1)`` of the steps, for
    the 32-row tiles ``program_id(0) * warps ..`` (one per warp) and ``8 * TILES`` activation rows
    (:func:`fragments`); ``BLOCKS`` / ``CHUNKS`` / ``EWORDS`` are the tiles' row tiles, chunks and
    exponent words per row. With one column tile the loop takes two steps a turn; ``AHEAD`` loads each step's
    activation fragments one step ahead, with that step's weight rows, else in the step itself."""
    WARPS: gl.constexpr = gl.num_warps()
    UNROLL: gl.constexpr = TILES == 1
    gl.static_assert(AHEAD or not UNROLL, "two steps a turn need the fragments a step ahead")
    table, scales = _fill_tables(digit_table, WARPS)
    ONE: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    thread = gl.arange(0, 32 * WARPS, layout=ONE)
    lane = thread % 32
    row_tile = gl.program_id(0) * WARPS + thread // 32
    block = gl.minimum(row_tile, BLOCKS - 1).to(gl.int64)  # a warp past the last tile reads the last
    lane_offset = (lane % 16) * 8
    words = t_ptr.to(gl.pointer_type(gl.int32))
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    zero = gl.zeros([32 * WARPS], gl.float32, ONE)
    acc = ()
    for _ in gl.static_range(2 * TILES):
        acc = acc + ((zero, zero, zero, zero),)
    loaded = _step_loads(fragment_ptr, words, e_ptr, gl.minimum(first, STEPS - 1), block, lane, CHUNKS, EWORDS,
                         BYTES_PER_GROUP, TILES, ONE, AHEAD)  # an empty split (none today: even_splits) reads in bounds
    # Loads run one step ahead (the fragments only with AHEAD), clamped to the split's last step: each split reads
    # its last step once more than it uses (twice when an unrolled split has an odd count), always in bounds.
    if UNROLL:  # two steps a turn, the loads ahead alternating between two sets (no copies between turns)
        for step in range(first, last, 2):
            ahead = _step_loads(fragment_ptr, words, e_ptr, gl.minimum(step + 1, last - 1), block, lane, CHUNKS,
                                EWORDS, BYTES_PER_GROUP, TILES, ONE, True)
            acc = _step_products(loaded, acc, lane_offset, TILES)
            loaded = _step_loads(fragment_ptr, words, e_ptr, gl.minimum(step + 2, last - 1), block, lane, CHUNKS,
                                 EWORDS, BYTES_PER_GROUP, TILES, ONE, True)
            if step + 1 < last:
                acc = _step_products(ahead, acc, lane_offset, TILES)
    else:
        for step in range(first, last):
            ahead = _step_loads(fragment_ptr, words, e_ptr, gl.minimum(step + 1, last - 1), block, lane, CHUNKS,
                                EWORDS, BYTES_PER_GROUP, TILES, ONE, AHEAD)
            if not AHEAD:  # the activations in the step that uses them, not held across the step before
                loaded = (_step_fragments(fragment_ptr, step, lane, TILES, ONE), loaded[1])
            acc = _step_products(loaded, acc, lane_offset, TILES)
            loaded = ahead
    table._keep_alive()
    scales._keep_alive()
    g = lane // 4
    for half in gl.static_range(2):
        for tile in gl.static_range(TILES):
            c = acc[half * TILES + tile]
            for j in gl.static_range(4):  # accumulator j: row g (+ 8 for j >= 2), column 2 q + j mod 2
                n = row_tile * _ROWS + 16 * half + 8 * (j // 2) + g
                column = 8 * tile + 2 * (lane % 4) + j % 2
                gl.store(out_ptr + gl.program_id(1) * stride_os + column * stride_om + n, c[j],
                         mask=(n < N) & (column < M))


def tiled_mma(x: torch.Tensor, T_tiles: torch.Tensor, E_tiles: torch.Tensor, *, out_features: int, group_size: int,
              tile: tuple[int, ...] | None = None) -> torch.Tensor:
    """Partial sums ``[splits, M, N]`` (fp32) of ``x [M, K] @ W.T`` from the decode layout's contiguous
    ``T_tiles`` / ``E_tiles`` (``ternary.state.decode_state``) for a call :func:`takes`;
    ``tile = (warps, programs per SM)`` or ``(warps, programs per SM, register cap)`` overrides the launch
    of ``TILED_MMA_LAUNCHES`` (benchmark sweeps; 0 programs per SM means one split, a cap of 0 or none given
    none: the table's cap is not kept)."""
    if tile is not None and len(tile) not in (2, 3):
        raise ValueError(f"tiled_mma: tile={tile} must be (warps, programs per SM) or (warps, programs per SM, "
                         "register cap)")
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    x_fragments = fragments(x, steps)
    warps, per_sm, cap = (*tile, 0)[:3] if tile else TILED_MMA_LAUNCHES[x_fragments.shape[1]]
    row_programs = triton.cdiv(blocks, warps)
    splits = program_splits(per_sm, row_programs, steps, steps, x.device) if per_sm > 0 else 1
    ws = torch.empty((splits, x.shape[0], out_features), dtype=torch.float32, device=x.device)
    _tiled_mma_kernel[(row_programs, splits)](
        digit_table(x.device), x_fragments, T_tiles, E_tiles, ws, x.shape[0], out_features, blocks, chunks,
        E_tiles.shape[1], steps, ws.stride(0), ws.stride(1), triton.cdiv(steps, splits),
        BYTES_PER_GROUP=group_size // 5, TILES=x_fragments.shape[1],
        AHEAD=x_fragments.shape[1] <= FRAGMENTS_AHEAD_TILES, num_warps=warps,
        **({"maxnreg": cap} if cap else {}),
    )
    return ws
