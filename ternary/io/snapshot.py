"""Snapshots: integer state trees in safetensors files (never pickle), written atomically.

File layout: every tensor leaf under its pytree path (``blocks[0].attn.q.T_packed``);
the safetensors header metadata (string -> string) holds

- ``format`` = ``true-ternary-snapshot`` and ``format_version`` (:data:`FORMAT_VERSION`),
- ``tree``: the structure as JSON (see :mod:`ternary.io.encoding`): containers, record
  types by their pytree ``serialized_type_name``, static fields,
- ``meta``: training metadata given to :func:`save` (step, data position, RNG state, rule...),
- ``checksums``: CRC-32 of every tensor's bytes, and ``header_crc32`` of the other entries.

:func:`load` checks all of it and rebuilds records through their validating
constructors; any problem raises one :class:`SnapshotError` naming the file and the
tensor. Valid exponents are documented by :data:`E_RANGE`: ``2^E`` must be a normal
float32/bfloat16 number, so kernels that flush subnormals to zero cannot change a weight.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.utils._pytree as pytree

from ternary.io.atomic import atomic_write_bytes
from ternary.io.encoding import decode_tree, decode_value, encode_tree, encode_value
from ternary.io.errors import SnapshotError
from ternary.state.audit import leaf_paths
from ternary.state.decode_state import DecodeLinearState
from ternary.state.linear_state import LinearState
from ternary.state.packing import CorruptStateError, check_packed

FORMAT_NAME = "true-ternary-snapshot"
FORMAT_VERSION = 1
E_RANGE = (-126, 127)
"""Inclusive range of a stored exponent ``E``: ``2^E`` is a normal number in float32 and bfloat16."""
ROOT_NAME = "<root>"
_MAX_HEADER_BYTES = 100_000_000
_PICKLE_PROTOCOL_BYTE = 0x80


def _leaf_name(path: str) -> str:
    return path or ROOT_NAME


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())


def _crc(tensor: torch.Tensor) -> int:
    return zlib.crc32(_tensor_bytes(tensor))


def _header_crc(metadata: dict[str, str]) -> int:
    body = {k: v for k, v in metadata.items() if k != "header_crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def _is_float(tensor: torch.Tensor) -> bool:
    return tensor.dtype.is_floating_point or tensor.is_complex()


def _standalone(tensor: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """CPU, contiguous, owning its whole storage and sharing it with no other leaf (safetensors
    refuses shared memory); copies only where needed."""
    cpu = tensor.detach().to("cpu").contiguous()
    storage = cpu.untyped_storage()
    whole = cpu.storage_offset() == 0 and storage.nbytes() == cpu.numel() * cpu.element_size()
    if not whole or (cpu.numel() and storage.data_ptr() in seen):
        cpu = cpu.clone()
    seen.add(cpu.untyped_storage().data_ptr())
    return cpu


def to_bytes(state: Any, *, meta: dict[str, Any] | None = None) -> bytes:
    """Serialise ``state`` (integer tensors in records / dicts / lists / tuples) and ``meta``."""
    named = [(_leaf_name(p), leaf) for p, leaf in leaf_paths(state)]
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, leaf in named:
        if leaf is None:
            continue
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"save: leaf {name} is a {type(leaf).__name__}, not a tensor")
        if _is_float(leaf):
            raise TypeError(f"save: leaf {name} has dtype {leaf.dtype}; snapshots hold integer state only")
        tensors[name] = _standalone(leaf, seen)
    inference_copy = first_decode_state(state)
    if inference_copy is not None:
        raise TypeError(f"save: {inference_copy or 'the state'} is a DecodeLinearState, a copy for inference; "
                        "save the LinearState it was built from")
    problem = first_layer_problem(state)
    if problem:
        raise ValueError(f"save: refusing to write corrupt state: {problem}")
    _, spec = pytree.tree_flatten(state)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "tree": json.dumps(encode_tree(spec, named)),
        "meta": json.dumps(encode_value(dict(meta or {}), "meta")),
        "checksums": json.dumps({n: _crc(t) for n, t in tensors.items()}),
    }
    metadata["header_crc32"] = str(_header_crc(metadata))
    return safetensors.torch.save(tensors, metadata=metadata)


def save(path: str | os.PathLike[str], state: Any, *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``state`` and ``meta`` to ``path`` atomically; returns the path.

    ``meta`` is JSON-like (dict, list, tuple, str, int, float, bool, None, bytes and small
    tensors such as ``torch.get_rng_state()``). Before touching the disk, raises
    :class:`TypeError` for float leaves or unsupported nodes and :class:`ValueError` for
    corrupt layers (trit bytes > 242, exponents outside :data:`E_RANGE`); raises
    :class:`~ternary.io.errors.SnapshotWriteError` if the write fails (old file intact).
    """
    return atomic_write_bytes(path, to_bytes(state, meta=meta))


