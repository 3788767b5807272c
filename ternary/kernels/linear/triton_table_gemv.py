"""Forward for one activation row by warp-shuffle lookup tables (a Gluon kernel: compiled
NVIDIA GPUs only, never under ``TRITON_INTERPRET``).

Each lane owns weight rows; the 32 lanes of a warp walk the same byte columns together. For
byte column ``c`` (activations ``x_i = x[5 c + i]``) lane ``L`` holds entry ``L`` of two tables::

    low[L]  = sum_{i < 3} (digit_i(L) - 1) x_i        L = 0..26: the byte's digits 0..2
    high[L] = sum_{i < 2} (digit_i(L) - 1) x_{3 + i}  L = 0..8: digits 3..4; NaN for L >= 9

where ``digit_i(L) = floor(L / 3^i) mod 3``. A byte ``b = lo + 27 hi`` (``hi = (19 b) >> 9 =
b div 27`` for every byte) has the dot product ``low[lo] + high[hi]`` with its five
activations, each term one ``shfl.sync.idx`` from the lane that holds it; a corrupt byte
(> 242) has ``hi = 9`` and fetches NaN, so its row's output is NaN. Per byte that is a byte
extract, two integer multiply-adds, two shuffles and two adds (~11 SASS instructions per byte
in all, against ~28 for the quotient GEMV, ``triton._gemv_kernel``). A small Triton kernel
writes the tables once per call (``[ceil(K / 5) / 2, 32, 4]`` fp32, read as one 16-byte load
per lane and column pair).

Rows are ``ceil(K / 5)`` bytes apart, so a row's bytes are rarely aligned: each lane reads the
aligned 16-byte chunks that cover its ``CB``-byte segment (one vector load each; a step's
first chunk is the previous step's last) and realigns them with two selects and one funnel
shift per word. Exponents come the same way as 4-byte words when four or more groups share a
step. The loads of step ``s + 1`` are issued before step ``s`` is computed. So ``T_packed``
must start 16-byte aligned with its storage reaching the next 16-byte boundary after its last
byte, and ``E`` likewise for 4 bytes (:func:`fits`); the bytes past the tensor in that last
chunk or word are never used.

H100, bf16 activations, bf16 cuBLAS in the same run (history in ``benchmarks/NOTES.md``):
16384 x 16384 50-52 us (3.6-3.7x; the quotient GEMV 78 us), 1.5-2.5x on the smaller benchmark
shapes. ``ncu`` puts the bound in the L1: a warp's vector load touches 32 rows, i.e. 32 lines.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_base3 import exact_exp2
from ternary.kernels.linear.gluon_words import realign
from ternary.kernels.linear.triton_launch import byte_span, even_splits, readable_as_words, sm_count

# Byte columns per step for a group of ``group_size / 5`` bytes: the first of these that holds
# whole groups or lies inside one group (a multiple of 16: whole chunks).
TABLE_STEP_BYTES = (32, 16)
# Rows per lane and programs per SM of the launch; warps per program: 4 from
# TABLE_WIDE_ROWS output rows, else 2. H100 (benchmarks/results/h100/table_gemv/): 2 rows per
# lane beat 1 and 4 on every benchmark shape (4 rows: 184 registers, 85 us at 16384^2 against
# 50-54 us); 4 warps won at 16384^2, 2 warps at 4096 x 14336.
TABLE_ROWS_PER_LANE = 2
TABLE_PROGRAMS_PER_SM = 4
TABLE_WIDE_ROWS = 8192
# Byte columns per program of the table-building kernel (even: whole column pairs).
TABLE_BLOCK_C = 4


@gluon.jit
def lane_entry(table, index):
    """``table`` as held by lane ``index`` of the same warp (``shfl.sync.idx``; every lane must run it)."""
    return gl.inline_asm_elementwise("shfl.sync.idx.b32 $0, $1, $2, 31, -1;", "=f,f,r", [table, index],
                                     dtype=gl.float32, is_pure=True, pack=1)


@triton.jit
def tables_kernel(x_ptr, tab_ptr, K, BLOCK_C: tl.constexpr):
    """``tab [columns / 2, 32, 4]``: for each pair of byte columns ``2p, 2p + 1`` and lane ``L``,
    ``(low_2p[L], high_2p[L], low_2p+1[L], high_2p+1[L])`` (activations past ``K`` read as zero,
    so columns past the row hold zero dot products)."""
    col = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]
    lane = tl.arange(0, 32)[None, :]
    d0 = (lane % 3 - 1).to(tl.float32)
    d1 = (lane // 3 % 3 - 1).to(tl.float32)
    d2 = (lane // 9 % 3 - 1).to(tl.float32)
    x0 = tl.load(x_ptr + 5 * col, mask=5 * col < K, other=0.0).to(tl.float32)
    x1 = tl.load(x_ptr + 5 * col + 1, mask=5 * col + 1 < K, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + 5 * col + 2, mask=5 * col + 2 < K, other=0.0).to(tl.float32)
    x3 = tl.load(x_ptr + 5 * col + 3, mask=5 * col + 3 < K, other=0.0).to(tl.float32)
    x4 = tl.load(x_ptr + 5 * col + 4, mask=5 * col + 4 < K, other=0.0).to(tl.float32)
    out = tab_ptr + (col // 2) * 128 + lane * 4 + (col % 2) * 2
    tl.store(out, d0 * x0 + d1 * x1 + d2 * x2)
    tl.store(out + 1, tl.where(lane >= 9, float("nan"), d0 * x3 + d1 * x4))


@gluon.jit
def pair_tables(tab_ptr, pair, layout: gl.constexpr):
    """``(low_2p, high_2p, low_2p+1, high_2p+1)`` of byte-column pair ``pair``, each ``[1, LANES]``
    in ``layout`` (one 16-byte load per lane)."""
    WARPS: gl.constexpr = gl.num_warps()
    tile: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [WARPS, 1], [1, 0])
    lane = gl.arange(0, 32 * WARPS, layout=gl.SliceLayout(1, tile)) % 32
    quad = gl.arange(0, 4, layout=gl.SliceLayout(0, tile))
    offsets = pair * 128 + gl.expand_dims(lane * 4, 1) + gl.expand_dims(quad, 0)
    offsets = gl.max_contiguous(gl.multiple_of(offsets, [1, 4]), [1, 4])
    lows, highs = gl.split(gl.reshape(gl.load(tab_ptr + offsets), [32 * WARPS, 2, 2]))
    low0, low1 = gl.split(lows)
    high0, high1 = gl.split(highs)
    lanes: gl.constexpr = gl.SliceLayout(0, layout)
    return (gl.expand_dims(gl.convert_layout(low0, lanes, assert_trivial=True), 0),
            gl.expand_dims(gl.convert_layout(high0, lanes, assert_trivial=True), 0),
            gl.expand_dims(gl.convert_layout(low1, lanes, assert_trivial=True), 0),
            gl.expand_dims(gl.convert_layout(high1, lanes, assert_trivial=True), 0))


@gluon.jit
def byte_dot(byte, low, high):
    """Dot product of each byte (``[RPT, LANES]`` int32) of one column with its activations, from
    that column's tables (``[1, LANES]``)."""
    hi = (byte * 19) >> 9
    low, lo = gl.broadcast(low, byte - 27 * hi)
    high, hi = gl.broadcast(high, hi)
    return lane_entry(low, lo) + lane_entry(high, hi)


