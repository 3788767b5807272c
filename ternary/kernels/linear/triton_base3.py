"""Triton device helpers for base-3 packed trits: each packed byte is decoded as one unit.

A byte ``b = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4`` (digits ``d = T + 1``) is turned into
its five shifted quotients ``r_i = floor(b / 3^i) - 1`` with fp32 arithmetic only (no
integer division, no int->float conversion instruction), two operations each; trit ``i``
is then ``d_i - 1 = r_i - 3 r_{i+1} - 3`` (``r_4`` itself for the top digit). Cost: 10 fp32
operations for the quotients plus 2-3 per scaled weight, against ~40 mixed integer
operations for trit-by-trit ``% 3`` / ``// 3``.

Compiled kernels writing bf16 use a second decode in inline PTX (:func:`weight_tiles_bf16`,
``_pair_decode_asm``): two bytes per 32-bit register, ~18 instructions per byte for all five
scaled weights, bit-identical to the fp32 decode. The ``mma.sync`` forward decodes four bytes of one
scale group per call with bf16x2 FMAs (``WORD_WEIGHTS_ASM``).

Where each weight is produced on its own (the column-order decode, :func:`decode_weights`),
:func:`digit_value` extracts just that weight's digit with integer multiply-shifts.

Shared by the linear kernels (``ternary/kernels/linear/triton.py``) and the direct
update (``ternary/kernels/update/triton.py``): decoding, exact exponent scales, the
digit-tile shuffles of the update (``split_digits`` / ``interleave_digits``) and the digit
planes the kernels read activations from.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

TRITS_PER_BYTE = 5


def _fix_interpreter_loop_bounds() -> None:
    """Let ``range(runtime_bound)`` run under ``TRITON_INTERPRET=1`` with NumPy >= 2.4.

    Triton 3.6's interpreter holds scalar kernel arguments as 1-element arrays and takes
    ``int()`` of them for loop bounds, which NumPy 2.4 refuses; read the element instead.
    """
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "ternary_fixed", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.ternary_fixed = True
    interpreter._patch_lang_tensor = patched


if os.environ.get("TRITON_INTERPRET", "0") == "1":
    _fix_interpreter_loop_bounds()


@triton.jit
def byte_as_float(byte, MINUS: tl.constexpr = 0.0):
    """Exact fp32 value of integer tensor ``byte`` in [0, 2^23), less ``MINUS``, via the 2^23
    exponent trick (``MINUS`` is folded into its one subtraction)."""
    bits = byte.to(tl.int32) | 0x4B000000
    return bits.to(tl.float32, bitcast=True) - (8388608.0 + MINUS)


@triton.jit
def next_shifted_quotient(r):
    """``r' = floor(q / 3) - 1`` from ``r = q - 1`` (integer-valued fp32, ``q`` in [0, 2^20)).

    ``r / 3 = (q - 1) / 3`` has fractional part -1/3, 0 or +1/3 around ``floor(q / 3)``, so one
    FMA that adds 1.5 * 2^23 (where the fp32 spacing is 1) rounds it to ``floor(q / 3)`` plus
    that constant, and one subtraction removes the constant and the shift. Exact for every
    byte whether or not the product is fused (checked in the tests for both).
    """
    return tl.fma(r, 0.3333333432674408, 12582912.0) - 12582913.0


@triton.jit
def shifted_quotients(byte):
    """``r_i = floor(byte / 3^i) - 1``, i = 0..4, as fp32 tensors (byte in [0, 255])."""
    r0 = byte_as_float(byte, 1.0)
    r1 = next_shifted_quotient(r0)
    r2 = next_shifted_quotient(r1)
    r3 = next_shifted_quotient(r2)
    r4 = next_shifted_quotient(r3)
    return r0, r1, r2, r3, r4


@triton.jit
def trit_of(r_lo, r_hi):
    """Trit ``d - 1 = q_lo - 3 q_hi - 1`` of one digit position from two neighbouring shifted
    quotients (fp32); the top digit's trit is ``r_4`` itself."""
    return (r_lo - 3.0 * r_hi) - 3.0


