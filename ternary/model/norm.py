"""Normalisation without trainable state."""

from __future__ import annotations

import torch

EPS = 1e-6


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """``x [..., D]`` scaled to unit root-mean-square over the last axis (no gain, no bias)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