@gluon.jit
def _chunk_words(words, chunk, chunks_end, quad, layout: gl.constexpr):
    """The four int32 words of 16-byte chunk ``chunk`` (``[RPT, LANES]`` chunk indices), one vector
    load per lane; chunks from ``chunks_end`` on (past the tensor) read as zero."""
    offsets = gl.expand_dims(chunk * 4, 2) + gl.expand_dims(gl.expand_dims(quad, 0), 0)
    offsets = gl.max_contiguous(gl.multiple_of(offsets, [1, 1, 4]), [1, 1, 4])
    return chunk_words(gl.load(words + offsets, mask=gl.expand_dims(chunk < chunks_end, 2), other=0), layout)


@gluon.jit
def chunk_words(vector, layout: gl.constexpr):
    """The four words ``[RPT, LANES]`` (int32, in ``layout``) of each lane's loaded 16-byte chunk
    ``vector [RPT, LANES, 4]``, in byte order."""
    evens, odds = gl.split(gl.reshape(vector, [vector.shape[0], vector.shape[1], 2, 2]))
    w0, w2 = gl.split(evens)
    w1, w3 = gl.split(odds)
    return (gl.convert_layout(w0, layout, assert_trivial=True), gl.convert_layout(w1, layout, assert_trivial=True),
            gl.convert_layout(w2, layout, assert_trivial=True), gl.convert_layout(w3, layout, assert_trivial=True))