def _fail(path: Path, message: str) -> SnapshotError:
    return SnapshotError(f"{path}: {message}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such snapshot file") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not a snapshot file") from None
    except OSError as error:
        raise _fail(path, f"cannot read ({error.strerror or error})") from error


def _split_header(path: Path, data: bytes) -> tuple[dict[str, Any], int]:
    """Parse the safetensors header without trusting it; returns ``(header, data_start)``."""
    if data[:1] == bytes([_PICKLE_PROTOCOL_BYTE]) and data[1:2] in {bytes([v]) for v in range(2, 6)}:
        raise _fail(path, "is a Python pickle, not a safetensors snapshot; refusing to load it")
    if data[:2] == b"PK":
        raise _fail(path, "is a zip archive (e.g. torch.save output), not a safetensors snapshot")
    if len(data) < 8:
        raise _fail(path, f"truncated or not a safetensors file ({len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise _fail(path, f"header length {size} exceeds the file size {len(data)}: truncated or not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"header is not valid JSON ({error}): corrupted or not a safetensors file") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object: corrupted or not a safetensors file")
    return header, 8 + size


def _check_layout(path: Path, header: dict[str, Any], payload: int) -> None:
    """Every tensor's byte range must lie inside the file (else the file was truncated)."""
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = int(info["data_offsets"][1])
        except (TypeError, KeyError, IndexError, ValueError):
            raise _fail(path, f"tensor {name}: malformed header entry") from None
        if end > payload:
            raise _fail(path, f"tensor {name}: data ends at byte {end} but only {payload} bytes follow the header (truncated)")


