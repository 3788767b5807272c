"""Causal self-attention with ternary q/k/v/o projections and rotary positions."""

from __future__ import annotations

import attrs
import torch

from ternary.functional import linear
from ternary.model.rotary import rotate
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record


@pytree_record(child_fields=("q", "k", "v", "o"))
@attrs.frozen(eq=False)
class AttentionState:
    """Four ``[dim -> dim]`` ternary projections."""

    q: LinearState
    k: LinearState
    v: LinearState
    o: LinearState

    @classmethod
    def random(cls, dim: int, *, group_size: int, generator: torch.Generator, device=None) -> "AttentionState":
        def make(bias: bool) -> LinearState:
            return LinearState.random(dim, dim, bias=bias, group_size=group_size, generator=generator, device=device)

        return cls(q=make(False), k=make(False), v=make(False), o=make(True))


def attention(state: AttentionState, x: torch.Tensor, heads: int, *, backend: str | None = None) -> torch.Tensor:
    """``x [B, T, D] -> [B, T, D]``; position ``t`` attends to positions ``<= t`` only."""
    batch, length, dim = x.shape

    def split(y: torch.Tensor) -> torch.Tensor:
        return y.view(batch, length, heads, dim // heads).transpose(1, 2)

    q = rotate(split(linear(state.q, x, backend=backend)))
    k = rotate(split(linear(state.k, x, backend=backend)))
    v = split(linear(state.v, x, backend=backend))
    mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return linear(state.o, mixed.transpose(1, 2).reshape(batch, length, dim), backend=backend)