@gluon.jit
def _step_loads(words, chunk0, chunks_end, quad, e_words, e_first, e_words_end, e_rows, step, NG, carried,
                layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr, CB: gl.constexpr, FRESH: gl.constexpr):
    """What step ``step`` reads from memory, issued together (the loop loads step ``s + 1`` before
    it computes step ``s``): the ``CB / 16 + 1`` chunks that cover each row's ``CB`` bytes (as
    words) and the step's raw exponents (aligned words when four or more groups share a step,
    else one byte per group). A step's first chunk and first exponent word are the previous
    step's last, taken from ``carried`` (the previous loads) unless ``FRESH``."""
    previous, previous_exponents = carried
    if FRESH:
        loaded = _chunk_words(words, chunk0 + step * (CB // 16), chunks_end, quad, layout)
    else:
        loaded = (previous[CB // 4], previous[CB // 4 + 1], previous[CB // 4 + 2], previous[CB // 4 + 3])
    for t in gl.static_range(1, CB // 16 + 1):
        loaded = loaded + _chunk_words(words, chunk0 + step * (CB // 16) + t, chunks_end, quad, layout)
    GROUPS: gl.constexpr = CB // BYTES_PER_GROUP
    exponents = ()
    if GROUPS >= 4:
        index = (e_first + step * GROUPS) >> 2
        if FRESH:
            exponents = (gl.load(e_words + index, mask=index < e_words_end, other=0),)
        else:
            exponents = (previous_exponents[GROUPS // 4],)
        for w in gl.static_range(1, GROUPS // 4 + 1):
            exponents = exponents + (gl.load(e_words + index + w, mask=index + w < e_words_end, other=0),)
    elif GROUPS >= 1:
        for g in gl.static_range(GROUPS):
            exponents = exponents + (gl.load(e_rows + gl.minimum(step * GROUPS + g, NG - 1)),)
    else:
        exponents = exponents + (gl.load(e_rows + gl.minimum(step * CB // BYTES_PER_GROUP, NG - 1)),)
    return loaded, exponents


@gluon.jit
def _group_scales(exponents, e_first, step, BYTES_PER_GROUP: gl.constexpr, CB: gl.constexpr):
    """``2^E`` (fp32 ``[RPT, LANES]``) of each group of step ``step`` from its loaded exponents."""
    GROUPS: gl.constexpr = CB // BYTES_PER_GROUP
    scales = ()
    if GROUPS >= 4:
        shift = (((e_first + step * GROUPS) & 3) * 8).to(gl.int32)
        for w in gl.static_range(GROUPS // 4):
            word = realign(exponents[w], exponents[w + 1], shift)
            for i in gl.static_range(4):
                scales = scales + (exact_exp2((word << (24 - 8 * i)) >> 24),)
    else:
        for g in gl.static_range(len(exponents)):
            scales = scales + (exact_exp2(exponents[g]),)
    return scales


@gluon.jit
def _row_words(loaded, odd_word, odd_pair, shift, CB: gl.constexpr):
    """The ``CB / 4`` words of each lane's row segment, which starts ``4 * (2 odd_pair + odd_word) +
    shift / 8`` bytes into the first loaded chunk: two selects per word for the word offset, one
    funnel shift per word for the byte offset."""
    stepped = ()
    for j in gl.static_range(CB // 4 + 3):
        stepped = stepped + (gl.where(odd_word, loaded[j + 1], loaded[j]),)
    picked = ()
    for j in gl.static_range(CB // 4 + 1):
        picked = picked + (gl.where(odd_pair, stepped[j + 2], stepped[j]),)
    aligned = ()
    for j in gl.static_range(CB // 4):
        aligned = aligned + (realign(picked[j], picked[j + 1], shift),)
    return aligned


@gluon.jit
def words_dot(acc, words, scales, tab_ptr, first, KB, layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr,
              CB: gl.constexpr, MASKED: gl.constexpr):
    """``acc [RPT, LANES]`` plus the dot products of byte columns ``first .. first + CB - 1``, held as
    ``CB / 4`` words per lane and row in ``words``, times their groups' ``scales`` (one per group in
    byte order, or one for a step inside a group); bytes past the row read as 121 (all-zero trits)
    when ``MASKED``."""
    CHUNK: gl.constexpr = CB if CB < BYTES_PER_GROUP else BYTES_PER_GROUP
    part = gl.zeros_like(acc)
    for j in gl.static_range(CB // 4):
        for h in gl.static_range(2):
            low0, high0, low1, high1 = pair_tables(tab_ptr, first // 2 + 2 * j + h, layout)
            for i in gl.static_range(2):
                byte = (words[j] >> (8 * (2 * h + i))) & 0xFF
                if MASKED:
                    byte = gl.where(first + 4 * j + 2 * h + i < KB, byte, 121)
                if i == 0:
                    part += byte_dot(byte, low0, high0)
                else:
                    part += byte_dot(byte, low1, high1)
                if (4 * j + 2 * h + i) % CHUNK == CHUNK - 1:
                    acc += part * scales[(4 * j + 2 * h + i) // CHUNK]
                    part = gl.zeros_like(acc)
    return acc


@gluon.jit
def _step(acc, loaded, exponents, odd_word, odd_pair, shift, e_first, tab_ptr, step, KB, layout: gl.constexpr,
          BYTES_PER_GROUP: gl.constexpr, CB: gl.constexpr, MASKED: gl.constexpr):
    """``acc [RPT, LANES]`` plus the scaled dot products of byte columns ``step * CB ..`` (bytes
    past the row read as 121, all-zero trits, when ``MASKED``)."""
    aligned = _row_words(loaded, odd_word, odd_pair, shift, CB)
    scales = _group_scales(exponents, e_first, step, BYTES_PER_GROUP, CB)
    return words_dot(acc, aligned, scales, tab_ptr, step * CB, KB, layout, BYTES_PER_GROUP, CB, MASKED)


@gluon.jit
def _steps(acc, loaded, exponents, start, stop, words, chunk0, chunks_end, quad, e_words, e_first, e_words_end, e_rows,
           odd_word, odd_pair, shift, tab_ptr, KB, NG, layout: gl.constexpr, BYTES_PER_GROUP: gl.constexpr,
           CB: gl.constexpr, MASKED: gl.constexpr):
    """Steps ``start .. stop - 1`` into ``acc``, each computed while the next one's loads are in
    flight; returns ``acc`` and the loads of step ``stop``."""
    for step in range(start, stop):
        ahead, ahead_exponents = _step_loads(words, chunk0, chunks_end, quad, e_words, e_first, e_words_end, e_rows,
                                             step + 1, NG, (loaded, exponents), layout, BYTES_PER_GROUP, CB, False)
        acc = _step(acc, loaded, exponents, odd_word, odd_pair, shift, e_first, tab_ptr, step, KB, layout,
                    BYTES_PER_GROUP, CB, MASKED)
        loaded, exponents = ahead, ahead_exponents
    return acc, loaded, exponents


@gluon.jit
def lane_rows(wide: gl.constexpr, RPT: gl.constexpr):
    """``(quad [4], rows [RPT, LANES])`` of this program: the word index inside a lane's 16-byte
    chunk, and the weight row of each lane's ``RPT`` rows (``RPT * 32 * warps`` rows per program,
    row ``r`` of lane ``L`` is ``r * LANES + L``), in the slices of ``wide`` ``[RPT, LANES, 4]``."""
    LANES: gl.constexpr = 32 * gl.num_warps()
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, wide)))
    rows = (gl.program_id(0) * (RPT * LANES)
            + gl.expand_dims(gl.arange(0, RPT, layout=gl.SliceLayout(1, layout)), 1) * LANES
            + gl.expand_dims(gl.arange(0, LANES, layout=gl.SliceLayout(0, layout)), 0))
    return quad, rows


@gluon.jit
def _table_gemv_kernel(tab_ptr, p_ptr, e_ptr, out_ptr, N, KB, NG, stride_pn, stride_en, stride_os, chunks_end,
                       e_words_end, STEPS_PER_SPLIT, BYTES_PER_GROUP: gl.constexpr, CB: gl.constexpr,
                       RPT: gl.constexpr):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s = program_id(1)`` of the byte
    columns, for ``RPT * 32 * warps`` weight rows per program (``program_id(0)``)."""
    wide: gl.constexpr = gl.BlockedLayout([RPT, 1, 4], [1, 32, 1], [1, gl.num_warps(), 1], [2, 0, 1])
    layout: gl.constexpr = gl.SliceLayout(2, wide)
    quad, rows = lane_rows(wide, RPT)
    clamped = gl.minimum(rows, N - 1)
    first_byte = clamped.to(gl.int64) * stride_pn
    chunk0 = first_byte >> 4
    odd_word = (first_byte & 4) != 0
    odd_pair = (first_byte & 8) != 0
    shift = ((first_byte & 3) * 8).to(gl.int32)
    words = p_ptr.to(gl.pointer_type(gl.int32))
    e_rows = e_ptr + clamped * stride_en
    e_first = clamped.to(gl.int64) * stride_en
    e_words = e_ptr.to(gl.pointer_type(gl.int32))
    steps = gl.cdiv(KB, CB)
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, steps)
    whole = gl.maximum(gl.minimum(last, (KB - 1) // CB), first)
    acc = gl.zeros(rows.shape, gl.float32, layout)
    loaded, exponents = _step_loads(words, chunk0, chunks_end, quad, e_words, e_first, e_words_end, e_rows, first, NG,
                                    ((), ()), layout, BYTES_PER_GROUP, CB, True)
    acc, loaded, exponents = _steps(acc, loaded, exponents, first, whole, words, chunk0, chunks_end, quad, e_words,
                                    e_first, e_words_end, e_rows, odd_word, odd_pair, shift, tab_ptr, KB, NG, layout,
                                    BYTES_PER_GROUP, CB, False)
    acc, loaded, exponents = _steps(acc, loaded, exponents, whole, last, words, chunk0, chunks_end, quad, e_words,
                                    e_first, e_words_end, e_rows, odd_word, odd_pair, shift, tab_ptr, KB, NG, layout,
                                    BYTES_PER_GROUP, CB, True)
    gl.store(out_ptr + gl.program_id(1) * stride_os + rows, acc, mask=rows < N)


def build_tables(x: torch.Tensor, columns: int) -> torch.Tensor:
    """The lane tables ``[columns / 2, 32, 4]`` fp32 of the one activation row ``x [1, K]`` for
    ``columns`` byte columns (a multiple of ``TABLE_BLOCK_C``; see :func:`tables_kernel`)."""
    tables = torch.empty((columns // 2, 32, 4), dtype=torch.float32, device=x.device)
    tables_kernel[(columns // TABLE_BLOCK_C,)](x[0].contiguous(), tables, x.shape[1], BLOCK_C=TABLE_BLOCK_C)
    return tables


def step_bytes(bytes_per_group: int) -> int | None:
    """Byte columns per step for groups of ``bytes_per_group`` bytes (``TABLE_STEP_BYTES``), or
    None where no step size fits (the caller takes another kernel)."""
    for cb in TABLE_STEP_BYTES:
        if cb % bytes_per_group == 0 or bytes_per_group % cb == 0:
            return cb
    return None


def fits(T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this layer: a step size for the group size, ``T_packed`` readable
    as 16-byte chunks and ``E`` as 4-byte words (see the module docstring)."""
    return step_bytes(group_size // 5) is not None and readable_as_words(T_packed, 16) and readable_as_words(E, 4)


def table_tile(n: int) -> tuple[int, int, int]:
    """``(rows per lane, warps, splits)`` of a launch over ``n`` rows; splits 0: about
    ``TABLE_PROGRAMS_PER_SM`` programs per SM (see :func:`table_gemv`)."""
    return TABLE_ROWS_PER_LANE, 4 if n >= TABLE_WIDE_ROWS else 2, 0


def table_gemv(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, group_size: int,
               tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Partial sums ``[splits, 1, N]`` (fp32) of ``x [1, K] @ W.T`` for a layer that :func:`fits`;
    ``tile = (rows per lane, warps, splits)`` overrides :func:`table_tile` (benchmark sweeps).
    Splits 0 means about ``TABLE_PROGRAMS_PER_SM`` programs per SM, rounded down; every split
    gets at least one step."""
    n, kb = T_packed.shape
    cb = step_bytes(group_size // 5)
    steps = triton.cdiv(kb, cb)
    rpt, warps, splits = tile if tile is not None else table_tile(n)
    row_blocks = triton.cdiv(n, rpt * 32 * warps)
    if splits <= 0:
        splits = TABLE_PROGRAMS_PER_SM * sm_count(x.device) // row_blocks
    splits = even_splits(max(1, min(splits, steps)), steps)
    tables = build_tables(x, steps * cb)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    _table_gemv_kernel[(row_blocks, splits)](
        tables, T_packed, E, ws, n, kb, E.shape[1], T_packed.stride(0), E.stride(0), ws.stride(0),
        triton.cdiv(byte_span(T_packed), 16), triton.cdiv(byte_span(E), 4), triton.cdiv(steps, splits),
        BYTES_PER_GROUP=group_size // 5, CB=cb, RPT=rpt, num_warps=warps,
    )
    return ws
