"""LinearState: validators, constructors, pytree behaviour, audit."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.utils._pytree as pytree

from ternary import LinearState, audit
from ternary.state import leaf_paths


def test_random_is_integer_and_scaled(gen: torch.Generator) -> None:
    state = LinearState.random(83, 17, generator=gen)
    assert state.T_packed.dtype == torch.uint8 and state.T_packed.shape == (17, 17)
    assert state.E.shape == (17, 3) and state.T_accum.shape == (17, 83)
    assert state.bias is not None and state.bias.dtype == torch.int32
    x = torch.randn(4096, 83, generator=gen)
    y = x @ state.to_float().T
    assert 0.5 < float(y.std()) < 2.0


def test_random_without_float_temporary(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = []
    original = torch.Tensor.float

    def spy(self: torch.Tensor) -> torch.Tensor:
        sizes.append(self.numel())
        return original(self)

    monkeypatch.setattr(torch.Tensor, "float", spy)
    LinearState.random(4000, 300)
    assert not any(size >= 4000 * 300 for size in sizes)


def test_from_float_scale_and_threshold() -> None:
    w = torch.tensor([[0.9, -0.4, 0.1, -1.2, 0.0, 0.6, -0.55]])
    state = LinearState.from_float(w, torch.tensor([0.25]), group_size=5)
    mean_abs = [w[0, :5].abs().mean(), w[0, 5:].abs().mean()]
    expected_e = [round(float(torch.log2(m))) for m in mean_abs]
    assert state.E.tolist() == [expected_e]
    scale = torch.tensor([2.0 ** expected_e[0]] * 5 + [2.0 ** expected_e[1]] * 2)
    expected_t = torch.where(w.abs() > scale / 2, torch.sign(w), torch.zeros_like(w))
    assert torch.equal(state.trits().float(), expected_t)
    assert torch.equal(state.to_float(), expected_t * scale)
    assert float(state.bias_value()[0]) == 0.25


def test_from_float_round_trips_representable_weights(gen: torch.Generator) -> None:
    trits = torch.randint(-1, 2, (6, 23), generator=gen).float()
    trits[:, 0] = 1.0
    state = LinearState.from_float(trits * 0.125, group_size=5)
    assert torch.equal(state.to_float(), trits * 0.125) or state.E.max() <= -3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("E", torch.zeros((3, 2), dtype=torch.int16), "E: expected dtype torch.int8"),
        ("T_accum", torch.zeros((3, 11), dtype=torch.int8), r"T_accum: expected shape \[3, 12\]"),
        ("T_packed", torch.zeros((3, 2), dtype=torch.uint8), r"T_packed: expected shape \[3, 3\]"),
        ("bias", torch.zeros(3, dtype=torch.float32), "bias: expected dtype torch.int32"),
    ],
)
def test_validators_name_the_field(field: str, value: torch.Tensor, message: str) -> None:
    state = LinearState.random(12, 3, group_size=10)
    with pytest.raises((TypeError, ValueError), match=message):
        attrs.evolve(state, **{field: value})


def test_group_size_must_be_multiple_of_five() -> None:
    with pytest.raises(ValueError, match="multiple of 5"):
        LinearState.random(12, 3, group_size=8)


def test_pytree_paths_and_static_context(gen: torch.Generator) -> None:
    tree = {"blocks": [LinearState.random(7, 3, generator=gen), LinearState.random(5, 2, bias=False, generator=gen)]}
    paths = [p for p, _ in leaf_paths(tree)]
    assert paths[:5] == [f"['blocks'][0].{f}" for f in ("T_packed", "E", "E_accum", "T_accum", "bias")]
    assert len(paths) == 9
    leaves, spec = pytree.tree_flatten(tree)
    rebuilt = pytree.tree_unflatten(leaves, spec)
    assert rebuilt["blocks"][1].bias is None and rebuilt["blocks"][0].in_features == 7
    other = {"blocks": [LinearState.random(7, 3), LinearState.random(5, 2, bias=False, group_size=5)]}
    assert pytree.tree_structure(other) != spec


def test_unflatten_does_not_validate() -> None:
    state = LinearState.random(7, 3)
    leaves, spec = pytree.tree_flatten(state)
    placeholders = [object() for _ in leaves]
    rebuilt = pytree.tree_unflatten(placeholders, spec)
    assert rebuilt.T_packed is placeholders[0] and rebuilt.out_features == 3


def test_audit_counts_and_flags_floats(gen: torch.Generator) -> None:
    state = LinearState.random(83, 17, generator=gen)
    report = audit({"layer": state})
    assert report.ok and report.float_leaves == ()
    assert report.bytes_by_dtype == {"uint8": 17 * 17, "int8": 17 * 3 * 2 + 17 * 83, "int32": 17 * 4}
    bad = audit({"layer": state, "stray": torch.zeros(3)})
    assert not bad.ok and bad.float_leaves == ("['stray']",)


@pytest.mark.parametrize("args,kwargs,name", [((0, 8), {}, "in_features"), ((50, 0), {}, "out_features"),
                                              ((50, 8), {"group_size": 0}, "group_size"),
                                              ((50.0, 8), {}, "in_features")])
def test_random_names_a_size_that_is_not_a_positive_int(args, kwargs, name) -> None:
    with pytest.raises(ValueError, match=f"LinearState.random: {name} must be a positive int"):
        LinearState.random(*args, **kwargs)
