"""value_and_hooks, accumulation, non-finite refusal, and torch.func over records."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

import ternary
from ternary import LinearHooks, LinearState, NonFiniteError, UpdateRule, combine_hooks, linear, update, value_and_hooks


def mlp(gen: torch.Generator) -> dict:
    return {"l1": LinearState.random(11, 16, generator=gen), "l2": LinearState.random(16, 3, generator=gen)}


def mlp_loss(state: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = torch.relu(linear(state["l1"], x))
    return torch.nn.functional.cross_entropy(linear(state["l2"], h), y, reduction="sum")


def test_hooks_are_inputs_and_output_gradients(gen: torch.Generator) -> None:
    state = mlp(gen)
    x, y = torch.randn(9, 11, generator=gen), torch.randint(0, 3, (9,), generator=gen)
    loss, hooks = value_and_hooks(mlp_loss)(state, x, y)
    assert pytree.tree_structure(hooks, is_leaf=lambda n: isinstance(n, LinearHooks)).num_leaves == 2
    assert torch.equal(hooks["l1"].x, x)
    w1, w2 = state["l1"].to_float(), state["l2"].to_float()
    b1, b2 = state["l1"].bias_value(), state["l2"].bias_value()
    x_req = x.clone()
    h_pre = (x_req @ w1.T + b1).requires_grad_()
    h = torch.relu(h_pre)
    logits = (h @ w2.T + b2).requires_grad_()
    ref_loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    g_pre, g_logits = torch.autograd.grad(ref_loss, [h_pre, logits])
    assert torch.allclose(loss, ref_loss.detach(), rtol=1e-6)
    assert torch.allclose(hooks["l2"].x, h.detach(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(hooks["l2"].grad_y, g_logits, rtol=1e-5, atol=1e-7)
    assert torch.allclose(hooks["l1"].grad_y, g_pre, rtol=1e-5, atol=1e-6)


def test_unused_layer_gets_empty_hooks_and_repeated_layer_concatenates(gen: torch.Generator) -> None:
    layer = LinearState.random(4, 4, generator=gen)
    state = {"used": layer, "unused": LinearState.random(4, 2, generator=gen)}

    def twice(s, x):
        return linear(s["used"], linear(s["used"], x)).sum()

    _, hooks = value_and_hooks(twice)(state, torch.randn(3, 4, generator=gen))
    assert hooks["unused"].rows == 0 and hooks["unused"].grad_y.shape == (0, 2)
    assert hooks["used"].rows == 6
    assert update(state, hooks, UpdateRule(theta_t=1))["unused"] is state["unused"]


def test_non_finite_loss_raises_before_backward(gen: torch.Generator) -> None:
    state = mlp(gen)
    x = torch.randn(4, 11, generator=gen)
    x[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="loss is not finite"):
        value_and_hooks(mlp_loss)(state, x, torch.zeros(4, dtype=torch.long))


def test_micro_batches_equal_one_big_batch_bit_for_bit(gen: torch.Generator) -> None:
    """Integer inputs and a linear loss make every sum exact, so the updates must match exactly."""
    layer = LinearState.from_float(torch.randint(-2, 3, (5, 23), generator=gen).float(), group_size=5)
    x = torch.randint(-3, 4, (12, 23), generator=gen).float()
    c = torch.randint(-2, 3, (12, 5), generator=gen).float()

    def loss(s, xb, cb):
        return (linear(s, xb) * cb).sum()

    _, big = value_and_hooks(loss)(layer, x, c)
    parts = [value_and_hooks(loss)(layer, x[i : i + 4], c[i : i + 4])[1] for i in range(0, 12, 4)]
    combined = combine_hooks(parts)
    assert torch.equal(combined.x, big.x) and torch.equal(combined.grad_y, big.grad_y)
    rule = UpdateRule(theta_t=1, theta_e=1)
    a, b = update(layer, combined, rule), update(layer, big, rule)
    assert all(torch.equal(p, q) for p, q in zip(pytree.tree_leaves(a), pytree.tree_leaves(b)))
    separate = layer
    for part in parts:
        separate = update(separate, part, rule)
    assert not all(torch.equal(p, q) for p, q in zip(pytree.tree_leaves(a), pytree.tree_leaves(separate)))


def test_combine_hooks_keeps_none_and_checks_structure(gen: torch.Generator) -> None:
    h = LinearHooks(torch.ones(2, 3), torch.ones(2, 1))
    out = combine_hooks([{"a": h, "b": None}, {"a": h, "b": None}])
    assert out["b"] is None and out["a"].rows == 4
    with pytest.raises(ValueError, match="different structures"):
        combine_hooks([{"a": h}, {"b": h}])


def test_batch_invariance(gen: torch.Generator) -> None:
    layer = LinearState.random(37, 9, generator=gen)
    x = torch.randn(8, 37, generator=gen)
    rows = torch.cat([linear(layer, x[i : i + 1]) for i in range(8)])
    assert torch.allclose(rows, linear(layer, x), rtol=1e-6, atol=1e-6)


def test_torch_func_grad_over_linear(gen: torch.Generator) -> None:
    layer = LinearState.random(13, 4, generator=gen)
    x = torch.randn(3, 13, generator=gen)
    grad = torch.func.grad(lambda v: linear(layer, v).pow(2).sum())(x)
    w = layer.to_float()
    expected = 2 * (x @ w.T + layer.bias_value()) @ w
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_torch_func_vmap_over_stacked_records(gen: torch.Generator) -> None:
    layers = [LinearState.random(13, 4, generator=gen) for _ in range(3)]
    stacked = pytree.tree_map(lambda *ts: torch.stack(ts), *layers)
    x = torch.randn(2, 13, generator=gen)
    out = torch.func.vmap(lambda s, v: linear(s, v), in_dims=(0, None))(stacked, x)
    expected = torch.stack([linear(layer, x) for layer in layers])
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-6)
    over_x = torch.func.vmap(lambda v: linear(layers[0], v))(x)
    assert torch.allclose(over_x, linear(layers[0], x), rtol=1e-6, atol=1e-6)


def test_embedding_votes_only_rows_that_occurred(gen: torch.Generator) -> None:
    table = LinearState.random(10, 256, bias=False, generator=gen)
    tokens = torch.tensor([[3, 7, 3, 250]])
    target = torch.randn(1, 4, 10, generator=gen)

    def loss(s, t):
        return ((ternary.embedding(s, t) - target) ** 2).sum()

    _, hooks = value_and_hooks(loss)(table, tokens)
    new = update(table, hooks, UpdateRule(theta_t=1))
    changed_rows = torch.nonzero((new.T_accum != table.T_accum).any(1) | (new.T_packed != table.T_packed).any(1))
    assert set(changed_rows.flatten().tolist()) <= {3, 7, 250}
    rows = table.to_float()[tokens[0]]
    grad_rows = 2 * (rows - target[0])
    g = torch.zeros(256, 10)
    g.index_add_(0, tokens[0], grad_rows)
    assert torch.allclose(hooks.grad_y.T @ hooks.x, g, atol=1e-6)


def test_apply_does_not_rebuild_the_forward_signature(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Function.apply`` asks ``inspect`` for ``forward``'s signature on every call (tens of
    microseconds each); the bridges store theirs, so a forward and backward build none."""
    import inspect

    from ternary.functional.grouped import grouped_linear
    from ternary.kernels.linear import grouped_bridge  # noqa: F401  (imported here stores the signature once)

    built = []
    original = inspect._signature_from_function
    monkeypatch.setattr(inspect, "_signature_from_function",
                        lambda cls, func, *a, **k: built.append(func.__qualname__) or original(cls, func, *a, **k))
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs Triton interpreted (conftest)
    layers = [pytree.tree_map(lambda t: t.to(device), LinearState.random(7, 4, generator=gen)) for _ in range(2)]
    x = torch.randn(3, 7, generator=gen).to(device).requires_grad_()
    y = linear(layers[0], x) + grouped_linear(layers, x, torch.tensor([1, 2], device=device), backend="triton",
                                              fused=True)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert not [name for name in built if name.endswith("Function.forward")], built


def test_module_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, ternary; print('triton' in sys.modules, 'tilelang' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
