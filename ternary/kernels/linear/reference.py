"""PyTorch reference for the ternary linear op; it defines correctness.

Dequantises ``W = T * 2^E`` to float32 and multiplies in float32, then rounds to
the activation dtype. Exact 2^E for every int8 E: nothing is clamped.
"""

from __future__ import annotations

import torch

from ternary.state.packing import unpack


def dequantize(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int) -> torch.Tensor:
    """Dense ``W [N, K]`` float32 from packed trits and group exponents (validates the bytes)."""
    trits = unpack(T_packed, in_features)
    scale = torch.exp2(E.to(torch.float32)).repeat_interleave(group_size, dim=1)[:, :in_features]
    return trits.to(torch.float32) * scale


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
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-B``."""
    w = dequantize(T_packed, E, in_features=in_features, group_size=group_size)
    y = x.to(torch.float32) @ w.T
    if bias is not None:
        y = y + bias.to(torch.float64).mul(2.0**-bias_frac_bits).to(torch.float32)
    return y.to(x.dtype)


def grad_x(
    grad_y: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
) -> torch.Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W``."""
    w = dequantize(T_packed, E, in_features=in_features, group_size=group_size)
    return (grad_y.to(torch.float32) @ w).to(grad_y.dtype)
