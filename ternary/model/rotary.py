"""Rotary position embedding, computed on the fly (no stored tables)."""

from __future__ import annotations

import torch

BASE = 10000.0


def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, Dh]`` by position: pairs ``(x[i], x[i + Dh/2])`` turn by ``t * BASE^(-2i/Dh)``."""
    length, head_dim = x.shape[-2], x.shape[-1]
    half = head_dim // 2
    inv_freq = BASE ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(length, device=x.device, dtype=torch.float32)[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
