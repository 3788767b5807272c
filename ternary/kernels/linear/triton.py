"""Triton backend of the ternary linear op: reads ``T_packed`` and ``E`` directly.

Three paths, picked by the number of activation rows ``M``:

- ``M == 1`` (forward only): a CUDA-core GEMV that never forms a weight.
  With quotients ``q_i = floor(b / 3^i)`` of a byte ``b``, the byte's dot product is
  ``sum_i d_i x_i - sum_i x_i = sum_i q_i z_i - sum_i x_i`` where ``z_0 = x_0`` and
  ``z_i = x_i - 3 x_{i-1}``; ``z`` depends on the activations only, so each byte costs its
  quotients plus one FMA per digit and row.
- ``M < TWO_STEP_MIN_ROWS``: a fused tensor-core kernel. Each ``[BLOCK_N, BLOCK_B]`` tile
  of packed bytes is decoded once into five scaled weight tiles, one per digit position
  (columns ``5j + d``); the activations are first regrouped into digit planes
  (``triton_base3.digit_planes``) so every operand load is contiguous.
  Split-K (forward) / split-N (grad-x) keeps all SMs busy at small M; the partial sums
  go to an fp32 workspace ``[splits, M, C]`` that one finishing kernel reduces.
- ``M >= TWO_STEP_MIN_ROWS`` (forward) / ``M > GRAD_X_FUSED_MAX_ROWS`` (grad-x): decode the
  layer into a transient dense buffer in the activation dtype (``N*K*2`` bytes for bf16,
  freed after the call), then cuBLAS. On H100 the fused forward took 64 us at
  4096 x 4096, M = 128 (bf16: 15 us; the decode alone is ~11 MB/us), hence the switch at
  64 rows; the fused grad-x kernel with 64-row (wgmma) tiles hit an illegal address there,
  so grad-x keeps the fused kernel for M <= 16 only.

A corrupt byte (> 242) is never decoded silently: it turns the outputs it feeds into
NaN, which the non-finite guards of the training loop report.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import (
    base3_quotients,
    block_scales,
    byte_as_float,
    concat_digits,
    digit_planes,
    exact_exp2,
    trit_of,
)
from ternary.kernels.registry import triton_interpreted

GEMV_MAX_ROWS = 1
TWO_STEP_MIN_ROWS = 64
GRAD_X_FUSED_MAX_ROWS = 16
_FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _split_range(blocks, SPLITS):
    """First block and block count of this program's share (``program_id(2)``) of ``blocks``."""
    per_split = (blocks + SPLITS - 1) // SPLITS
    first = tl.program_id(2) * per_split
    return first, tl.maximum(tl.minimum(per_split, blocks - first), 0)


@triton.jit
def _load_block(rows_p, rows_e, block, KB, NG, BYTES_PER_GROUP: tl.constexpr, BLOCK_B: tl.constexpr):
    """Bytes (float quotients) and scales of byte block ``block``; NaN scales mark corrupt bytes."""
    jb = block * BLOCK_B + tl.arange(0, BLOCK_B)
    byte = tl.load(rows_p + jb[None, :], mask=(jb < KB)[None, :], other=121).to(tl.int32)
    scale = block_scales(rows_e, jb, block, NG, BYTES_PER_GROUP, BLOCK_B)
    return byte, tl.where(byte > 242, float("nan"), scale)


@triton.jit
def _scaled_digits(byte, scale):
    """The five weight tiles ``T * 2^E`` (digit positions 0..4) of a tile of bytes."""
    q0, q1, q2, q3, q4 = base3_quotients(byte)
    return (trit_of(q0, q1) * scale, trit_of(q1, q2) * scale, trit_of(q2, q3) * scale,
            trit_of(q3, q4) * scale, trit_of(q4, 0.0) * scale)


