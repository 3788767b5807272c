"""Triton backend of the ternary linear op: reads ``T_packed`` and ``E`` directly.

Three paths, picked by the number of activation rows ``M``:

- ``M == 1`` (forward only): a CUDA-core GEMV that never forms a weight.
  With quotients ``q_i = floor(b / 3^i)`` of a byte ``b``, the byte's dot product is
  ``sum_i d_i x_i - sum_i x_i = sum_i q_i z_i - sum_i x_i`` where ``z_0 = x_0`` and
  ``z_i = x_i - 3 x_{i-1}``; ``z`` depends on the activations only, so each byte costs its
  quotients plus one FMA per digit and row.
- ``M < TWO_STEP_MIN_ROWS``: a fused tensor-core kernel. Each ``[BLOCK_N, BLOCK_B]`` tile
  of packed bytes is decoded once into five scaled weight tiles, one per digit position
  (columns ``5j + d``), each multiplied with the matching strided activation columns.
  Split-K (forward) / split-N (grad-x) keeps all SMs busy at small M; the partial sums
  go to an fp32 workspace ``[splits, M, C]`` that one finishing kernel reduces.
- ``M >= TWO_STEP_MIN_ROWS``: decode the layer into a transient dense buffer in the
  activation dtype (``N*K*2`` bytes for bf16, freed after the call), then cuBLAS.

A corrupt byte (> 242) is never decoded silently: it turns the outputs it feeds into
NaN, which the non-finite guards of the training loop report.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import (
    base3_quotients,
    exact_exp2,
    group_scales,
    load_bytes,
    trit_of,
)
from ternary.kernels.registry import triton_interpreted

GEMV_MAX_ROWS = 1
TWO_STEP_MIN_ROWS = 512
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _scaled_weight(q_lo, q_hi, scale, bad):
    """Weight ``T * 2^E`` of one digit position; NaN where the byte was corrupt."""
    return tl.where(bad, float("nan"), trit_of(q_lo, q_hi) * scale)


@triton.jit
def _prepare_kernel(x_ptr, out_ptr, M, K, stride_xm, stride_xk, stride_oi, stride_om,
                    Z_FORM: tl.constexpr, BLOCK_B: tl.constexpr):
    """Activations rearranged by digit position, zero-padded: ``out [planes, Mp, KBp]``.

    ``Z_FORM=False``: plane ``d`` holds ``x[m, 5 j + d]`` (tensor-core paths).
    ``Z_FORM=True``: fp32 planes ``z_0 = x_0``, ``z_i = x_i - 3 x_{i-1}`` and ``z_5 = -sum_i x_i``
    of each byte's five activations (the CUDA-core GEMV).
    """
    m = tl.program_id(1)
    jb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row = x_ptr + m * stride_xm
    ok = m < M
    x0 = tl.load(row + (jb * 5) * stride_xk, mask=ok & (jb * 5 < K), other=0.0)
    x1 = tl.load(row + (jb * 5 + 1) * stride_xk, mask=ok & (jb * 5 + 1 < K), other=0.0)
    x2 = tl.load(row + (jb * 5 + 2) * stride_xk, mask=ok & (jb * 5 + 2 < K), other=0.0)
    x3 = tl.load(row + (jb * 5 + 3) * stride_xk, mask=ok & (jb * 5 + 3 < K), other=0.0)
    x4 = tl.load(row + (jb * 5 + 4) * stride_xk, mask=ok & (jb * 5 + 4 < K), other=0.0)
    out = out_ptr + m * stride_om + jb
    dtype = out_ptr.dtype.element_ty
    if Z_FORM:
        x0 = x0.to(tl.float32)
        x1 = x1.to(tl.float32)
        x2 = x2.to(tl.float32)
        x3 = x3.to(tl.float32)
        x4 = x4.to(tl.float32)
        tl.store(out, x0)
        tl.store(out + stride_oi, x1 - 3.0 * x0)
        tl.store(out + 2 * stride_oi, x2 - 3.0 * x1)
        tl.store(out + 3 * stride_oi, x3 - 3.0 * x2)
        tl.store(out + 4 * stride_oi, x4 - 3.0 * x3)
        tl.store(out + 5 * stride_oi, -((x0 + x1) + (x2 + x3) + x4))
    else:
        tl.store(out, x0.to(dtype))
        tl.store(out + stride_oi, x1.to(dtype))
        tl.store(out + 2 * stride_oi, x2.to(dtype))
        tl.store(out + 3 * stride_oi, x3.to(dtype))
        tl.store(out + 4 * stride_oi, x4.to(dtype))


@triton.jit
def _split_range(KBp, BLOCK_B: tl.constexpr, SPLITS: tl.constexpr):
    """First block and block count of this program's share of ``KBp / BLOCK_B`` blocks."""
    blocks = KBp // BLOCK_B
    per_split = (blocks + SPLITS - 1) // SPLITS
    first = tl.program_id(2) * per_split
    return first, tl.maximum(tl.minimum(per_split, blocks - first), 0)


