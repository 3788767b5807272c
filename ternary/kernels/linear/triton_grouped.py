"""Grouped ternary linear in Triton: many layers of one shape, each on its own run of rows, in one launch.

This is the fused dispatch of the mixture-of-experts feed-forward. The rows ``x [S, K]``
are sorted by expert; expert ``e`` owns rows ``offsets[e] : offsets[e + 1]``. One launch
computes every expert's ``y = x_e @ W_e.T + bias_e`` (or ``grad_x = grad_y_e @ W_e``),
decoding each expert's packed weights tile by tile on chip, so no dense weight, no
per-expert launch and no host sync is needed (the offsets stay on the device).

Row blocks are scheduled per expert: expert ``e`` gets ``ceil(rows_e / BLOCK_M)`` blocks,
and the grid has ``ceil(S / BLOCK_M) + experts`` row programs (an upper bound on the total),
so the program-to-expert map is found on chip from the block prefix sums; spare programs
exit at once.

Weights of all experts are passed stacked: ``T_packed [G, N, ceil(K/5)]`` uint8,
``E [G, N, ceil(K/group)]`` int8, ``bias [G, N]`` int32 or None. Activations are bf16 or
fp32 (fp32 uses the same ``tf32x3`` tensor-core mode as the other Triton kernels);
accumulation is fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton import _check, _dot_config
from ternary.kernels.linear.triton_base3 import decode_weights
from ternary.kernels.registry import triton_interpreted


@triton.jit
def _expert_of_block(cum_blocks_ptr, pid, EXPERTS, EXPERTS_P2: tl.constexpr):
    """Expert owning row block ``pid`` (``EXPERTS`` when the program is spare) and its first block."""
    lanes = tl.arange(0, EXPERTS_P2)
    ends = tl.load(cum_blocks_ptr + 1 + lanes, mask=lanes < EXPERTS, other=2147483647)
    expert = tl.sum((ends <= pid).to(tl.int32), axis=0)
    first = tl.load(cum_blocks_ptr + tl.minimum(expert, EXPERTS))
    return expert, first


@triton.jit
def _grouped_kernel(
    a_ptr, p_ptr, e_ptr, bias_ptr, out_ptr, offsets_ptr, cum_blocks_ptr,
    OUT_COLS, RED_COLS, EXPERTS,
    stride_am, stride_pg, stride_pn, stride_eg, stride_en, stride_bg, stride_om, bias_scale,
    TRANSPOSED: tl.constexpr, HAS_BIAS: tl.constexpr, GROUP_SIZE: tl.constexpr, EXPERTS_P2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """``out[rows_e] = a[rows_e] @ W_e.T`` (forward) or ``a[rows_e] @ W_e`` (``TRANSPOSED``, grad-x).

    ``OUT_COLS`` / ``RED_COLS`` are the output and reduction widths: ``N`` / ``K`` forward,
    ``K`` / ``N`` for grad-x. Weight indices are always ``W[n, k]``.
    """
    expert, first = _expert_of_block(cum_blocks_ptr, tl.program_id(0), EXPERTS, EXPERTS_P2)
    if expert < EXPERTS:
        row_end = tl.load(offsets_ptr + expert + 1)
        rm = tl.load(offsets_ptr + expert) + (tl.program_id(0) - first) * BLOCK_M + tl.arange(0, BLOCK_M)
        rm_ok = rm < row_end
        ro = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        ro_ok = ro < OUT_COLS
        p_e = p_ptr + expert.to(tl.int64) * stride_pg
        e_e = e_ptr + expert.to(tl.int64) * stride_eg
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, RED_COLS, BLOCK_K):
            rk = start + tl.arange(0, BLOCK_K)
            rk_ok = rk < RED_COLS
            a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :], mask=rm_ok[:, None] & rk_ok[None, :], other=0.0)
            if TRANSPOSED:
                w = decode_weights(p_e, e_e, rk[:, None], ro[None, :], rk_ok[:, None] & ro_ok[None, :],
                                   stride_pn, stride_en, GROUP_SIZE)
            else:
                w = tl.trans(decode_weights(p_e, e_e, ro[:, None], rk[None, :], ro_ok[:, None] & rk_ok[None, :],
                                            stride_pn, stride_en, GROUP_SIZE))
            acc += tl.dot(a.to(DOT_DTYPE), w.to(DOT_DTYPE), input_precision=PRECISION)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + expert.to(tl.int64) * stride_bg + ro, mask=ro_ok, other=0)
            acc += bias.to(tl.float32)[None, :] * bias_scale
        tl.store(out_ptr + rm[:, None] * stride_om + ro[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=rm_ok[:, None] & ro_ok[None, :])


def _block_sizes(rows: int) -> tuple[int, int, int, int]:
    """``BLOCK_M, BLOCK_N, BLOCK_K, num_warps`` for ``rows`` sorted rows."""
    if triton_interpreted():
        return 16, 16, 16, 4
    return (64, 128, 64, 4) if rows < 4096 else (128, 128, 64, 8)


def _launch(a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None,
            offsets: torch.Tensor, *, out_cols: int, red_cols: int, transposed: bool, group_size: int,
            bias_frac_bits: int) -> torch.Tensor:
    rows, experts = a.shape[0], T_packed.shape[0]
    out = torch.empty((rows, out_cols), dtype=a.dtype, device=a.device)
    if rows == 0 or out_cols == 0:
        return out.zero_()
    block_m, block_n, block_k, warps = _block_sizes(rows)
    counts = offsets[1:] - offsets[:-1]
    blocks = torch.div(counts + (block_m - 1), block_m, rounding_mode="floor")
    cum_blocks = torch.nn.functional.pad(blocks.cumsum(0), (1, 0)).to(torch.int32)
    dot_dtype, _, precision = _dot_config(a.dtype)
    grid = (triton.cdiv(rows, block_m) + experts, triton.cdiv(out_cols, block_n))
    _grouped_kernel[grid](
        a, T_packed, E, bias if bias is not None else E, out, offsets, cum_blocks,
        out_cols, red_cols, experts,
        a.stride(0), T_packed.stride(0), T_packed.stride(1), E.stride(0), E.stride(1),
        bias.stride(0) if bias is not None else 0, out.stride(0), 2.0**-bias_frac_bits,
        TRANSPOSED=transposed, HAS_BIAS=bias is not None, GROUP_SIZE=group_size,
        EXPERTS_P2=triton.next_power_of_2(experts), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        DOT_DTYPE=dot_dtype, PRECISION=precision, num_warps=warps, num_stages=3,
    )
    return out


def _check_group(name: str, a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, offsets: torch.Tensor,
                 in_features: int, group_size: int, width: int, width_name: str,
                 bias: torch.Tensor | None = None) -> None:
    """Validate stacked weights ``[G, N, *]``, ``bias [G, N]`` and ``offsets [G + 1]`` (per-expert
    checks, device included, reuse ``_check``)."""
    if T_packed.dim() != 3 or E.dim() != 3 or T_packed.shape[:2] != E.shape[:2]:
        raise ValueError(f"triton grouped {name}: T_packed [G, N, B] and E [G, N, groups] must be stacked per "
                         f"expert, got {list(T_packed.shape)} and {list(E.shape)}")
    if bias is not None and (bias.dim() != 2 or bias.shape[0] != T_packed.shape[0]):
        raise ValueError(f"triton grouped {name}: bias must be stacked per expert {list(T_packed.shape[:2])}, "
                         f"got {list(bias.shape)}")
    _check(f"grouped {name}", a, T_packed[0], E[0], in_features, group_size, width, width_name,
           None if bias is None else bias[0])
    if offsets.dtype != torch.int32 or list(offsets.shape) != [T_packed.shape[0] + 1] or offsets.device != a.device:
        raise ValueError(f"triton grouped {name}: offsets must be int32 [{T_packed.shape[0] + 1}] on {a.device}, "
                         f"got {offsets.dtype} {list(offsets.shape)} on {offsets.device}")
    for tensor, label in ((a, "activations"), (T_packed, "T_packed"), (E, "E")):
        if tensor.stride(-1) != 1:
            raise ValueError(f"triton grouped {name}: {label} must be contiguous in its last dimension")


def forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None,
            offsets: torch.Tensor, *, in_features: int, group_size: int, bias_frac_bits: int) -> torch.Tensor:
    """``y [S, N]``: rows ``offsets[e]:offsets[e+1]`` of ``x [S, K]`` through expert ``e`` (``W_e.T`` + bias)."""
    _check_group("forward", x, T_packed, E, offsets, in_features, group_size, in_features, "in_features", bias)
    return _launch(x, T_packed, E, bias, offsets, out_cols=T_packed.shape[1], red_cols=in_features,
                   transposed=False, group_size=group_size, bias_frac_bits=bias_frac_bits)


def grad_x(grad_y: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, offsets: torch.Tensor, *,
           in_features: int, group_size: int) -> torch.Tensor:
    """``grad_x [S, K]``: rows ``offsets[e]:offsets[e+1]`` of ``grad_y [S, N]`` times ``W_e``."""
    _check_group("grad_x", grad_y, T_packed, E, offsets, in_features, group_size, T_packed.shape[1], "out_features")
    return _launch(grad_y, T_packed, E, None, offsets, out_cols=in_features, red_cols=T_packed.shape[1],
                   transposed=True, group_size=group_size, bias_frac_bits=0)
