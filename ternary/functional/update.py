"""Update rules shaped like optax: a frozen rule record and a pure ``update``."""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.functional.hooks import LinearHooks, NonFiniteError, check_finite_loss, is_layer
from ternary.kernels.registry import implementation, resolve
from ternary.state.device_checks import first_flagged
from ternary.state.linear_state import LinearState
from ternary.state.packing import check_packed_all


def _in_range(low: int, high: int) -> Any:
    def check(record: Any, attribute: attrs.Attribute, value: int) -> None:
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"UpdateRule.{attribute.name} must be an int in [{low}, {high}], got {value!r}")

    return check


@attrs.frozen
class UpdateRule:
    """Knobs of the vote update (see ``ternary/kernels/update/reference.py`` for the rule).

    - ``theta_t``: votes a trit must bank before it steps (1..127).
    - ``theta_e``: net group votes before a group exponent E steps (1..127).
    - ``e_min``, ``e_max``: the range E is kept in (inclusive, within int8).
    - ``bias_step``: bias change per update in fixed-point units (``2^-B`` each).
    """

    theta_t: int = attrs.field(default=16, validator=_in_range(1, 127))
    theta_e: int = attrs.field(default=64, validator=_in_range(1, 127))
    e_min: int = attrs.field(default=-24, validator=_in_range(-128, 127))
    e_max: int = attrs.field(default=8, validator=_in_range(-128, 127))
    bias_step: int = attrs.field(default=64, validator=_in_range(0, 2**30))

    def __attrs_post_init__(self) -> None:
        if self.e_min > self.e_max:
            raise ValueError(f"UpdateRule: e_min={self.e_min} is above e_max={self.e_max}")

    def kernel_args(self) -> dict[str, int]:
        return attrs.asdict(self)


def _check_hooks(path: str, layer: LinearState, hooks: LinearHooks) -> None:
    x, gy = hooks.x, hooks.grad_y
    if x.dim() != 2 or gy.dim() != 2 or x.shape[0] != gy.shape[0]:
        raise ValueError(f"hooks for {path}: expected x [M, K] and grad_y [M, N], got {list(x.shape)} and {list(gy.shape)}")
    if x.shape[1] != layer.in_features or gy.shape[1] != layer.out_features:
        raise ValueError(
            f"hooks for {path}: x {list(x.shape)} / grad_y {list(gy.shape)} do not match the layer "
            f"(in_features={layer.in_features}, out_features={layer.out_features})"
        )
    for name, tensor in (("x", x), ("grad_y", gy)):
        if tensor.is_complex():
            raise TypeError(f"hooks for {path}: {name} must be a real tensor, got {tensor.dtype}")


def _check_finite(named: list[tuple[str, torch.Tensor]]) -> None:
    """Raise :class:`NonFiniteError` naming the first hook tensor with NaN or Inf values.

    One host sync per device for all of them: each tensor's fp32 sum is non-finite when the
    tensor is (and, rarely, when finite values overflow the sum), so only from the first
    flagged tensor on are tensors checked one by one."""
    start = first_flagged([tensor for _, tensor in named], lambda t: t.sum(dtype=torch.float32),
                          lambda sums: ~torch.isfinite(sums))
    if start is None:
        return
    for label, tensor in named[start:]:
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"{label} has NaN or Inf values; state left unchanged")


def update_layer(
    layer: LinearState, hooks: LinearHooks, rule: UpdateRule, *, backend: str | None = None,
    validated: bool = False,
) -> LinearState:
    """New layer state after one vote update from ``hooks`` (hooks are assumed checked);
    ``validated``: ``layer.T_packed`` is known to hold no corrupt byte (skips a host sync; a
    corrupt byte passed as validated gives undefined new state, not an error)."""
    name = resolve(backend, layer.device, grad_enabled=False)
    new = implementation("update", name).update(
        layer.T_packed, layer.E, layer.E_accum, layer.T_accum, layer.bias,
        hooks.x.contiguous(), hooks.grad_y.contiguous(),
        in_features=layer.in_features, group_size=layer.group_size, validated=validated, **rule.kernel_args(),
    )
    return attrs.evolve(layer, **new._asdict())


