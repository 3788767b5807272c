"""Data-parallel updates: ranks combine integer votes, never float gradients.

Each rank turns its hooks into votes, ``-sign(g_r)`` (int8 ``[N, K]`` per layer) and
``-sign(sum_m grad_y_r)`` (int8 ``[N]``), packs every layer's votes into one flat
integer buffer and all-reduces it with SUM. The combined vote of a weight is the
sign of that sum, a majority vote over ranks (a tie gives no vote). Every rank then
applies the identical combined votes to identical state, so states stay bit-identical.

Relation to one big batch: the single-process update uses ``-sign(sum_r g_r)``. The two
agree wherever the ranks' signs agree (all ranks vote the same way, or abstain), and in
general wherever the majority of rank signs equals the sign of the summed gradient.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.distributed as dist
import torch.utils._pytree as pytree

from ternary.functional.hooks import NonFiniteError, check_finite_loss, is_layer
from ternary.functional.update import UpdateRule, paired_layers
from ternary.kernels.registry import implementation
from ternary.state.packing import check_packed_all


VOTE_BLOCK_ELEMENTS = 1 << 24  # at most 64 MiB of fp32 gradient rows alive at once


def blocked_votes(x: torch.Tensor, grad_y: torch.Tensor, reference: Any, out: torch.Tensor | None = None) -> torch.Tensor:
    """Votes of one layer as a flat ``[N * K + N]`` (weights row-major, then biases), written
    into ``out`` (any integer dtype, e.g. a slice of the all-reduce buffer) or a new int8 tensor.

    The gradient is formed a block of output rows at a time, so no dense ``[N, K]``
    float buffer ever exists; only the integer votes are kept.
    """
    n, k = grad_y.shape[1], x.shape[1]
    if out is None:
        out = torch.empty((n * k + n,), dtype=torch.int8, device=x.device)
    weight_votes, bias_votes = out[: n * k].view(n, k), out[n * k :]
    rows = max(1, VOTE_BLOCK_ELEMENTS // max(1, k))
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        weight_votes[block], bias_votes[block] = reference.votes(x, grad_y[:, block])
    return out


def vote_dtype(world_size: int) -> torch.dtype:
    """Smallest integer dtype that holds a sum of ``world_size`` votes in {-1, 0, +1} and that both
    NCCL and gloo all-reduce (neither takes int16, so past 127 ranks it is int32)."""
    return torch.int8 if world_size <= 127 else torch.int32


def _agree_hooks_are_finite(local_ok: bool, group: Any, device: torch.device) -> None:
    flag = torch.tensor([0 if local_ok else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag, group=group)
    if int(flag) > 0:
        raise NonFiniteError(f"{int(flag)} rank(s) had NaN/Inf loss or hooks; no rank applies this update")


def vote_update(
    state: Any,
    hooks: Any,
    rule: UpdateRule | None = None,
    *,
    loss: torch.Tensor | None = None,
    group: Any = None,
) -> tuple[Any, int]:
    """Majority-vote update across the ranks of ``group``; returns ``(new_state, bytes_reduced)``.

    Every rank must call it with the same state structure. A layer without hooks on
    one rank contributes no votes from that rank. If any rank's loss or hooks are not
    finite, every rank raises :class:`NonFiniteError` and no state changes. A layer with a
    non-zero combined vote whose ``T_packed`` holds a corrupt byte raises
    :class:`ternary.state.CorruptStateError` naming its path, before any layer is stepped; a
    layer whose votes all tie is left as it is and not checked (``update`` checks every layer
    that has hooks).
    After the all-reduce, deciding which layers changed and checking their packed bytes
    cost one host sync each per device, not one per layer.
    """
    rule = rule or UpdateRule()
    leaves, spec = pytree.tree_flatten(state, is_leaf=is_layer)
    device = next((leaf.device for leaf in leaves if is_layer(leaf)), torch.device("cpu"))
    try:
        if loss is not None:
            check_finite_loss(loss)
        _, _, layer_hooks, paths = paired_layers(state, hooks)
        local_ok = True
    except NonFiniteError:
        local_ok = False
    _agree_hooks_are_finite(local_ok, group, device)

    reference = implementation("update", "torch")
    dtype = vote_dtype(dist.get_world_size(group))
    layers = [(i, leaf) for i, leaf in enumerate(leaves) if is_layer(leaf)]
    if not layers:
        return state, 0
    sizes = [layer.out_features * (layer.in_features + 1) for _, layer in layers]
    flat = torch.zeros(sum(sizes), dtype=dtype, device=device)
    for (i, _), votes in zip(layers, flat.split(sizes)):
        if layer_hooks[i] is not None:
            blocked_votes(layer_hooks[i].x, layer_hooks[i].grad_y, reference, out=votes)
    dist.all_reduce(flat, group=group)
    blocks = torch.sign(flat).to(torch.int8).split(sizes)
    voted = torch.stack([block.any() for block in blocks]).tolist()
    check_packed_all([(f"{paths[i]}.T_packed", layer.T_packed) for (i, layer), v in zip(layers, voted) if v])
    new_leaves = list(leaves)
    for (i, layer), block, v in zip(layers, blocks, voted):
        if not v:
            continue
        n, k = layer.out_features, layer.in_features
        new = reference.apply_votes(
            layer.T_packed, layer.E, layer.E_accum, layer.T_accum, layer.bias,
            block[: n * k].view(n, k), block[n * k :],
            in_features=k, group_size=layer.group_size, validated=True, **rule.kernel_args(),
        )
        new_leaves[i] = attrs.evolve(layer, **new._asdict())
    return pytree.tree_unflatten(new_leaves, spec), flat.numel() * flat.element_size()
