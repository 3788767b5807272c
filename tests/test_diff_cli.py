"""``ternary diff A B [--json] [--layer GLOB]`` through the real CLI entry point."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner

import ternary
from apps.cli import main
from ternary.io.diff import diff


@pytest.fixture
def snapshots(tmp_path, gen):
    rule = ternary.UpdateRule(theta_t=1, theta_e=1)
    a = {
        "embed": ternary.LinearState.random(11, 8, bias=False, group_size=5, generator=gen),
        "head": ternary.LinearState.random(8, 3, group_size=5, generator=gen),
    }
    hooks = {"embed": None, "head": ternary.LinearHooks(torch.randn(2, 8, generator=gen), torch.randn(2, 3, generator=gen))}
    b = ternary.update(a, hooks, rule)
    return ternary.save(tmp_path / "a.safetensors", a), ternary.save(tmp_path / "b.safetensors", b)


def invoke(*args: str):
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def test_table_lists_every_layer_with_its_counts(snapshots):
    a, b = snapshots
    result = invoke(a, b)
    assert result.exit_code == 0, result.output
    expected = diff(a, b)
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("[")}
    for layer in expected.layers:
        row = rows[layer.path]
        assert row[1] == str(layer.weights)
        assert row[3:7] == [str(layer.trits[k]) for k in ("-1->0", "0->+1", "+1->0", "0->-1")]
        assert row[8:10] == [str(layer.e_up), str(layer.e_down)]
    total = expected.total
    assert f"total: {total.trits_changed} trits changed ({total.sign_flips} sign flips)" in result.output
    assert f"E {total.e_up} up / {total.e_down} down, {total.bias_changed} biases changed" in result.output


def test_json_equals_the_functional_diff(snapshots):
    a, b = snapshots
    result = invoke(a, b, "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == json.loads(json.dumps(diff(a, b).as_dict()))


def test_layer_filter_and_self_diff(snapshots):
    a, b = snapshots
    result = invoke(a, b, "--json", "--layer", "head")
    assert [layer["path"] for layer in json.loads(result.output)["layers"]] == ["['head']"]
    same = invoke(a, a)
    assert same.exit_code == 0 and same.output.strip().endswith("no changes")


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path, snapshots):
    a, b = snapshots
    one_line_error(invoke(a, tmp_path / "missing.safetensors"), "missing.safetensors", "no such snapshot file")
    one_line_error(invoke(tmp_path, b), str(tmp_path), "folder")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"x": 1}))
    one_line_error(invoke(a, evil), "evil.safetensors", "pickle")
    other = ternary.save(tmp_path / "other.safetensors", {"head": ternary.LinearState.random(8, 3, group_size=5)})
    one_line_error(invoke(a, other), "differ in structure", "only in A: ['embed']")
    one_line_error(invoke(a, b, "--layer", "nothing*"), "--layer nothing*", "matches no layer")


def test_missing_argument_is_a_usage_error(snapshots):
    result = invoke(snapshots[0])
    assert result.exit_code == 2 and "Missing argument 'B'" in result.output
