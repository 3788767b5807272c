"""Graph over VQ codes: int8 edge state grown from code transitions, messages by a ternary linear.

``edges[a, b]`` (int8, 0..127) counts how often code ``b`` followed code ``a``
(saturating). At most ``max_edges`` edges are non-zero: after growing, the strongest
are kept (ties to the lower flat index ``a * C + b``). A token with code ``a``
receives the edge-weighted mean of its neighbours' code vectors, projected by a
ternary ``[dim -> dim]`` linear.
"""

from __future__ import annotations

import attrs
import torch

from ternary.functional import linear
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record

EDGE_MAX = 127


@pytree_record(child_fields=("proj", "edges"))
@attrs.frozen(eq=False)
class GraphState:
    """``proj``: layer ``[dim -> dim]``; ``edges``: int8 ``[codes, codes]`` in ``[0, 127]``."""

    proj: LinearState
    edges: torch.Tensor

    @classmethod
    def random(cls, dim: int, codes: int, *, group_size: int, generator: torch.Generator, device=None) -> "GraphState":
        return cls(
            proj=LinearState.random(dim, dim, group_size=group_size, generator=generator, device=device),
            edges=torch.zeros((codes, codes), dtype=torch.int8, device=device),
        )


def message(state: GraphState, code_rows: torch.Tensor, picked: torch.Tensor, dtype: torch.dtype, *, backend=None):
    """``[M, D]`` messages for tokens with codes ``picked [M]``; ``code_rows`` is the dense codebook ``[C, D]``."""
    weights = state.edges[picked].float()
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1.0)
    return linear(state.proj, (weights @ code_rows).to(dtype), backend=backend)


def keep_strongest(edges: torch.Tensor, max_edges: int) -> torch.Tensor:
    """Zero all but the ``max_edges`` largest entries of ``edges [C, C]`` (ties: lower flat index wins)."""
    flat = edges.reshape(-1)
    if int((flat > 0).sum()) <= max_edges:
        return edges
    order = torch.sort(flat.to(torch.int16), descending=True, stable=True).indices
    kept = torch.zeros_like(flat)
    kept[order[:max_edges]] = flat[order[:max_edges]]
    return kept.view_as(edges)


def grow_edges(state: GraphState, picked: torch.Tensor, max_edges: int) -> GraphState:
    """New state after observing codes ``picked [B, T]``: each transition ``t -> t+1`` adds 1 (saturating)."""
    codes = state.edges.shape[0]
    pairs = picked[:, :-1].reshape(-1) * codes + picked[:, 1:].reshape(-1)
    counts = torch.bincount(pairs, minlength=codes * codes).view(codes, codes)
    grown = (state.edges.to(torch.int64) + counts).clamp(0, EDGE_MAX).to(torch.int8)
    return attrs.evolve(state, edges=keep_strongest(grown, max_edges))