@triton.jit
def _gemv_kernel(
    z_ptr, p_ptr, e_ptr, out_ptr,
    N, KB, NG, blocks,
    stride_zb, stride_pn, stride_en, stride_os,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, SPLIT_K,
):
    """Partial ``out[s, n] = sum_k x[k] W[n, k]`` over split ``s`` of the byte blocks (one activation row).

    Rows past the end are clamped (their results are not stored); bytes past the end
    read as zero trits and meet zero activation planes. The next block's bytes are
    loaded before the current block is used, and sums stay per lane until the end.
    """
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    first, count = _split_range(blocks, SPLIT_K)
    acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
    byte_next, scale_next = _load_block(rows_p, rows_e, first, KB, NG, BYTES_PER_GROUP, BLOCK_B)
    for step in range(0, count):
        byte, scale = byte_next, scale_next
        byte_next, scale_next = _load_block(rows_p, rows_e, first + step + 1, KB, NG, BYTES_PER_GROUP, BLOCK_B)
        q0, q1, q2, q3, q4 = base3_quotients(byte)
        z = z_ptr + (first + step) * stride_zb + tl.arange(0, BLOCK_B)
        part = q0 * tl.load(z)[None, :] + tl.load(z + 5 * BLOCK_B)[None, :]
        part += q1 * tl.load(z + BLOCK_B)[None, :]
        part += q2 * tl.load(z + 2 * BLOCK_B)[None, :]
        part += q3 * tl.load(z + 3 * BLOCK_B)[None, :]
        part += q4 * tl.load(z + 4 * BLOCK_B)[None, :]
        acc += part * scale
    tl.store(out_ptr + tl.program_id(2) * stride_os + rn, tl.sum(acc, axis=1), mask=rn < N)


