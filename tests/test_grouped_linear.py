"""Grouped (per-expert) ternary linear: the fused Triton launch against layer-by-layer calls.

Every layer of a group runs on its own run of sorted rows. The fused path must give the
per-layer reference's outputs and grad-x (fp32: relative error <= 1e-5 of the largest
entry; bf16 on a GPU: 1e-2), exactly the same hooks (each layer its own rows), and so the
same integer state after an update. Shapes are odd on purpose: K = 23 (neither a
multiple of 5 nor of the group size 10), N = 37, layers with 0 and 1 rows.
"""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

import ternary  # noqa: E402
from ternary.functional.grouped import grouped_linear  # noqa: E402
from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.registry import BackendError  # noqa: E402
from ternary.model.moe import MoeState, dispatch, route  # noqa: E402
from ternary.state.linear_state import LinearState  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402

FP32_BUDGET = 1e-5
BF16_BUDGET = 1e-2
FIELDS = ("T_packed", "E", "E_accum", "T_accum", "bias")


def layer(k: int, n: int, g: int, gen: torch.Generator, *, exponents=(-3, 4), bias: bool = True) -> LinearState:
    groups = -(-k // g)
    return LinearState(
        T_packed=random_packed(n, k, generator=gen).to(DEVICE),
        E=torch.randint(*exponents, (n, groups), generator=gen).to(torch.int8).to(DEVICE),
        E_accum=torch.randint(-4, 5, (n, groups), generator=gen).to(torch.int8).to(DEVICE),
        T_accum=torch.randint(-4, 5, (n, k), generator=gen).to(torch.int8).to(DEVICE),
        bias=torch.randint(-(2**20), 2**20, (n,), generator=gen, dtype=torch.int32).to(DEVICE) if bias else None,
        in_features=k, out_features=n, group_size=g,
    )


def per_layer_reference(layers, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    outputs, start = [], 0
    for state, rows in zip(layers, counts):
        outputs.append(reference.forward(
            x[start : start + rows].double().cpu(), state.T_packed.cpu(), state.E.cpu(),
            None if state.bias is None else state.bias.cpu(), in_features=state.in_features,
            group_size=state.group_size, bias_frac_bits=state.bias_frac_bits,
        ))
        start += rows
    return torch.cat(outputs)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double().cpu() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("counts", [[5, 0, 19], [1, 1, 1], [0, 0, 7], [33, 2, 0]])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_forward_and_grad_x_match_per_layer_reference(gen, counts, bias):
    layers = [layer(23, 37, 10, gen, bias=bias) for _ in counts]
    x = torch.randn(sum(counts), 23, generator=gen).to(DEVICE).requires_grad_(True)
    y = grouped_linear(layers, x, torch.tensor(counts, device=DEVICE), backend="triton", fused=True)
    assert y.shape == (sum(counts), 37) and y.dtype == torch.float32
    assert relative_error(y.detach(), per_layer_reference(layers, x.detach(), counts)) <= FP32_BUDGET
    grad_y = torch.randn(sum(counts), 37, generator=gen).to(DEVICE)
    (grad_x,) = torch.autograd.grad(y, x, grad_y)
    x64 = x.detach().double().cpu().requires_grad_(True)
    (want,) = torch.autograd.grad(per_layer_reference(layers, x64, counts), x64, grad_y.double().cpu())
    assert relative_error(grad_x, want) <= FP32_BUDGET


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 arithmetic needs a GPU (wrong in the interpreter)")
def test_fused_forward_bf16_on_gpu(gen):
    counts = [700, 0, 1, 333]
    layers = [layer(1000, 515, 40, gen, exponents=(-8, 8)) for _ in counts]
    x = torch.randn(sum(counts), 1000, generator=gen).to(DEVICE)
    y = grouped_linear(layers, x.bfloat16(), torch.tensor(counts, device=DEVICE), backend="triton", fused=True)
    assert y.dtype == torch.bfloat16
    assert relative_error(y.float(), per_layer_reference(layers, x.bfloat16().float(), counts)) <= BF16_BUDGET


def test_exponent_extremes_are_exact(gen):
    """E = -128 and E = 127 are powers of two fp32 holds exactly; the fused decode must not clamp them."""
    counts = [3, 4]
    layers = [layer(15, 9, 5, gen, exponents=(-128, -120), bias=False), layer(15, 9, 5, gen, exponents=(100, 108), bias=False)]
    x = torch.randint(-3, 4, (7, 15), generator=gen).float().to(DEVICE)
    x[:3] *= 2.0**100
    x[3:] *= 2.0**-110
    y = grouped_linear(layers, x, torch.tensor(counts, device=DEVICE), backend="triton", fused=True)
    want = per_layer_reference(layers, x, counts)
    assert torch.isfinite(y).all() and (y.double().cpu() == want).all()


def test_fused_hooks_and_update_equal_per_layer(gen):
    """Integer-valued inputs make every sum exact, so the hooks and the update must agree bit for bit."""
    counts = [6, 0, 1, 11]
    layers = tuple(layer(23, 37, 10, gen) for _ in counts)
    x = torch.randint(-2, 3, (sum(counts), 23), generator=gen).float().to(DEVICE)
    weights = torch.randint(-3, 4, (sum(counts), 37), generator=gen).float().to(DEVICE)
    count_tensor = torch.tensor(counts, device=DEVICE)

    def loss(state, inputs, fused):
        return (grouped_linear(state, inputs, count_tensor, backend="triton", fused=fused) * weights).sum()

    _, fused_hooks = ternary.value_and_hooks(loss)(layers, x, True)
    _, plain_hooks = ternary.value_and_hooks(loss)(layers, x, False)
    start = 0
    for rows, got, want in zip(counts, fused_hooks, plain_hooks):
        assert got.rows == want.rows == rows
        assert torch.equal(got.x, want.x) and torch.equal(got.x, x[start : start + rows])
        assert torch.equal(got.grad_y, want.grad_y) and torch.equal(got.grad_y, weights[start : start + rows])
        start += rows
    rule = ternary.UpdateRule(theta_t=2, theta_e=4)
    after_fused = ternary.update(layers, fused_hooks, rule, backend="torch")
    after_plain = ternary.update(layers, plain_hooks, rule, backend="torch")
    moved = 0
    for before, got, want in zip(layers, after_fused, after_plain):
        for field in FIELDS:
            assert torch.equal(getattr(got, field), getattr(want, field)), field
        moved += int((got.T_accum != before.T_accum).sum())
    assert moved > 0


def test_moe_dispatch_fused_matches_per_layer(gen):
    state = MoeState.random(20, 35, 4, group_size=10, generator=gen, device=DEVICE)
    x = torch.randn(29, 20, generator=gen).to(DEVICE)
    routing = route(state.router, x, 2, backend="triton")
    fused, fused_rows = dispatch(state.experts, x, routing, backend="triton", fused=True)
    plain, plain_rows = dispatch(state.experts, x, routing, backend="torch", fused=False)
    assert torch.equal(fused_rows, plain_rows) and int(fused_rows.sum()) == 29 * 2
    assert relative_error(fused, plain.double().cpu()) <= FP32_BUDGET


def test_auto_takes_the_fused_path_only_on_triton(gen, monkeypatch):
    from ternary.functional import grouped

    calls = []
    monkeypatch.setattr(grouped, "_fused", lambda *args: calls.append(1) or grouped._per_layer(*args, None))
    layers = [layer(23, 37, 10, gen) for _ in range(2)]
    x = torch.randn(4, 23, generator=gen).to(DEVICE)
    counts = torch.tensor([1, 3], device=DEVICE)
    grouped_linear(layers, x, counts, backend="torch")
    assert calls == []
    grouped_linear(layers, x, counts, backend="triton")
    assert calls == [1]


def test_bad_groups_are_refused(gen):
    counts = torch.tensor([2, 2], device=DEVICE)
    x = torch.randn(4, 23, generator=gen).to(DEVICE)
    with pytest.raises(ValueError, match="layer 1 differs"):
        grouped_linear([layer(23, 37, 10, gen), layer(23, 36, 10, gen)], x, counts, backend="triton", fused=True)
    with pytest.raises(ValueError, match=r"counts must be \[2\]"):
        grouped_linear([layer(23, 37, 10, gen)] * 2, x, counts[:1], backend="triton")
    with pytest.raises(BackendError, match="fused=True"):
        grouped_linear([layer(23, 37, 10, gen)] * 2, x, counts, backend="torch", fused=True)
    with pytest.raises(ValueError, match="counts must be an integer tensor"):
        grouped_linear([layer(23, 37, 10, gen)] * 2, x, counts.float(), backend="triton")


@pytest.mark.parametrize("change,message", [
    (lambda b: b.to(torch.int64), "bias must be int32"),
    (lambda b: b[:1], r"bias must be stacked per expert \[2, 37\]"),
    (lambda b: b[:, :-1], "bias must be int32 \\[37\\]"),
    (lambda b: b.to("meta"), "bias is on meta"),
])
def test_grouped_kernel_names_a_bad_bias(gen, change, message):
    """The grouped forward checks the stacked bias like every other layer tensor: dtype,
    shape per expert and device, in one error naming it."""
    from ternary.kernels.linear import triton_grouped

    layers = [layer(23, 37, 10, gen) for _ in range(2)]
    stack = {name: torch.stack([getattr(s, name) for s in layers]) for name in ("T_packed", "E", "bias")}
    x = torch.randn(4, 23, generator=gen).to(DEVICE)
    offsets = torch.tensor([0, 2, 4], dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        triton_grouped.forward(x, stack["T_packed"], stack["E"], change(stack["bias"]), offsets, in_features=23,
                               group_size=10, bias_frac_bits=16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA the check is a device-side assert (it ends the process)")
@pytest.mark.parametrize("counts", [[2, 1], [2, 3], [5, -1]])
@pytest.mark.parametrize("fused", [True, False])
def test_counts_that_do_not_cover_the_rows_are_refused(gen, counts, fused):
    """Too few rows would leave rows unwritten, too many would read and write past x."""
    x = torch.randn(4, 23, generator=gen).to(DEVICE)
    layers = [layer(23, 37, 10, gen) for _ in counts]
    with pytest.raises(RuntimeError, match="sum to the rows of x"):
        grouped_linear(layers, x, torch.tensor(counts, device=DEVICE), backend="triton", fused=fused)


def test_moe_hooks_fused_match_per_layer(gen):
    """The whole adaptive MoE under value_and_hooks: every layer's hooks agree between the paths
    (the same rows, in the same order; floats within the fp32 budget)."""
    import torch.utils._pytree as pytree

    from ternary.model.moe import moe

    state = MoeState.random(20, 35, 4, group_size=10, generator=gen, device=DEVICE)
    x = torch.randn(13, 20, generator=gen).to(DEVICE)

    def loss(s, inputs, backend):
        out, aux = moe(s, inputs, 2, 2, 0.99, backend=backend)
        return out.pow(2).mean() + aux.balance

    _, fused = ternary.value_and_hooks(loss)(state, x, "triton")
    _, plain = ternary.value_and_hooks(loss)(state, x, "torch")
    leaves = lambda tree: pytree.tree_leaves(tree, is_leaf=lambda n: isinstance(n, ternary.LinearHooks))  # noqa: E731
    pairs = list(zip(leaves(fused), leaves(plain)))
    assert len(pairs) == 1 + 4 * 2 + 1 and sum(got.rows for got, _ in pairs) > 0
    for got, want in pairs:
        assert got.rows == want.rows
        if got.rows:
            assert relative_error(got.x, want.x.double().cpu()) <= FP32_BUDGET
            assert relative_error(got.grad_y, want.grad_y.double().cpu()) <= FP32_BUDGET


def test_one_layer_twice_in_a_group_gets_both_runs_of_rows(gen):
    shared = layer(23, 37, 10, gen)
    x = torch.randint(-2, 3, (7, 23), generator=gen).float().to(DEVICE)
    weights = torch.randint(-3, 4, (7, 37), generator=gen).float().to(DEVICE)
    counts = torch.tensor([3, 4], device=DEVICE)

    def loss(state, inputs):
        return (grouped_linear([state, state], inputs, counts, backend="triton", fused=True) * weights).sum()

    _, hooks = ternary.value_and_hooks(loss)(shared, x)
    assert hooks.rows == 7 and torch.equal(hooks.x, x) and torch.equal(hooks.grad_y, weights)
