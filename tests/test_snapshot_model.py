"""Every record type of the model survives a snapshot bit for bit, after real training steps;
``diff`` of two model snapshots reports exactly what the steps changed."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.utils._pytree as pytree

import ternary
from ternary.model import init_model, preset
from ternary.state import LinearState, leaf_paths
from ternary.training import TrainOptions, train_step

VARIANTS = {
    "moe+vq+graph": {},
    "dense mlp": {"moe": False},
    "no vq": {"vq": False},
    "no graph": {"graph": False},
}


def tiny_config(**switches):
    return preset("tiny", dim=16, heads=2, layers=1, experts=2, top_k=1, hidden=8, codebook=6, max_edges=8,
                  group_size=5, context=12, **switches)


def trained(config, steps: int):
    """Initial state and the state after ``steps`` real training steps on a small random corpus."""
    options = TrainOptions(config=config, batch=2, seed=3, rule=ternary.UpdateRule(theta_t=1, theta_e=1))
    data = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    start = init_model(config, seed=3)
    state = start
    for step in range(steps):
        state, _ = train_step(state, options, data, step, torch.device("cpu"))
    return start, state


def record_types(node) -> set[str]:
    """Serialized type names of every attrs record in ``node``."""
    if attrs.has(type(node)):
        found = {f"{type(node).__module__}.{type(node).__qualname__}"}
        for field in attrs.fields(type(node)):
            found |= record_types(getattr(node, field.name))
        return found
    if isinstance(node, (list, tuple)):
        return set().union(*(record_types(child) for child in node))
    return set()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_round_trip_is_bit_exact(tmp_path, variant):
    _, state = trained(tiny_config(**VARIANTS[variant]), steps=2)
    loaded, meta = ternary.load(ternary.save(tmp_path / "model.safetensors", state, meta={"step": 2}))
    assert meta == {"step": 2}
    assert pytree.tree_structure(loaded) == pytree.tree_structure(state)
    original = leaf_paths(state)
    assert [p for p, _ in leaf_paths(loaded)] == [p for p, _ in original]
    for (path, a), (_, b) in zip(original, leaf_paths(loaded)):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    assert ternary.audit(loaded).ok and not ternary.audit(loaded).float_leaves
    assert record_types(loaded) == record_types(state)


def test_variants_cover_every_model_record_type():
    registered = {name for name in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE if name.startswith("ternary.model.")}
    covered = set().union(*(record_types(init_model(tiny_config(**v))) for v in VARIANTS.values()))
    assert registered <= covered, f"add a variant that builds {sorted(registered - covered)}"


def test_model_diff_matches_the_training_step(tmp_path):
    before, after = trained(tiny_config(), steps=1)
    a = ternary.save(tmp_path / "a.safetensors", before)
    b = ternary.save(tmp_path / "b.safetensors", after)
    result = ternary.diff(a, b)
    layers = {
        pytree.keystr(p).lstrip("."): (x, y)
        for (p, x), y in zip(
            pytree.tree_flatten_with_path(before, is_leaf=lambda n: isinstance(n, LinearState))[0],
            pytree.tree_leaves(after, is_leaf=lambda n: isinstance(n, LinearState)),
        )
        if isinstance(x, LinearState)
    }
    assert [layer.path for layer in result.layers] == list(layers)
    for layer in result.layers:
        x, y = layers[layer.path]
        assert layer.trits_changed == int((x.trits() != y.trits()).sum()), layer.path
        assert layer.e_up == int((y.E > x.E).sum()) and layer.e_down == int((y.E < x.E).sum()), layer.path
    assert result.total.trits_changed > 0
    edges = next(t for t in result.tensors if t.path == "graph.edges")
    assert edges.changed == int((before.graph.edges != after.graph.edges).sum())
