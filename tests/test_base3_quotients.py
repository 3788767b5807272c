"""The base-3 decodes of ``triton_base3``, every byte: the fp32 one (``shifted_quotients``,
``trit_of``) and the integer one of a single digit per element (``digit_value``).

Each quotient step is one FMA that rounds at the fp32 spacing of 1.5 * 2^23 and one
subtraction. Compiled on a GPU the FMA is fused (one rounding); the interpreter computes it
as a separate multiply and add (two roundings). The kernel test runs whichever this machine
has; the exact-arithmetic test checks the fused rounding on the CPU as well, so both are
covered in CI.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU, skips without Triton)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ternary.kernels.linear.triton_base3 import (  # noqa: E402
    QUOTIENT_MULTIPLIERS,
    QUOTIENT_SHIFT,
    digit_value,
    shifted_quotients,
    trit_of,
)

THIRD = float(np.float32(1 / 3))
MAGIC = 12582912.0


@triton.jit
def _decode_every_byte(out_ptr):
    """``out [10, 256]``: the five shifted quotients, then the five trits, of bytes 0..255."""
    byte = tl.arange(0, 256)
    r0, r1, r2, r3, r4 = shifted_quotients(byte)
    tl.store(out_ptr + byte, r0)
    tl.store(out_ptr + 256 + byte, r1)
    tl.store(out_ptr + 2 * 256 + byte, r2)
    tl.store(out_ptr + 3 * 256 + byte, r3)
    tl.store(out_ptr + 4 * 256 + byte, r4)
    tl.store(out_ptr + 5 * 256 + byte, trit_of(r0, r1))
    tl.store(out_ptr + 6 * 256 + byte, trit_of(r1, r2))
    tl.store(out_ptr + 7 * 256 + byte, trit_of(r2, r3))
    tl.store(out_ptr + 8 * 256 + byte, trit_of(r3, r4))
    tl.store(out_ptr + 9 * 256 + byte, r4)


def _expected() -> torch.Tensor:
    """``[10, 256]`` by integer arithmetic: ``floor(b / 3^i) - 1``, then ``(b // 3^i) % 3 - 1``
    (the top digit of a corrupt byte is 3, so its trit is 2, as the kernels assume)."""
    b = torch.arange(256)
    quotients = [b // 3**i for i in range(5)]
    trits = [q % 3 - 1 for q in quotients[:4]] + [quotients[4] - 1]
    return torch.stack([q - 1 for q in quotients] + trits).to(torch.float32)


def test_kernel_decodes_every_byte_exactly():
    out = torch.empty((10, 256), dtype=torch.float32, device=DEVICE)
    _decode_every_byte[(1,)](out)
    assert torch.equal(out.cpu(), _expected())


def _fp32_round(value: Fraction) -> Fraction:
    """``value`` rounded to the nearest fp32 (ties to even), for |value| in [2^-126, 2^128)."""
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    if abs(value) < Fraction(2) ** exponent:
        exponent -= 1
    ulp = Fraction(2) ** (exponent - 23)
    return round(value / ulp) * ulp


def test_quotient_step_is_exact_fused_and_unfused():
    """The step ``fma(r, fp32(1/3), 1.5 * 2^23) - (1.5 * 2^23 + 1)`` from ``r = q - 1`` gives
    ``floor(q / 3) - 1`` for every q reached from a byte, with the product rounded once
    together with the sum (GPU) or separately first (interpreter)."""
    third, magic = Fraction(THIRD), Fraction(MAGIC)
    for q in range(256):
        r = Fraction(q - 1)
        fused = _fp32_round(r * third + magic) - (magic + 1)
        product = r * third
        unfused = _fp32_round((_fp32_round(product) if product else product) + magic) - (magic + 1)
        assert fused == unfused == q // 3 - 1, q


@triton.jit
def _digit_of_every_byte(out_ptr):
    """``out [256, 8]``: digit ``min(d, 4)`` of byte ``b`` at ``[b, d]``, one digit per element."""
    byte = tl.arange(0, 256)[:, None]
    digit = tl.minimum(tl.arange(0, 8), 4)[None, :]
    tl.store(out_ptr + byte * 8 + tl.arange(0, 8)[None, :], digit_value(byte, digit))


def test_integer_digit_decode_of_every_byte_and_position():
    """``digit_value`` equals ``(b // 3^d) % 3`` for every byte and position (corrupt bytes
    included; the kernels turn those into NaN separately)."""
    out = torch.empty((256, 8), dtype=torch.int32, device=DEVICE)
    _digit_of_every_byte[(1,)](out)
    b = torch.arange(256)[:, None]
    d = torch.arange(8).clamp(max=4)[None, :]
    want = (b // 3**d) % 3
    assert torch.equal(out.cpu().long(), want)


def test_quotient_multipliers_divide_every_byte():
    """``(q * M_d) >> 15 == q // 3^d`` for every q in [0, 255] and d = 1..5: the multipliers are
    ``ceil(2^15 / 3^d)`` and their excess ``M_d 3^d - 2^15`` times 255 stays below ``2^15``.
    ``M_1`` also gives the next quotient from a quotient (``digit_value``'s last step)."""
    for d, multiplier in enumerate(QUOTIENT_MULTIPLIERS, start=1):
        assert multiplier == -(-(2**QUOTIENT_SHIFT) // 3**d)
        for q in range(256):
            assert (q * multiplier) >> QUOTIENT_SHIFT == q // 3**d, (q, d)