@triton.jit
def exact_exp2(e):
    """Exact ``2^e`` as fp32 for an integer tensor ``e`` in [-149, 127] (subnormals included)."""
    e = e.to(tl.int32)
    normal = (e + 127) << 23
    subnormal = 1 << tl.maximum(e + 149, 0)
    bits = tl.where(e >= -126, normal, subnormal)
    return bits.to(tl.float32, bitcast=True)


# floor(b / 3^d) = (b * QUOTIENT_MULTIPLIERS[d - 1]) >> QUOTIENT_SHIFT for every b in [0, 255] and d = 1..5
# (the multipliers are ceil(2^15 / 3^d); tests/test_base3_quotients.py checks every byte).
QUOTIENT_SHIFT = 15
QUOTIENT_MULTIPLIERS = (10923, 3641, 1214, 405, 135)
# The multipliers of d = 1..4 as four 16-bit fields of one constant, picked per element by a shift.
_PACKED_MULTIPLIERS = tl.constexpr(sum(mult << (16 * i) for i, mult in enumerate(QUOTIENT_MULTIPLIERS[:4])))
_SHIFT = tl.constexpr(QUOTIENT_SHIFT)
_THIRD = tl.constexpr(QUOTIENT_MULTIPLIERS[0])


@triton.jit
def digit_value(byte, digit):
    """Digit ``floor(byte / 3^digit) mod 3`` (0..2) of an int32 tensor ``byte`` in [0, 255] at
    per-element positions ``digit`` in [0, 4], by integer multiply-shifts (no division, no
    per-position branch). A corrupt byte (> 242) gets a value too; callers mark it."""
    shift = (16 * tl.maximum(digit - 1, 0)).to(tl.int64)
    multiplier = ((tl.full(digit.shape, _PACKED_MULTIPLIERS, tl.int64) >> shift) & 0xFFFF).to(tl.int32)
    low = tl.where(digit == 0, byte, (byte * multiplier) >> _SHIFT)
    return low - 3 * ((low * _THIRD) >> _SHIFT)


