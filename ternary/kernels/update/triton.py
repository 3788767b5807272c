"""Triton direct update: the gradient tile is formed on chip and the whole rule runs in its epilogue.

One program owns a tile of ``BLOCK_N`` output rows by ``BLOCK_B`` packed bytes (``5 BLOCK_B``
input columns). It accumulates the five digit-position sub-tiles
``g_d [BLOCK_N, BLOCK_B] = grad_y[:, rows].T @ x[:, 5 j + d]`` over all M rows of the hooks
(tensor cores, fp32 accumulation; ``x`` is first regrouped into digit planes, a transient
copy of the hook's size, so that digits 0..3 form one ``K = 4 BLOCK_B`` operand; both hooks
are read through tensor descriptors, i.e. TMA on the GPU), then, without writing any gradient:

- votes ``-sign(g)`` step ``T_accum`` and the trits (``reference.step_trits``) and the
  new trits are repacked into the tile's bytes of ``T_packed``;
- ``sign(g) * T_old`` is summed per group. When a group lies inside one tile (``BLOCK_B``
  a multiple of ``G / 5``; true for G = 5, 10, 20, 40, 80, 160) the tile steps ``E`` and
  ``E_accum`` itself; otherwise the integer scores go through ``atomic_add`` into a small
  int32 ``[N, ceil(K/G)]`` buffer and a second kernel steps the exponents;
- the programs of the first byte block also sum ``grad_y`` over M and step the bias.

From ``WGMMA_UPDATE_MIN_ROWS`` bf16 / fp16 hook rows on sm_90 cards the same update runs as a
persistent, warp-specialised Gluon kernel with explicit ``wgmma`` tiles (``triton_wgmma_ws.py``),
whose rule runs beside the next tile's product, where it takes the layer; on layers of many tiles with
many hook rows, its wide-tile form (``triton_wgmma_wide.py``, ``triton_wgmma_wide.takes``).

Extra memory: the outputs, plus the int32 score buffer only for straddling groups. The
result equals ``reference.update`` bit for bit whenever the float sums are exact (e.g.
small-integer hooks); otherwise a sign may differ only where ``|g|`` is at rounding level.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ternary.kernels.linear.triton_base3 import deinterleave_digits, interleave_digits, split_digits
from ternary.kernels.layer_checks import check_layer_tensors
from ternary.kernels.linear.triton_launch import capability, sm_count, tma_rows
from ternary.kernels.linear.triton import gluon_runs
from ternary.kernels.registry import triton_interpreted
from ternary.kernels.update import UpdatedTensors, triton_wgmma, triton_wgmma_wide, triton_wgmma_ws
from ternary.kernels.update.triton_rule import (GROUP_N, hook_planes, step_bias, step_exponents_at,
                                                tile_of_program, vote_bytes)
from ternary.state.packing import queue_packed_check

_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# 16-bit hook rows from which the update goes to the wgmma kernel (triton_wgmma_ws) on sm_90. H100, bf16
# hooks: at 16384^2 M = 64 the earlier one-tile-per-program wgmma kernel took 2.6 ms against this
# module's 3.1 (benchmarks/results/h100/update_wgmma/t_accum_pairs.log) and the warp-specialised one
# 1.5 ms against that kernel's 2.2 (update_ws/ws_thresholds_small.log). Fewer rows are not measured
# and keep this kernel.
WGMMA_UPDATE_MIN_ROWS = 64


def _new_like(tensor: torch.Tensor) -> torch.Tensor:
    """Uninitialised output like ``tensor`` (tests replace this to poison every output)."""
    return torch.empty_like(tensor)


@triton.jit
def _vote_kernel(
    x_low_desc, x_high_desc, g_desc, p_ptr, ta_ptr, e_ptr, ea_ptr, bias_ptr,
    new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr, score_ptr,
    M, N, K, KB, NG,
    stride_pn, stride_tn, stride_en,
    theta_t, theta_e, e_min, e_max, bias_step,
    BYTES_PER_GROUP: tl.constexpr, GROUPS_IN_TILE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, GROUP_N: tl.constexpr,
):
    """One ``[BLOCK_N rows, BLOCK_B bytes]`` tile: gradient on chip, then the whole rule.

    The hooks are read through tensor descriptors (TMA on the GPU; out-of-range rows read as
    zero): ``grad_y [M, N]`` in ``[BLOCK_M, BLOCK_N]`` boxes, and the digit planes of ``x``
    (``[Mp, blocks * 5 * BLOCK_B]``, zero-padded) in ``[BLOCK_M, 4 BLOCK_B]`` boxes for digits
    0..3 of a byte block and ``[BLOCK_M, BLOCK_B]`` boxes for digit 4.
    """
    pid_n, pid_b = tile_of_program(tl.cdiv(N, BLOCK_N), tl.cdiv(KB, BLOCK_B), GROUP_N)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    jb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    n_mask = rn < N
    b_mask = jb < KB
    acc_low = tl.zeros((BLOCK_N, 4 * BLOCK_B), dtype=tl.float32)
    acc_high = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
    column = pid_b * 5 * BLOCK_B
    for step in range(0, (M + BLOCK_M - 1) // BLOCK_M):
        g_t = g_desc.load([step * BLOCK_M, pid_n * BLOCK_N]).T.to(DOT_DTYPE)
        x_low = x_low_desc.load([step * BLOCK_M, column])
        x_high = x_high_desc.load([step * BLOCK_M, column + 4 * BLOCK_B])
        acc_low = tl.dot(g_t, x_low, acc_low, input_precision=PRECISION)
        acc_high = tl.dot(g_t, x_high, acc_high, input_precision=PRECISION)
    g0, g1, g2, g3 = split_digits(acc_low, BLOCK_B)

    # Epilogue: old trits, votes, T_accum (read and written as contiguous 5-column runs), new bytes.
    tile_mask = n_mask[:, None] & b_mask[None, :]
    rows = rn.to(tl.int64)  # N * K may pass 2^31 (T_accum)
    byte = tl.load(p_ptr + rows[:, None] * stride_pn + jb[None, :], mask=tile_mask, other=121).to(tl.int32)
    lane = tl.arange(0, 8)
    cols = 5 * jb[None, :, None] + lane[None, None, :]
    run_mask = n_mask[:, None, None] & (lane < 5)[None, None, :] & (cols < K)
    runs = rows[:, None, None] * stride_tn + cols
    a0, a1, a2, a3, a4 = deinterleave_digits(tl.load(ta_ptr + runs, mask=run_mask, other=0))
    new_byte, a0, a1, a2, a3, a4, score = vote_bytes(g0, g1, g2, g3, acc_high, byte, a0, a1, a2, a3, a4, 5 * jb,
                                                     K, theta_t)
    tl.store(new_ta_ptr + runs, interleave_digits(a0, a1, a2, a3, a4), mask=run_mask)
    tl.store(new_p_ptr + rows[:, None] * stride_pn + jb[None, :], new_byte.to(tl.uint8), mask=tile_mask)

    # Group scores: steps E here when groups lie inside the tile, else hands them on.
    if GROUPS_IN_TILE:
        GROUPS: tl.constexpr = BLOCK_B // BYTES_PER_GROUP
        group_score = tl.sum(tl.reshape(score, (BLOCK_N, GROUPS, BYTES_PER_GROUP)), axis=2)
        groups = pid_b * GROUPS + tl.arange(0, GROUPS)
        g_mask = n_mask[:, None] & (groups < NG)[None, :]
        step_exponents_at(e_ptr, ea_ptr, new_e_ptr, new_ea_ptr, rows[:, None] * stride_en + groups[None, :], g_mask,
                          group_score, theta_e, e_min, e_max)
    else:
        groups = jb // BYTES_PER_GROUP
        tl.atomic_add(score_ptr + rn[:, None] * NG + groups[None, :], score, mask=tile_mask)

    if HAS_BIAS:
        if pid_b == 0:
            partial = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for step in range(0, (M + BLOCK_M - 1) // BLOCK_M):
                partial += g_desc.load([step * BLOCK_M, pid_n * BLOCK_N]).to(tl.float32)
            col_sum = tl.sum(partial, axis=0)  # reduced once, outside the loop
            bias = tl.load(bias_ptr + rn, mask=n_mask, other=0)
            tl.store(new_bias_ptr + rn, step_bias(bias, col_sum, bias_step), mask=n_mask)


@triton.jit
def _exponent_kernel(score_ptr, e_ptr, ea_ptr, new_e_ptr, new_ea_ptr, total, theta_e, e_min, e_max,
                     BLOCK: tl.constexpr):
    """Step ``E`` / ``E_accum`` from the reduced int32 group scores (contiguous ``[N, G]``)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    score = tl.load(score_ptr + i, mask=mask, other=0)
    step_exponents_at(e_ptr, ea_ptr, new_e_ptr, new_ea_ptr, i, mask, score, theta_e, e_min, e_max)


