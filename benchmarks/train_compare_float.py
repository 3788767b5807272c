"""Float parameter records for the baselines of ``train_compare``: STE and full precision.

:class:`FloatLinear` holds an fp32 master ``weight [N, K]`` (and ``bias [N]``) that
AdamW updates in place. ``ternary.linear`` and ``ternary.embedding`` dispatch on the
record type, so the model definition of :mod:`ternary.model` runs unchanged on a tree
of these records:

- ``ste=True`` (BitNet b1.58 style): the weight used by the forward is
  ``W_q = clip(round(W / s), -1, 1) * s`` with the absmean scale ``s = mean |W|``
  (one per tensor, or one per group of ``scale_group`` columns of a row), and the
  gradient passes straight through to ``W`` (``W + (W_q - W).detach()``).
  Activations are not quantised (neither are they in the true-ternary arm).
- ``ste=False``: full precision, the weight is used as it is.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.functional import embedding, linear
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record

SCALE_EPS = 1e-8


@pytree_record(child_fields=("weight", "bias"))
@attrs.frozen(eq=False, kw_only=True)
class FloatLinear:
    """fp32 master ``weight [N, K]`` and optional ``bias [N]`` (both leaves with ``requires_grad``).

    Static: ``ste`` (ternarise on the fly) and ``scale_group`` (None: one absmean scale
    per tensor; an int G: one per group of G columns of each row, like the ternary layers).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    ste: bool = False
    scale_group: int | None = None

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.weight.device

    @classmethod
    def from_state(cls, layer: LinearState, *, ste: bool, scale_group: int | None = None) -> "FloatLinear":
        """Float record starting from the logical weight ``T * 2^E`` and bias of ``layer``."""
        bias = layer.bias_value()
        return cls(
            weight=layer.to_float().clone().requires_grad_(True),
            bias=None if bias is None else bias.clone().requires_grad_(True),
            ste=ste,
            scale_group=scale_group,
        )


def absmean_scale(weight: torch.Tensor, scale_group: int | None) -> torch.Tensor:
    """``mean |W|`` of ``weight [N, K]``: a scalar, or ``[N, K]`` expanded from groups of ``scale_group`` columns."""
    magnitude = weight.abs()
    if scale_group is None:
        return magnitude.mean().clamp_min(SCALE_EPS)
    n, k = weight.shape
    groups = -(-k // scale_group)
    padded = magnitude.new_zeros((n, groups * scale_group))
    padded[:, :k] = magnitude
    counts = torch.full((groups,), float(scale_group), device=weight.device)
    counts[-1] = k - (groups - 1) * scale_group
    per_group = (padded.view(n, groups, scale_group).sum(-1) / counts).clamp_min(SCALE_EPS)
    return per_group.repeat_interleave(scale_group, dim=1)[:, :k]


def absmean_ternary(weight: torch.Tensor, scale_group: int | None = None) -> torch.Tensor:
    """``clip(round(W / s), -1, 1) * s`` for ``weight [N, K]`` (no gradient of its own)."""
    scale = absmean_scale(weight.detach(), scale_group)
    return (weight.detach() / scale).round().clamp(-1, 1) * scale


def effective_weight(layer: FloatLinear) -> torch.Tensor:
    """The ``[N, K]`` weight the forward uses: ternarised with a straight-through gradient, or as it is."""
    if not layer.ste:
        return layer.weight
    return layer.weight + (absmean_ternary(layer.weight, layer.scale_group) - layer.weight).detach()


@linear.register
def float_linear(state: FloatLinear, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """:func:`ternary.linear` for a :class:`FloatLinear`: ``x [..., K] -> [..., N]`` in ``x.dtype``."""
    bias = None if state.bias is None else state.bias.to(x.dtype)
    return torch.nn.functional.linear(x, effective_weight(state).to(x.dtype), bias)


@embedding.register
def float_embedding(state: FloatLinear, tokens: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`ternary.embedding` for a :class:`FloatLinear` table ``[vocab, dim]``."""
    return effective_weight(state)[tokens.long()].to(dtype)


def is_layer(node: Any) -> bool:
    return isinstance(node, (LinearState, FloatLinear))


def float_state(state: Any, *, ste: bool, scale_group: int | None = None) -> Any:
    """The same tree with every :class:`LinearState` replaced by a :class:`FloatLinear` (from ``to_float()``).

    Other integer leaves (VQ usage counts, graph edges) have no float counterpart;
    the comparison runs without VQ and graph, and a tree holding them is refused.
    """

    def convert(node: Any) -> Any:
        if isinstance(node, LinearState):
            return FloatLinear.from_state(node, ste=ste, scale_group=scale_group)
        raise ValueError(
            f"train_compare: state leaf {type(node).__name__} has no float counterpart; compare without VQ and graph"
        )

    return pytree.tree_map(convert, state, is_leaf=lambda n: isinstance(n, LinearState))


def parameters(tree: Any) -> list[torch.Tensor]:
    """The float leaves of a :func:`float_state` tree (for the optimizer)."""
    return [leaf for leaf in pytree.tree_leaves(tree) if leaf.requires_grad]


def logical_weights(tree: Any) -> int:
    """Sum of ``N * K`` over the layer records of a tree (ternary or float; biases not counted)."""
    return sum(
        node.in_features * node.out_features for node in pytree.tree_leaves(tree, is_leaf=is_layer) if is_layer(node)
    )


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def float_training_state_bytes(tree: Any, optimizer: torch.optim.Optimizer) -> int:
    """Bytes kept between steps by a float arm: master parameters plus every optimizer-state tensor."""
    moments = [v for slot in optimizer.state.values() for v in slot.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(parameters(tree)) + tensor_bytes(moments)
