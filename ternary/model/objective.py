"""Training objective and the integer bookkeeping that follows each step."""

from __future__ import annotations

import math

import attrs
import torch

from ternary.model.config import VOCAB, ModelConfig
from ternary.model.graph import grow_edges
from ternary.model.network import ModelAux, ModelState, forward
from ternary.model.vq import record_usage

LN2 = math.log(2.0)


@attrs.frozen(eq=False)
class StepAux:
    """``cross_entropy`` (nats per byte, detached) and the model's :class:`ModelAux`."""

    cross_entropy: torch.Tensor
    model: ModelAux


def loss(
    state: ModelState,
    window: torch.Tensor,
    config: ModelConfig,
    *,
    backend: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, StepAux]:
    """Next-byte loss on ``window [B, T + 1]``: cross-entropy + balance and codebook terms.

    For :func:`ternary.value_and_hooks` with ``has_aux=True``.
    """
    logits, aux = forward(state, window[:, :-1], config, backend=backend, dtype=dtype)
    cross_entropy = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), window[:, 1:].reshape(-1).long())
    total = cross_entropy + config.balance_weight * aux.balance + config.vq_weight * aux.codebook
    return total, StepAux(cross_entropy=cross_entropy.detach(), model=aux)


def bits_per_byte(cross_entropy_nats: float) -> float:
    return cross_entropy_nats / LN2


def observe(state: ModelState, aux: ModelAux, config: ModelConfig) -> ModelState:
    """Integer bookkeeping from one forward: VQ usage counts and graph edges from the picked codes."""
    if aux.codes is None:
        return state
    vq = record_usage(state.vq, aux.codes)
    graph = grow_edges(state.graph, aux.codes, config.max_edges) if state.graph is not None else None
    return attrs.evolve(state, vq=vq, graph=graph)