def _metadata(path: Path, header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise _fail(path, "a safetensors file but not a true-ternary snapshot (no format tag)")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise _fail(path, f"unknown snapshot format version {version!r} (this library reads version {FORMAT_VERSION})")
    for key in ("tree", "meta", "checksums", "header_crc32"):
        if key not in metadata:
            raise _fail(path, f"header lacks {key!r}: corrupted")
    if metadata["header_crc32"] != str(_header_crc(metadata)):
        raise _fail(path, "header checksum mismatch: the header is corrupted")
    return metadata


def _parse_json(path: Path, metadata: dict[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, RecursionError) as error:
        raise _fail(path, f"header entry {key!r} is not valid JSON ({type(error).__name__}: {error})") from None


def _load_tensors(path: Path, data: bytes, checksums: dict[str, int]) -> dict[str, torch.Tensor]:
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # the Rust parser raises its own error types
        raise _fail(path, f"not a readable safetensors file ({error})") from None
    missing = sorted(set(checksums) - set(tensors))
    unexpected = sorted(set(tensors) - set(checksums))
    if missing or unexpected:
        raise _fail(path, f"tensors missing: {missing}; unexpected tensors: {unexpected}")
    for name, tensor in tensors.items():
        if _crc(tensor) != checksums[name]:
            raise _fail(path, f"tensor {name}: checksum mismatch, the data is corrupted")
        if _is_float(tensor):
            raise _fail(path, f"tensor {name}: dtype {tensor.dtype} is not integer state")
    return tensors


def _rebuild(path: Path, tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    used: list[str] = []

    def tensor(name: str) -> torch.Tensor:
        if name not in tensors:
            raise ValueError(f"tensor {name} is named by the tree but missing from the file")
        used.append(name)
        return tensors[name]

    try:
        state = decode_tree(tree, tensor)
    except ValueError as error:
        raise _fail(path, str(error)) from None
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as error:
        raise _fail(path, f"malformed tree in the header ({type(error).__name__}: {error})") from None
    unexpected = sorted(set(tensors) - set(used))
    if unexpected:
        raise _fail(path, f"unexpected tensors not in the tree: {unexpected}")
    rebuilt = [_leaf_name(p) for p, leaf in leaf_paths(state) if leaf is not None]
    if rebuilt != used:
        raise _fail(path, "tensor names do not match the tree structure: corrupted header")
    return state


def first_decode_state(state: Any) -> str | None:
    """The path of the first :class:`DecodeLinearState` in ``state`` (``""`` for the root), or None."""
    flat, _ = pytree.tree_flatten_with_path(state, is_leaf=lambda n: isinstance(n, DecodeLinearState))
    for key_path, node in flat:
        if isinstance(node, DecodeLinearState):
            return pytree.keystr(key_path).lstrip(".")
    return None


def first_layer_problem(state: Any) -> str | None:
    """The first trit byte > 242 or exponent outside :data:`E_RANGE` in any layer, as a message naming the tensor."""
    flat, _ = pytree.tree_flatten_with_path(state, is_leaf=lambda n: isinstance(n, LinearState))
    low, high = E_RANGE
    for key_path, node in flat:
        if not isinstance(node, LinearState):
            continue
        name = pytree.keystr(key_path).lstrip(".")
        prefix = f"{name}." if name else ""
        try:
            check_packed(node.T_packed, f"{prefix}T_packed")
        except CorruptStateError as error:
            return str(error)
        outside = (node.E < low) | (node.E > high)
        if bool(outside.any()):
            index = tuple(int(i) for i in torch.nonzero(outside)[0])
            value = int(node.E[index])
            return f"{prefix}E: exponent {value} at index {index} is outside the valid range [{low}, {high}]"
    return None


def load(path: str | os.PathLike[str], *, device: torch.device | str | None = None) -> tuple[Any, dict[str, Any]]:
    """Read a snapshot: returns ``(state, meta)``; tensors are placed on ``device`` (CPU by default).

    Nothing in the file is executed. Raises :class:`SnapshotError` naming the file and,
    where one is at fault, the tensor: not safetensors (e.g. a pickle), truncated,
    corrupted (checksums), unknown format version, missing or unexpected tensors, record
    fields of the wrong dtype or shape, trit bytes > 242, exponents outside :data:`E_RANGE`.
    """
    file = Path(path)
    data = _read(file)
    header, start = _split_header(file, data)
    _check_layout(file, header, len(data) - start)
    metadata = _metadata(file, header)
    tree = _parse_json(file, metadata, "tree")
    checksums = _parse_json(file, metadata, "checksums")
    meta_json = _parse_json(file, metadata, "meta")
    if not isinstance(checksums, dict):
        raise _fail(file, "header entry 'checksums' is malformed")
    tensors = _load_tensors(file, data, checksums)
    state = _rebuild(file, tree, tensors)
    problem = first_layer_problem(state)
    if problem:
        raise _fail(file, problem)
    try:
        meta = decode_value(meta_json, "meta")
    except (ValueError, RecursionError) as error:
        raise _fail(file, str(error)) from None
    if device is not None:
        state = pytree.tree_map(lambda t: t.to(device), state)
    return state, meta