@triton.jit
def _forward_kernel(
    x_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, NG, blocks,
    stride_xm, stride_xb, stride_pn, stride_en, stride_os, stride_om,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_K, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Partial ``out[s, m, n] = sum_k x[m, k] W[n, k]`` from the digit planes of ``x``.

    Per byte block: one product over digits 0..3 (``K = 4 BLOCK_B``, the decoded tiles side
    by side) and one over digit 4.
    """
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_p = p_ptr + tl.minimum(rn, N - 1)[:, None] * stride_pn
    rows_e = e_ptr + tl.minimum(rn, N - 1)[:, None] * stride_en
    x_rows = x_ptr + rm[:, None] * stride_xm
    first, count = _split_range(blocks, SPLIT_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    byte_next, scale_next = _load_block(rows_p, rows_e, first, KB, NG, BYTES_PER_GROUP, BLOCK_B)
    for step in range(0, count):
        byte, scale = byte_next, scale_next
        byte_next, scale_next = _load_block(rows_p, rows_e, first + step + 1, KB, NG, BYTES_PER_GROUP, BLOCK_B)
        w0, w1, w2, w3, w4 = _scaled_digits(byte, scale)
        x_block = x_rows + (first + step) * stride_xb
        x_low = tl.load(x_block + tl.arange(0, 4 * BLOCK_B)[None, :])
        x_high = tl.load(x_block + 4 * BLOCK_B + tl.arange(0, BLOCK_B)[None, :])
        w_low = concat_digits(w0, w1, w2, w3).to(DOT_DTYPE)
        acc = tl.dot(x_low, tl.trans(w_low), acc, input_precision=PRECISION)
        acc = tl.dot(x_high, tl.trans(w4.to(DOT_DTYPE)), acc, input_precision=PRECISION)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc, mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _grad_x_kernel(
    g_ptr, p_ptr, e_ptr, out_ptr,
    M, N, KB, NG, blocks,
    stride_gm, stride_gn, stride_pn, stride_en, stride_os, stride_om, stride_ob,
    BYTES_PER_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
    SPLIT_N, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Partial ``grad_x`` of one byte block over split ``s`` of the rows of W, as digit planes.

    Writes ``out[s, m, block, d, i] = sum_n grad_y[m, n] W[n, 5 (block BB + i) + d]``; the
    finishing kernel gathers the planes back to ``[M, K]``.
    """
    rm = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    block = tl.program_id(0)
    first, count = _split_range(blocks, SPLIT_N)
    acc_low = tl.zeros((BLOCK_M, 4 * BLOCK_B), dtype=tl.float32)
    acc_high = tl.zeros((BLOCK_M, BLOCK_B), dtype=tl.float32)
    for step in range(0, count):
        rn = (first + step) * BLOCK_N + tl.arange(0, BLOCK_N)
        g = tl.load(g_ptr + rm[:, None] * stride_gm + rn[None, :] * stride_gn,
                    mask=(rm < M)[:, None] & (rn < N)[None, :], other=0.0).to(DOT_DTYPE)
        rows = tl.minimum(rn, N - 1)[:, None]
        byte, scale = _load_block(p_ptr + rows * stride_pn, e_ptr + rows * stride_en, block, KB, NG,
                                  BYTES_PER_GROUP, BLOCK_B)
        w0, w1, w2, w3, w4 = _scaled_digits(byte, scale)
        acc_low = tl.dot(g, concat_digits(w0, w1, w2, w3).to(DOT_DTYPE), acc_low, input_precision=PRECISION)
        acc_high = tl.dot(g, w4.to(DOT_DTYPE), acc_high, input_precision=PRECISION)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + block * stride_ob
    tl.store(out + tl.arange(0, 4 * BLOCK_B)[None, :], acc_low)
    tl.store(out + 4 * BLOCK_B + tl.arange(0, BLOCK_B)[None, :], acc_high)


@triton.jit
def _finish_kernel(ws_ptr, bias_ptr, out_ptr, M, C, stride_ws, stride_wm, stride_wb, stride_om, bias_scale,
                   SPLITS, PLANAR: tl.constexpr, BLOCK_B: tl.constexpr, HAS_BIAS: tl.constexpr,
                   BLOCK: tl.constexpr):
    """``out[m, c] = sum_s ws[s, m, ...] (+ bias[c] * bias_scale)`` rounded to the output dtype.

    ``ws`` is ``[S, M, C]``, or with ``PLANAR`` digit planes ``[S, Mp, blocks, 5, BLOCK_B]``.
    """
    m = tl.program_id(1)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = c < C
    if PLANAR:
        j = c // 5
        source = ws_ptr + m * stride_wm + (j // BLOCK_B) * stride_wb + (c % 5) * BLOCK_B + j % BLOCK_B
    else:
        source = ws_ptr + m * stride_wm + c
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, SPLITS):
        total += tl.load(source + s * stride_ws, mask=mask, other=0.0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + c, mask=mask, other=0).to(tl.float32) * bias_scale
    tl.store(out_ptr + m * stride_om + c, total.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dequantize_kernel(p_ptr, e_ptr, w_ptr, N, K, stride_pn, stride_en, stride_wn,
                       GROUP_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Dense ``w [N, K] = T * 2^E`` in ``w``'s dtype, written in contiguous column runs.

    Column ``c`` reads byte ``c // 5`` and decodes only its digit ``d = c % 5``:
    ``floor(b / 3^d) - 3 floor(b / 3^(d+1)) - 1``, each floor as one rounding of
    ``b / 3^d - (3^d - 1) / (2 3^d)``. Corrupt bytes give NaN.
    """
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = tl.minimum(rn, N - 1)[:, None]
    c_ok = (cols < K)[None, :]
    byte = tl.load(p_ptr + rows * stride_pn + (cols // 5)[None, :], mask=c_ok, other=121).to(tl.int32)
    e = tl.load(e_ptr + rows * stride_en + (cols // GROUP_SIZE)[None, :], mask=c_ok, other=0)
    digit = cols % 5
    power = tl.where(digit == 0, 1.0, tl.where(digit == 1, 3.0, tl.where(digit == 2, 9.0,
                     tl.where(digit == 3, 27.0, 81.0))))[None, :]
    b = byte_as_float(byte)
    low = b * (1.0 / power) - (power - 1.0) / (2.0 * power)
    high = b * (1.0 / (3.0 * power)) - (3.0 * power - 1.0) / (6.0 * power)
    low = (low + 12582912.0) - 12582912.0
    high = (high + 12582912.0) - 12582912.0
    w = tl.where(byte > 242, float("nan"), trit_of(low, high) * exact_exp2(e))
    tl.store(w_ptr + rn[:, None] * stride_wn + cols[None, :], w.to(w_ptr.dtype.element_ty),
             mask=(rn < N)[:, None] & c_ok)


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
    """How many reduction splits fill the card: about four programs per SM, at least 4 blocks each."""
    if triton_interpreted():
        return min(2, blocks)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = max(1, (4 * sms) // max(tiles, 1))
    return max(1, min(wanted, blocks // 4, 16))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _finish(ws: torch.Tensor, m: int, c: int, bias: torch.Tensor | None, bias_frac_bits: int,
            dtype: torch.dtype) -> torch.Tensor:
    """Reduce the split workspace (``[S, M, C]``, or 5-D digit planes) to ``[m, c]`` in ``dtype``."""
    out = torch.empty((m, c), dtype=dtype, device=ws.device)
    block = 256 if not triton_interpreted() else 32
    planar = ws.dim() == 5
    _finish_kernel[(triton.cdiv(c, block), m)](
        ws, bias if bias is not None else ws, out, m, c, ws.stride(0), ws.stride(1), ws.stride(2) if planar else 0,
        out.stride(0), 2.0**-bias_frac_bits, ws.shape[0], PLANAR=planar, BLOCK_B=ws.shape[-1] if planar else 1,
        HAS_BIAS=bias is not None, BLOCK=block,
    )
    return out


def dequantize(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
               dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Dense ``W [N, K] = T * 2^E`` in ``dtype`` (the transient buffer of the two-step path)."""
    n = T_packed.shape[0]
    w = torch.empty((n, in_features), dtype=dtype, device=T_packed.device)
    block_n, block_c = (16, 32) if triton_interpreted() else (16, 256)
    _dequantize_kernel[(triton.cdiv(n, block_n), triton.cdiv(in_features, block_c))](
        T_packed, E, w, n, in_features, T_packed.stride(0), E.stride(0), w.stride(0),
        GROUP_SIZE=group_size, BLOCK_N=block_n, BLOCK_C=block_c,
    )
    return w


def _bias_value(bias: torch.Tensor, bias_frac_bits: int) -> torch.Tensor:
    return bias.to(torch.float64).mul(2.0**-bias_frac_bits).to(torch.float32)


def forward_gemv(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """CUDA-core path for one activation row (see the module docstring)."""
    if x.shape[0] != 1:
        raise ValueError(f"triton forward_gemv: takes one activation row, got {x.shape[0]}")
    n, kb = T_packed.shape
    block_n, block_b, warps = (16, 16, 4) if triton_interpreted() else (64, 32, 4)
    blocks = triton.cdiv(kb, block_b)
    z = digit_planes(x, 1, blocks * block_b, block_b, z_form=True, dtype=torch.float32)
    tiles = triton.cdiv(n, block_n)
    splits = _splits(tiles, blocks, x.device)
    ws = torch.empty((splits, 1, n), dtype=torch.float32, device=x.device)
    _gemv_kernel[(tiles, 1, splits)](
        z, T_packed, E, ws, n, kb, E.shape[1], blocks, z.stride(1), T_packed.stride(0), E.stride(0),
        ws.stride(0), BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_K=splits, num_warps=warps,
    )
    return _finish(ws, 1, n, bias, bias_frac_bits, x.dtype)


def forward_fused(x, T_packed, E, bias, *, in_features, group_size, bias_frac_bits):
    """Tensor-core path: weights decoded tile by tile on chip."""
    m, n, kb = x.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, plane_dtype, precision = _dot_config(x.dtype)
    if triton_interpreted():
        block_m, block_n, block_b, warps = 16, 16, 16, 4
    else:
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n, block_b, warps = (64, 32, 4) if m <= 64 else (128, 32, 8)
    rows, blocks = _round_up(m, block_m), triton.cdiv(kb, block_b)
    planes = digit_planes(x, rows, blocks * block_b, block_b, z_form=False, dtype=plane_dtype)
    tiles = triton.cdiv(n, block_n) * (rows // block_m)
    splits = _splits(tiles, blocks, x.device)
    ws = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
    _forward_kernel[(triton.cdiv(n, block_n), rows // block_m, splits)](
        planes, T_packed, E, ws, m, n, kb, E.shape[1], blocks,
        planes.stride(0), planes.stride(1), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        BYTES_PER_GROUP=group_size // 5, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_K=splits, DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=warps, num_stages=3,
    )
    return _finish(ws, m, n, bias, bias_frac_bits, x.dtype)


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
    """Tensor-core path: ``grad_x`` digit planes of one byte block per program, split over N."""
    m, n, kb = grad_y.shape[0], T_packed.shape[0], T_packed.shape[1]
    dot_dtype, _, precision = _dot_config(grad_y.dtype)
    if triton_interpreted():
        block_m, block_n, block_b, warps = 16, 16, 16, 4
    else:
        block_m = 16 if m <= 16 else 32  # BLOCK_M = 64 (wgmma) failed on H100: illegal address
        block_n, block_b, warps = 64, 32, 4
    rows, blocks = _round_up(m, block_m), triton.cdiv(kb, block_b)
    tiles = blocks * (rows // block_m)
    splits = _splits(tiles, triton.cdiv(n, block_n), grad_y.device)
    ws = torch.empty((splits, rows, blocks, 5, block_b), dtype=torch.float32, device=grad_y.device)
    _grad_x_kernel[(blocks, rows // block_m, splits)](
        grad_y, T_packed, E, ws, m, n, kb, E.shape[1], triton.cdiv(n, block_n),
        grad_y.stride(0), grad_y.stride(1), T_packed.stride(0), E.stride(0), ws.stride(0), ws.stride(1),
        ws.stride(2), BYTES_PER_GROUP=group_size // 5, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_B=block_b,
        SPLIT_N=splits, DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=warps, num_stages=3,
    )
    return _finish(ws, m, in_features, None, 0, grad_y.dtype)


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
    if m > GRAD_X_FUSED_MAX_ROWS:
        return grad_x_two_step(grad_y, T_packed, E, in_features=in_features, group_size=group_size)
    return grad_x_fused(grad_y, T_packed, E, in_features=in_features, group_size=group_size)
