"""The vote update, case by case, plus a scalar oracle written from DESIGN §2."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.utils._pytree as pytree

from ternary import LinearHooks, LinearState, NonFiniteError, UpdateRule, pack, update
from ternary.state import CorruptStateError


def layer_with(trits: torch.Tensor, *, e: int = 0, group_size: int = 5, bias=True, **fields) -> LinearState:
    """A layer with the given trits, all exponents ``e``, zero accumulators; ``fields`` override."""
    n, k = trits.shape
    groups = -(-k // group_size)
    base = LinearState(
        T_packed=pack(trits),
        E=torch.full((n, groups), e, dtype=torch.int8),
        E_accum=torch.zeros((n, groups), dtype=torch.int8),
        T_accum=torch.zeros((n, k), dtype=torch.int8),
        bias=torch.zeros(n, dtype=torch.int32) if bias is True else (bias if bias is not False else None),
        in_features=k,
        out_features=n,
        group_size=group_size,
    )
    return attrs.evolve(base, **fields)


def hooks_from_g(g: torch.Tensor) -> LinearHooks:
    """Hooks with ``grad_y.T @ x == g`` exactly: ``grad_y = I_N``, ``x = g``."""
    n, _ = g.shape
    return LinearHooks(x=g.float(), grad_y=torch.eye(n))


def test_positive_gradient_moves_trit_toward_minus_one() -> None:
    layer = layer_with(torch.tensor([[1, 0, -1]], dtype=torch.int8))
    new = update(layer, hooks_from_g(torch.ones(1, 3)), UpdateRule(theta_t=1))
    assert new.trits().tolist() == [[0, -1, -1]]
    assert new.T_accum.tolist() == [[0, 0, 0]]


def test_negative_gradient_moves_trit_toward_plus_one() -> None:
    layer = layer_with(torch.tensor([[1, 0, -1]], dtype=torch.int8))
    new = update(layer, hooks_from_g(-torch.ones(1, 3)), UpdateRule(theta_t=1))
    assert new.trits().tolist() == [[1, 1, 0]]


def test_steps_only_at_threshold_then_resets() -> None:
    rule = UpdateRule(theta_t=3)
    layer = layer_with(torch.tensor([[0, 1]], dtype=torch.int8))
    hooks = hooks_from_g(torch.ones(1, 2))
    for expected_acc in (-1, -2):
        layer = update(layer, hooks, rule)
        assert layer.trits().tolist() == [[0, 1]] and layer.T_accum.tolist() == [[expected_acc] * 2]
    layer = update(layer, hooks, rule)
    assert layer.trits().tolist() == [[-1, 0]] and layer.T_accum.tolist() == [[0, 0]]


def test_trit_at_limit_does_not_bank_votes() -> None:
    rule = UpdateRule(theta_t=3)
    layer = layer_with(torch.tensor([[1]], dtype=torch.int8))
    for _ in range(5):
        layer = update(layer, hooks_from_g(-torch.ones(1, 1)), rule)
    assert layer.trits().tolist() == [[1]] and layer.T_accum.tolist() == [[2]]
    layer = update(layer, hooks_from_g(torch.ones(1, 1)), rule)
    assert layer.T_accum.tolist() == [[1]]


def test_accumulator_saturates_instead_of_wrapping() -> None:
    layer = layer_with(torch.tensor([[0]], dtype=torch.int8), T_accum=torch.tensor([[127]], dtype=torch.int8))
    new = update(layer, hooks_from_g(-torch.ones(1, 1)), UpdateRule(theta_t=127))
    assert new.trits().tolist() == [[1]] and new.T_accum.tolist() == [[0]]
    down = layer_with(torch.tensor([[-1]], dtype=torch.int8), T_accum=torch.tensor([[-128]], dtype=torch.int8))
    new = update(down, hooks_from_g(torch.ones(1, 1)), UpdateRule(theta_t=127))
    assert new.trits().tolist() == [[-1]] and new.T_accum.tolist() == [[-126]]


def test_zero_gradient_changes_nothing_but_is_not_a_vote() -> None:
    layer = layer_with(torch.tensor([[1, 0, -1, 1, 0]], dtype=torch.int8), T_accum=torch.tensor([[1, -1, 2, 0, 3]], dtype=torch.int8))
    new = update(layer, LinearHooks(torch.ones(3, 5), torch.zeros(3, 1)), UpdateRule(theta_t=4))
    assert torch.equal(new.T_packed, layer.T_packed) and torch.equal(new.T_accum, layer.T_accum)
    assert torch.equal(new.E_accum, layer.E_accum) and torch.equal(new.bias, layer.bias)


def test_exponent_shrinks_when_gradient_agrees_with_trits() -> None:
    trits = torch.tensor([[1, -1, 1, 0, 1, 1, 1]], dtype=torch.int8)
    layer = layer_with(trits, e=-3)
    g = trits.float() * 0.5
    rule = UpdateRule(theta_t=100, theta_e=2)
    layer = update(layer, hooks_from_g(g), rule)
    assert layer.E.tolist() == [[-3, -3]] and layer.E_accum.tolist() == [[-1, -1]]
    layer = update(layer, hooks_from_g(g), rule)
    assert layer.E.tolist() == [[-4, -4]] and layer.E_accum.tolist() == [[0, 0]]
    grow = update(layer, hooks_from_g(-g), UpdateRule(theta_t=100, theta_e=1))
    assert grow.E.tolist() == [[-3, -3]]


def test_exponent_range_is_respected() -> None:
    trits = torch.ones((1, 5), dtype=torch.int8)
    rule = UpdateRule(theta_t=100, theta_e=2, e_min=-4, e_max=1)
    low = layer_with(trits, e=-4)
    for _ in range(4):
        low = update(low, hooks_from_g(torch.ones(1, 5)), rule)
    assert low.E.tolist() == [[-4]] and low.E_accum.tolist() == [[-1]]
    high = layer_with(trits, e=1)
    for _ in range(4):
        high = update(high, hooks_from_g(-torch.ones(1, 5)), rule)
    assert high.E.tolist() == [[1]] and high.E_accum.tolist() == [[1]]


def test_partial_group_scores_only_real_columns() -> None:
    trits = torch.tensor([[1, 1, 1, 1, 1, 1]], dtype=torch.int8)
    g = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0, 1.0]])
    new = update(layer_with(trits), hooks_from_g(g), UpdateRule(theta_t=100, theta_e=1))
    assert new.E.tolist() == [[1, -1]]


def test_bias_steps_against_gradient_sum_and_saturates() -> None:
    layer = layer_with(torch.zeros((3, 5), dtype=torch.int8), bias=True)
    layer = attrs.evolve(layer, bias=torch.tensor([0, 5, -(2**31) + 3], dtype=torch.int32))
    hooks = LinearHooks(x=torch.ones(2, 5), grad_y=torch.tensor([[1.0, -2.0, 3.0], [1.0, 1.0, 0.0]]))
    new = update(layer, hooks, UpdateRule(bias_step=10))
    assert new.bias.tolist() == [-10, 15, -(2**31)]


def test_update_is_pure_and_keeps_structure(gen: torch.Generator) -> None:
    tree = {"a": [LinearState.random(13, 6, generator=gen)], "b": LinearState.random(7, 2, bias=False, generator=gen)}
    before = [t.clone() for t in pytree.tree_leaves(tree)]
    hooks = {"a": [LinearHooks(torch.randn(4, 13, generator=gen), torch.randn(4, 6, generator=gen))], "b": None}
    new = update(tree, hooks, UpdateRule(theta_t=1))
    assert all(torch.equal(a, b) for a, b in zip(before, pytree.tree_leaves(tree)))
    assert pytree.tree_structure(new) == pytree.tree_structure(tree)
    assert [t.dtype for t in pytree.tree_leaves(new)] == [t.dtype for t in pytree.tree_leaves(tree)]
    assert new["b"] is tree["b"] and new["a"][0] is not tree["a"][0]
    assert not torch.equal(new["a"][0].T_packed, tree["a"][0].T_packed)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_hooks_or_loss_are_refused(bad: float, gen: torch.Generator) -> None:
    layer = LinearState.random(5, 2, generator=gen)
    x = torch.randn(3, 5, generator=gen)
    x[1, 2] = bad
    with pytest.raises(NonFiniteError, match=r"hooks for <root>: x has NaN or Inf"):
        update(layer, LinearHooks(x, torch.ones(3, 2)))
    with pytest.raises(NonFiniteError, match="loss is not finite"):
        update(layer, LinearHooks(torch.ones(3, 5), torch.ones(3, 2)), loss=torch.tensor(bad))


def test_state_wide_checks_name_the_first_bad_layer(gen: torch.Generator) -> None:
    """The hooks' finite check and the packed-byte check run once for the whole state (one
    host sync each) and still name the first offending layer and tensor, in state order
    with the shape checks; a finite hook whose fp32 sum overflows is not refused (and does
    not hide a later non-finite one); complex hooks are refused; a layer without hooks is not
    checked."""
    tree = {name: LinearState.random(5, 3, generator=gen) for name in ("a", "b", "c", "d")}

    def hooks(**bad: str) -> dict:
        out = {name: LinearHooks(torch.randn(4, 5, generator=gen), torch.randn(4, 3, generator=gen)) for name in tree}
        for name, field in bad.items():
            getattr(out[name], field)[2, 1] = float("nan")
        return out

    with pytest.raises(NonFiniteError, match=r"hooks for \['b'\]: grad_y has NaN"):
        update(tree, hooks(b="grad_y", c="x"))
    with pytest.raises(NonFiniteError, match=r"hooks for \['c'\]: x has NaN"):
        update(tree, hooks(c="x", d="grad_y"))
    huge = hooks()
    huge["a"].x.fill_(1e38)
    assert torch.isinf(huge["a"].x.sum())
    assert not torch.equal(update(tree, huge, UpdateRule(theta_t=2))["a"].T_accum, tree["a"].T_accum)
    huge["c"].grad_y[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"hooks for \['c'\]: grad_y has NaN"):
        update(tree, huge)
    misshaped = hooks(a="x")
    misshaped["b"] = LinearHooks(torch.ones(4, 2), torch.ones(4, 3))
    with pytest.raises(NonFiniteError, match=r"hooks for \['a'\]: x has NaN"):
        update(tree, misshaped)
    misshaped["a"] = hooks()["a"]
    with pytest.raises(ValueError, match=r"\['b'\].*in_features=5"):
        update(tree, misshaped)
    complex_hooks = hooks()
    complex_hooks["d"] = LinearHooks(torch.ones(4, 5, dtype=torch.complex64), torch.ones(4, 3))
    with pytest.raises(TypeError, match=r"hooks for \['d'\]: x must be a real tensor"):
        update(tree, complex_hooks)
    corrupt = {**tree, "c": attrs.evolve(tree["c"], T_packed=tree["c"].T_packed.clone())}
    corrupt["c"].T_packed[2, 0] = 250
    with pytest.raises(CorruptStateError, match=r"\['c'\]\.T_packed: byte 250 at index \(2, 0\)"):
        update(corrupt, hooks())
    assert update(corrupt, {**hooks(), "c": None})["c"] is corrupt["c"]


def test_mismatched_hooks_name_the_layer(gen: torch.Generator) -> None:
    tree = {"enc": LinearState.random(5, 2, generator=gen)}
    with pytest.raises(ValueError, match=r"\['enc'\].*in_features=5"):
        update(tree, {"enc": LinearHooks(torch.ones(3, 4), torch.ones(3, 2))})


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="theta_t"):
        UpdateRule(theta_t=0)
    with pytest.raises(ValueError, match="e_min"):
        UpdateRule(e_min=3, e_max=2)


def oracle(trits, t_acc, e, e_acc, bias, g, gsum, group_size, rule):
    """Scalar restatement of the rule, element by element, in plain Python ints."""
    n, k = len(trits), len(trits[0])
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    sat = lambda v, lo, hi: max(lo, min(hi, v))  # noqa: E731
    new_t = [row[:] for row in trits]
    new_acc = [row[:] for row in t_acc]
    for i in range(n):
        for j in range(k):
            a = sat(t_acc[i][j] - sign(g[i][j]), -128, 127)
            if a >= rule.theta_t:
                if trits[i][j] < 1:
                    new_t[i][j], a = trits[i][j] + 1, 0
                else:
                    a = rule.theta_t - 1
            elif a <= -rule.theta_t:
                if trits[i][j] > -1:
                    new_t[i][j], a = trits[i][j] - 1, 0
                else:
                    a = 1 - rule.theta_t
            new_acc[i][j] = a
    new_e = [row[:] for row in e]
    new_eacc = [row[:] for row in e_acc]
    for i in range(n):
        for grp in range(len(e[i])):
            cols = range(grp * group_size, min(k, (grp + 1) * group_size))
            score = sum(sign(g[i][j]) * trits[i][j] for j in cols)
            a = sat(e_acc[i][grp] - sign(score), -128, 127)
            if a >= rule.theta_e:
                if e[i][grp] < rule.e_max:
                    new_e[i][grp], a = e[i][grp] + 1, a - rule.theta_e
                else:
                    a = rule.theta_e - 1
            elif a <= -rule.theta_e:
                if e[i][grp] > rule.e_min:
                    new_e[i][grp], a = e[i][grp] - 1, a + rule.theta_e
                else:
                    a = 1 - rule.theta_e
            new_eacc[i][grp] = a
    new_bias = [sat(bias[i] - rule.bias_step * sign(gsum[i]), -(2**31), 2**31 - 1) for i in range(n)]
    return new_t, new_acc, new_e, new_eacc, new_bias


@pytest.mark.parametrize(("n", "k", "group_size", "seed"), [(1, 1, 5, 0), (3, 7, 5, 1), (4, 23, 10, 2), (2, 41, 40, 3)])
def test_reference_matches_scalar_oracle(n: int, k: int, group_size: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    rule = UpdateRule(theta_t=3, theta_e=2, e_min=-5, e_max=2, bias_step=7)
    layer = layer_with(
        torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8),
        group_size=group_size,
        T_accum=torch.randint(-4, 5, (n, k), generator=g, dtype=torch.int8),
        E=torch.randint(-5, 3, (n, -(-k // group_size)), generator=g, dtype=torch.int8),
        E_accum=torch.randint(-2, 3, (n, -(-k // group_size)), generator=g, dtype=torch.int8),
        bias=torch.randint(-50, 50, (n,), generator=g, dtype=torch.int32),
    )
    x = torch.randint(-2, 3, (6, k), generator=g).float()
    grad_y = torch.randint(-2, 3, (6, n), generator=g).float()
    new = update(layer, LinearHooks(x, grad_y), rule)
    expected = oracle(
        layer.trits().tolist(), layer.T_accum.tolist(), layer.E.tolist(), layer.E_accum.tolist(),
        layer.bias.tolist(), (grad_y.T @ x).tolist(), grad_y.sum(0).tolist(), group_size, rule,
    )
    actual = (new.trits().tolist(), new.T_accum.tolist(), new.E.tolist(), new.E_accum.tolist(), new.bias.tolist())
    assert actual == expected
