"""The update rule as Triton device functions, shared by the update kernels (``triton.py`` and
``triton_wgmma_ws.py`` with its parts in ``triton_wgmma.py``; all call them on int32 / fp32 tensors
of any layout), and the digit-plane layout of ``x`` that they read."""

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import digit_planes


# Row tiles per group of the update's program order (see ``tile_of_program``). H100, bf16 hooks
# (benchmarks/results/h100/update_epilogue/update_group_sweep.log): 16384^2 M = 8192 15.9 ms with
# the old row-tiles-first order -> 14.3 ms with 8 (4: 14.8, 16: 14.4, 32: 14.8); M = 2048
# 5.80 -> 5.32 ms; 4096^2 within 4%.
GROUP_N = 8


@triton.jit
def step_trit(t, acc, vote, theta_t):
    """``reference.step_trits`` on int32 tensors: returns ``(trit, T_accum)``.

    With ``s = [acc >= theta] - [acc <= -theta]`` (never both: theta >= 1) the trit moves to
    ``clamp(t + s, -1, 1)``; a trit that moved resets its accumulator to 0, one held at its limit
    keeps ``s (theta - 1)``, and with ``s = 0`` the accumulator stays."""
    acc = tl.minimum(tl.maximum(acc + vote, -128), 127)
    s = (acc >= theta_t).to(tl.int32) - (acc <= -theta_t).to(tl.int32)
    t_new = tl.minimum(tl.maximum(t + s, -1), 1)
    acc = tl.where(s == 0, acc, tl.where(t_new != t, 0, s * (theta_t - 1)))
    return t_new, acc


@triton.jit
def step_exponent(e, acc, score, theta_e, e_min, e_max):
    """``reference.step_exponents`` on int32 tensors: returns ``(E, E_accum)``."""
    sign = (score > 0).to(tl.int32) - (score < 0).to(tl.int32)
    acc = tl.minimum(tl.maximum(acc - sign, -128), 127)
    up = acc >= theta_e
    down = acc <= -theta_e
    step_up = up & (e < e_max)
    step_down = down & (e > e_min)
    e = e + step_up.to(tl.int32) - step_down.to(tl.int32)
    acc = tl.where(step_up, acc - theta_e, acc)
    acc = tl.where(step_down, acc + theta_e, acc)
    acc = tl.where(up & ~step_up, theta_e - 1, acc)
    acc = tl.where(down & ~step_down, 1 - theta_e, acc)
    return e, acc


@triton.jit
def load_exponents(e_ptr, ea_ptr, offsets, mask):
    """``E`` and ``E_accum`` at ``offsets`` (where ``mask``) as int32."""
    e = tl.load(e_ptr + offsets, mask=mask, other=0).to(tl.int32)
    e_acc = tl.load(ea_ptr + offsets, mask=mask, other=0).to(tl.int32)
    return e, e_acc


@triton.jit
def store_stepped_exponents(new_e_ptr, new_ea_ptr, offsets, mask, e, e_acc, score, theta_e, e_min, e_max):
    """``e`` / ``e_acc`` (int32) stepped by the int32 group ``score`` (:func:`step_exponent`) and
    stored as int8 at ``offsets`` (where ``mask``) of the new tensors."""
    e, e_acc = step_exponent(e, e_acc, score, theta_e, e_min, e_max)
    tl.store(new_e_ptr + offsets, e.to(tl.int8), mask=mask)
    tl.store(new_ea_ptr + offsets, e_acc.to(tl.int8), mask=mask)


@triton.jit
def step_exponents_at(e_ptr, ea_ptr, new_e_ptr, new_ea_ptr, offsets, mask, score, theta_e, e_min, e_max):
    """``E`` / ``E_accum`` at ``offsets`` (where ``mask``) stepped by the int32 group ``score``
    and stored at the same offsets of the new tensors."""
    e, e_acc = load_exponents(e_ptr, ea_ptr, offsets, mask)
    store_stepped_exponents(new_e_ptr, new_ea_ptr, offsets, mask, e, e_acc, score, theta_e, e_min, e_max)


@triton.jit
def vote_digit(g, t_old, t_accum, col, K, theta_t):
    """Vote one digit position of the tile: ``(new digit T + 1, new T_accum, sign(g) * T_old)``."""
    sign = (g > 0).to(tl.int32) - (g < 0).to(tl.int32)
    t_new, t_accum = step_trit(t_old, t_accum.to(tl.int32), -sign, theta_t)
    digit = tl.where((col < K)[None, :], t_new + 1, 1)
    return digit, t_accum.to(tl.int8), sign * t_old


