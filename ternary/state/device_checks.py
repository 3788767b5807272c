"""Checks over many device tensors with one host sync per device instead of one per tensor.

A training step updates every layer; checking each layer's tensors with ``bool(...)`` costs a
host sync per tensor (hundreds per step on the small preset). Here every tensor is reduced to
a value on its own device, the values are stacked and tested there, and the host reads the
answer once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def first_flagged(
    tensors: Sequence[torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor],
    flagged: Callable[[torch.Tensor], torch.Tensor],
) -> int | None:
    """Index of the first tensor whose 0-dim ``reduce(tensor)`` the test ``flagged`` (applied to
    the stacked values ``[T]`` of one device, giving bools ``[T]``) marks, or None. Empty tensors
    are never marked. One host sync per device, one more per device that has a mark."""
    by_device: dict[torch.device, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if tensor.numel():
            by_device.setdefault(tensor.device, []).append(index)
    hits = []
    for indices in by_device.values():
        marks = flagged(torch.stack([reduce(tensors[i]) for i in indices]))
        if bool(marks.any()):
            hits.append(indices[marks.tolist().index(True)])
    return min(hits) if hits else None