def _hooks_in_state_order(state_keys: list[str], hooks: Any) -> list[Any]:
    """Hooks (or None) for each leaf of the state, given the key strings ``state_keys`` of the state
    flattened with ``is_leaf=is_layer``, matched by path.

    Matching by path, not by tree shape, lets a state hold integer tensors outside
    layer records (counts, edges): ``value_and_hooks`` gives those None, which a
    record stores as an absent child, so the two trees need not have equal arity.
    """
    hook_flat, _ = pytree.tree_flatten_with_path(hooks, is_leaf=lambda node: node is None or isinstance(node, LinearHooks))
    by_path = {pytree.keystr(path): h for path, h in hook_flat if h is not None}
    stray = sorted(set(by_path).difference(state_keys))
    if stray:
        raise ValueError(f"update: hooks tree does not match the state tree: no state at {stray[0].lstrip('.')}")
    return [by_path.get(key) for key in state_keys]


def paired_layers(state: Any, hooks: Any) -> tuple[list[Any], Any, list[LinearHooks | None], list[str]]:
    """Flatten ``state`` to layers and match each with its (checked) hooks.

    Returns ``(leaves, spec, hooks_per_leaf, paths)``; ``leaves`` are layer records or
    other state leaves, ``hooks_per_leaf`` holds None where there are no hooks.
    Raises on mismatched shapes or NaN/Inf hooks before anything is computed, for the first
    layer in state order with either (the finite check of all hooks before that layer costs
    one host sync per device).
    """
    flat, spec = pytree.tree_flatten_with_path(state, is_leaf=is_layer)
    leaves = [leaf for _, leaf in flat]
    keys = [pytree.keystr(path) for path, _ in flat]
    paths = [key.lstrip(".") or "<root>" for key in keys]
    layer_hooks = _hooks_in_state_order(keys, hooks)
    layer_hooks = [h if h is None or h.rows else None for h in layer_hooks]
    named: list[tuple[str, torch.Tensor]] = []
    for path, layer, h in zip(paths, leaves, layer_hooks):
        if h is None:
            continue
        try:
            if not is_layer(layer) or not isinstance(h, LinearHooks):
                raise TypeError(f"update: hooks at {path} must be LinearHooks for a LinearState")
            _check_hooks(path, layer, h)
        except (TypeError, ValueError):
            _check_finite(named)  # a NaN in an earlier layer is reported first
            raise
        named += [(f"hooks for {path}: x", h.x), (f"hooks for {path}: grad_y", h.grad_y)]
    _check_finite(named)
    return leaves, spec, layer_hooks, paths


def update(
    state: Any,
    hooks: Any,
    rule: UpdateRule | None = None,
    *,
    loss: torch.Tensor | None = None,
    backend: str | None = None,
) -> Any:
    """Pure vote update of every layer in ``state`` that has hooks; returns a new tree.

    Refuses (raises :class:`NonFiniteError`, nothing computed) if ``loss`` or any
    hook is NaN/Inf, and (:class:`ternary.state.CorruptStateError`) if a layer to update holds
    a corrupt packed byte. Layers with ``None`` or zero-row hooks come back unchanged. The
    checks cost one host sync each per device for the whole state, not one per layer.
    """
    rule = rule or UpdateRule()
    if loss is not None:
        check_finite_loss(loss)
    leaves, spec, layer_hooks, paths = paired_layers(state, hooks)
    check_packed_all([(f"{path}.T_packed", leaf.T_packed)
                      for path, leaf, h in zip(paths, leaves, layer_hooks) if h is not None])
    new_leaves = [
        update_layer(leaf, h, rule, backend=backend, validated=True) if h is not None else leaf
        for leaf, h in zip(leaves, layer_hooks)
    ]
    return pytree.tree_unflatten(new_leaves, spec)