@triton.jit
def _trit_and_quotient(q):
    """``(q mod 3 - 1, floor(q / 3))`` for an int32 tensor ``q`` in [0, 255] (one multiply-shift)."""
    next_q = (q * 171) >> 9
    return q - 3 * next_q - 1, next_q


@triton.jit
def byte_trits(byte):
    """The five trits (int32, -1..1, digit positions 0..4) of packed bytes ``byte`` (int32, 0..242),
    by integer multiply-shifts: no float conversions."""
    t0, q = _trit_and_quotient(byte)
    t1, q = _trit_and_quotient(q)
    t2, q = _trit_and_quotient(q)
    t3, q = _trit_and_quotient(q)
    return t0, t1, t2, t3, q - 1


@triton.jit
def vote_bytes(g0, g1, g2, g3, g4, byte, a0, a1, a2, a3, a4, col, K, theta_t):
    """The trit rule on a tile of packed bytes ``[R, BB]`` (int32, 0..242) with gradient digit tiles
    ``g0..g4 [R, BB]`` and the ``T_accum`` digit tiles ``a0..a4``, whose byte columns start at input
    column ``col [BB]``: returns ``(new byte, new a0..a4 as int8, score)``, where ``score [R, BB]``
    is the byte's ``sum_d sign(g_d) * T_old_d`` for the exponent rule. Columns ``>= K`` keep trit 0."""
    t0, t1, t2, t3, t4 = byte_trits(byte)
    d0, a0, s0 = vote_digit(g0, t0, a0, col, K, theta_t)
    d1, a1, s1 = vote_digit(g1, t1, a1, col + 1, K, theta_t)
    d2, a2, s2 = vote_digit(g2, t2, a2, col + 2, K, theta_t)
    d3, a3, s3 = vote_digit(g3, t3, a3, col + 3, K, theta_t)
    d4, a4, s4 = vote_digit(g4, t4, a4, col + 4, K, theta_t)
    return d0 + 3 * d1 + 9 * d2 + 27 * d3 + 81 * d4, a0, a1, a2, a3, a4, s0 + s1 + s2 + s3 + s4


@triton.jit
def step_bias(bias, col_sum, bias_step):
    """The bias rule on int32 ``bias [R]`` from the fp32 column sums of ``grad_y`` ``col_sum [R]``:
    one fixed-point step against the sign of the sum, saturated to int32."""
    bias = bias.to(tl.int64)
    direction = (col_sum > 0).to(tl.int64) - (col_sum < 0).to(tl.int64)
    bias = tl.minimum(tl.maximum(bias - bias_step * direction, -2147483648), 2147483647)
    return bias.to(tl.int32)


@triton.jit
def tile_at(index, row_tiles, byte_blocks, GROUP_N: tl.constexpr):
    """``(pid_n, pid_b)`` of linear tile ``index``: tiles come in groups of ``GROUP_N`` row tiles,
    byte blocks outer within a group, so the tiles in flight together share both the ``grad_y``
    columns of a few row tiles and the ``x`` columns of a few byte blocks (both re-read from L2
    instead of DRAM)."""
    in_group = GROUP_N * byte_blocks
    first_n = (index // in_group) * GROUP_N
    size_n = tl.minimum(row_tiles - first_n, GROUP_N)
    return first_n + (index % in_group) % size_n, (index % in_group) // size_n


@triton.jit
def tile_of_program(row_tiles, byte_blocks, GROUP_N: tl.constexpr):
    """``(pid_n, pid_b)`` of this program on a 1-D grid of one tile per program (:func:`tile_at`)."""
    return tile_at(tl.program_id(0), row_tiles, byte_blocks, GROUP_N)


def hook_planes(x: torch.Tensor, block_m: int, block_b: int, blocks: int, dtype: torch.dtype) -> torch.Tensor:
    """The digit planes of ``x [M, K]`` as the update kernels read them: ``[Mp, blocks * 5 block_b]``
    in ``dtype``, rows zero-padded to a multiple of ``block_m`` (at least one block), each byte block's
    five planes one contiguous run per row (``digit_planes(..., blocked=True)``)."""
    rows = max(block_m, triton.cdiv(x.shape[0], block_m) * block_m)
    planes = digit_planes(x, rows, blocks * block_b, block_b, z_form=False, dtype=dtype, blocked=True)
    return planes.view(rows, -1)
