"""``embedding(state, tokens)``: rows of a ternary table, with sparse vote hooks."""

from __future__ import annotations

import functools
from typing import Any

import torch

from ternary.functional.hooks import current_tape
from ternary.kernels.linear.reference import dequantize
from ternary.state.linear_state import LinearState


@functools.singledispatch
def embedding(state: Any, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows ``W[tokens]`` of a table stored as a layer with ``out_features = vocab``.

    ``tokens`` is an integer tensor of any shape; returns ``[*tokens.shape, in_features]``.
    Inside :func:`ternary.value_and_hooks` the hooks give votes only to rows that occurred.
    Dispatches on the record type like :func:`ternary.linear`.
    """
    raise TypeError(f"embedding: no implementation for state of type {type(state).__name__}")


@embedding.register
def ternary_embedding(state: LinearState, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`embedding` for a :class:`LinearState` table."""
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"embedding: tokens must be integers, got {tokens.dtype}")
    flat = tokens.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= state.out_features):
        raise ValueError(f"embedding: token ids must be in [0, {state.out_features}), got [{int(flat.min())}, {int(flat.max())}]")
    rows = dequantize(
        state.T_packed[flat], state.E[flat], in_features=state.in_features, group_size=state.group_size
    ).to(dtype)
    tape = current_tape()
    probe = tape.probe(state, rows.device) if tape is not None else None
    if probe is not None:
        rows = rows + probe.to(dtype)
        onehot = torch.nn.functional.one_hot(flat, state.out_features).to(dtype)
        tape.record(state, onehot, rows, kind="embedding")
    return rows.reshape(*tokens.shape, state.in_features)
