"""``grouped_linear(layers, x, counts)``: layers of one shape, each applied to its own run of rows.

The mixture-of-experts feed-forward sorts its routed rows by expert; layer ``g`` then
owns rows ``sum(counts[:g]) : sum(counts[:g + 1])`` of ``x``. On the Triton backend one
fused launch computes every layer (weights decoded on chip, no host sync when no hooks
are taken); elsewhere each layer runs :func:`linear` on its own rows. Both record the
same hooks: layer ``g`` sees exactly its rows. ``counts`` must be non-negative and sum to
``S``; this is checked on the device (``torch._assert_async``: a RuntimeError on CPU, a
device-side assert on CUDA), so the check adds no host sync.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ternary.functional.hooks import current_tape
from ternary.functional.linear import check_input, linear, static_of
from ternary.kernels.registry import BackendError, resolve
from ternary.state.linear_state import LinearState

FUSED_BACKENDS = ("triton",)


def _shared_static(layers: Sequence[LinearState]):
    static = static_of(layers[0])
    shape = (layers[0].out_features, layers[0].bias is None)
    for index, layer in enumerate(layers):
        if static_of(layer) != static or (layer.out_features, layer.bias is None) != shape:
            raise ValueError(
                f"grouped_linear: layer {index} differs from layer 0 (in/out features, group size, bias); "
                "grouped layers must share one shape"
            )
    return static


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


def _fused(layers: Sequence[LinearState], x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    from ternary.kernels.linear.grouped_bridge import GroupedTernaryLinearFunction

    static = _shared_static(layers)
    tape = current_tape()
    probes = [tape.probe(layer, x.device) for layer in layers] if tape is not None else []
    probe = next((p for p in probes if p is not None), None)
    bias = torch.stack([layer.bias for layer in layers]) if layers[0].bias is not None else None
    y = GroupedTernaryLinearFunction.apply(
        x, probe, _offsets(counts), torch.stack([layer.T_packed for layer in layers]),
        torch.stack([layer.E for layer in layers]), bias, static,
    )
    if tape is not None:
        start = 0
        for layer, rows in zip(layers, counts.tolist()):
            tape.record(layer, x[start : start + rows], y, rows=slice(start, start + rows))
            start += rows
    return y


def _per_layer(layers: Sequence[Any], x: torch.Tensor, counts: torch.Tensor, backend: str | None) -> torch.Tensor:
    outputs, start = [], 0
    for layer, rows in zip(layers, counts.tolist()):
        if rows:
            outputs.append(linear(layer, x[start : start + rows], backend=backend))
        start += rows
    if not outputs:
        return linear(layers[0], x[:0], backend=backend)
    return torch.cat(outputs)


def grouped_linear(
    layers: Sequence[Any], x: torch.Tensor, counts: torch.Tensor, *, backend: str | None = None,
    fused: bool | None = None,
) -> torch.Tensor:
    """``y [S, N]``: rows of ``x [S, K]`` through their layer; ``counts [G]`` rows per layer, in order.

    ``fused``: ``None`` picks the one-launch Triton path when every layer is a
    :class:`LinearState` and the backend resolves to Triton; ``True`` demands it
    (:class:`BackendError` otherwise); ``False`` runs the layers one by one.
    """
    if len(layers) == 0 or counts.dim() != 1 or counts.shape[0] != len(layers):
        raise ValueError(f"grouped_linear: counts must be [{len(layers)}] (one per layer), got {list(counts.shape)}")
    if x.dim() != 2:
        raise ValueError(f"grouped_linear: x must be [S, K], got {list(x.shape)}")
    if counts.device != x.device or counts.dtype.is_floating_point:
        raise ValueError(f"grouped_linear: counts must be an integer tensor on {x.device}, "
                         f"got {counts.dtype} on {counts.device}")
    torch._assert_async((counts >= 0).all() & (counts.sum() == x.shape[0]),
                        "grouped_linear: counts must be >= 0 and sum to the rows of x")
    ternary = all(isinstance(layer, LinearState) for layer in layers)
    if fused is not False and ternary:
        check_input(layers[0], x)
        tape = current_tape()
        taking_grad = torch.is_grad_enabled() and (x.requires_grad or tape is not None)
        name = resolve(backend, x.device, grad_enabled=taking_grad)
        if fused and name not in FUSED_BACKENDS:
            raise BackendError(f"grouped_linear: fused=True needs backend {FUSED_BACKENDS}, resolved {name!r}")
        if name in FUSED_BACKENDS:
            return _fused(layers, x.contiguous(), counts)
    elif fused:
        raise BackendError("grouped_linear: fused=True needs LinearState layers")
    return _per_layer(layers, x, counts, backend)
