"""Every kind of bad snapshot gives one clear SnapshotError naming the file and the tensor,
nothing in the file is executed, and earlier snapshots stay readable."""

from __future__ import annotations

import json
import pickle
import sys
import zlib
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import ternary
from ternary.io import SnapshotError, load, save


@pytest.fixture
def state(gen):
    rule = ternary.UpdateRule(theta_t=2, theta_e=1)
    layers = [ternary.LinearState.random(k, n, group_size=5, generator=gen) for k, n in ((12, 6), (6, 3))]
    hooks = [ternary.LinearHooks(torch.randn(3, l.in_features, generator=gen), torch.randn(3, l.out_features, generator=gen)) for l in layers]
    return {"blocks": ternary.update(layers, hooks, rule), "edges": torch.arange(6, dtype=torch.int8).view(2, 3)}


@pytest.fixture
def good(tmp_path, state):
    """An earlier snapshot in the same folder, which must stay readable whatever happens to others."""
    return save(tmp_path / "good.safetensors", state, meta={"step": 7})


def read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def forge(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *, fix_checksums: bool = True) -> Path:
    """Write a snapshot by hand; with ``fix_checksums`` the CRCs match the (bad) content,
    so only the semantic checks can catch it."""
    metadata = dict(metadata)
    if fix_checksums:
        crcs = {n: zlib.crc32(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()) for n, t in tensors.items()}
        metadata["checksums"] = json.dumps(crcs)
        body = {k: v for k, v in metadata.items() if k != "header_crc32"}
        metadata["header_crc32"] = str(zlib.crc32(json.dumps(body, sort_keys=True).encode()))
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def assert_rejected(path: Path, good: Path, state, *patterns: str) -> None:
    with pytest.raises(SnapshotError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for pattern in patterns:
        assert pattern in message, message
    earlier, meta = load(good)
    assert meta == {"step": 7}
    assert torch.equal(earlier["blocks"][0].T_accum, state["blocks"][0].T_accum)


def edit(good: Path, target: Path, change_tensors=None, change_metadata=None, **kw) -> Path:
    tensors, metadata = read_raw(good)
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    return forge(target, tensors, metadata, **kw)


def test_unknown_format_version(tmp_path, good, state):
    bad = edit(good, tmp_path / "v.safetensors", change_metadata=lambda m: m.update(format_version="99"))
    assert_rejected(bad, good, state, "unknown snapshot format version '99'")


def test_missing_tensor(tmp_path, good, state):
    bad = edit(good, tmp_path / "m.safetensors", change_tensors=lambda t: t.pop("['blocks'][1].E"))
    assert_rejected(bad, good, state, "['blocks'][1].E", "missing")


def test_unexpected_tensor(tmp_path, good, state):
    bad = edit(good, tmp_path / "u.safetensors", change_tensors=lambda t: t.update(stowaway=torch.zeros(2, dtype=torch.int8)))
    assert_rejected(bad, good, state, "unexpected", "stowaway")


def test_wrong_dtype(tmp_path, good, state):
    name = "['blocks'][0].E"
    bad = edit(good, tmp_path / "d.safetensors", change_tensors=lambda t: t.update({name: t[name].to(torch.int16)}))
    assert_rejected(bad, good, state, "['blocks'][0]", "LinearState.E", "int8", "int16")


def test_wrong_shape(tmp_path, good, state):
    name = "['blocks'][1].T_accum"
    bad = edit(good, tmp_path / "s.safetensors", change_tensors=lambda t: t.update({name: torch.zeros(3, 7, dtype=torch.int8)}))
    assert_rejected(bad, good, state, "['blocks'][1]", "LinearState.T_accum", "[3, 6]", "[3, 7]")


def test_float_tensor(tmp_path, good, state):
    bad = edit(good, tmp_path / "f.safetensors", change_tensors=lambda t: t.update({"['edges']": t["['edges']"].float()}))
    assert_rejected(bad, good, state, "['edges']", "float32", "not integer state")


def test_trit_byte_above_242(tmp_path, good, state):
    def corrupt(tensors):
        tensors["['blocks'][0].T_packed"][4, 1] = 243

    bad = edit(good, tmp_path / "t.safetensors", change_tensors=corrupt)
    assert_rejected(bad, good, state, "['blocks'][0].T_packed", "byte 243", "(4, 1)")


@pytest.mark.parametrize("value", [-128, ternary.io.E_RANGE[0] - 1])
def test_exponent_outside_documented_range(tmp_path, good, state, value):
    def corrupt(tensors):
        tensors["['blocks'][1].E"][2, 0] = value

    bad = edit(good, tmp_path / "e.safetensors", change_tensors=corrupt)
    assert_rejected(bad, good, state, "['blocks'][1].E", f"exponent {value}", "(2, 0)", "outside the valid range")


def test_exponent_at_range_limits_loads(tmp_path, good, state):
    low, high = ternary.io.E_RANGE

    def extremes(tensors):
        tensors["['blocks'][1].E"][0, 0] = low
        tensors["['blocks'][1].E"][1, 0] = high

    loaded, _ = load(edit(good, tmp_path / "ok.safetensors", change_tensors=extremes))
    assert int(loaded["blocks"][1].E.min()) == low and int(loaded["blocks"][1].E.max()) == high


@pytest.mark.parametrize("keep", [0, 5, 60, -1])
def test_truncated(tmp_path, good, state, keep):
    data = good.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    assert_rejected(bad, good, state, "truncated")


def test_flipped_data_byte_fails_the_checksum(tmp_path, good, state):
    tensors, metadata = read_raw(good)
    name = "['blocks'][0].T_accum"
    tensors[name][0, 0] += 1
    bad = forge(tmp_path / "flip.safetensors", tensors, metadata, fix_checksums=False)
    assert_rejected(bad, good, state, f"tensor {name}: checksum mismatch")


def test_edited_header_fails_the_header_checksum(tmp_path, good, state):
    data = bytearray(good.read_bytes())
    at = data.index(b'\\"step\\": 7')
    data[at + 10] = ord("8")
    bad = tmp_path / "hdr.safetensors"
    bad.write_bytes(bytes(data))
    assert_rejected(bad, good, state, "header checksum mismatch")


def test_garbage_header(tmp_path, good, state):
    data = bytearray(good.read_bytes())
    data[8:12] = b"\xff\xfe\x00!"
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(bytes(data))
    assert_rejected(bad, good, state, "not valid JSON")


def test_unknown_record_type_is_not_imported(tmp_path, good, state):
    def rename(metadata):
        metadata["tree"] = metadata["tree"].replace("ternary.state.linear_state.LinearState", "os.system", 1)

    bad = edit(good, tmp_path / "type.safetensors", change_metadata=rename)
    assert_rejected(bad, good, state, "unknown record type 'os.system'", "['blocks'][0]")

    def own(metadata):
        metadata["tree"] = metadata["tree"].replace("ternary.state.linear_state.LinearState", "ternary.nowhere.Thing", 1)

    assert_rejected(edit(good, tmp_path / "own.safetensors", change_metadata=own), good, state, "unknown record type")
    assert "ternary.nowhere" not in sys.modules


def test_plain_safetensors_file_is_not_a_snapshot(tmp_path, good, state):
    bad = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2, dtype=torch.int8)}, str(bad))
    assert_rejected(bad, good, state, "not a true-ternary snapshot")


