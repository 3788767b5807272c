"""The one autograd bridge of the ternary linear op, for every backend.

Forward calls the backend's ``forward``; backward returns ``grad_x`` from the
backend's ``grad_x`` and **no weight gradient**: the integer state takes no float
gradient. An optional zero-valued ``probe`` input makes the output part of the
autograd graph even when ``x`` needs no gradient, so the caller can take
``d loss / d y`` (the layer's ``grad_y`` hook) with ``torch.autograd.grad``.

TileLang outputs are checked here, in one place (``TERNARY_TILELANG_CHECK_FINITE``,
see ``registry.py``): a non-finite output of a TileLang forward that ``auto`` chose is
recomputed on the next backend, and if that one is finite TileLang is disabled for
the process; a forced ``tilelang`` raises instead.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch

from ternary.kernels.registry import (
    BackendError,
    backend_after_tilelang,
    check_finite_enabled,
    disable_tilelang,
    implementation,
    tilelang_disabled,
)


class LinearStatic(NamedTuple):
    """Static fields the kernels need."""

    in_features: int
    group_size: int
    bias_frac_bits: int


def forward_on(backend: str, x2d: torch.Tensor, T_packed, E, bias, static: LinearStatic) -> torch.Tensor:
    return implementation("linear", backend).forward(
        x2d, T_packed, E, bias, in_features=static.in_features, group_size=static.group_size,
        bias_frac_bits=static.bias_frac_bits,
    )


def run_forward(backend: str, x2d: torch.Tensor, T_packed, E, bias, static: LinearStatic) -> torch.Tensor:
    """Forward on ``backend``, with the TileLang finite check and fallback."""
    y = forward_on(backend, x2d, T_packed, E, bias, static)
    if backend != "tilelang" or not check_finite_enabled() or bool(torch.isfinite(y).all()):
        return y
    shape = f"x {list(x2d.shape)} -> y {list(y.shape)}"
    if not getattr(backend, "automatic", False):
        raise BackendError(
            f"backend 'tilelang' produced NaN/Inf in the ternary linear forward ({shape}); "
            "use TERNARY_BACKEND=auto to fall back, or TERNARY_TILELANG_CHECK_FINITE=0 to skip this check"
        )
    fallback = backend_after_tilelang(x2d.device)
    y_fallback = forward_on(fallback, x2d, T_packed, E, bias, static)
    if bool(torch.isfinite(y_fallback).all()):
        disable_tilelang(f"a linear forward ({shape}) gave NaN/Inf where {fallback!r} is finite; using {fallback!r}")
    return y_fallback


def backward_backend(backend: str, device: torch.device) -> str:
    """The backend for ``grad_x``: the forward's, unless an automatic TileLang choice was disabled since."""
    if backend == "tilelang" and getattr(backend, "automatic", False) and tilelang_disabled():
        return backend_after_tilelang(device)
    return backend


def run_grad_x(backend: str, grad_y: torch.Tensor, T_packed, E, static: LinearStatic) -> torch.Tensor:
    return implementation("linear", backend).grad_x(
        grad_y, T_packed, E, in_features=static.in_features, group_size=static.group_size
    )


def with_cached_signature(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """Store ``inspect.signature(function.forward)`` on ``forward`` as ``__signature__``.

    ``Function.apply`` binds its arguments through ``inspect.signature(forward)`` on every call
    when ``setup_context`` is defined (which ``torch.func`` needs), and ``inspect`` returns a
    stored ``__signature__`` without rebuilding it: 27 -> 3 us per call on the CI machine's CPU,
    for a few hundred calls per training step."""
    function.forward.__signature__ = inspect.signature(function.forward)
    return function


@with_cached_signature
class TernaryLinearFunction(torch.autograd.Function):
    """``y [M, N] = linear(x [M, K])``; differentiable in ``x`` only."""

    @staticmethod
    def forward(x2d, probe, T_packed, E, bias, static: LinearStatic, backend: str):  # type: ignore[override]
        return run_forward(backend, x2d, T_packed, E, bias, static)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, _, T_packed, E, _, static, backend = inputs
        ctx.save_for_backward(T_packed, E)
        ctx.static, ctx.backend = static, backward_backend(backend, T_packed.device)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor):  # type: ignore[override]
        T_packed, E = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = run_grad_x(ctx.backend, grad_y.contiguous(), T_packed, E, ctx.static)
        return grad_x, None, None, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x2d, probe, T_packed, E, bias, static, backend):
        """Batching rule for ``torch.func.vmap``: one call per batch element, then stack."""
        tensors = (x2d, probe, T_packed, E, bias)
        dims = in_dims[:5]

        def pick(tensor, dim, index):
            return tensor if tensor is None or dim is None else tensor.select(dim, index)

        outputs = [
            TernaryLinearFunction.apply(*(pick(t, d, i) for t, d in zip(tensors, dims)), static, backend)
            for i in range(info.batch_size)
        ]
        return torch.stack(outputs), 0
