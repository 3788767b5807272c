"""The trit rule on a lane's byte pair in ``f16x2`` arithmetic: one block of inline PTX for the ten weights of
two packed bytes (Gluon, compiled sm_90 GPUs only; :func:`interpret_pair_rule` runs the same PTX text on the
CPU for the tests).

A lane of the ``wgmma`` update's rule owns bytes ``j, j + 1`` (``j`` even) of a row, i.e. input columns
``5 j .. 5 j + 9``: five 16-bit ``T_accum`` pieces, each two neighbouring columns. Every value the rule
touches is a small integer, so half precision holds it exactly, and a ``f16x2`` instruction steps two
weights at once where the integer rule (``triton_rule.vote_bytes``) spends about fifty instructions on
each:

- an accumulator byte ``a`` becomes the half ``1152 + a`` by placing its bias-flipped bits under the
  exponent of 1024 (one ``prmt``, one ``xor``), and goes back the same way, so there are no conversions;
- the sign of the gradient, read as two digit planes' bytes, is gathered into the same pairs
  (``prmt``) and biased likewise;
- the trits of both bytes come as halves from a table (:func:`trit_table`, three words per byte
  value), and the new byte is their base-3 sum, two ``fma`` chains and one add per pair of bytes;
- the exponent rule's byte scores ``sum_d sign(g_d) T_old,d`` come out as integers.

The result equals ``vote_bytes`` bit for bit for every accumulator, sign, trit (also a corrupt byte's
fifth digit 2) and threshold; ``tests/test_pair_rule.py`` checks that on every case by interpreting
the PTX, and on the card through the kernel.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

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


def rule_words(theta_t: int) -> tuple[int, int, int]:
    """The threshold words of the PTX: ``1152 + theta``, ``1152 - theta`` and ``1 - theta`` in both halves,
    with ``theta = min(theta_t, THETA_CAP)`` (equal results: past 128 no accumulator reaches it)."""
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
    bits = torch.tensor([half_bits(t) for t in (-1, 0, 1, 2)], dtype=torch.int64)
    q = byte.clone()
    trits = []
    for _ in range(4):
        next_q = (q * 171) >> 9
        trits.append(q - 3 * next_q - 1)
        q = next_q
    trits.append(q - 1)
    halves = [bits[t + 1] if d < digits else torch.zeros_like(t) for d, t in enumerate(trits)]
    words = [halves[0] | halves[1] << 16, halves[2] | halves[3] << 16, halves[4], torch.zeros_like(byte)]
    stacked = torch.stack(words, dim=-1)
    return torch.where(stacked >= 1 << 31, stacked - (1 << 32), stacked).to(torch.int32)


@functools.cache
def trit_table(device: torch.device, partial_digits: int) -> torch.Tensor:
    """``[2, 256, 4]`` int32 on ``device``: :func:`trit_words` of every byte value, then the same with only
    digits ``< partial_digits`` (``K mod 5``: the row's last, partial byte, whose columns past ``K`` keep
    trit 0). 8 KB per device and ``K mod 5``."""
    values = torch.arange(256, dtype=torch.int64)
    return torch.stack([trit_words(values), trit_words(values, partial_digits)]).to(device)


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