def wgmma_runs(x: torch.Tensor) -> bool:
    """Whether the ``wgmma`` update can run on ``x``'s card: a compiled Gluon card of the Hopper
    generation (``wgmma`` is sm_90 only; newer cards keep this module's kernel)."""
    return gluon_runs(x) and capability(x.device)[0] == 9


def _check(T_packed, E, E_accum, T_accum, bias, x, grad_y, in_features, group_size) -> None:
    """One-line errors naming the tensor at fault."""
    check_layer_tensors("triton update", in_features=in_features, group_size=group_size, contiguous=True,
                        T_packed=T_packed, E=E, E_accum=E_accum, T_accum=T_accum, bias=bias)
    n, k = T_packed.shape[0], in_features
    for name, tensor, width in (("x", x, k), ("grad_y", grad_y, n)):
        if tensor.dim() != 2 or tensor.shape[1] != width or tensor.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"triton update: hook {name} must be a float [M, {width}] tensor, "
                             f"got {tensor.dtype} {list(tensor.shape)}")
    if x.shape[0] != grad_y.shape[0]:
        raise ValueError(f"triton update: hooks x and grad_y have {x.shape[0]} and {grad_y.shape[0]} rows")
    devices = {t.device for t in (T_packed, E, E_accum, T_accum, x, grad_y)}
    if len(devices) != 1:
        raise ValueError(f"triton update: tensors on different devices {sorted(map(str, devices))}")


