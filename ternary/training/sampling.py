"""Sampling bytes from a model."""

from __future__ import annotations

import torch

from ternary.model import ModelConfig, ModelState, forward


@torch.no_grad()
def sample_bytes(
    state: ModelState,
    config: ModelConfig,
    prompt: bytes,
    count: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    backend: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> bytes:
    """``count`` bytes continuing ``prompt`` (the model sees at most ``config.context`` bytes).

    ``temperature == 0`` picks the most likely byte; otherwise bytes are drawn from
    ``softmax(logits / temperature)`` with a generator seeded by ``seed``.
    """
    if count < 0:
        raise ValueError(f"sample_bytes: count must be >= 0, got {count}")
    if temperature < 0:
        raise ValueError(f"sample_bytes: temperature must be >= 0, got {temperature}")
    device = state.head.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    history = list(prompt) or [ord("\n")]
    produced = []
    for _ in range(count):
        window = torch.tensor([history[-config.context :]], dtype=torch.long, device=device)
        logits, _ = forward(state, window, config, backend=backend, dtype=dtype)
        last = logits[0, -1].float().cpu()
        if temperature == 0:
            token = int(last.argmax())
        else:
            token = int(torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator))
        produced.append(token)
        history.append(token)
    return bytes(produced)
