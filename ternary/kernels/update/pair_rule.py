"""The update's trit rule on a lane's byte pair in ``f16x2`` arithmetic, and the rule partition of the wide
``wgmma`` update (``triton_wgmma_wide``) built on it (Gluon with inline PTX: compiled sm_90 GPUs only).

A lane of the rule owns bytes ``j, j + 1`` (``j`` even) of a row, i.e. input columns ``5 j .. 5 j + 9``: five
16-bit ``T_accum`` pieces, each two neighbouring columns. Every value the rule touches is a small integer, so a
half holds it exactly, and one ``f16x2`` instruction steps two weights at once, where the integer rule
(``triton_rule.vote_bytes``) spends about fifty instructions on each weight:

- an accumulator byte ``a`` becomes the half ``1152 + a`` by placing its bias-flipped bits under the
  exponent of 1024 (one ``prmt``, one ``xor``), and goes back the same way, so there are no conversions;
- the sign of the gradient, read as two digit planes' bytes, is gathered into the same pairs
  (``prmt``) and biased likewise;
- the trits of both bytes come as halves from a table (:func:`trit_table`, three words per byte
  value), and the new byte is their base-3 sum, two ``fma`` chains and one add per pair of bytes;
- the exponent rule's byte scores ``sum_d sign(g_d) T_old,d`` come out as integers.

About 26 instructions per pair of weights. The result equals ``vote_bytes`` bit for bit for every accumulator,
sign, trit (also a corrupt byte's fifth digit 2) and threshold: ``tests/test_pair_rule.py`` runs the PTX text
through a model of its instructions on every case, and the card runs the kernel against the reference.

The 64-row kernel (``triton_wgmma_ws``) keeps the integer rule: this one was no faster there (H200, same process;
``benchmarks/results/h200/twenty_eighth/``). It is what lets two rule warps keep up with a 128-row tile.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

from ternary.kernels.kept_tensors import kept
from ternary.kernels.update.triton_rule import tile_at
from ternary.kernels.update.triton_wgmma import load_tile_exponents, step_tile_exponents

# Halves of the biased accumulator: 1152 + a for a in -128..127 lies in [1024, 1280), where a half's
# low byte is a + 128 (its ulp is 1).
BIAS = 1152
# Largest threshold that still changes the rule: above it nothing ever steps.
THETA_CAP = 129


def half_bits(value: float) -> int:
    """The 16 bits of ``value`` as an IEEE half (rounded to nearest)."""
    return int(np.array(value, dtype=np.float16).view(np.uint16))


def half_pair(low: float, high: float) -> int:
    """A ``f16x2`` word: ``low`` in bits 0..15, ``high`` in 16..31 (a signed int32, as kernels take it)."""
    word = half_bits(low) | half_bits(high) << 16
    return word - (1 << 32) if word >= 1 << 31 else word


@functools.cache
def rule_words(theta_t: int) -> tuple[int, int, int]:
    """The threshold words of the PTX: ``1152 + theta``, ``1152 - theta`` and ``1 - theta`` in both halves,
    with ``theta = min(theta_t, THETA_CAP)`` (equal results: past 128 no accumulator reaches it); cached, since
    every update call asks for them."""
    if theta_t < 1:
        raise ValueError(f"pair rule: theta_t={theta_t} must be at least 1")
    theta = min(theta_t, THETA_CAP)
    return (half_pair(BIAS + theta, BIAS + theta), half_pair(BIAS - theta, BIAS - theta),
            half_pair(1 - theta, 1 - theta))


def _constants() -> dict[str, int]:
    return {"K1152": half_pair(BIAS, BIAS), "LO": half_pair(BIAS - 128, BIAS - 128),
            "HI": half_pair(BIAS + 127, BIAS + 127), "ONE": half_pair(1, 1), "MONE": half_pair(-1, -1),
            "W01": half_pair(1, 3), "W23": half_pair(9, 27), "W4": half_pair(81, 0), "W0": half_pair(0, 1),
            "W12": half_pair(3, 9), "W34": half_pair(27, 81), "K1145": half_pair(1024 + 121, 1024 + 121),
            "MAG": 0x64646464, "FLIP": 0x00800080, "FLIP8": 0x8080, "ZERO": 0}


def pair_rule_asm() -> str:
    """The PTX. Operands: ``$0..$4`` the new ``T_accum`` pieces (low 16 bits), ``$5, $6`` the new bytes
    ``j, j + 1``, ``$7, $8`` their scores; inputs ``$9..$13`` the old pieces (low 16 bits: columns
    ``5 j + 2 i``, ``+ 1``), ``$14..$18`` the sign pieces of digit planes 0..4 (low byte: byte ``j``,
    next: ``j + 1``; int8 -1 / 0 / 1), ``$19..$21`` and ``$22..$24`` the table words of bytes ``j`` and
    ``j + 1`` (:func:`trit_table`), ``$25..$27`` :func:`rule_words`."""
    c = _constants()
    lines = ["{", ".reg .b32 " + ", ".join(c) + ";",
             ".reg .b32 A, G, T, D, A1, GE, LE, S, TN, MV, NQ, HD, TG, AS, DF, OUT, X, Y, L, H, Z, U, V, W;",
             ".reg .b32 T0, T1, T2, T3, T4, N0, N1, N2, N3, N4, P0, P1, P2, P3, P4;"]
    lines += [f"mov.b32 {name}, {value:#x};" for name, value in c.items() if value >= 0]
    lines += [f"mov.b32 {name}, {value};" for name, value in c.items() if value < 0]
    # trit pairs (t0, t1), (t2, t3) of byte j, (t4 of j, t0 of j + 1), (t1, t2), (t3, t4) of j + 1
    lines += ["mov.b32 T0, $19;", "mov.b32 T1, $20;", "prmt.b32 T2, $21, $22, 0x5410;",
              "prmt.b32 T3, $22, $23, 0x5432;", "prmt.b32 T4, $23, $24, 0x5432;"]
    # sign pairs from the planes: (d0, d1), (d2, d3) of byte j, (d4 of j, d0 of j + 1), (d1, d2), (d3, d4) of j + 1
    gathers = [(14, 15, "0x4440"), (16, 17, "0x4440"), (18, 14, "0x4450"), (15, 16, "0x4451"), (17, 18, "0x4451")]
    for i, (first, second, select) in enumerate(gathers):
        lines += [f"prmt.b32 G, ${first}, ${second}, {select};",  # the pair's two sign bytes
                  "prmt.b32 G, G, MAG, 0x4140;", "xor.b32 G, G, FLIP;",  # 1152 + sign
                  f"prmt.b32 A, ${9 + i}, MAG, 0x4140;", "xor.b32 A, A, FLIP;",  # 1152 + T_accum
                  "sub.f16x2 D, A, G;", "add.f16x2 A1, D, K1152;",  # 1152 + T_accum - sign
                  "max.f16x2 A1, A1, LO;", "min.f16x2 A1, A1, HI;",  # saturated to int8
                  "set.ge.f16x2.f16x2 GE, A1, $25;", "set.le.f16x2.f16x2 LE, A1, $26;",
                  "sub.f16x2 S, GE, LE;",  # the step s
                  f"add.f16x2 TN, T{i}, S;", "max.f16x2 TN, TN, MONE;", "min.f16x2 TN, TN, ONE;",
                  f"set.ne.f16x2.f16x2 MV, TN, T{i};",  # the trit moved
                  "mul.f16x2 NQ, S, $27;", "sub.f16x2 HD, K1152, NQ;",  # 1152 + s (theta - 1)
                  "fma.rn.f16x2 TG, MV, NQ, HD;",  # 1152 if moved, else that
                  "add.f16x2 AS, GE, LE;", "sub.f16x2 DF, TG, A1;", "fma.rn.f16x2 OUT, AS, DF, A1;",
                  f"prmt.b32 OUT, OUT, ZERO, 0x4420;", f"xor.b32 ${i}, OUT, FLIP8;",
                  f"sub.f16x2 D, G, K1152;", f"mul.f16x2 P{i}, D, T{i};", f"mov.b32 N{i}, TN;"]
    # new bytes: X = (t0 + 9 t2 + 81 t4, 3 t1 + 27 t3) of j, Y = (3 t1 + 27 t3, t0 + 9 t2 + 81 t4) of j + 1
    lines += ["mul.f16x2 X, N2, W4;", "fma.rn.f16x2 X, N1, W23, X;", "fma.rn.f16x2 X, N0, W01, X;",
              "mul.f16x2 Y, N4, W34;", "fma.rn.f16x2 Y, N3, W12, Y;", "fma.rn.f16x2 Y, N2, W0, Y;",
              "prmt.b32 L, X, Y, 0x7610;", "prmt.b32 H, X, Y, 0x5432;", "add.f16x2 Z, L, H;",
              "add.f16x2 Z, Z, K1145;", "and.b32 $5, Z, 0xff;", "bfe.u32 $6, Z, 16, 8;"]
    # scores: sum over the five digits of each byte
    lines += ["add.f16x2 U, P0, P1;", "add.f16x2 V, P3, P4;", "prmt.b32 L, U, V, 0x7610;",
              "prmt.b32 H, U, V, 0x5432;", "add.f16x2 W, L, H;", "add.f16x2 W, W, P2;", "add.f16x2 W, W, K1152;",
              "and.b32 Z, W, 0xffff;", f"sub.s32 $7, Z, {half_bits(BIAS):#x};",
              "shr.u32 Z, W, 16;", f"sub.s32 $8, Z, {half_bits(BIAS):#x};", "}"]
    return "\n".join(lines)


PAIR_RULE_ASM = pair_rule_asm()
_ASM = gl.constexpr(PAIR_RULE_ASM)
_CONSTRAINTS = gl.constexpr(",".join(["=r"] * 9 + ["r"] * 19))


def trit_words(byte: torch.Tensor, digits: int = 5) -> torch.Tensor:
    """``[..., 4]`` int32 table words of byte values ``byte`` (int64): the half pairs ``(t0, t1)``, ``(t2,
    t3)``, ``(t4, 0)`` and a zero word, with the trits of ``triton_rule.byte_trits`` (a value past 242 has
    ``t4 = 2``); digits ``>= digits`` read as trit 0."""
    q = byte.clone()
    trits = []
    for _ in range(4):
        next_q = (q * 171) >> 9
        trits.append(q - 3 * next_q - 1)
        q = next_q
    trits.append(q - 1)
    halves = [torch.zeros_like(t) for t in trits]  # device operations only: no copy from the host
    for trit in (-1, 1, 2):
        halves = [torch.where(t == trit, half_bits(trit), h) if d < digits else h
                  for d, (t, h) in enumerate(zip(trits, halves))]
    words = [halves[0] | halves[1] << 16, halves[2] | halves[3] << 16, halves[4], torch.zeros_like(byte)]
    stacked = torch.stack(words, dim=-1)
    return torch.where(stacked >= 1 << 31, stacked - (1 << 32), stacked).to(torch.int32)


def _build_table(device: torch.device, partial_digits: int) -> torch.Tensor:
    values = torch.arange(256, dtype=torch.int64, device=device)
    return torch.stack([trit_words(values), trit_words(values, partial_digits)])


_TABLES: dict[tuple[torch.device, int], torch.Tensor] = {}


def trit_table(device: torch.device, partial_digits: int) -> torch.Tensor:
    """``[2, 256, 4]`` int32 on ``device``: :func:`trit_words` of every byte value, then the same with only
    digits ``< partial_digits`` (``K mod 5``: the row's last, partial byte, whose columns past ``K`` keep
    trit 0). 8 KB per device and ``K mod 5``, built by device operations and kept (``kept_tensors.kept``:
    inside a CUDA graph capture a table not yet kept is built into the graph)."""
    return kept(_TABLES, (device, partial_digits), device, lambda: _build_table(device, partial_digits))


@triton.constexpr_function
def pair_layout(warps, block_b):
    """Register layout of a part's byte pairs ``[rows, block_b / 2]``: a lane per pair, a warp per row (or
    several rows for narrow blocks)."""
    return gl.BlockedLayout([1, 1], [32 // (block_b // 2), block_b // 2], [warps, 1], [1, 0])


@gluon.jit
def vote_pairs(p0, p1, p2, p3, p4, s0, s1, s2, s3, s4, u0, u1, u2, v0, v1, v2, thh, thl, nhold):
    """The PTX on int32 tensors of one layout (see :func:`pair_rule_asm`): returns the new pieces
    ``q0..q4`` (low 16 bits), the new bytes ``j``, ``j + 1`` and their scores."""
    return gl.inline_asm_elementwise(_ASM, _CONSTRAINTS, [p0, p1, p2, p3, p4, s0, s1, s2, s3, s4, u0, u1, u2, v0, v1,
                                                          v2, thh, thl, nhold],
                                     dtype=(gl.int32, ) * 9, is_pure=True, pack=1)


@gluon.jit
def _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, n0, j, group0, N, K, KB, NG, stride_pn, stride_tn, stride_en,
               BYTES_PER_GROUP: gl.constexpr, BLOCK_B: gl.constexpr, RULE_ROWS: gl.constexpr, PAIR: gl.constexpr,
               PAIRS: gl.constexpr):
    """The state of rows ``n0 .. n0 + RULE_ROWS`` of a tile whose lanes own byte pairs ``j, j + 1`` (``j [BLOCK_B
    / 2]``, even) and whose groups start at ``group0``: the five ``T_accum`` pieces and both packed bytes,
    ``[RULE_ROWS, BLOCK_B / 2]`` int32, then the exponents with their offsets and mask (``[RULE_ROWS, BLOCK_B]``
    bytes' layout). No load depends on another, so none stalls the warp before the state is used."""
    rows = gl.expand_dims(n0 + gl.arange(0, RULE_ROWS, layout=gl.SliceLayout(1, PAIR)), 1)
    row_ok = rows < N
    first = gl.expand_dims(j, 0)
    row_bytes = p_ptr + rows.to(gl.int64) * stride_pn + first
    pieces = (ta_ptr + rows.to(gl.int64) * stride_tn + 5 * first).to(gl.pointer_type(gl.int16))
    col = 5 * first
    e, e_acc, e_at, e_mask = load_tile_exponents(e_ptr, ea_ptr, n0, group0, N, NG, stride_en, RULE_ROWS,
                                                 BLOCK_B // BYTES_PER_GROUP, PAIRS, BYTES_PER_GROUP)
    return (gl.load(pieces, mask=row_ok & (col < K), other=0).to(gl.int32),
            gl.load(pieces + 1, mask=row_ok & (col + 2 < K), other=0).to(gl.int32),
            gl.load(pieces + 2, mask=row_ok & (col + 4 < K), other=0).to(gl.int32),
            gl.load(pieces + 3, mask=row_ok & (col + 6 < K), other=0).to(gl.int32),
            gl.load(pieces + 4, mask=row_ok & (col + 8 < K), other=0).to(gl.int32),
            gl.load(row_bytes, mask=row_ok & (first < KB), other=121).to(gl.int32),
            gl.load(row_bytes + 1, mask=row_ok & (first + 1 < KB), other=121).to(gl.int32),
            e, e_acc, e_at, e_mask)


@gluon.jit
def _trit_words(table_ptr, low, high, j, K):
    """The table words (``pair_rule.trit_table``) of bytes ``low`` / ``high`` at ``j`` / ``j + 1``: the row's
    partial last byte (``K // 5``) reads the table's second half."""
    first = gl.expand_dims(j, 0)
    partial = K // 5
    low = table_ptr + 4 * (low + 256 * (first == partial).to(gl.int32))
    high = table_ptr + 4 * (high + 256 * (first + 1 == partial).to(gl.int32))
    return gl.load(low), gl.load(low + 1), gl.load(low + 2), gl.load(high), gl.load(high + 1), gl.load(high + 2)


@gluon.jit
def _store_part(new_p_ptr, new_ta_ptr, n0, j, N, K, KB, stride_pn, stride_tn, q0, q1, q2, q3, q4, low, high,
                RULE_ROWS: gl.constexpr, PAIR: gl.constexpr):
    """The new pieces ``q0..q4`` and bytes ``low`` / ``high`` (bytes ``j``, ``j + 1``) of rows ``n0 ..``."""
    rows = gl.expand_dims(n0 + gl.arange(0, RULE_ROWS, layout=gl.SliceLayout(1, PAIR)), 1)
    row_ok = rows < N
    first = gl.expand_dims(j, 0)
    row_bytes = new_p_ptr + rows.to(gl.int64) * stride_pn + first
    gl.store(row_bytes, low.to(gl.uint8), mask=row_ok & (first < KB))
    gl.store(row_bytes + 1, high.to(gl.uint8), mask=row_ok & (first + 1 < KB))
    pieces = (new_ta_ptr + rows.to(gl.int64) * stride_tn + 5 * first).to(gl.pointer_type(gl.int16))
    col = 5 * first
    gl.store(pieces, q0.to(gl.int16), mask=row_ok & (col < K))
    gl.store(pieces + 1, q1.to(gl.int16), mask=row_ok & (col + 2 < K))
    gl.store(pieces + 2, q2.to(gl.int16), mask=row_ok & (col + 4 < K))
    gl.store(pieces + 3, q3.to(gl.int16), mask=row_ok & (col + 6 < K))
    gl.store(pieces + 4, q4.to(gl.int16), mask=row_ok & (col + 8 < K))


@gluon.jit
def rule_partition(signs_low, signs_high, signs_ready, signs_free, p_ptr, ta_ptr, table_ptr, e_ptr, ea_ptr,
                   new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, N, K, KB, NG, stride_pn, stride_tn, stride_en,
                   theta_high, theta_low, hold, theta_e, e_min, e_max, BYTES_PER_GROUP: gl.constexpr,
                   BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, RULE_ROWS: gl.constexpr, GROUP_N: gl.constexpr):
    """The rule on each tile handed over in ``signs_low [BLOCK_N, 4 BLOCK_B]`` / ``signs_high [BLOCK_N,
    BLOCK_B]`` (int8 digit planes, ``sign_planes``), ``RULE_ROWS`` rows at a time, a byte pair per lane
    (:func:`vote_pairs`; the bias is the product warps'). The parts run as a loop, not unrolled, so that the
    registers stay those of one part and the next one's loads. Each part's state is loaded while the part before
    it votes (the first part's while the product runs), since the stores keep the compiler from moving the loads
    up itself; the last part of a tile loads nothing (its rows lie past the tile). ``theta_high`` / ``theta_low`` /
    ``hold`` are :func:`rule_words`, ``table_ptr`` :func:`trit_table`."""
    WARPS: gl.constexpr = gl.num_warps()
    HALF_B: gl.constexpr = BLOCK_B // 2
    gl.static_assert((32 % HALF_B == 0) & (RULE_ROWS % (WARPS * 32 // HALF_B) == 0) & (RULE_ROWS % 4 == 0),
                     "a pass is whole rows of byte pairs, one pair per lane, and whole swizzle phases")
    PAIR: gl.constexpr = pair_layout(WARPS, BLOCK_B)
    PAIRS: gl.constexpr = gl.BlockedLayout([1, 2], [32 // HALF_B, HALF_B], [WARPS, 1], [1, 0])
    # the int8 buffers' swizzle seen as int16 parts: the rank-2 layout applies to each [RULE_ROWS, ..] part,
    # whose rows start a swizzle phase since RULE_ROWS is a multiple of 4 (asserted above)
    HALVES: gl.constexpr = gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=4, order=[1, 0])
    PARTS: gl.constexpr = BLOCK_N // RULE_ROWS
    planes = signs_low._reinterpret(gl.int16, [PARTS, RULE_ROWS, 2 * BLOCK_B], HALVES)
    last_plane = signs_high._reinterpret(gl.int16, [PARTS, RULE_ROWS, HALF_B], HALVES)
    zeros = gl.full([RULE_ROWS, HALF_B], 0, gl.int32, PAIR)
    theta_high = zeros + theta_high
    theta_low = zeros + theta_low
    hold = zeros + hold
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    handoffs = 0
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        j = pid_b * BLOCK_B + 2 * gl.arange(0, HALF_B, layout=gl.SliceLayout(0, PAIR))
        group0 = pid_b * (BLOCK_B // BYTES_PER_GROUP)
        rows_end = gl.minimum(N, pid_n * BLOCK_N + BLOCK_N)
        state = _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, pid_n * BLOCK_N, j, group0, rows_end, K, KB, NG,
                           stride_pn, stride_tn, stride_en, BYTES_PER_GROUP, BLOCK_B, RULE_ROWS, PAIR, PAIRS)
        words = _trit_words(table_ptr, state[5], state[6], j, K)
        mbarrier.wait(signs_ready, handoffs & 1)
        for part in range(PARTS):
            n0 = pid_n * BLOCK_N + part * RULE_ROWS
            p0, p1, p2, p3, p4, _, _, e, e_acc, e_at, e_mask = state
            u0, u1, u2, v0, v1, v2 = words
            state = _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, n0 + RULE_ROWS, j, group0, rows_end, K, KB, NG,
                               stride_pn, stride_tn, stride_en, BYTES_PER_GROUP, BLOCK_B, RULE_ROWS, PAIR, PAIRS)
            signs = planes.index(part)
            q0, q1, q2, q3, q4, low, high, low_score, high_score = vote_pairs(
                p0, p1, p2, p3, p4, signs.slice(0, HALF_B, dim=1).load(PAIR).to(gl.int32),
                signs.slice(HALF_B, HALF_B, dim=1).load(PAIR).to(gl.int32),
                signs.slice(2 * HALF_B, HALF_B, dim=1).load(PAIR).to(gl.int32),
                signs.slice(3 * HALF_B, HALF_B, dim=1).load(PAIR).to(gl.int32),
                last_plane.index(part).load(PAIR).to(gl.int32), u0, u1, u2, v0, v1, v2, theta_high, theta_low, hold)
            words = _trit_words(table_ptr, state[5], state[6], j, K)  # the next part's: during the stores
            _store_part(new_p_ptr, new_ta_ptr, n0, j, N, K, KB, stride_pn, stride_tn, q0, q1, q2, q3, q4, low, high,
                        RULE_ROWS, PAIR)
            score = gl.convert_layout(gl.reshape(gl.join(low_score, high_score), [RULE_ROWS, BLOCK_B]), PAIRS)
            step_tile_exponents(score, e, e_acc, e_at, e_mask, new_e_ptr, new_ea_ptr, theta_e, e_min, e_max,
                                BYTES_PER_GROUP)
        mbarrier.arrive(signs_free)
        handoffs += 1
