"""Triton device helpers for base-3 packed trits: each packed byte is decoded as one unit.

A byte ``b = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4`` (digits ``d = T + 1``) is turned into
its five quotients ``q_i = floor(b / 3^i)`` with fp32 arithmetic only (no integer
division, no int->float conversion instruction), and digit ``i`` is then
``d_i = q_i - 3 q_{i+1}``. Cost: about 14 fp32 operations for the quotients plus 3 per
scaled weight, against ~40 mixed integer operations for trit-by-trit ``% 3`` / ``// 3``.

Shared by the linear kernels (``ternary/kernels/linear/triton.py``) and the direct
update (``ternary/kernels/update/triton.py``); it holds no kernel of its own.
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

# Byte whose five digits are all 1 (trit 0): the neutral value for masked loads.
ZERO_TRITS_BYTE = 121


@triton.jit
def byte_as_float(byte):
    """Exact fp32 value of integer tensor ``byte`` in [0, 2^23) via the 2^23 exponent trick."""
    bits = byte.to(tl.int32) | 0x4B000000
    return bits.to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def floor_third(q):
    """``floor(q / 3)`` for integer-valued fp32 ``q`` in [0, 2^20).

    ``(q - 1) / 3`` has fractional part -1/3, 0 or +1/3, so rounding it to the nearest
    integer (adding and removing 1.5 * 2^23) gives the floor of ``q / 3``.
    """
    v = q * 0.3333333432674408 - 0.3333333432674408
    return (v + 12582912.0) - 12582912.0


@triton.jit
def base3_quotients(byte):
    """The five quotients ``floor(byte / 3^i)``, i = 0..4, as fp32 tensors."""
    q0 = byte_as_float(byte)
    q1 = floor_third(q0)
    q2 = floor_third(q1)
    q3 = floor_third(q2)
    q4 = floor_third(q3)
    return q0, q1, q2, q3, q4


@triton.jit
def trit_of(q_lo, q_hi):
    """Trit ``d - 1`` of one digit position from two neighbouring quotients (fp32)."""
    return (q_lo - 3.0 * q_hi) - 1.0


@triton.jit
def exact_exp2(e):
    """Exact ``2^e`` as fp32 for an integer tensor ``e`` in [-149, 127] (subnormals included)."""
    e = e.to(tl.int32)
    normal = (e + 127) << 23
    subnormal = tl.full(e.shape, 1, tl.int32) << tl.maximum(e + 149, 0)
    bits = tl.where(e >= -126, normal, subnormal)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def group_scales(e_ptr, rows, byte_cols, row_mask, byte_mask, stride_en, BYTES_PER_GROUP: tl.constexpr):
    """Scale ``2^E`` of every byte of a ``[rows, byte_cols]`` tile (fp32, one load per byte)."""
    groups = byte_cols // BYTES_PER_GROUP
    mask = row_mask[:, None] & byte_mask[None, :]
    e = tl.load(e_ptr + rows[:, None] * stride_en + groups[None, :], mask=mask, other=0)
    return exact_exp2(e)


@triton.jit
def load_bytes(p_ptr, rows, byte_cols, row_mask, byte_mask, stride_pn):
    """Packed bytes of a ``[rows, byte_cols]`` tile as int32; padding reads as all-zero trits."""
    mask = row_mask[:, None] & byte_mask[None, :]
    byte = tl.load(p_ptr + rows[:, None] * stride_pn + byte_cols[None, :], mask=mask, other=121)
    return byte.to(tl.int32)
