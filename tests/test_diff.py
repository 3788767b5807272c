"""``ternary.diff``: zero for identical states, exactly the update's changes otherwise."""

from __future__ import annotations

import pytest
import torch

import ternary
from ternary.io.diff import TRIT_KINDS, StructureMismatchError, diff, dotted

SHAPES = [(1, 1, 5), (7, 3, 5), (13, 1, 10), (41, 6, 40), (83, 2, 20)]
FAST_RULE = ternary.UpdateRule(theta_t=1, theta_e=1)


def stepped(layer: ternary.LinearState, gen: torch.Generator, rows: int = 3, rule=FAST_RULE) -> ternary.LinearState:
    hooks = ternary.LinearHooks(
        torch.randn(rows, layer.in_features, generator=gen), torch.randn(rows, layer.out_features, generator=gen)
    )
    return ternary.update(layer, hooks, rule)


def model_like(gen: torch.Generator) -> dict:
    return {
        "embed": ternary.LinearState.random(9, 16, bias=False, group_size=5, generator=gen),
        "blocks": [ternary.LinearState.random(16, 7, group_size=10, generator=gen) for _ in range(2)],
        "edges": torch.randint(-5, 6, (4, 4), generator=gen, dtype=torch.int8),
    }


@pytest.mark.parametrize("k,n,g", SHAPES)
def test_diff_with_itself_is_zero(gen, k, n, g):
    layer = stepped(ternary.LinearState.random(k, n, group_size=g, generator=gen), gen)
    result = diff(layer, layer)
    assert result.unchanged
    (only,) = result.layers
    assert only.trits_changed == only.weights_changed == only.e_up == only.e_down == only.bias_changed == 0
    assert only.weights == k * n and only.changed_share == 0.0
    assert only.t_accum[0] == only.t_accum[1] and only.t_accum[0].total == k * n


def expected_transitions(a: ternary.LinearState, b: ternary.LinearState) -> dict[str, int]:
    ta, tb = a.trits(), b.trits()
    return {kind: int(((ta == old) & (tb == new)).sum()) for kind, (old, new) in TRIT_KINDS.items()}


@pytest.mark.parametrize("k,n,g", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_diff_after_one_update_reports_exactly_its_changes(gen, k, n, g, bias):
    before = ternary.LinearState.random(k, n, bias=bias, group_size=g, generator=gen)
    before = stepped(before, gen, rule=ternary.UpdateRule(theta_t=3, theta_e=2))
    after = stepped(before, gen, rows=1)
    (layer,) = diff(before, after).layers
    assert layer.trits == expected_transitions(before, after)
    assert layer.trits_changed == int((before.trits() != after.trits()).sum())
    assert layer.weights_changed == int((before.to_float() != after.to_float()).sum())
    assert layer.e_up == int((after.E > before.E).sum()) and layer.e_down == int((after.E < before.E).sum())
    if bias:
        assert layer.bias_changed == int((after.bias != before.bias).sum())
        assert layer.bias_abs_change == int((after.bias.long() - before.bias.long()).abs().sum())
    else:
        assert layer.biases == layer.bias_changed == 0
    assert layer.t_accum[1].counts == {
        int(v): int(c) for v, c in zip(*torch.unique(after.T_accum, return_counts=True))
    }
    assert layer.e_accum[0].mean_abs == pytest.approx(before.E_accum.float().abs().mean().item())


def test_diff_is_antisymmetric(gen):
    a = ternary.LinearState.random(23, 5, group_size=5, generator=gen)
    b = stepped(stepped(a, gen), gen)
    forward, backward = diff(a, b).total, diff(b, a).total
    for kind, (old, new) in TRIT_KINDS.items():
        reverse = next(k for k, pair in TRIT_KINDS.items() if pair == (new, old))
        assert forward.trits[kind] == backward.trits[reverse]
    assert (forward.e_up, forward.e_down) == (backward.e_down, backward.e_up)
    assert forward.weights_changed == backward.weights_changed and forward.trits_changed > 0


def test_total_sums_layers_and_layer_filter(gen):
    a = model_like(gen)
    b = {**a, "blocks": [stepped(layer, gen) for layer in a["blocks"]]}
    b["edges"] = a["edges"].clone()
    b["edges"][1, 2] += 3
    everything = diff(a, b)
    assert [layer.path for layer in everything.layers] == ["['embed']", "['blocks'][0]", "['blocks'][1]"]
    assert everything.total.trits_changed == sum(layer.trits_changed for layer in everything.layers) > 0
    assert everything.layers[0].unchanged
    (edges,) = everything.tensors
    assert (edges.changed, edges.abs_change, edges.elements) == (1, 3, 16)
    only_first = diff(a, b, layers="blocks.0")
    assert [layer.path for layer in only_first.layers] == ["['blocks'][0]"] and not only_first.tensors
    assert only_first.total.as_dict() | {"path": ""} == everything.layers[1].as_dict() | {"path": ""}
    assert [t.path for t in diff(a, b, layers=["*edges*", "embed"]).tensors] == ["['edges']"]
    assert diff(a, b, layers="nothing*").layers == ()


def test_diff_of_snapshot_files_equals_in_memory_diff(tmp_path, gen):
    a = model_like(gen)
    b = {**a, "blocks": [stepped(layer, gen) for layer in a["blocks"]]}
    path_a = ternary.save(tmp_path / "a.safetensors", a)
    path_b = ternary.save(tmp_path / "b.safetensors", b)
    assert diff(path_a, path_b).as_dict() == diff(a, b).as_dict()
    assert diff(path_a, str(path_a)).unchanged


@pytest.mark.parametrize(
    "change,listed",
    [
        (lambda s: s.update(extra=torch.zeros(2, dtype=torch.int8)), "only in B: ['extra']"),
        (lambda s: s.pop("edges"), "only in A: ['edges']"),
        (lambda s: s.update(edges=torch.zeros(4, 5, dtype=torch.int8)), "different shape/dtype/fields: ['edges']"),
        (lambda s: s["blocks"].append(s["blocks"][0]), "only in B: ['blocks'][2]"),
        (
            lambda s: s.update(embed=ternary.LinearState.random(9, 16, bias=True, group_size=5)),
            "different shape/dtype/fields: ['embed']",
        ),
    ],
)
def test_different_structures_list_the_paths(gen, change, listed):
    a = model_like(gen)
    b = {**a, "blocks": list(a["blocks"])}
    change(b)
    with pytest.raises(StructureMismatchError, match="differ in structure") as info:
        diff(a, b)
    assert listed in str(info.value)


def test_dotted_paths():
    assert dotted("blocks[0].attn.q") == "blocks.0.attn.q"
    assert dotted("['blocks'][12]['x']") == "blocks.12.x"
    assert dotted("embed") == "embed"
