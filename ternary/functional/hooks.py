"""Hooks: what the update of each layer needs, returned as values.

``value_and_hooks(fn)`` runs ``fn(state, ...)`` while a short-lived tape notes, for
each layer record of ``state``, the inputs it saw and its outputs; it then takes
``d loss / d outputs`` with ``torch.autograd.grad`` and returns a tree matching
``state`` with one :class:`LinearHooks` per layer (zero rows for layers ``fn`` did
not use, so the hooks of any two calls have the same structure and combine). The tape lives only inside the call: nothing is stored on any object.
"""

from __future__ import annotations

import contextvars
import contextlib
from typing import Any, Callable, Iterator, Sequence

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record


class NonFiniteError(FloatingPointError):
    """A loss or hook is NaN or Inf; no update may be applied from it."""


@pytree_record(child_fields=("x", "grad_y"))
@attrs.frozen(eq=False)
class LinearHooks:
    """Update inputs of one layer: ``x [M, K]`` and ``grad_y [M, N]``; ``g = grad_y.T @ x``.

    Rows from several calls of the same layer (or several micro-batches) are
    concatenated along M, which is exactly the gradient of the combined batch.
    """

    x: torch.Tensor
    grad_y: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


def is_layer(node: Any) -> bool:
    return isinstance(node, LinearState)


def is_hooks(node: Any) -> bool:
    return isinstance(node, LinearHooks)


class _Tape:
    """Per-call record of (x, y) pairs for the layer records of one state tree."""

    def __init__(self, state: Any) -> None:
        layers = pytree.tree_leaves(state, is_leaf=is_layer)
        self.tracked = {id(layer) for layer in layers if is_layer(layer)}
        self.calls: dict[int, list[tuple[str, torch.Tensor, torch.Tensor, slice]]] = {}
        self._probes: dict[torch.device, torch.Tensor] = {}

    def probe(self, layer: LinearState, device: torch.device) -> torch.Tensor | None:
        if id(layer) not in self.tracked:
            return None
        if device not in self._probes:
            self._probes[device] = torch.zeros((), device=device, requires_grad=True)
        return self._probes[device]

    def record(
        self, layer: LinearState, x: torch.Tensor, y: torch.Tensor, kind: str = "linear", rows: slice | None = None
    ) -> None:
        """Note one call: ``kind`` is ``linear`` (x = input rows) or ``embedding`` (x = one-hot rows).

        ``rows`` names the layer's rows of an output ``y`` that several layers share (a
        grouped call writes every expert into one tensor); ``x`` holds those rows only.
        """
        if id(layer) in self.tracked and x.shape[0] > 0:
            self.calls.setdefault(id(layer), []).append((kind, x.detach(), y, rows or slice(None)))


_TAPE: contextvars.ContextVar[_Tape | None] = contextvars.ContextVar("ternary_hook_tape", default=None)


def current_tape() -> _Tape | None:
    return _TAPE.get()


@contextlib.contextmanager
def _recording(state: Any) -> Iterator[_Tape]:
    tape = _Tape(state)
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


def check_finite_loss(loss: torch.Tensor) -> None:
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteError(f"loss is not finite ({loss.item()}); refusing to take hooks or update")


def empty_hooks(layer: LinearState) -> LinearHooks:
    """Zero-row hooks of a layer no call used: every hooks tree of one state has one shape."""
    empty = torch.empty((0,), dtype=torch.float32, device=layer.device)
    return LinearHooks(empty.view(0, layer.in_features), empty.view(0, layer.out_features))


def _call_hooks(kind: str, x: torch.Tensor, grad_out: torch.Tensor) -> LinearHooks:
    """Hooks of one call. An embedding row lookup ``y = W[tokens]`` is ``onehot(tokens) @ W``,
    so its gradient ``g = onehot.T @ grad_out`` has the linear form with ``x = grad_out``
    and ``grad_y = onehot``: only rows of tokens that occurred get votes."""
    if kind == "linear":
        return LinearHooks(x, grad_out)
    return LinearHooks(grad_out, x)


def value_and_hooks(fn: Callable[..., Any], *, has_aux: bool = False) -> Callable[..., tuple[Any, Any]]:
    """Wrap ``fn(state, *args) -> loss`` into ``(state, *args) -> (loss, hooks)``.

    ``loss`` must be a scalar tensor; it is checked for NaN/Inf *before* backward
    (raising :class:`NonFiniteError`). With ``has_aux=True``, ``fn`` returns
    ``(loss, aux)`` and the wrapper returns ``((loss, aux), hooks)``.
    """

    def wrapped(state: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        with torch.enable_grad(), _recording(state) as tape:
            out = fn(state, *args, **kwargs)
        loss, aux = out if has_aux else (out, None)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("value_and_hooks: fn must return a scalar loss tensor")
        check_finite_loss(loss)
        outputs = list({id(y): y for calls in tape.calls.values() for _, _, y, _ in calls}.values())
        grads = torch.autograd.grad(loss, outputs, allow_unused=True) if outputs and loss.requires_grad else []
        grad_of = {id(y): gy for y, gy in zip(outputs, grads)}
        by_layer: dict[int, LinearHooks] = {}
        for key, calls in tape.calls.items():
            parts = []
            for kind, x, y, rows in calls:
                gy = grad_of.get(id(y))
                gy = torch.zeros_like(y) if gy is None else gy.detach()
                parts.append(_call_hooks(kind, x, gy[rows]))
            by_layer[key] = LinearHooks(torch.cat([p.x for p in parts]), torch.cat([p.grad_y for p in parts]))
        hooks = pytree.tree_map(
            lambda node: (by_layer.get(id(node)) or empty_hooks(node)) if is_layer(node) else None, state, is_leaf=is_layer
        )
        value = loss.detach()
        return ((value, aux) if has_aux else value), hooks

    return wrapped


def combine_hooks(hook_trees: Sequence[Any]) -> Any:
    """Concatenate the hooks of several micro-batches layer by layer (None where unused)."""
    if not hook_trees:
        raise ValueError("combine_hooks: need at least one hooks tree")
    flat = [pytree.tree_flatten(tree, is_leaf=lambda n: n is None or is_hooks(n)) for tree in hook_trees]
    spec = flat[0][1]
    for _, other in flat[1:]:
        if other != spec:
            raise ValueError("combine_hooks: hooks trees have different structures")
    combined = []
    for column in zip(*(leaves for leaves, _ in flat)):
        present = [h for h in column if h is not None]
        combined.append(
            LinearHooks(torch.cat([h.x for h in present]), torch.cat([h.grad_y for h in present]))
            if present
            else None
        )
    return pytree.tree_unflatten(combined, spec)

