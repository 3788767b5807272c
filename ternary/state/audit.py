"""Audit a state tree: leaves and bytes by dtype, and every float leaf by path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree


def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    """``(path, leaf)`` pairs with paths written as ``blocks[0].attn.q.T_packed``."""
    flat, _ = pytree.tree_flatten_with_path(tree)
    return [(pytree.keystr(path).lstrip("."), leaf) for path, leaf in flat]


@attrs.frozen
class Audit:
    """What a state tree holds. ``float_leaves`` must be empty for model state."""

    leaves_by_dtype: dict[str, int]
    bytes_by_dtype: dict[str, int]
    float_leaves: tuple[str, ...]
    non_tensor_leaves: tuple[str, ...]
    total_bytes: int
    total_elements: int

    @property
    def ok(self) -> bool:
        return not self.float_leaves and not self.non_tensor_leaves

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"ok": self.ok}


def audit(tree: Any) -> Audit:
    """Count tensor leaves and bytes by dtype; list float and non-tensor leaves by path."""
    leaves: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    floats, others = [], []
    elements = 0
    for path, leaf in leaf_paths(tree):
        if not isinstance(leaf, torch.Tensor):
            others.append(path)
            continue
        key = str(leaf.dtype).removeprefix("torch.")
        leaves[key] += 1
        nbytes[key] += leaf.numel() * leaf.element_size()
        elements += leaf.numel()
        if leaf.dtype.is_floating_point or leaf.is_complex():
            floats.append(path)
    return Audit(
        leaves_by_dtype=dict(leaves),
        bytes_by_dtype=dict(nbytes),
        float_leaves=tuple(floats),
        non_tensor_leaves=tuple(others),
        total_bytes=sum(nbytes.values()),
        total_elements=elements,
    )
