"""Ternary two-layer MLP: the dense feed-forward and each MoE expert."""

from __future__ import annotations

import attrs
import torch

from ternary.functional import linear
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record


@pytree_record(child_fields=("up", "down"))
@attrs.frozen(eq=False)
class MlpState:
    """``down(gelu(up(x)))`` with ``up: [dim -> hidden]`` and ``down: [hidden -> dim]``."""

    up: LinearState
    down: LinearState

    @classmethod
    def random(cls, dim: int, hidden: int, *, group_size: int, generator: torch.Generator, device=None) -> "MlpState":
        return cls(
            up=LinearState.random(dim, hidden, group_size=group_size, generator=generator, device=device),
            down=LinearState.random(hidden, dim, group_size=group_size, generator=generator, device=device),
        )


def activation(h: torch.Tensor) -> torch.Tensor:
    """The MLP nonlinearity between ``up`` and ``down`` (shared with the MoE dispatch)."""
    return torch.nn.functional.gelu(h)


def mlp(state: MlpState, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """``[..., dim] -> [..., dim]``."""
    return linear(state.down, activation(linear(state.up, x, backend=backend)), backend=backend)