@triton.jit
def _tile_scales(e_ptr, e_rows, block, NG, GROUPS: tl.constexpr):
    """``2^E`` of the ``GROUPS`` whole groups of byte block ``block``: ``[BLOCK_N, GROUPS]`` fp32."""
    groups = tl.minimum(block * GROUPS + tl.arange(0, GROUPS), NG - 1)
    return exact_exp2(tl.load(e_rows + groups[None, :]))


@triton.jit
def _byte_scales(e_ptr, e_rows, jb, NG, BYTES_PER_GROUP: tl.constexpr):
    """``2^E`` of every byte of a tile (groups not aligned to the block): ``[BLOCK_N, BLOCK_B]``."""
    groups = tl.minimum(jb // BYTES_PER_GROUP, NG - 1)
    return exact_exp2(tl.load(e_rows + groups[None, :]))


@triton.jit
def _gemv_kernel(
    z_ptr, p_ptr, e_ptr, out_ptr,
    N, KB, KBp, NG,
    stride_zi, stride_pn, stride_en, stride_os,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, SPLIT_K: tl.constexpr,
):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s`` of the bytes (one activation row).

    Rows past the end are clamped (their results are not stored); bytes past the end are
    masked to all-zero trits, and the padded activation planes are zero there anyway.
    Sums stay per lane in a ``[BLOCK_N, BLOCK_B]`` accumulator until the end.
    """
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    GROUPED: tl.constexpr = BLOCK_B % BYTES_PER_GROUP == 0
    GROUPS: tl.constexpr = BLOCK_B // BYTES_PER_GROUP
    acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        jb = (first + step) * BLOCK_B + tl.arange(0, BLOCK_B)
        byte = tl.load(rows_p + jb[None, :], mask=(jb < KB)[None, :], other=121).to(tl.int32)
        worst = tl.maximum(worst, byte)
        if GROUPED:
            scale = _expand_groups(_tile_scales(e_ptr, rows_e, first + step, NG, GROUPS), BLOCK_N, GROUPS,
                                   BYTES_PER_GROUP)
        else:
            scale = _byte_scales(e_ptr, rows_e, jb, NG, BYTES_PER_GROUP)
        q0, q1, q2, q3, q4 = base3_quotients(byte)
        z = z_ptr + jb
        part = q0 * tl.load(z)[None, :] + tl.load(z + 5 * stride_zi)[None, :]
        part += q1 * tl.load(z + stride_zi)[None, :]
        part += q2 * tl.load(z + 2 * stride_zi)[None, :]
        part += q3 * tl.load(z + 3 * stride_zi)[None, :]
        part += q4 * tl.load(z + 4 * stride_zi)[None, :]
        acc += part * scale
    total = tl.where(tl.max(worst, axis=1) > 242, float("nan"), tl.sum(acc, axis=1))
    tl.store(out_ptr + tl.program_id(2) * stride_os + rn, total, mask=rn < N)


@triton.jit
def _scaled_digits(byte, scale):
    """The five weight tiles ``T * 2^E`` (digit positions 0..4) of a tile of bytes."""
    q0, q1, q2, q3, q4 = base3_quotients(byte)
    return (trit_of(q0, q1) * scale, trit_of(q1, q2) * scale, trit_of(q2, q3) * scale,
            trit_of(q3, q4) * scale, trit_of(q4, 0.0) * scale)


@triton.jit
def _expand_groups(scale, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr, BYTES_PER_GROUP: tl.constexpr):
    """``[BLOCK_N, GROUPS]`` group scales repeated over the bytes of each group."""
    wide = tl.broadcast_to(scale[:, :, None], (BLOCK_N, GROUPS, BYTES_PER_GROUP))
    return tl.reshape(wide, (BLOCK_N, GROUPS * BYTES_PER_GROUP))


@triton.jit
def _forward_kernel(
    x_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, KBp, NG,
    stride_xd, stride_xm, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_K: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Partial ``out[s, m, n] = sum_k x[m, k] W[n, k]`` from digit-major padded activations."""
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    first, count = _split_range(KBp, BLOCK_B, SPLIT_K)
    GROUPED: tl.constexpr = BLOCK_B % BYTES_PER_GROUP == 0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        block = first + step
        jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
        byte = tl.load(rows_p + tl.minimum(jb, KB - 1)[None, :]).to(tl.int32)
        worst = tl.maximum(worst, byte)
        if GROUPED:
            scale = _expand_groups(_tile_scales(e_ptr, rows_e, block, NG, BLOCK_B // BYTES_PER_GROUP),
                                   BLOCK_N, BLOCK_B // BYTES_PER_GROUP, BYTES_PER_GROUP)
        else:
            scale = _byte_scales(e_ptr, rows_e, jb, NG, BYTES_PER_GROUP)
        w0, w1, w2, w3, w4 = _scaled_digits(byte, scale)
        x_cols = x_rows + jb[None, :]
        acc = tl.dot(tl.load(x_cols), tl.trans(w0.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + stride_xd), tl.trans(w1.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 2 * stride_xd), tl.trans(w2.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 3 * stride_xd), tl.trans(w3.to(DOT_DTYPE)), acc, input_precision=PRECISION)
        acc = tl.dot(tl.load(x_cols + 4 * stride_xd), tl.trans(w4.to(DOT_DTYPE)), acc, input_precision=PRECISION)
    acc = tl.where((tl.max(worst, axis=1) > 242)[None, :], float("nan"), acc)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc, mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _grad_x_kernel(
    g_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, NG,
    stride_gm, stride_gn, stride_pn, stride_en, stride_os, stride_od, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_N: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Partial ``out[s, d, m, j] = sum_n grad_y[m, n] W[n, 5 j + d]`` over split ``s`` of the rows of W.

    The output is digit-major and padded (``[S, 5, Mp, KBp]``); the finishing kernel
    gathers it back to ``[M, K]``.
    """
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    jb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.minimum(jb, KB - 1)
    GROUPED: tl.constexpr = BLOCK_B % BYTES_PER_GROUP == 0
    first, count = _split_range(N + BLOCK_N - 1, BLOCK_N, SPLIT_N)
    acc0 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    acc4 = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    worst = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.int32)
    for step in range(0, count):
        rn = (first + step) * BLOCK_N + tl.arange(0, BLOCK_N)
        g = tl.load(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                    mask=(rm < M)[:, None] & (rn < N)[None, :], other=0.0).to(DOT_DTYPE)
        rows = tl.minimum(rn, N - 1)[:, None]
        byte = tl.load(p_ptr + rows * stride_pn + cols[None, :]).to(tl.int32)
        worst = tl.maximum(worst, byte)
        if GROUPED:
            scale = _expand_groups(
                _tile_scales(e_ptr, e_ptr + rows * stride_en, tl.program_id(0), NG, BLOCK_B // BYTES_PER_GROUP),
                BLOCK_N, BLOCK_B // BYTES_PER_GROUP, BYTES_PER_GROUP)
        else:
            scale = _byte_scales(e_ptr, e_ptr + rows * stride_en, jb, NG, BYTES_PER_GROUP)
        w0, w1, w2, w3, w4 = _scaled_digits(byte, scale)
        acc0 = tl.dot(g, w0.to(DOT_DTYPE), acc0, input_precision=PRECISION)
        acc1 = tl.dot(g, w1.to(DOT_DTYPE), acc1, input_precision=PRECISION)
        acc2 = tl.dot(g, w2.to(DOT_DTYPE), acc2, input_precision=PRECISION)
        acc3 = tl.dot(g, w3.to(DOT_DTYPE), acc3, input_precision=PRECISION)
        acc4 = tl.dot(g, w4.to(DOT_DTYPE), acc4, input_precision=PRECISION)
    poison = tl.where(tl.max(worst, axis=0) > 242, float("nan"), 0.0)[None, :]
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + jb[None, :]
    tl.store(out, acc0 + poison)
    tl.store(out + stride_od, acc1 + poison)
    tl.store(out + 2 * stride_od, acc2 + poison)
    tl.store(out + 3 * stride_od, acc3 + poison)
    tl.store(out + 4 * stride_od, acc4 + poison)


@triton.jit
def _store_digit(row_ptrs, row_mask, jb, DIGIT: tl.constexpr, K, value):
    """Store ``value [R, BB]`` to columns ``5 jb + DIGIT`` (< K) of the rows ``row_ptrs [R, 1]``."""
    col = jb * 5 + DIGIT
    tl.store(row_ptrs + col[None, :], value, mask=row_mask[:, None] & (col < K)[None, :])


@triton.jit
def _finish_kernel(ws_ptr, bias_ptr, out_ptr, M, C, stride_ws, stride_wd, stride_wm, stride_om, bias_scale,
                   SPLITS: tl.constexpr, DIGITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """``out[m, c] = sum_s ws[s, c % DIGITS, m, c // DIGITS] (+ bias[c] * bias_scale)`` in the output dtype."""
    m = tl.program_id(1)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = c < C
    source = ws_ptr + (c % DIGITS) * stride_wd + m * stride_wm + c // DIGITS
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLITS):
        total += tl.load(source + s * stride_ws, mask=mask, other=0.0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + c, mask=mask, other=0).to(tl.float32) * bias_scale
    tl.store(out_ptr + m * stride_om + c, total.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dequantize_kernel(p_ptr, e_ptr, w_ptr, N, K, KB, stride_pn, stride_en, stride_wn,
                       BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """Dense ``w [N, K] = T * 2^E`` in ``w``'s dtype (NaN for corrupt bytes)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    jb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    n_mask = rn < N
    b_mask = jb < KB
    byte = load_bytes(p_ptr, rn, jb, n_mask, b_mask, stride_pn)
    bad = byte > 242
    scale = group_scales(e_ptr, rn, jb, n_mask, b_mask, stride_en, BYTES_PER_GROUP)
    q0, q1, q2, q3, q4 = base3_quotients(byte)
    dtype = w_ptr.dtype.element_ty
    rows = w_ptr + rn[:, None] * stride_wn
    _store_digit(rows, n_mask, jb, 0, K, _scaled_weight(q0, q1, scale, bad).to(dtype))
    _store_digit(rows, n_mask, jb, 1, K, _scaled_weight(q1, q2, scale, bad).to(dtype))
    _store_digit(rows, n_mask, jb, 2, K, _scaled_weight(q2, q3, scale, bad).to(dtype))
    _store_digit(rows, n_mask, jb, 3, K, _scaled_weight(q3, q4, scale, bad).to(dtype))
    _store_digit(rows, n_mask, jb, 4, K, _scaled_weight(q4, 0.0, scale, bad).to(dtype))


# --------------------------------------------------------------------------- launchers


def _check(name: str, a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, in_features: int,
           group_size: int, width: int, width_name: str) -> None:
    """Raise a one-line error naming the tensor at fault."""
    if group_size <= 0 or group_size % 5:
        raise ValueError(f"triton {name}: group_size={group_size} must be a positive multiple of 5")
    if a.dim() != 2 or a.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"triton {name}: activations must be a 2-D float tensor, got {a.dtype} {list(a.shape)}")
    if a.shape[1] != width:
        raise ValueError(f"triton {name}: activations have {a.shape[1]} columns, expected {width_name}={width}")
    if T_packed.dtype != torch.uint8 or T_packed.dim() != 2 or T_packed.shape[1] != -(-in_features // 5):
        raise ValueError(f"triton {name}: T_packed must be uint8 [N, {-(-in_features // 5)}], got "
                         f"{T_packed.dtype} {list(T_packed.shape)}")
    groups = -(-in_features // group_size)
    if E.dtype != torch.int8 or list(E.shape) != [T_packed.shape[0], groups]:
        raise ValueError(f"triton {name}: E must be int8 [{T_packed.shape[0]}, {groups}], got {E.dtype} {list(E.shape)}")
    if not (a.device == T_packed.device == E.device):
        raise ValueError(f"triton {name}: tensors on different devices ({a.device}, {T_packed.device}, {E.device})")


def _dot_config(dtype: torch.dtype) -> tuple[tl.dtype, torch.dtype, str]:
    """Tensor-core operand dtype (Triton and torch) and fp32 precision mode for activations of ``dtype``."""
    if dtype == torch.bfloat16 and not triton_interpreted():
        return tl.bfloat16, torch.bfloat16, "tf32x3"
    return tl.float32, torch.float32, "tf32x3"


def _splits(tiles: int, blocks: int, device: torch.device) -> int:
    """How many reduction splits fill the card: about two programs per SM, at least 4 blocks each."""
    if triton_interpreted():
        return min(2, blocks)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = max(1, (2 * sms) // max(tiles, 1))
    return max(1, min(wanted, blocks // 4, 16))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _prepare(x: torch.Tensor, rows: int, kb_padded: int, block_b: int, *, z_form: bool,
             dtype: torch.dtype) -> torch.Tensor:
    """Digit-major padded activation planes ``[5 or 6, rows, kb_padded]`` (see ``_prepare_kernel``)."""
    planes = torch.empty((6 if z_form else 5, rows, kb_padded), dtype=dtype, device=x.device)
    _prepare_kernel[(kb_padded // block_b, rows)](
        x, planes, x.shape[0], x.shape[1], x.stride(0), x.stride(1), planes.stride(0), planes.stride(1),
        Z_FORM=z_form, BLOCK_B=block_b,
    )
    return planes


def _finish(ws: torch.Tensor, m: int, c: int, digits: int, bias: torch.Tensor | None, bias_frac_bits: int,
            dtype: torch.dtype) -> torch.Tensor:
    """Reduce the split workspace (``[S, M, C]``, or ``[S, 5, Mp, KBp]`` with ``digits=5``) to ``[m, c]``."""
    out = torch.empty((m, c), dtype=dtype, device=ws.device)
    block = 256 if not triton_interpreted() else 32
    stride_wd = ws.stride(1) if digits > 1 else 0
    stride_wm = ws.stride(-2)
    _finish_kernel[(triton.cdiv(c, block), m)](
        ws, bias if bias is not None else ws, out, m, c, ws.stride(0), stride_wd, stride_wm, out.stride(0),
        2.0**-bias_frac_bits, SPLITS=ws.shape[0], DIGITS=digits, HAS_BIAS=bias is not None, BLOCK=block,
    )
    return out


def dequantize(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Dense ``W [N, K] = T * 2^E`` in ``dtype`` (the transient buffer of the two-step path)."""
    n, kb = T_packed.shape
    w = torch.empty((n, in_features), dtype=dtype, device=T_packed.device)
    block_n, block_b = (16, 16) if triton_interpreted() else (32, 64)
    grid = (triton.cdiv(n, block_n), triton.cdiv(kb, block_b))
    _dequantize_kernel[grid](
        T_packed, E, w, n, in_features, kb, T_packed.stride(0), E.stride(0), w.stride(0),
        BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_B=block_b,
    )
    return w


def _bias_value(bias: torch.Tensor, bias_frac_bits: int) -> torch.Tensor:
    return bias.to(torch.float64).mul(2.0**-bias_frac_bits).to(torch.float32)


def forward_gemv(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """CUDA-core path for one activation row (see the module docstring)."""
    n, kb = T_packed.shape
    block_n, block_b, warps = (16, 16, 4) if triton_interpreted() else (64, 32, 4)
    kb_padded = _round_up(kb, block_b)
    z = _prepare(x, 1, kb_padded, block_b, z_form=True, dtype=torch.float32)
    tiles = triton.cdiv(n, block_n)
    splits = _splits(tiles, kb_padded // block_b, x.device)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    _gemv_kernel[(tiles, 1, splits)](
        z, T_packed, E, ws, n, kb, kb_padded, E.shape[1], z.stride(0), T_packed.stride(0), E.stride(0),
        ws.stride(0), BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_K=splits, num_warps=warps,
    )
    return _finish(ws, 1, n, 1, bias, bias_frac_bits, x.dtype)


def forward_fused(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """Tensor-core path: weights decoded tile by tile on chip."""
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, plane_dtype, precision = _dot_config(x.dtype)
    if triton_interpreted():
        block_m, block_n, block_b, warps = 16, 16, 16, 4
    else:
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n, block_b, warps = (64, 32, 4) if m <= 64 else (128, 32, 8)
    rows, kb_padded = _round_up(m, block_m), _round_up(kb, block_b)
    planes = _prepare(x, rows, kb_padded, block_b, z_form=False, dtype=plane_dtype)
    tiles = triton.cdiv(n, block_n) * (rows // block_m)
    splits = _splits(tiles, kb_padded // block_b, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _forward_kernel[(triton.cdiv(n, block_n), rows // block_m, splits)](
        planes, T_packed, E, ws, m, n, kb, kb_padded, E.shape[1],
        planes.stride(0), planes.stride(1), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        BYTES_PER_GROUP=group_size // 5, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_K=splits, DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=warps, num_stages=3,
    )
    return _finish(ws, m, n, 1, bias, bias_frac_bits, x.dtype)


def forward_two_step(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """Dense decode into a transient buffer in ``x.dtype``, then cuBLAS."""
    w = dequantize(T_packed, E, in_features=in_features, group_size=group_size, dtype=x.dtype)
    if bias is None:
        return torch.nn.functional.linear(x, w)
    y = torch.nn.functional.linear(x, w).to(torch.float32) if x.dtype != torch.float32 else x @ w.T
    return (y + _bias_value(bias, bias_frac_bits)).to(x.dtype)


def forward(
    x: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    in_features: int,
    group_size: int,
    bias_frac_bits: int,
) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-B`` in ``x.dtype``."""
    _check("forward", x, T_packed, E, in_features, group_size, in_features, "in_features")
    if bias is not None and (bias.dtype != torch.int32 or list(bias.shape) != [T_packed.shape[0]]):
        raise ValueError(f"triton forward: bias must be int32 [{T_packed.shape[0]}], got {bias.dtype} {list(bias.shape)}")
    kwargs = dict(in_features=in_features, group_size=group_size, bias_frac_bits=bias_frac_bits)
    m = x.shape[0]
    if m == 0 or T_packed.shape[0] == 0:
        return torch.zeros((m, T_packed.shape[0]), dtype=x.dtype, device=x.device)
    if m >= TWO_STEP_MIN_ROWS:
        return forward_two_step(x, T_packed, E, bias, **kwargs)
    if m <= GEMV_MAX_ROWS:
        return forward_gemv(x, T_packed, E, bias, **kwargs)
    return forward_fused(x, T_packed, E, bias, **kwargs)


def grad_x_fused(grad_y, T_packed, E, *, in_features, group_size):
    """Tensor-core path: ``grad_x`` tiles ``[BLOCK_M, BLOCK_B]`` per digit position, split over N."""
    m, n, kb = grad_y.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, _, precision = _dot_config(grad_y.dtype)
    if triton_interpreted():
        block_m, block_n, block_b, warps = 16, 16, 16, 4
    else:
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n, block_b, warps = 64, 32, 4
    rows, kb_padded = _round_up(m, block_m), _round_up(kb, block_b)
    tiles = (kb_padded // block_b) * (rows // block_m)
    splits = _splits(tiles, triton.cdiv(n, block_n), grad_y.device)
    ws = torch.empty((splits, 5, rows, kb_padded), dtype=torch.float32, device=grad_y.device)
    _grad_x_kernel[(kb_padded // block_b, rows // block_m, splits)](
        grad_y, T_packed, E, ws, m, n, kb, E.shape[1],
        grad_y.stride(0), grad_y.stride(1), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        ws.stride(2),
        BYTES_PER_GROUP=group_size // 5, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_N=splits, DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=warps, num_stages=3,
    )
    return _finish(ws, m, in_features, 5, None, 0, grad_y.dtype)


def grad_x_two_step(grad_y, T_packed, E, *, in_features, group_size):
    """Dense decode into a transient buffer in ``grad_y.dtype``, then cuBLAS."""
    w = dequantize(T_packed, E, in_features=in_features, group_size=group_size, dtype=grad_y.dtype)
    return grad_y @ w


def grad_x(
    grad_y: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
) -> torch.Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W`` in ``grad_y.dtype``."""
    _check("grad_x", grad_y, T_packed, E, in_features, group_size, T_packed.shape[0], "out_features")
    m = grad_y.shape[0]
    if m == 0 or T_packed.shape[0] == 0:
        return torch.zeros((m, in_features), dtype=grad_y.dtype, device=grad_y.device)
    if m >= TWO_STEP_MIN_ROWS:
        return grad_x_two_step(grad_y, T_packed, E, in_features=in_features, group_size=group_size)
    return grad_x_fused(grad_y, T_packed, E, in_features=in_features, group_size=group_size)
