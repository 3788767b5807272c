"""Autograd bridge of the grouped (per-expert) ternary linear: like ``bridge.py``, for stacked layers.

Forward runs every expert on its own run of sorted rows in one launch; backward returns
``grad_x`` from the grouped grad-x kernel and no weight gradient. The zero-valued
``probe`` keeps the output in the autograd graph when ``x`` needs no gradient, so the
per-expert ``grad_y`` hooks can be taken.
"""

from __future__ import annotations

from typing import Any

import torch

from ternary.kernels.linear import triton_grouped
from ternary.kernels.linear.bridge import LinearStatic, with_cached_signature


@with_cached_signature
class GroupedTernaryLinearFunction(torch.autograd.Function):
    """``y [S, N] = grouped_linear(x [S, K])`` over experts given by ``offsets [G + 1]``; differentiable in ``x``."""

    @staticmethod
    def forward(x, probe, offsets, T_packed, E, bias, static: LinearStatic):  # type: ignore[override]
        return triton_grouped.forward(
            x, T_packed, E, bias, offsets, in_features=static.in_features, group_size=static.group_size,
            bias_frac_bits=static.bias_frac_bits,
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, _, offsets, T_packed, E, _, static = inputs
        ctx.save_for_backward(offsets, T_packed, E)
        ctx.static = static

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor):  # type: ignore[override]
        offsets, T_packed, E = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = triton_grouped.grad_x(
                grad_y.contiguous(), T_packed, E, offsets, in_features=ctx.static.in_features,
                group_size=ctx.static.group_size,
            )
        return grad_x, None, None, None, None, None, None
