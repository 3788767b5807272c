"""Cross-rank check that every rank holds bit-identical integer state."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ternary.state.audit import leaf_paths

_PRIME = 2_147_483_647  # 2^31 - 1
_CHUNK = 1 << 20


class StateDivergedError(RuntimeError):
    """Ranks hold different integer state."""


def leaf_fingerprint(tensor: torch.Tensor) -> int:
    """A position-sensitive checksum of a tensor's bytes, in [0, 2^31 - 1)."""
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).to(torch.int64)
    total = 0
    for start in range(0, data.numel(), _CHUNK):
        chunk = data[start : start + _CHUNK]
        position = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=chunk.device)
        weights = (position * 2_654_435_761 + 97) % _PRIME
        total = (total + int(((chunk + 1) * weights % _PRIME).sum())) % _PRIME
    return total


def fingerprints(state: Any) -> tuple[list[str], torch.Tensor]:
    """Leaf paths and their checksums ``[L]`` int64."""
    pairs = leaf_paths(state)
    return [p for p, _ in pairs], torch.tensor([leaf_fingerprint(t) for _, t in pairs], dtype=torch.int64)


def check_ranks_agree(state: Any, *, group: Any = None, device: torch.device | None = None) -> None:
    """Raise :class:`StateDivergedError` naming the first leaf whose checksum differs across ranks."""
    paths, local = fingerprints(state)
    if device is not None:
        local = local.to(device)
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    differ = torch.nonzero(low != high).flatten().tolist()
    if differ:
        names = ", ".join(paths[i] for i in differ[:5])
        raise StateDivergedError(
            f"integer state differs across ranks in {len(differ)} tensor(s), first: {names}; stopping"
        )