class _Trap:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_renamed_pickle_is_rejected_without_running_it(tmp_path, good, state, protocol):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(_Trap(marker), protocol=protocol))
    assert_rejected(bad, good, state, "pickle")
    assert not marker.exists()


def test_renamed_torch_save_archive_is_rejected(tmp_path, good, state):
    marker = tmp_path / "pwned"
    bad = tmp_path / "zip.safetensors"
    torch.save({"trap": _Trap(marker)}, bad)
    assert_rejected(bad, good, state, "zip archive")
    assert not marker.exists()


def test_not_a_file(tmp_path, good, state):
    assert_rejected(tmp_path / "nope.safetensors", good, state, "no such snapshot file")
    assert_rejected(tmp_path, good, state, "folder")


LAYER = "ternary.state.linear_state.LinearState"


@pytest.mark.parametrize(
    "tree,fragment",
    [
        ({"kind": "record", "type": LAYER, "children": [], "static": {}}, "malformed tree"),
        ({"kind": "dict", "keys": ["blocks"], "items": []}, "1 keys but 0 items"),
        ({"kind": "list"}, "malformed tree"),
        ({"kind": "teleport"}, "unknown tree node kind 'teleport'"),
        ([1, 2], "<root>: malformed tree node"),
        ({"kind": "tensor", "name": ["not", "a", "name"]}, "malformed tree"),
    ],
)
def test_malformed_tree_json(tmp_path, good, state, tree, fragment):
    bad = edit(good, tmp_path / "tree.safetensors", change_metadata=lambda m: m.update(tree=json.dumps(tree)))
    assert_rejected(bad, good, state, fragment)


def test_deeply_nested_header_json(tmp_path, good, state):
    deep = '{"kind": "list", "items": [' * 100_000 + "]}" * 100_000
    bad = edit(good, tmp_path / "deep.safetensors", change_metadata=lambda m: m.update(tree=deep))
    assert_rejected(bad, good, state, "'tree'")


def test_tree_naming_tensors_in_the_wrong_places(tmp_path, good, state):
    def swap(metadata):
        metadata["tree"] = metadata["tree"].replace("['edges']", "['swap']").replace(
            "['blocks'][0].T_accum", "['edges']"
        ).replace("['swap']", "['blocks'][0].T_accum")

    bad = edit(good, tmp_path / "swap.safetensors", change_metadata=swap)
    with pytest.raises(SnapshotError, match="swap.safetensors"):
        load(bad)
