"""Validation loss in bits per byte."""

from __future__ import annotations

import torch

from ternary.model import ModelConfig, ModelState, bits_per_byte, forward
from ternary.model.config import VOCAB


@torch.no_grad()
def evaluate_bits_per_byte(
    state: ModelState,
    config: ModelConfig,
    batches: list[torch.Tensor],
    *,
    backend: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Mean next-byte cross-entropy over all predicted bytes of ``batches`` (each ``[B, T + 1]``), in bits."""
    total, count = 0.0, 0
    for window in batches:
        window = window.to(state.head.device)
        logits, _ = forward(state, window[:, :-1], config, backend=backend, dtype=dtype)
        targets = window[:, 1:].reshape(-1)
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets, reduction="sum"))
        count += targets.numel()
    return bits_per_byte(total / count)
