"""Host-side launch arithmetic shared by the Triton linear launchers (``triton``,
``triton_table_gemv``): split counts, padding, and the card's SM count and compute capability
(looked up once per device, not on every call)."""

from __future__ import annotations

import functools

import torch


def even_splits(splits: int, blocks: int) -> int:
    """``splits`` (>= 1) lowered until every split has work: a kernel that gives each split
    ``ceil(blocks / splits)`` blocks would leave e.g. 6 of 16 splits of 20 blocks idle."""
    per_split = -(-blocks // splits)
    return -(-blocks // per_split)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@functools.cache
def _properties(index: int):
    return torch.cuda.get_device_properties(index)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of the CUDA ``device``."""
    return _properties(_index(device)).multi_processor_count


def capability(device: torch.device) -> tuple[int, int]:
    """``(major, minor)`` compute capability of the CUDA ``device``."""
    properties = _properties(_index(device))
    return properties.major, properties.minor