@triton.jit
def decode_weights(p_ptr, e_ptr, rows, cols, ok, stride_pn, stride_en, GROUP_SIZE: tl.constexpr):
    """Weights ``T[rows, cols] * 2^E[rows, cols // G]`` as fp32, for broadcastable index tiles.

    Column ``c`` reads byte ``c // 5`` and decodes only its digit ``c % 5``
    (:func:`digit_value`). Masked-off entries (``ok`` false) are 0; corrupt bytes (> 242) give NaN.
    """
    byte = tl.load(p_ptr + rows * stride_pn + cols // 5, mask=ok, other=121).to(tl.int32)
    e = tl.load(e_ptr + rows * stride_en + cols // GROUP_SIZE, mask=ok, other=0)
    trit = byte_as_float(digit_value(byte, cols % 5), 1.0)
    return tl.where(byte > 242, float("nan"), trit * exact_exp2(e))


def _pair_decode_asm() -> str:
    """PTX turning two packed bytes (``$5``, one 32-bit register) and the bf16 bits of their
    ``2^E`` (``$6``) into five bf16 weight pairs ``$0..$4`` (digit positions 0..4).

    Each byte b becomes the fixed-point fraction q = b + ((55 b + 1003) >> 10) ~ b * 256 / 243
    (tests/test_base3_asm.py runs this text on every byte pair). Then, top digit first: x = 3 q
    puts the next digit d in bits 8..9 of each 16-bit lane, one ``prmt`` makes that byte the
    bf16 value 128 + d, one bf16 FMA gives T = d - 1 (exact) and one more T * 2^E (exact: T is
    -1, 0 or 1). A corrupt byte (> 242) has q >= 256: bit 8 of its lane, moved to a byte's sign
    bit and replicated by ``prmt``, makes its five weights NaN (0xFFFF). About 18 instructions
    per byte; the fp32 decode of the same five weights takes 23 fp32 operations (10 for the
    shifted quotients, 8 for the trits, 5 for the scales) before its bf16 conversions.
    """
    setup = """
{
.reg .b32 p, y, c, q, x, v, k, g, o, m, s, z;
mov.b32 s, $6;
prmt.b32 p, $5, 0, 0x4140;
mad.lo.u32 y, p, 55, 0x03EB03EB;
shr.u32 c, y, 10;
and.b32 c, c, 0x000F000F;
add.u32 q, p, c;
shl.b32 m, q, 7;
prmt.b32 m, m, 0, 0xBB99;
mov.b32 k, 0xC301C301;
mov.b32 o, 0x3F803F80;
mov.b32 z, 0x80008000;
mov.b32 g, 0x43434343;
"""
    steps = []
    for digit in (4, 3, 2, 1, 0):
        steps += ["mul.lo.u32 x, q, 3;", "prmt.b32 v, g, x, 0x0705;"]
        if digit:
            steps.append("and.b32 q, x, 0x00FF00FF;")
        steps += ["fma.rn.bf16x2 v, v, o, k;", "fma.rn.bf16x2 v, v, s, z;", f"or.b32 ${digit}, v, m;"]
    return setup + "\n".join(steps) + "\n}\n"


_WEIGHT_PAIRS_ASM = tl.constexpr(_pair_decode_asm())


_WORD_DECODE_REGISTERS = ".reg .b32 p, v, w, u, t, s0, s1, n, r, one, third, big, nbig, m249, m128, c256, m3, z;"
_WORD_DECODE_CONSTANTS = ["mov.b32 one, 0x3F803F80;", "mov.b32 third, 0x3EAB3EAB;", "mov.b32 big, 0x43404340;",
                          "mov.b32 nbig, 0xC340C340;", "mov.b32 m249, 0xC379C379;", "mov.b32 m128, 0xC300C300;",
                          "mov.b32 c256, 0x43804380;", "mov.b32 m3, 0xC040C040;", "mov.b32 z, 0x80008000;"]


def _word_decode_lines(word: str, scales: tuple[str, str], outputs: list[str]) -> list[str]:
    """PTX lines decoding the four bytes of register ``word`` into ``outputs[2 d + h]``: digit ``d``
    of bytes ``2 h`` (low lane) and ``2 h + 1`` (high lane) as bf16x2 ``T * 2^E``, with ``scales[h]``
    the bf16 bits of ``2^E`` in both lanes (uses the registers and constants of
    ``_WORD_DECODE_REGISTERS`` / ``_WORD_DECODE_CONSTANTS``; the method is :func:`_word_decode_asm`'s)."""
    lines = []
    for half in range(2):
        lines += [f"prmt.b32 p, {word}, 0, {0x4140 + 0x202 * half:#06x};",
                  "and.b32 v, p, 0x007F007F;", "or.b32 v, v, 0x43004300;",  # 128 + (b & 127)
                  "and.b32 w, p, 0x00800080;", "or.b32 w, w, 0x3F003F00;",  # 0.5 + (b >> 7) / 2
                  "fma.rn.bf16x2 u, v, one, m249;",  # (b & 127) - 121
                  "fma.rn.bf16x2 t, w, c256, m128;",  # 128 (b >> 7)
                  "fma.rn.bf16x2 s0, t, one, u;"]  # b - 121
        current, following = "s0", "s1"
        for digit in range(4):
            lines += [f"fma.rn.bf16x2 n, {current}, third, big;", f"fma.rn.bf16x2 {following}, n, one, nbig;",
                      f"fma.rn.bf16x2 r, {following}, m3, {current};",
                      f"fma.rn.bf16x2 {outputs[2 * digit + half]}, r, {scales[half]}, z;"]
            current, following = following, current
        lines.append(f"fma.rn.bf16x2 {outputs[8 + half]}, {current}, {scales[half]}, z;")
    return lines


def _word_decode_asm() -> str:
    """PTX turning a word of four packed bytes (``$10``) that share one scale (the bf16 bits of
    ``2^E`` in both halves of ``$14``) into five digit outputs of four bf16 weights each: ``$2d``
    holds digit ``d`` of bytes 0, 1 and ``$2d+1`` of bytes 2, 3 (``triton_mma_forward``, ``pack=4``).

    Everything after two byte lanes are unpacked runs on the FMA pipe, as bf16x2 FMAs on small
    integers (all exact): ``s_0 = b - 121``, assembled from ``128 + (b & 127)`` and ``128 (b >> 7)``
    (two logic ops place the bits in bf16 magic numbers); ``s_{i+1} = round(s_i / 3 + 192) - 192``
    (``1/3`` as bf16 is 0.333984375, and ``s_i * bf16(1/3)`` lies within 1/3 + 0.08 of an integer, so
    the sum rounds to it: ``s_i = floor(b / 3^i) - (121, 40, 13, 4, 1)_i``); the trit is ``s_i - 3 s_{i+1}``
    (``s_4`` for the top digit) and the weight ``trit * 2^E``. tests/test_base3_asm.py runs this text
    on every byte value in each position. A corrupt byte (> 242) decodes to some finite weights;
    the caller flags it. 23 SASS instructions per byte pair (25 in PTX: each and/or pair fuses), 3
    of them on the integer pipe (the pair decode above takes 24-29 with 13 there).
    """
    lines = ["{", _WORD_DECODE_REGISTERS[:-1] + ", sc;", "mov.b32 sc, $14;"] + _WORD_DECODE_CONSTANTS
    lines += _word_decode_lines("$10", ("sc", "sc"), [f"${i}" for i in range(10)])
    return "\n".join(lines + ["}"]) + "\n"


WORD_WEIGHTS_ASM = _word_decode_asm()


def _run_columns_asm(pairs: bool) -> str:
    """PTX turning a run of eight packed bytes (``$20..$27``, one byte per register, low byte used)
    into its forty bf16 weights ``T * 2^E`` in column order.

    ``$28`` / ``$29`` hold the bf16 bits of ``2^E`` in both lanes for bytes 0-3 / 4-7. The run's
    column words ``w_o`` (``o = 0..19``: columns ``2 o`` in the low lane, ``2 o + 1`` in the high lane,
    column ``5 p + d`` being digit ``d`` of byte ``p``) form five 16-byte chunks ``C_s = w_4s..w_4s+3``.
    Without ``pairs`` the outputs ``$0..$19`` are ``w_0..w_19`` (``triton_run_decode``, which stages them
    through shared memory). With ``pairs`` (the decode-in-GEMM's decoders, which store from registers),
    runs ``2 q`` and ``2 q + 1`` (``$30`` = run parity) must sit in lanes ``L`` and ``L ^ 1``: they swap
    chunks 1 and 3 (``P_s``: the partner's) so that store ``j`` of the pair writes sector ``j`` of its
    160 bytes whole: the even run's lane outputs ``C0 C2 C4 P1 P3`` (to bytes ``32 j``), the odd one's
    ``P1 P3 C0 C2 C4`` (to bytes ``32 j + 16``), as ``$4j .. $4j+3``.

    Each four bytes are joined into one word (three ``prmt``), decoded by the word decode
    (:func:`_word_decode_lines`, 23 instructions per byte pair) and put in column order by one
    ``prmt`` per output word. A corrupt byte (> 242) is found with three integer operations per
    word (``b > 242`` iff the top bit is set and ``(b & 127) + 13`` carries into it); a
    sign-replicating ``prmt`` turns that bit into an all-ones lane that is OR-ed into the scale of
    the byte's pair, so its five weights come out NaN (``T * NaN``). About 3.5 instructions per weight,
    4 with the swap (8 shuffles, 20 selects)."""
    digits = [f"d{i}" for i in range(10)]
    words = [f"c{i}" for i in range(20)]
    partner = [f"q{i}" for i in range(8)]
    lines = ["{", _WORD_DECODE_REGISTERS[:-1] + ", b01, b23, word, flag, mask, k01, k23, "
             + ", ".join(digits + words + (partner if pairs else [])) + ";"] + ([".reg .pred odd;"] if pairs else [])
    lines += _WORD_DECODE_CONSTANTS
    for half in range(2):
        first = 20 + 4 * half
        lines += [f"prmt.b32 b01, ${first}, ${first + 1}, 0x0040;",
                  f"prmt.b32 b23, ${first + 2}, ${first + 3}, 0x0040;",
                  "prmt.b32 word, b01, b23, 0x5410;",
                  "and.b32 flag, word, 0x7F7F7F7F;", "add.u32 flag, flag, 0x0D0D0D0D;", "and.b32 flag, flag, word;",
                  "prmt.b32 mask, flag, 0, 0x9988;", f"or.b32 k01, mask, ${28 + half};",
                  "prmt.b32 mask, flag, 0, 0xBBAA;", f"or.b32 k23, mask, ${28 + half};"]
        lines += _word_decode_lines("word", ("k01", "k23"), digits)
        for out in range(10):
            lanes = []
            for column in (2 * out, 2 * out + 1):
                byte, digit = divmod(column, 5)
                lanes.append((digits[2 * digit + byte // 2], byte % 2))
            (low, x), (high, y) = lanes
            selector = (2 * x) | (2 * x + 1) << 4 | (4 + 2 * y) << 8 | (5 + 2 * y) << 12
            lines.append(f"prmt.b32 {words[10 * half + out]}, {low}, {high}, {selector:#06x};")
    if not pairs:
        lines += [f"mov.b32 ${o}, {words[o]};" for o in range(20)]
        return "\n".join(lines + ["}"]) + "\n"
    chunk = [words[4 * s:4 * s + 4] for s in range(5)]
    for i, own in enumerate(chunk[1] + chunk[3]):
        lines.append(f"shfl.sync.bfly.b32 {partner[i]}, {own}, 1, 0x1f, 0xffffffff;")
    swapped = [partner[:4], partner[4:]]
    even = [chunk[0], chunk[2], chunk[4], swapped[0], swapped[1]]
    odd = [swapped[0], swapped[1], chunk[0], chunk[2], chunk[4]]
    lines.append("setp.ne.b32 odd, $30, 0;")
    for j in range(5):
        for w in range(4):
            lines.append(f"selp.b32 ${4 * j + w}, {odd[j][w]}, {even[j][w]}, odd;")
    return "\n".join(lines + ["}"]) + "\n"


RUN_COLUMNS_ASM = _run_columns_asm(pairs=True)
RUN_COLUMNS_IN_ORDER_ASM = _run_columns_asm(pairs=False)


@triton.jit
def bf16_exp2_bits(e):
    """The bf16 bit pattern (int16) of ``2^e`` for an integer tensor ``e`` in [-133, 127]
    (subnormals included)."""
    e = e.to(tl.int32)
    normal = (e + 127) << 7
    subnormal = tl.full(e.shape, 1, tl.int32) << tl.minimum(tl.maximum(e + 133, 0), 6)
    return tl.where(e >= -126, normal, subnormal).to(tl.int16)


@triton.jit
def weight_tiles_bf16(byte, scale_bits):
    """Five bf16 weight tiles ``[R, C]`` ``T * 2^E`` (digit positions 0..4) of a uint8 tile
    ``byte [R, C]``, given the int16 bf16 bits of ``2^E`` per byte ``scale_bits [R, C]``
    (:func:`bf16_exp2_bits`); NaN in all five where a byte is corrupt. Compiled code only:
    the interpreter cannot run inline PTX. Triton hands the asm two elements per register;
    which two depends on the layout, and the result is elementwise either way."""
    return tl.inline_asm_elementwise(_WEIGHT_PAIRS_ASM, "=r,=r,=r,=r,=r,r,r", [byte, scale_bits],
                                     dtype=(tl.bfloat16,) * 5, is_pure=True, pack=2)


@triton.jit
def split_digits(wide, BLOCK_B: tl.constexpr):
    """Inverse of :func:`concat_digits`: ``[R, 4 BB]`` -> four ``[R, BB]`` tiles."""
    pairs = tl.permute(tl.reshape(wide, (wide.shape[0], 2, 2, BLOCK_B)), (0, 3, 1, 2))
    even, odd = tl.split(pairs)  # q = 0 / 1, each [R, BB, p]
    d0, d2 = tl.split(even)
    d1, d3 = tl.split(odd)
    return d0, d1, d2, d3


@triton.jit
def interleave_digits(d0, d1, d2, d3, d4):
    """Five ``[R, BB]`` digit tiles as ``[R, BB, 8]`` in memory order (entries 5..7 are padding)."""
    zero = tl.zeros_like(d0)
    wide = tl.join(tl.join(tl.join(d0, d4), tl.join(d2, zero)), tl.join(tl.join(d1, zero), tl.join(d3, zero)))
    return tl.reshape(wide, (d0.shape[0], d0.shape[1], 8))


@triton.jit
def deinterleave_digits(wide):
    """Inverse of :func:`interleave_digits`: ``[R, BB, 8]`` -> five ``[R, BB]`` tiles."""
    parts = tl.reshape(wide, (wide.shape[0], wide.shape[1], 2, 2, 2))  # entry 4a + 2b + c
    c0, c1 = tl.split(parts)
    c0b0, c0b1 = tl.split(c0)
    c1b0, c1b1 = tl.split(c1)
    d0, d4 = tl.split(c0b0)
    d2, _ = tl.split(c0b1)
    d1, _ = tl.split(c1b0)
    d3, _ = tl.split(c1b1)
    return d0, d1, d2, d3, d4


@triton.jit
def _digit_planes_kernel(x_ptr, out_ptr, M, ROWS, K, stride_xm, stride_xk, stride_om, stride_ob, stride_op,
                         Z_FORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr):
    """One ``[BLOCK_M, BLOCK_B]`` tile of rows and bytes of the digit planes (see :func:`digit_planes`)."""
    if Z_FORM:
        _z_planes_tile(x_ptr, out_ptr, M, ROWS, K, stride_xm, stride_xk, stride_om, stride_ob, stride_op,
                       BLOCK_M, BLOCK_B)
    else:
        _plain_planes_tile(x_ptr, out_ptr, M, ROWS, K, stride_xm, stride_xk, stride_om, stride_ob, stride_op,
                           BLOCK_M, BLOCK_B)


@triton.jit
def _plain_planes_tile(x_ptr, out_ptr, M, ROWS, K, stride_xm, stride_xk, stride_om, stride_ob, stride_op,
                       BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr):
    """The five planes of a tile, read as one ``[BLOCK_M, BLOCK_B, 8]`` block whose last axis is a
    byte's digits (5..7 masked), so each row's ``5 BLOCK_B`` inputs are one contiguous run (1.3 TB/s
    with five stride-5 loads instead on an H100), then stored digit-major: ``[BLOCK_M, 8, BLOCK_B]``."""
    m = (tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None, None]
    block = tl.program_id(0)
    jb = (block * BLOCK_B + tl.arange(0, BLOCK_B))[None, :, None]
    digit = tl.arange(0, 8)[None, None, :]
    col = jb * 5 + digit
    # offsets in int64: M * K, and the plane-major layout's 5 * stride_op, may pass 2^31
    tile = tl.load(x_ptr + m.to(tl.int64) * stride_xm + col.to(tl.int64) * stride_xk,
                   mask=(m < M) & (digit < 5) & (col < K), other=0.0)
    planes = tl.permute(tile, (0, 2, 1))
    plane = tl.arange(0, 8)[None, :, None].to(tl.int64)
    byte = tl.arange(0, BLOCK_B)[None, None, :]
    out = out_ptr + m.to(tl.int64) * stride_om + block * stride_ob + plane * stride_op + byte
    tl.store(out, planes.to(out_ptr.dtype.element_ty), mask=(m < ROWS) & (plane < 5))


@triton.jit
def _z_planes_tile(x_ptr, out_ptr, M, ROWS, K, stride_xm, stride_xk, stride_om, stride_ob, stride_op,
                   BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr):
    """The six fp32 z planes of a tile (see :func:`digit_planes`)."""
    m = (tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]
    block = tl.program_id(0)
    jb = (block * BLOCK_B + tl.arange(0, BLOCK_B))[None, :]
    row = x_ptr + m.to(tl.int64) * stride_xm  # offsets in int64: M * K may pass 2^31
    ok = m < M
    first = (jb * 5).to(tl.int64)
    x0 = tl.load(row + first * stride_xk, mask=ok & (jb * 5 < K), other=0.0).to(tl.float32)
    x1 = tl.load(row + (first + 1) * stride_xk, mask=ok & (jb * 5 + 1 < K), other=0.0).to(tl.float32)
    x2 = tl.load(row + (first + 2) * stride_xk, mask=ok & (jb * 5 + 2 < K), other=0.0).to(tl.float32)
    x3 = tl.load(row + (first + 3) * stride_xk, mask=ok & (jb * 5 + 3 < K), other=0.0).to(tl.float32)
    x4 = tl.load(row + (first + 4) * stride_xk, mask=ok & (jb * 5 + 4 < K), other=0.0).to(tl.float32)
    stride_op = stride_op.to(tl.int64)  # the plane-major layout's 5 * stride_op may pass 2^31
    out = out_ptr + m.to(tl.int64) * stride_om + block * stride_ob + tl.arange(0, BLOCK_B)[None, :]
    keep = m < ROWS
    tl.store(out, x0, mask=keep)
    tl.store(out + stride_op, x1 - 3.0 * x0, mask=keep)
    tl.store(out + 2 * stride_op, x2 - 3.0 * x1, mask=keep)
    tl.store(out + 3 * stride_op, x3 - 3.0 * x2, mask=keep)
    tl.store(out + 4 * stride_op, x4 - 3.0 * x3, mask=keep)
    tl.store(out + 5 * stride_op, -3.0 * ((x0 + x1) + (x2 + x3)), mask=keep)


def digit_planes(x, rows: int, kb_padded: int, block_b: int, *, z_form: bool, dtype, blocked: bool):
    """Activations ``x [M, K]`` regrouped by packed byte and digit position, zero-padded.

    Plane ``d`` holds ``x[m, 5 j + d]`` (5 planes), or with ``z_form`` the fp32 planes
    ``z_0 = x_0``, ``z_d = x_d - 3 x_{d-1}`` and ``z_5 = -3 (x_0 + x_1 + x_2 + x_3)`` (6 planes;
    the constant term of the GEMV's shifted-quotient dot product). Layout:
    ``[planes, rows, kb_padded]`` (plane-major), or with ``blocked``
    ``[rows, kb_padded / block_b, planes, block_b]``, where digits 0..3 of one byte block are
    a single contiguous ``4 * block_b`` run per row.
    """
    import torch

    planes, blocks = (6 if z_form else 5), kb_padded // block_b
    shape = (rows, blocks, planes, block_b) if blocked else (planes, rows, kb_padded)
    out = torch.empty(shape, dtype=dtype, device=x.device)
    if blocked:
        strides = (out.stride(0), out.stride(1), out.stride(2))
    else:
        strides = (out.stride(1), block_b, out.stride(0))
    block_m = 1 if rows < 64 else 16
    _digit_planes_kernel[(blocks, -(-rows // block_m))](
        x, out, x.shape[0], rows, x.shape[1], x.stride(0), x.stride(1), *strides, Z_FORM=z_form,
        BLOCK_M=block_m, BLOCK_B=block_b,
    )
    return out
