"""Reference forward and grad-x equal the dense ``W = T * 2^E`` on odd shapes."""

from __future__ import annotations

import attrs
import pytest
import torch

from ternary import LinearState, linear

# fp32 budget: relative RMS error vs a float64 dense product
FP32_BUDGET = 1e-6


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((actual.double() - expected).norm() / expected.norm().clamp_min(1e-300))


SHAPES = [(1, 1, 1, 5), (1, 7, 3, 5), (3, 83, 17, 40), (17, 41, 1, 40), (5, 127, 33, 10), (2, 200, 9, 40)]


@pytest.mark.parametrize(("m", "k", "n", "g"), SHAPES)
def test_forward_matches_dense(m: int, k: int, n: int, g: int, gen: torch.Generator) -> None:
    state = LinearState.random(k, n, group_size=g, generator=gen)
    state = attrs.evolve(
        state,
        E=torch.randint(-6, 3, state.E.shape, generator=gen, dtype=torch.int8),
        bias=torch.randint(-(2**18), 2**18, (n,), generator=gen, dtype=torch.int32),
    )
    x = torch.randn(m, k, generator=gen)
    expected = x.double() @ state.to_float().double().T + state.bias.double() * 2.0**-state.bias_frac_bits
    assert rel_rms(linear(state, x, backend="torch"), expected) <= FP32_BUDGET


@pytest.mark.parametrize(("m", "k", "n", "g"), SHAPES)
def test_grad_x_matches_dense(m: int, k: int, n: int, g: int, gen: torch.Generator) -> None:
    state = LinearState.random(k, n, group_size=g, generator=gen)
    x = torch.randn(m, k, generator=gen, requires_grad=True)
    grad_y = torch.randn(m, n, generator=gen)
    (grad_x,) = torch.autograd.grad(linear(state, x, backend="torch"), x, grad_y)
    assert rel_rms(grad_x, grad_y.double() @ state.to_float().double()) <= FP32_BUDGET


def test_extreme_exponents_are_exact() -> None:
    state = LinearState.random(10, 2, group_size=5, bias=False)
    state = attrs.evolve(
        state, T_packed=torch.full((2, 2), 242, dtype=torch.uint8), E=torch.tensor([[127, -128], [20, -20]], dtype=torch.int8)
    )
    x = torch.zeros(2, 10)
    x[0, 0], x[1, 5] = 2.0**-127, 2.0**100
    y = linear(state, x, backend="torch")
    expected = torch.tensor([[2.0**0, 2.0**-107], [2.0**-28, 2.0**80]])
    assert torch.equal(y, expected)


def test_bf16_follows_input_dtype(gen: torch.Generator) -> None:
    state = LinearState.random(40, 8, generator=gen)
    x = torch.randn(3, 40, generator=gen).bfloat16()
    y = linear(state, x, backend="torch")
    assert y.dtype == torch.bfloat16
    assert rel_rms(y, x.double() @ state.to_float().double().T) < 1e-2


def test_leading_dims_and_errors(gen: torch.Generator) -> None:
    state = LinearState.random(13, 4, generator=gen)
    assert linear(state, torch.randn(2, 3, 13)).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="in_features=13"):
        linear(state, torch.randn(2, 12))
    with pytest.raises(TypeError, match="float"):
        linear(state, torch.ones(2, 13, dtype=torch.int32))


def test_no_weight_gradient_is_produced(gen: torch.Generator) -> None:
    state = LinearState.random(13, 4, generator=gen)
    x = torch.randn(2, 13, requires_grad=True)
    linear(state, x).sum().backward()
    assert all(t.grad is None for t in (state.T_packed, state.E, state.bias))
