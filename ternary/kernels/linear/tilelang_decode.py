"""Integer-only decode of one packed trit into the bit pattern of a bf16 weight.

The TileLang kernels build each dequantised weight ``T * 2^E`` directly as bf16 bits
(sign bit, biased exponent, subnormal mantissa for E = -127 and -128). No float
operation is involved, so nothing can round, overflow or be flushed to zero: every
int8 E (-128..127) gives exactly ``2^E``, which bf16 represents because its exponent
range equals float32's. (The earlier system built fp16 scales and clamped E to
[-14, 15]; that is where its NaNs and wrong weights came from.)

The functions take a ``select(cond, a, b)`` callable so the same formula runs on TIR
expressions inside a kernel (``T.if_then_else``) and on torch tensors in CPU tests
(``torch.where``): the kernel and its test cannot drift apart.

The same goes for the row shift of fp32 activations (:func:`split_row_shift`,
:func:`float32_power_bits`): fp32 rows are split into three bf16 pieces, which is exact
only for values >= 2^-110 (the last piece must not fall below bf16's smallest
subnormal, 2^-133), so rows whose largest magnitude is small are first multiplied by
an exact power of two and the output divided by it again.
"""

from __future__ import annotations

from typing import Any, Callable

Select = Callable[[Any, Any, Any], Any]

BF16_SIGN = 0x8000
BF16_MANTISSA_BITS = 7
BF16_EXPONENT_BIAS = 127
MIN_NORMAL_EXPONENT = -126
# Subnormal bf16 magnitudes: 2^-127 = 0x40 * 2^-133 and 2^-128 = 0x20 * 2^-133.
SUBNORMAL_BITS = {-127: 0x40, -128: 0x20}
ZERO_TRIT_DIGIT = 1
MAX_VALID_BYTE = 242
BF16_QUIET_NAN = 0x7FC0
ALL_NONZERO_DIGITS_BYTE = 0  # five digits 0: no position decodes to a zero weight

FP32_MANTISSA_BITS = 23
FP32_EXPONENT_BIAS = 127
# An fp32 value v with 2^-110 <= |v| is hi + mid + lo in bf16 exactly: the 24 significant
# bits end at 2^(e - 23) >= 2^-133, bf16's smallest subnormal step.
SPLIT_EXACT_MIN_EXPONENT = -110
# Rows of fp32 activations whose largest |x| is below 2^SPLIT_PEAK_EXPONENT are scaled up so
# that it lands in [2^-40, 2^-39): every element within 2^70 of the row's largest then splits
# exactly, and a scaled product (< 2^-39 * 2^128) leaves room to add up 2^39 terms in fp32.
SPLIT_PEAK_EXPONENT = -40
MAX_SPLIT_SHIFT = SPLIT_PEAK_EXPONENT + 149  # largest |x| = 2^-149, fp32's smallest subnormal


def scale_bits(exponent: Any, select: Select) -> Any:
    """bf16 bit pattern (as int) of ``2^exponent`` for an int8 exponent in [-128, 127]."""
    normal = (exponent + BF16_EXPONENT_BIAS) << BF16_MANTISSA_BITS
    subnormal = select(exponent == -127, SUBNORMAL_BITS[-127], SUBNORMAL_BITS[-128])
    return select(exponent >= MIN_NORMAL_EXPONENT, normal, subnormal)


def poison_corrupt(byte: Any, magnitude_bits: Any, select: Select) -> tuple[Any, Any]:
    """``(byte, magnitude_bits)`` with a corrupt byte (> 242) turned into five NaN weights.

    A corrupt byte is never decoded silently: every output it feeds becomes NaN (even
    for zero activations), which the non-finite checks then report.
    """
    corrupt = byte > MAX_VALID_BYTE
    return select(corrupt, ALL_NONZERO_DIGITS_BYTE, byte), select(corrupt, BF16_QUIET_NAN, magnitude_bits)


def trit_digit(byte: Any, position: Any, select: Select) -> Any:
    """Digit ``d = T + 1`` in {0, 1, 2} at ``position`` (0..4) of a base-3 byte."""
    power = select(position == 0, 1, select(position == 1, 3, select(position == 2, 9, select(position == 3, 27, 81))))
    return (byte // power) % 3


def weight_bits(digit: Any, magnitude_bits: Any, select: Select) -> Any:
    """bf16 bits of ``(digit - 1) * 2^E`` given ``magnitude_bits = scale_bits(E)``."""
    signed = magnitude_bits + select(digit == 0, BF16_SIGN, 0)
    return select(digit == ZERO_TRIT_DIGIT, 0, signed)


def split_row_shift(peak_exponent: Any, select: Select) -> Any:
    """Power of two ``s`` (in [-1, MAX_SPLIT_SHIFT]) to multiply one fp32 row by before the bf16 split.

    ``peak_exponent`` is ``frexp(max |x| of the row).exponent``, i.e. the peak lies in
    ``[2^(e-1), 2^e)`` (``e = 0`` for an all-zero row). Rows with a peak below 2^-40 get
    ``s > 0`` so the peak lands in [2^-40, 2^-39); rows with a peak >= 2^127 get ``s = -1``
    (bf16 rounding would turn values near fp32's maximum into Inf); every other row 0.
    Out-of-range exponents (NaN/Inf rows) give 0, so the non-finite values pass through.
    """
    up = SPLIT_PEAK_EXPONENT + 1 - peak_exponent
    up = select(up > MAX_SPLIT_SHIFT, 0, select(up > 0, up, 0))
    return select(peak_exponent > FP32_EXPONENT_BIAS, -1, up)


def float32_power_bits(exponent: Any) -> Any:
    """fp32 bit pattern (as int) of ``2^exponent`` for a normal exponent in [-126, 127]."""
    return (exponent + FP32_EXPONENT_BIAS) << FP32_MANTISSA_BITS
