"""Host-side launch arithmetic shared by the Triton linear launchers (``triton``,
``triton_table_gemv``, ``triton_mma_forward``): split counts, padding, whether a tensor's storage
can be read as whole aligned words, and the card's SM count and compute capability (looked up
once per device, not on every call)."""

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


def byte_span(tensor: torch.Tensor) -> int:
    """Bytes from a row-major 2-D tensor's first element to just past its last."""
    rows, cols = tensor.shape
    return ((rows - 1) * tensor.stride(0) + cols) * tensor.element_size()


def readable_as_words(tensor: torch.Tensor, multiple: int) -> bool:
    """Whether a row-major 2-D ``tensor`` starts ``multiple``-byte aligned and its storage reaches
    the next ``multiple``-byte boundary after its last element (whole aligned words can be read)."""
    storage = tensor.untyped_storage()
    return (tensor.stride(1) == 1 and tensor.data_ptr() % multiple == 0
            and tensor.data_ptr() + round_up(byte_span(tensor), multiple) <= storage.data_ptr() + storage.nbytes())


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
