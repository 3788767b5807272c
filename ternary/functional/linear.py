"""``linear(state, x)``: the ternary linear layer as a pure function."""

from __future__ import annotations

import functools
from typing import Any

import torch

from ternary.functional.hooks import current_tape
from ternary.kernels.linear.bridge import LinearStatic, TernaryLinearFunction, run_forward
from ternary.kernels.registry import implementation, resolve
from ternary.state.decode_state import DecodeLinearState
from ternary.state.linear_state import LinearState


def static_of(state: LinearState | DecodeLinearState) -> LinearStatic:
    return LinearStatic(state.in_features, state.group_size, state.bias_frac_bits)


def check_input(state: LinearState | DecodeLinearState, x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"linear: {name} must be a float tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() == 0 or x.shape[-1] != state.in_features:
        raise ValueError(
            f"linear: {name} has shape {list(x.shape)}; its last dimension must be in_features={state.in_features}"
        )
    if x.device != state.device:
        raise ValueError(f"linear: {name} is on {x.device} but the layer state is on {state.device}")


def as_rows(state: LinearState | DecodeLinearState, x: torch.Tensor) -> torch.Tensor:
    """``x [..., K]`` as contiguous rows ``[M, K]`` (a view where it already is one)."""
    x2d = x.reshape(-1, state.in_features)
    return x2d if x2d.is_contiguous() else x2d.contiguous()


@functools.singledispatch
def linear(state: Any, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """``y [..., N] = x [..., K] @ W.T + bias`` with ``W = T * 2^E``; differentiable in ``x``.

    Computed in ``x.dtype`` (bf16 or fp32) with the scale applied exactly. Inside
    :func:`ternary.value_and_hooks` the call also records the layer's hooks.
    Dispatches on the record type: other parameter records (for example the float
    baselines of ``benchmarks/train_compare``) register their own ``linear`` with
    ``linear.register(RecordType)``, so one model definition serves every variant.
    """
    raise TypeError(f"linear: no implementation for state of type {type(state).__name__}")


@linear.register
def ternary_linear(state: LinearState, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """:func:`linear` for a :class:`LinearState`."""
    check_input(state, x)
    x2d = as_rows(state, x)
    tape = current_tape()
    probe = tape.probe(state, x.device) if tape is not None else None
    taking_grad = torch.is_grad_enabled() and (x.requires_grad or probe is not None)
    name = resolve(backend, x.device, grad_enabled=taking_grad)
    y2d = TernaryLinearFunction.apply(x2d, probe, state.T_packed, state.E, state.bias, static_of(state), name)
    if tape is not None:
        tape.record(state, x2d, y2d)
    return y2d.reshape(*x.shape[:-1], state.out_features)


@linear.register
def decode_linear(state: DecodeLinearState, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """:func:`linear` for a :class:`DecodeLinearState`: the forward only, for inference. One
    activation row, or 2 to 64 bf16 rows, on the Triton backend read the row-tiled decode layout;
    anything else runs the backend's forward on ``T_packed``. Raises where gradients or hooks are
    being taken (train the :class:`LinearState` instead)."""
    check_input(state, x)
    if current_tape() is not None or (torch.is_grad_enabled() and x.requires_grad):
        raise RuntimeError("linear: a DecodeLinearState is for inference only (no grad_x, no hooks); "
                           "take gradients through the LinearState it was built from")
    x2d = as_rows(state, x)
    name = resolve(backend, x.device, grad_enabled=False)
    if name == "triton":  # the record's checks cover the tiles against the layer
        y2d = implementation("linear", name).forward_decode(
            x2d, state.T_packed, state.E, state.T_tiles, state.E_tiles, state.bias, in_features=state.in_features,
            group_size=state.group_size, bias_frac_bits=state.bias_frac_bits, validated=True)
    else:
        y2d = run_forward(name, x2d, state.T_packed, state.E, state.bias, static_of(state))
    return y2d.reshape(*x.shape[:-1], state.out_features)
