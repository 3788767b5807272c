"""Forward for one activation row over the row-tiled decode layout by one table lookup per byte
(a Gluon kernel: compiled NVIDIA GPUs only, never under ``TRITON_INTERPRET``).

For each 32-byte step ``s`` of the rows the program writes, into shared memory, the dot product of every
byte value with the step's activations::

    table[s, v, c] = sum_{t < 5} (digit_t(v) - 1) x[5 (32 s + c) + t]     v < 243, c < 32

and NaN for ``v >= 243`` (a corrupt byte poisons its row). Each byte of a weight row then costs one
``prmt``, one ``ld.shared`` and one fused multiply-add with its group's ``2^E``: about 5 SASS instructions
per byte and row (sm_90, offline, the loop's body), against ~10 for the two-shuffle lookups of
``triton_tiled_gemv``.

**The tables are written in the kernel**, double-buffered: after each step's barrier every thread writes
its column's share of the next step's 32 KB table into the other buffer, about 90 instructions a step
against the ~700 of its lookups. Thread ``(warp w, lane c)`` writes column ``c`` of values ``27 w + b``
(``b < 27``: the low three digits, whose sums it builds from pairs so that a zero trit adds nothing) and,
for the ninth block of 27 values (``216 ..  242``), those with ``b = 8 j + w``, as its own value ``27 w + b``
read back plus the change of the two high digits. The 13 NaN rows are written once. The activations of the
step after next are loaded (five per thread) while a step is computed. Every program writes the tables of
its own steps, so nothing is staged in global memory: the earlier version's table kernel (2.4 us at
K = 16384, 3.1 us inside a call) and each program's copies of 32 KB per step from L2 (as many bytes as
the weights) are gone.

**No bank conflicts.** Lanes own rows, so a naive lookup would have all 32 lanes read the same
table column at 32 different byte values. Instead lane ``L`` holds its row's step permuted: its
register byte ``i`` is column ``i ^ L``. Loading the two 16-byte chunks in swapped order gives bit 4,
four selects bit 3, and one ``prmt`` per word with a per-lane selector bits 2..0. The table lives at
``v * 256 + 128 * buffer + 4 * column`` in shared memory, so the address of register byte ``i`` is
byte ``i`` placed at bits 8..15 over ``4 (i ^ L)`` at bits 0..7: one ``prmt`` of the weight word and a
per-lane word of four such offsets. At any instruction the 32 lanes read 32 different columns, one
per bank, whatever the bytes are.

The groups follow the permutation: register bytes ``8 t .. 8 t + 7`` are group ``t ^ (L >> 3)`` of the
step when ``G / 5 = 8`` (``t ^ (L >> 4)`` of two for 16 bytes; one group for 32 or more), so each
exponent is one sign-extending ``prmt`` and one read of a 1 KB table of ``2^e`` (exact for every int8
``e``, subnormals included) at the end of the kernel's shared memory.

**The rows arrive through shared memory.** A program owns 1024 rows (8 warps, two blocks of two rows per
lane) and each thread copies its own rows' next step, and their exponent words, into a private ring slot with
``cp.async`` one step ahead (32 KB + 4 KB per program): no registers hold loads in flight and no barrier is
needed for them, because each thread reads back only what it copied. The copies, their commits and waits and
the ring reads are PTX at fixed offsets, so the compiler adds no barriers of its own; one barrier per step
guards the table buffers. The split count gives every split but the last the same number of steps, and the
last no more (``triton_launch.balanced_splits``); the caller adds the splits and the bias (``finish_splits``).

H200, bf16 activations, bf16 cuBLAS in the same process (``benchmarks/NOTES.md``, "twenty-fifth" and
"twenty-fourth"): whole 16384 x 16384 forward calls 24.0 us (5.22x) with the tables written in the kernel,
against 25.6 us (4.90x) with a table kernel and copies, and 33.5 us (3.74x) for ``triton_tiled_gemv``.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from ternary.kernels.linear.triton_base3 import exact_exp2
from ternary.kernels.linear.triton_launch import balanced_splits, sm_count
from ternary.state.decode_state import CHUNK_BYTES, STEP_BYTES, TILE_ROWS

# Byte values per table: 243 trit patterns and 13 corrupt values.
TABLE_VALUES = 256
# The program's geometry (fixed: the ring's PTX offsets follow from it): rows per lane and block, blocks, warps.
LUT_ROWS_PER_LANE = 2
LUT_BLOCKS = 2
LUT_WARPS = 8
LUT_PROGRAM_ROWS = LUT_ROWS_PER_LANE * LUT_BLOCKS * 32 * LUT_WARPS
# Programs per SM: two from LUT_LARGE_BYTES of T_tiles, else one. H200, whole calls in one process
# (benchmarks/results/h200/twenty_fifth/probes/): two faster at 16384^2 (53.7 MB; 24.0 against 27.0 us) and 8192^2
# (13.6 MB; 10.8 against 11.4), one at 14336 x 4096 and 4096 x 14336 (11.7 MB; 10.2 against 10.5, 11.3 against
# 12.2), equal on smaller layers. Every measured layer, down to 1024^2, was faster here than on the shuffle GEMV.
LUT_PROGRAMS_PER_SM = 2
LUT_PROGRAMS_PER_SM_SMALL = 1
LUT_LARGE_BYTES = 12 << 20
# Shared memory (bytes from global_smem; the allocator places larger buffers first, and the offline test checks
# where the scales land): the byte tables [256 values, 2 buffers, 32 columns] fp32, the ring of rows
# [2 blocks x 2 chunks, 2 rows, 256 lanes, 16 bytes], the ring of exponent words [2 blocks, 2 rows, 256 lanes],
# the 256 scales.
_SHARED_TABLE_BYTES = TABLE_VALUES * 2 * STEP_BYTES * 4
_RING_ADDRESS = _SHARED_TABLE_BYTES
_RING_BYTES = LUT_PROGRAM_ROWS * STEP_BYTES
_EXPONENT_RING_ADDRESS = _RING_ADDRESS + _RING_BYTES
_SCALES_AT = _EXPONENT_RING_ADDRESS + LUT_PROGRAM_ROWS * 4
_SCALE_ADDRESS = _SCALES_AT + 4 * 128  # 2^e at 4 (e + 128) past the start of the scales

# prmt selectors for register byte u of a word: byte 0 from the offset word's byte u, byte 1 the weight
# byte u, bytes 2 and 3 the offset byte's sign (zero: offsets are below 128).
_ADDRESS_SELECT = tuple(f"0x{0xC + u:x}{0xC + u:x}{u}{4 + u}" for u in range(4))
_LOOKUP_ASM = gl.constexpr(tuple(
    f"{{ .reg .u32 a, b; prmt.b32 a, $1, $2, {_ADDRESS_SELECT[u]}; mov.u32 b, global_smem; add.u32 a, a, b; "
    f"ld.shared.f32 $0, [a+{128 * buffer}]; }}" for buffer in range(2) for u in range(4)))
_SCALE_ASM = gl.constexpr("{ .reg .u32 a, b; prmt.b32 a, $1, 0, $2; mov.u32 b, global_smem; mad.lo.u32 a, a, 4, b; "
                          f"ld.shared.f32 $0, [a+{_SCALE_ADDRESS}]; }}")
_RING_READ_ASM = gl.constexpr("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $4; "
                               f"ld.shared.v4.b32 {{$0, $1, $2, $3}}, [a+{_RING_ADDRESS}]; }}")
_EXPONENT_READ_ASM = gl.constexpr("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $1; "
                                  f"ld.shared.b32 $0, [a+{_EXPONENT_RING_ADDRESS}]; }}")
_RING_COPY_ASM = gl.constexpr("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
                              f"cp.async.cg.shared.global [a+{_RING_ADDRESS}], [$1], 16; mov.u32 $0, 0; }}")
_EXPONENT_COPY_ASM = gl.constexpr("{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; "
                                  f"cp.async.ca.shared.global [a+{_EXPONENT_RING_ADDRESS}], [$1], 4; mov.u32 $0, 0; }}")
_COMMIT_ASM = gl.constexpr("cp.async.commit_group; mov.u32 $0, 0;")
_WAIT_ASM = gl.constexpr(f"cp.async.wait_group {LUT_BLOCKS - 1}; mov.u32 $0, 0;")
# The table's entries, written and read back by the thread of their column at fixed offsets from a per-thread base
# address (row ``r`` of the base's 27 at ``256 r + 128 buffer``); the predicated store takes a flag as ``$3``.
_ENTRY_STORE_ASM = gl.constexpr(tuple(
    f"{{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $2; st.shared.f32 [a+{256 * r + 128 * buffer}], $1; "
    "mov.u32 $0, 0; }" for r in range(27) for buffer in range(2)))
_ENTRY_LOAD_ASM = gl.constexpr(tuple(
    f"{{ .reg .u32 a; mov.u32 a, global_smem; add.u32 a, a, $1; ld.shared.f32 $0, [a+{256 * r + 128 * buffer}]; }}"
    for r in range(27) for buffer in range(2)))
_ENTRY_STORE_IF_ASM = gl.constexpr(tuple(
    f"{{ .reg .u32 a; .reg .pred p; setp.ne.u32 p, $3, 0; mov.u32 a, global_smem; add.u32 a, a, $2; "
    f"@p st.shared.f32 [a+{256 * r + 128 * buffer}], $1; mov.u32 $0, 0; }}" for r in range(27) for buffer in range(2)))
_RPT = gl.constexpr(LUT_ROWS_PER_LANE)
_SUB = gl.constexpr(LUT_BLOCKS)
_PROGRAM_ROWS = gl.constexpr(LUT_PROGRAM_ROWS)
_ROWS = gl.constexpr(TILE_ROWS)
_STEP = gl.constexpr(STEP_BYTES)
_CHUNK = gl.constexpr(CHUNK_BYTES)


@gluon.jit
def _prmt(a, b, select):
    """``prmt.b32`` of ``a`` and ``b`` with a per-lane selector register ``select``."""
    return gl.inline_asm_elementwise("prmt.b32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, select], dtype=gl.int32,
                                     is_pure=True, pack=1)


@gluon.jit
def _lookup(word, offsets, BUFFER: gl.constexpr, U: gl.constexpr):
    """The table entry of byte ``U`` of ``word`` at the column whose ``4 * column`` is byte ``U`` of
    ``offsets``, in table buffer ``BUFFER``."""
    ASM: gl.constexpr = _LOOKUP_ASM[4 * BUFFER + U]
    return gl.inline_asm_elementwise(ASM, "=f,r,r", [word, offsets], dtype=gl.float32, is_pure=False, pack=1)


@gluon.jit
def _scale(word, select):
    """``2^e`` (fp32) of the int8 ``e`` that ``select`` picks (sign-extended) from exponent ``word``."""
    return gl.inline_asm_elementwise(_SCALE_ASM, "=f,r,r", [word, select], dtype=gl.float32, is_pure=False, pack=1)


@gluon.jit
def _copy_rows(words, exponents, chunks, eword, slots, step, swap, K: gl.constexpr, BYTES_PER_GROUP: gl.constexpr):
    """Start copying step ``step`` of block ``K`` into ring slot ``K`` (no commit): register chunk ``j`` is the step's
    chunk ``j ^ swap`` (``chunks`` / ``eword``: int32 word offsets ``[RPT, LANES]`` of each row's first chunk and
    exponent word; ``slots``: each row's place in a ring slot)."""
    LANES: gl.constexpr = 32 * gl.num_warps()
    for j in gl.static_range(2):
        gl.inline_asm_elementwise(_RING_COPY_ASM, "=r,l,r",
                                  [words + (chunks + (2 * step + (j ^ swap)) * (_ROWS * _CHUNK // 4)),
                                   (slots + (2 * K + j) * (_RPT * LANES)) * 16], dtype=gl.int32, is_pure=False, pack=1)
    gl.inline_asm_elementwise(_EXPONENT_COPY_ASM, "=r,l,r",
                              [exponents + eword + (step * _STEP // BYTES_PER_GROUP // 4) * _ROWS,
                               (slots + K * (_RPT * LANES)) * 4], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _ring_rows(slots, K: gl.constexpr):
    """Ring slot ``K``: the eight words (chunk order) and the exponent word of each of the thread's rows."""
    LANES: gl.constexpr = 32 * gl.num_warps()
    words = ()
    for j in gl.static_range(2):
        w = gl.inline_asm_elementwise(_RING_READ_ASM, "=r,=r,=r,=r,r", [(slots + (2 * K + j) * (_RPT * LANES)) * 16],
                                      dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=False, pack=1)
        words = words + (w[0], w[1], w[2], w[3])
    return words, gl.inline_asm_elementwise(_EXPONENT_READ_ASM, "=r,r", [(slots + K * (_RPT * LANES)) * 4],
                                            dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _async(ASM: gl.constexpr, like):
    """A ``cp.async`` commit or wait (PTX, so that the compiler adds no barrier), once per element of ``like``."""
    return gl.inline_asm_elementwise(ASM, "=r,r", [like], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _permute(loaded, high_swap, select):
    """Register word ``w`` of each chunk := loaded word ``w ^ ((L >> 2) & 3)`` with its bytes ``u ^ (L & 3)``:
    bit 3 of the lane by selects (``high_swap``), bits 2..0 by one ``prmt`` per word (``select``)."""
    out = ()
    for j in gl.static_range(2):
        m = loaded[4 * j: 4 * j + 4]
        a = (gl.where(high_swap, m[2], m[0]), gl.where(high_swap, m[3], m[1]),
             gl.where(high_swap, m[0], m[2]), gl.where(high_swap, m[1], m[3]))
        for w in gl.static_range(4):
            out = out + (_prmt(a[w], a[w ^ 1], select),)
    return out


@gluon.jit
def _rows_dot(acc, words, eword, offsets, scale_selects, BUFFER: gl.constexpr, BLOCK: gl.constexpr):
    """``acc [RPT, LANES]`` plus one step of each row: 32 lookups times their groups' ``2^E`` in four
    independent chains of eight (register bytes ``8 c .. 8 c + 7``)."""
    scales = ()
    for t in gl.static_range(32 // BLOCK):
        scales = scales + (_scale(eword, scale_selects[t]),)
    chains = ()
    for c in gl.static_range(4):
        chain = _lookup(words[2 * c], offsets[2 * c], BUFFER, 0) * scales[(8 * c) // BLOCK]
        for i in gl.static_range(8 * c + 1, 8 * c + 8):
            chain = chain + _lookup(words[i // 4], offsets[i // 4], BUFFER, i % 4) * scales[i // BLOCK]
        chains = chains + (chain,)
    return acc + ((chains[0] + chains[1]) + (chains[2] + chains[3]))


@gluon.jit
def _lane_constants(lane, rpt_index):
    """Per-lane words (broadcast to ``[RPT, LANES]``): the chunk swap (lane bit 4), the word-pair swap
    (bit 3), the byte selector of :func:`_permute` and the eight offset words of :func:`_lookup`
    (byte ``u`` of word ``q``: ``4 * ((4 q + u) ^ L)``)."""
    swap = gl.broadcast(lane >> 4 & 1, rpt_index)[0]
    high_swap = gl.broadcast(((lane >> 3) & 1) == 1, rpt_index)[0]
    select = 0
    for u in gl.static_range(4):
        select = select | (((u ^ (lane & 3)) + 4 * ((lane >> 2) & 1)) << (4 * u))
    offsets = ()
    for q in gl.static_range(8):
        word = 0
        for u in gl.static_range(4):
            word = word | ((4 * ((4 * q + u) ^ lane)) << (8 * u))
        offsets = offsets + (gl.broadcast(word, rpt_index)[0],)
    return swap, high_swap, gl.broadcast(select, rpt_index)[0], offsets


@gluon.jit
def _shared_tables(WARPS: gl.constexpr):
    """The shared buffers, largest first as the allocator places them (all but the scales' first store are read
    and written only by PTX at fixed offsets): the byte tables ``[256, 64]`` (fp32, two buffers of 32 columns,
    written a step ahead), the two rings and the scale table ``[256]``: ``2^e`` exactly for ``e = -128 .. 127``."""
    LANES: gl.constexpr = 32 * WARPS
    table = gl.allocate_shared_memory(gl.float32, [256, 64], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    ring = gl.allocate_shared_memory(gl.int32, [2 * _SUB, _RPT, LANES, 4], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0]))
    exponent_ring = gl.allocate_shared_memory(gl.int32, [_SUB, _RPT, LANES], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    scales = gl.allocate_shared_memory(gl.float32, [256], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    scales.store(exact_exp2(gl.arange(0, 256, layout=gl.BlockedLayout([1], [32], [WARPS], [0])) - 128))
    return table, (ring, exponent_ring, scales)


@gluon.jit
def _store_entry(value, address, R: gl.constexpr, BUFFER: gl.constexpr):
    """Write ``value`` at row ``R`` past ``address`` in table buffer ``BUFFER`` (see ``_ENTRY_STORE_ASM``)."""
    gl.inline_asm_elementwise(_ENTRY_STORE_ASM[2 * R + BUFFER], "=r,f,r", [value, address], dtype=gl.int32,
                              is_pure=False, pack=1)


@gluon.jit
def _store_entry_if(value, address, keep, R: gl.constexpr, BUFFER: gl.constexpr):
    """:func:`_store_entry` where ``keep`` (a boolean tensor) holds (see ``_ENTRY_STORE_IF_ASM``)."""
    gl.inline_asm_elementwise(_ENTRY_STORE_IF_ASM[2 * R + BUFFER], "=r,f,r,r", [value, address, keep.to(gl.int32)],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _activations(x_ptr, K, step, column):
    """The five activations ``x[5 (32 step + column) + t]`` (fp32, zero past ``K``) of the thread's table column."""
    xs = ()
    for t in gl.static_range(5):
        k = 5 * (32 * step + column) + t
        xs = xs + (gl.load(x_ptr + k, mask=k < K, other=0.0).to(gl.float32),)
    return xs


@gluon.jit
def _signed(x, DIGIT: gl.constexpr):
    """``(DIGIT - 1) x`` for a digit 0 or 2."""
    if DIGIT == 0:
        return -x
    else:
        return x


@gluon.jit
def _build_table(xs, warp, base, readback, extra, BUFFER: gl.constexpr):
    """Write the thread's column of a step's table into buffer ``BUFFER``: the entries of byte values ``27 warp + b``
    (``b < 27``) at ``base``, then those of ``216 + 8 j + warp`` (``8 j + warp < 27``) at ``extra`` as the thread's
    value ``27 warp + 8 j + warp`` (read back at ``readback``) plus the difference of the two high parts. With
    ``v = d0 + 3 d1 + 9 d2 + 27 a`` the entry is the low digits' sum plus the high part ``h(a)``; no low digit 1
    adds a term and the high part's are ``0 * x``: a byte of zero trits gives exactly 0 (NaN for an infinite
    activation, as in the reference) and one non-zero trit exactly ``+-x``."""
    x0, x1, x2, x3, x4 = xs
    c3 = (warp % 3 - 1).to(gl.float32)
    c4 = (warp // 3 - 1).to(gl.float32)
    high = c3 * x3 + c4 * x4
    pairs = (-x0 - x1, x0 - x1, x1 - x0, x0 + x1)  # (d0, d1) = (0, 0), (2, 0), (0, 2), (2, 2)
    for d2 in gl.static_range(3):
        if d2 == 1:
            low = high
        else:
            low = high + _signed(x2, d2)
        for d1 in gl.static_range(3):
            for d0 in gl.static_range(3):
                if d1 == 1:
                    if d0 == 1:
                        entry = low
                    else:
                        entry = low + _signed(x0, d0)
                else:
                    if d0 == 1:
                        entry = low + _signed(x1, d1)
                    else:
                        entry = low + pairs[d0 // 2 + d1]
                _store_entry(entry, base, d0 + 3 * d1 + 9 * d2, BUFFER)
    change = (1.0 - c3) * x3 + (1.0 - c4) * x4  # h(8) - h(warp): digits 3 and 4 of 216 .. 242 are both 2
    for j in gl.static_range(4):
        if j < 3:
            source = readback
        else:  # warps from 3 have no value 216 + 24 + warp: they read their own value 27 warp + 26, unused
            source = gl.where(warp < 3, readback, base + 2 * 256)
        entry = gl.inline_asm_elementwise(_ENTRY_LOAD_ASM[2 * (8 * j) + BUFFER], "=f,r", [source], dtype=gl.float32,
                                          is_pure=False, pack=1) + change
        if j < 3:
            _store_entry(entry, extra, 8 * j, BUFFER)
        else:
            _store_entry_if(entry, extra, warp < 3, 8 * j, BUFFER)


@gluon.jit
def _poison_corrupt_values(thread):
    """NaN in both buffers for the 13 byte values ``243 .. 255`` (832 words from row 243, four stores a thread)."""
    nan = gl.full(thread.shape, float("nan"), gl.float32, thread.type.layout)
    for i in gl.static_range(4):
        address = 243 * 256 + 4 * thread
        if i < 3:
            _store_entry(nan, address, 4 * i, 0)
        else:
            _store_entry_if(nan, address, thread < 832 - 768, 4 * i, 0)


@gluon.jit
def _lut_gemv_kernel(x_ptr, t_ptr, e_ptr, out_ptr, N, K, ROWS, CHUNKS, EWORDS, STEPS, stride_os, STEPS_PER_SPLIT,
                     BYTES_PER_GROUP: gl.constexpr):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s = program_id(1)`` of the steps, for the
    ``LUT_PROGRAM_ROWS`` rows of program ``program_id(0)``; ``x`` is ``[K]`` (unit stride), ``ROWS`` the tiles'
    padded row count, ``CHUNKS`` / ``EWORDS`` their chunks and exponent words per row. Two steps a turn, one per
    table buffer; after each step's barrier the threads write the next step's table into the other buffer; per
    block: wait for its ring slot, compute, refill the slot with the next step."""
    WARPS: gl.constexpr = gl.num_warps()
    LANES: gl.constexpr = 32 * WARPS
    BLOCK: gl.constexpr = BYTES_PER_GROUP if BYTES_PER_GROUP < 32 else 32
    GROUPS: gl.constexpr = 32 // BLOCK
    gl.static_assert(_SUB * _RPT * LANES == _PROGRAM_ROWS, "the ring's PTX offsets assume LUT_WARPS warps")
    gl.static_assert(WARPS == 8, "the table's rows are written 27 per warp by eight warps")
    layout: gl.constexpr = gl.BlockedLayout([_RPT, 1], [1, 32], [1, WARPS], [0, 1])
    table, others = _shared_tables(WARPS)
    thread = gl.arange(0, LANES, layout=gl.SliceLayout(0, layout))  # one element per thread
    column = thread % 32
    warp = thread // 32
    base = 4 * column + (27 * 256) * warp
    readback = base + 256 * warp
    extra = (216 * 256) + 4 * column + 256 * warp
    lanes = gl.expand_dims(thread, 0)
    lane = lanes % 32
    rpt_index = gl.expand_dims(gl.arange(0, _RPT, layout=gl.SliceLayout(1, layout)), 1)
    swap, high_swap, select, offsets = _lane_constants(lane, rpt_index)
    slots = rpt_index * LANES + lanes
    words = t_ptr.to(gl.pointer_type(gl.int32))
    exponents = e_ptr.to(gl.pointer_type(gl.int32))
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    first_row = gl.program_id(0) * (_SUB * _RPT * LANES)
    chunks = ()
    ewords = ()
    accs = ()
    for k in gl.static_range(_SUB):
        rows = gl.minimum(first_row + k * (_RPT * LANES) + slots, ROWS - 1)
        chunks = chunks + ((rows // _ROWS) * (CHUNKS * (_ROWS * _CHUNK // 4)) + (rows % _ROWS) * (_CHUNK // 4),)
        ewords = ewords + ((rows // _ROWS) * (EWORDS * _ROWS) + rows % _ROWS,)
        accs = accs + (gl.zeros([_RPT, LANES], gl.float32, layout),)
    for k in gl.static_range(_SUB):  # one group per block
        _copy_rows(words, exponents, chunks[k], ewords[k], slots, first, swap, k, BYTES_PER_GROUP)
        _async(_COMMIT_ASM, thread)
    _poison_corrupt_values(thread)
    _build_table(_activations(x_ptr, K, first, column), warp, base, readback, extra, 0)
    xs = _activations(x_ptr, K, first + 1, column)
    for pair in range(first, last, 2):
        for buffer in gl.static_range(2):
            step = pair + buffer
            if step < last:
                selects = ()
                for t in gl.static_range(GROUPS):
                    if BYTES_PER_GROUP <= 32:
                        byte = (step * GROUPS + (t ^ ((lane // BLOCK) % GROUPS))) % 4
                    else:
                        byte = (step * _STEP // BYTES_PER_GROUP) % 4
                    selects = selects + (gl.broadcast(byte * 0x1111 + 0x8880, rpt_index)[0],)
                updated = ()
                for k in gl.static_range(_SUB):
                    _async(_WAIT_ASM, thread)  # this block's slot is in
                    if k == 0:
                        gl.thread_barrier()  # this step's table is written; the other buffer is free
                        if step + 1 < last:
                            _build_table(xs, warp, base, readback, extra, 1 - buffer)
                        xs = _activations(x_ptr, K, step + 2, column)
                    loaded, eword = _ring_rows(slots, k)
                    updated = updated + (_rows_dot(accs[k], _permute(loaded, high_swap, select), eword, offsets,
                                                   selects, buffer, BLOCK),)
                    if step + 1 < last:
                        _copy_rows(words, exponents, chunks[k], ewords[k], slots, step + 1, swap, k, BYTES_PER_GROUP)
                    _async(_COMMIT_ASM, thread)  # a group per block and step, empty on the split's last step
                accs = updated
    async_copy.wait_group(0)
    table._keep_alive()
    for buffer in gl.static_range(3):
        others[buffer]._keep_alive()
    for k in gl.static_range(_SUB):
        rows = first_row + k * (_RPT * LANES) + slots
        gl.store(out_ptr + gl.program_id(1) * stride_os + rows, accs[k], mask=rows < N)


def takes(x: torch.Tensor, T_tiles: torch.Tensor, group_size: int) -> bool:
    """Whether the default one-row forward of these tiles takes this kernel: ``G / 5`` a multiple of 8 and
    word offsets that fit int32 (:func:`fits_int32_offsets`)."""
    return ((group_size // 5) % 8 == 0 and fits_int32_offsets(T_tiles)
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16))


def fits_int32_offsets(T_tiles: torch.Tensor) -> bool:
    """Whether the kernel's int32 word offsets reach every word of ``T_tiles`` (``E_tiles`` is smaller, and
    the activations' ``K`` smaller still)."""
    return T_tiles.numel() // 4 < 2**31


def lut_gemv(x: torch.Tensor, T_tiles: torch.Tensor, E_tiles: torch.Tensor, *, out_features: int, group_size: int,
             tile: tuple[int] | None = None) -> torch.Tensor:
    """Partial sums ``[splits, 1, N]`` (fp32) of ``x [1, K] @ W.T`` from the decode layout's contiguous
    ``T_tiles`` / ``E_tiles`` (``ternary.state.decode_state``), for ``G / 5`` a multiple of 8; ``tile =
    (programs per SM,)`` overrides the launch (benchmark sweeps; 0 means one split)."""
    if (group_size // 5) % 8:
        raise ValueError(f"lut_gemv: group_size={group_size} needs G / 5 to be a multiple of 8")
    blocks, chunks = T_tiles.shape[:2]
    steps = chunks * CHUNK_BYTES // STEP_BYTES
    if not fits_int32_offsets(T_tiles):
        raise ValueError(f"lut_gemv: T_tiles of shape {list(T_tiles.shape)} is too large for the kernel's int32 word "
                         "offsets (past 2^31 words)")
    if tile is None:
        per_sm = LUT_PROGRAMS_PER_SM if T_tiles.numel() >= LUT_LARGE_BYTES else LUT_PROGRAMS_PER_SM_SMALL
    else:
        (per_sm,) = tile
    row_blocks = triton.cdiv(blocks * TILE_ROWS, LUT_PROGRAM_ROWS)
    splits = balanced_splits(steps, row_blocks, per_sm * sm_count(x.device)) if per_sm > 0 else 1
    ws = torch.empty((splits, 1, out_features), dtype=torch.float32, device=x.device)
    _lut_gemv_kernel[(row_blocks, splits)](
        x if x.stride(-1) == 1 else x.contiguous(), T_tiles, E_tiles, ws, out_features, x.shape[-1], blocks * TILE_ROWS,
        chunks, E_tiles.shape[1], steps, ws.stride(0), triton.cdiv(steps, splits), BYTES_PER_GROUP=group_size // 5,
        num_warps=LUT_WARPS,
    )
    return ws