def _tiles(m: int, group_size: int, fp32_operands: bool) -> tuple[int, int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_B, num_warps, num_stages)``.

    Hook rows per step matter most at training M (H100, bf16 hooks, 16384^2): BLOCK_M 64 ->
    128 took M = 8192 from 21.4 to 16.6 ms and M = 2048 from 7.0 to 5.6 ms (``benchmarks/NOTES.md``).
    Since the hooks come by TMA, three stages do as well as four (16384^2 M = 8192 13.4 against
    13.6 ms, 4096 x 14336 3.39 against 3.52 ms; five do not fit shared memory, and 128 x 64-row or
    4-warp tiles are slower: ``benchmarks/results/h100/update_tma/update_tma_tiles.log``). Up to 256
    rows 64 rows per step do as well or better (4096^2 M = 16 / 128: 375 / 373 us against 509 / 503 us), and the 4-warp
    32-row tile these rows had before took 1.5-2.4x as long at M = 16-512, bf16 hooks
    (``benchmarks/results/h100/update_staged/update_small_m.log``). fp32 operands are twice as
    wide: 128 rows do not fit shared memory even with 2 stages, so they keep 64 rows and 3
    stages at every M; at M = 16-512 that is 1.2-2.1x faster than the old 4-warp tile
    (``update_fp32_small_m.log`` there).
    """
    if triton_interpreted():
        return 16, 16, 16, 4, 3
    if fp32_operands:
        return 64, 64, 32, 8, 3
    return (64, 64, 32, 8, 4) if m <= 256 else (128, 64, 32, 8, 3)


def update(
    T_packed: torch.Tensor,
    E: torch.Tensor,
    E_accum: torch.Tensor,
    T_accum: torch.Tensor,
    bias: torch.Tensor | None,
    x: torch.Tensor,
    grad_y: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
    theta_t: int,
    theta_e: int,
    e_min: int,
    e_max: int,
    bias_step: int,
    validated: bool = False,
) -> UpdatedTensors:
    """One vote update from hooks ``x [M, K]`` and ``grad_y [M, N]``; inputs are not written.
    ``validated``: the caller has checked ``T_packed`` (see ``ternary.kernels.update``). Otherwise
    the check is queued before the kernels and its result read after them, so the card does not
    wait for the host between them (the host waits for the kernels instead); a corrupt byte still
    raises, after the argument checks, and the outputs computed from it are dropped."""
    _check(T_packed, E, E_accum, T_accum, bias, x, grad_y, in_features, group_size)
    if theta_t < 1:
        raise ValueError(f"triton update: theta_t={theta_t} must be at least 1")
    raise_if_corrupt = (lambda: None) if validated else queue_packed_check(T_packed)
    new = _queue_update(T_packed, E, E_accum, T_accum, bias, x, grad_y, in_features=in_features,
                        group_size=group_size, theta_t=theta_t, theta_e=theta_e, e_min=e_min, e_max=e_max,
                        bias_step=bias_step)
    raise_if_corrupt()
    return new


def _queue_update(T_packed, E, E_accum, T_accum, bias, x, grad_y, *, in_features: int, group_size: int,
                  theta_t: int, theta_e: int, e_min: int, e_max: int, bias_step: int) -> UpdatedTensors:
    """Queue the kernels of :func:`update` on checked arguments and return the new tensors."""
    n, kb = T_packed.shape
    groups = E.shape[1]
    m = x.shape[0]
    new = UpdatedTensors(
        _new_like(T_packed), _new_like(E), _new_like(E_accum), _new_like(T_accum),
        None if bias is None else _new_like(bias),
    )
    if n == 0:
        return new
    if m >= WGMMA_UPDATE_MIN_ROWS and wgmma_runs(x) and triton_wgmma.takes(x, grad_y, T_accum, group_size):
        wide = triton_wgmma_wide.takes(n, kb, m, sm_count(x.device))
        return (triton_wgmma_wide.wide_update if wide else triton_wgmma_ws.ws_update)(
            T_packed, E, E_accum, T_accum, bias, x, grad_y, new, in_features=in_features, group_size=group_size,
            theta_t=theta_t, theta_e=theta_e, e_min=e_min, e_max=e_max, bias_step=bias_step)
    use_fp32 = torch.float32 in (x.dtype, grad_y.dtype) or triton_interpreted() or x.dtype != grad_y.dtype
    block_m, block_n, block_b, warps, stages = _tiles(m, group_size, use_fp32)
    bytes_per_group = group_size // 5
    groups_in_tile = block_b % bytes_per_group == 0
    score = E if groups_in_tile else torch.zeros((n, groups), dtype=torch.int32, device=E.device)
    dot_dtype = tl.float32 if use_fp32 else (tl.bfloat16 if x.dtype == torch.bfloat16 else tl.float16)
    blocks = triton.cdiv(kb, block_b)
    planes = hook_planes(x, block_m, block_b, blocks, torch.float32 if use_fp32 else x.dtype)
    _vote_kernel[(triton.cdiv(n, block_n) * blocks,)](
        TensorDescriptor.from_tensor(planes, [block_m, 4 * block_b]),
        TensorDescriptor.from_tensor(planes, [block_m, block_b]),
        TensorDescriptor.from_tensor(tma_rows(grad_y), [block_m, block_n]),
        T_packed, T_accum, E, E_accum, bias if bias is not None else E,
        new.T_packed, new.T_accum, new.E, new.E_accum, new.bias if bias is not None else E, score,
        m, n, in_features, kb, groups,
        T_packed.stride(0), T_accum.stride(0), E.stride(0), theta_t, theta_e, e_min, e_max, bias_step,
        BYTES_PER_GROUP=bytes_per_group, GROUPS_IN_TILE=groups_in_tile, HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        DOT_DTYPE=dot_dtype, PRECISION="tf32x3", GROUP_N=GROUP_N,
        num_warps=warps, num_stages=stages,
    )
    if not groups_in_tile:
        block = 32 if triton_interpreted() else 1024
        _exponent_kernel[(triton.cdiv(n * groups, block),)](
            score, E, E_accum, new.E, new.E_accum, n * groups, theta_e, e_min, e_max, BLOCK=block,
        )
    return new
