"""Snapshot round trips are bit-exact for every record and container, and keep metadata."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.utils._pytree as pytree

import ternary
from ternary.io import load, save
from ternary.io.encoding import decode_value, encode_value
from ternary.state import leaf_paths

SHAPES = [(1, 1), (7, 3), (13, 1), (41, 5), (83, 9), (5, 2)]


def trained_layer(k: int, n: int, *, bias: bool, group_size: int, gen: torch.Generator) -> ternary.LinearState:
    """A layer after two vote updates, so T_accum, E_accum and bias are not all zero."""
    state = ternary.LinearState.random(k, n, bias=bias, group_size=group_size, generator=gen)
    rule = ternary.UpdateRule(theta_t=2, theta_e=1)
    for _ in range(2):
        x = torch.randn(4, k, generator=gen)
        grad_y = torch.randn(4, n, generator=gen)
        state = ternary.update(state, ternary.LinearHooks(x, grad_y), rule)
    return state


def assert_same_tree(a, b) -> None:
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    assert spec_a == spec_b
    for (path, x), y in zip(leaf_paths(a), leaves_b):
        if x is None:
            assert y is None, path
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert torch.equal(x, y), path
    is_layer = lambda n: isinstance(n, ternary.LinearState)  # noqa: E731
    for node_a, node_b in zip(pytree.tree_leaves(a, is_leaf=is_layer), pytree.tree_leaves(b, is_leaf=is_layer)):
        if isinstance(node_a, ternary.LinearState):
            assert type(node_b) is ternary.LinearState
            for name in ("in_features", "out_features", "group_size", "bias_frac_bits"):
                assert getattr(node_a, name) == getattr(node_b, name)


@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group_size", [5, 40])
def test_linear_state_round_trip_is_bit_exact(tmp_path, gen, k, n, bias, group_size):
    state = trained_layer(k, n, bias=bias, group_size=group_size, gen=gen)
    path = save(tmp_path / "layer.safetensors", state)
    loaded, meta = load(path)
    assert meta == {}
    assert_same_tree(state, loaded)
    assert torch.equal(loaded.trits(), state.trits())


def test_nested_tree_round_trip(tmp_path, gen):
    layer = lambda k, n, b: trained_layer(k, n, bias=b, group_size=10, gen=gen)  # noqa: E731
    state = {
        "embed": layer(11, 6, False),
        "blocks": [
            {"attn": (layer(6, 6, True), layer(6, 12, True)), "mlp": [layer(12, 7, False), None]},
            {"attn": (layer(6, 6, True), layer(6, 12, True)), "mlp": [layer(12, 7, False), layer(7, 3, True)]},
        ],
        "edges": torch.randint(-128, 128, (5, 5), generator=gen, dtype=torch.int8),
        "counts": torch.randint(0, 2**40, (3,), generator=gen, dtype=torch.int64),
        7: (None, torch.zeros(0, dtype=torch.int32)),
    }
    loaded, _ = load(save(tmp_path / "tree.safetensors", state))
    assert_same_tree(state, loaded)
    assert isinstance(loaded["blocks"][0]["attn"], tuple) and isinstance(loaded["blocks"][0]["mlp"], list)
    assert list(loaded) == list(state)


def test_shared_and_strided_leaves_round_trip(tmp_path, gen):
    base = torch.randint(-9, 9, (6, 8), generator=gen, dtype=torch.int16)
    layer = trained_layer(7, 3, bias=True, group_size=5, gen=gen)
    state = {"tied": [layer, layer], "same": (base, base), "view": base[2:4], "strided": base.t(), "row": base[1]}
    before = {path: leaf.clone() for path, leaf in leaf_paths(state)}
    loaded, _ = load(save(tmp_path / "shared.safetensors", state))
    assert_same_tree(state, loaded)
    assert all(torch.equal(before[path], leaf) for path, leaf in leaf_paths(state))


def test_loaded_records_are_ordinary_validated_records(tmp_path, gen):
    state = trained_layer(9, 4, bias=True, group_size=5, gen=gen)
    loaded, _ = load(save(tmp_path / "a.safetensors", state))
    with pytest.raises(TypeError, match="dtype"):
        attrs.evolve(loaded, E=loaded.E.to(torch.int16))
    x = torch.randn(3, 9, generator=gen)
    assert torch.equal(ternary.linear(loaded, x, backend="torch"), ternary.linear(state, x, backend="torch"))


def test_metadata_round_trip(tmp_path, gen):
    meta = {
        "step": 1234,
        "data_position": 2**40 + 3,
        "rng": {"torch": torch.get_rng_state(), "numpy_like": {"state": {"state": 2**100, "inc": 7}}},
        "rule": {"theta_t": 4, "theta_e": 16},
        "loss": 1.25,
        "flags": ("--no-vq", "--accum", 2),
        "blob": b"\x00\xff\x80",
        "by_int": {3: "three", "x": [1, None, True]},
        "__odd__": "keys starting with underscores survive",
        "small": torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16),
    }
    state = trained_layer(7, 3, bias=True, group_size=5, gen=gen)
    _, loaded = load(save(tmp_path / "m.safetensors", state, meta=meta))
    assert torch.equal(loaded["rng"]["torch"], meta["rng"]["torch"])
    assert torch.equal(loaded["small"], meta["small"]) and loaded["small"].dtype == torch.bfloat16
    plain = lambda m: {k: v for k, v in m.items() if k not in ("rng", "small")}  # noqa: E731
    assert plain(loaded) == plain(meta)
    assert loaded["rng"]["numpy_like"] == meta["rng"]["numpy_like"]


def test_load_places_tensors_on_the_requested_device(tmp_path, gen):
    state = trained_layer(7, 3, bias=True, group_size=5, gen=gen)
    loaded, _ = load(save(tmp_path / "d.safetensors", state), device="cpu")
    assert loaded.device.type == "cpu"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"w": torch.zeros(3)}, r"save: leaf \['w'\] has dtype torch.float32"),
        ({"w": {1, 2}}, "not a tensor"),
        ({"w": [ternary.LinearHooks(torch.zeros(1, 1), torch.zeros(1, 1))]}, "float32"),
    ],
)
def test_save_refuses_non_integer_state_before_writing(tmp_path, bad, match):
    target = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=match):
        save(target, bad)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_corrupt_layers(tmp_path, gen):
    state = trained_layer(7, 3, bias=True, group_size=5, gen=gen)
    packed = state.T_packed.clone()
    packed[2, 1] = 250
    with pytest.raises(ValueError, match=r"T_packed: byte 250 at index \(2, 1\)"):
        save(tmp_path / "x.safetensors", attrs.evolve(state, T_packed=packed))
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_unsupported_meta(tmp_path, gen):
    state = trained_layer(7, 3, bias=True, group_size=5, gen=gen)
    with pytest.raises(TypeError, match=r"meta.gen: cannot store a Generator"):
        save(tmp_path / "x.safetensors", state, meta={"gen": gen})
    assert list(tmp_path.iterdir()) == []


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(value=json_like)
def test_metadata_values_round_trip_through_json(value):
    encoded = json.loads(json.dumps(encode_value({"v": value}, "meta")))
    decoded = decode_value(encoded, "meta")["v"]
    assert decoded == value and type(decoded) is type(value)
