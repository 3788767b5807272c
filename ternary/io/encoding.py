"""JSON encodings for snapshot headers: tagged values and state-tree structure.

Values (static record fields and training metadata) are JSON with tags for what JSON
lacks: ``{"__tuple__": [...]}``, ``{"__bytes__": "<base64>"}``,
``{"__tensor__": {"dtype", "shape", "data"}}`` (small tensors such as RNG states) and
``{"__dict__": [[key, value], ...]}`` for dicts whose keys are not plain strings.

The tree is written from a torch ``TreeSpec`` as nested nodes (``kind`` is ``tensor``,
``none``, ``list``, ``tuple``, ``dict`` or ``record``) and rebuilt by
:func:`decode_tree` through each record's validating ``__init__``. Record types are
looked up by their pytree ``serialized_type_name``; only types registered as pytrees
are accepted, and the only modules ever imported to find one are under ``ternary.``.
"""

from __future__ import annotations

import base64
import importlib
from typing import Any, Callable, Iterator

import attrs
import torch
import torch.utils._pytree as pytree

_TAGS = ("__tuple__", "__bytes__", "__tensor__", "__dict__")
_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
        torch.float16, torch.bfloat16, torch.float32, torch.float64,
    )
}
OWN_PACKAGE_PREFIX = "ternary."


def encode_value(value: Any, where: str) -> Any:
    """JSON-ready form of ``value``; ``where`` names it in the error for unsupported types."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _encode_tensor(value, where)}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode_value(v, f"{where}.{k}") for k, v in value.items()}
        return {"__dict__": [[encode_value(k, where), encode_value(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a snapshot header (use JSON types, bytes or tensors)")


def _encode_tensor(tensor: torch.Tensor, where: str) -> dict[str, Any]:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise TypeError(f"{where}: tensors of dtype {tensor.dtype} cannot be stored in a snapshot header")
    data = tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
    return {"dtype": name, "shape": list(tensor.shape), "data": base64.b64encode(data).decode("ascii")}


def decode_value(value: Any, where: str) -> Any:
    """Inverse of :func:`encode_value`; raises ``ValueError`` naming ``where`` on malformed input."""
    if isinstance(value, list):
        return [decode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tag = next((t for t in _TAGS if t in value), None)
    if tag is None:
        return {k: decode_value(v, f"{where}.{k}") for k, v in value.items()}
    if len(value) != 1:
        raise ValueError(f"{where}: malformed tagged value {sorted(value)}")
    body = value[tag]
    try:
        if tag == "__tuple__":
            return tuple(decode_value(v, f"{where}[{i}]") for i, v in enumerate(body))
        if tag == "__bytes__":
            return base64.b64decode(body, validate=True)
        if tag == "__dict__":
            return {_hashable(decode_value(k, where)): decode_value(v, f"{where}[{k!r}]") for k, v in body}
        return _decode_tensor(body)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise ValueError(f"{where}: malformed {tag} value ({error})") from error


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _decode_tensor(body: dict[str, Any]) -> torch.Tensor:
    dtype = _DTYPES[body["dtype"]]
    shape = [int(s) for s in body["shape"]]
    raw = bytearray(base64.b64decode(body["data"], validate=True))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return flat.view(dtype).reshape(shape).clone()


def record_type_name(cls: type) -> str | None:
    """The pytree ``serialized_type_name`` of a registered record class, else None."""
    entry = pytree.SUPPORTED_SERIALIZED_TYPES.get(cls)
    return entry.serialized_type_name if entry is not None else None


def find_record_type(name: str) -> type:
    """Class registered under ``name``; imports its module only if it lives in this package."""
    known = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name)
    if known is None and name.startswith(OWN_PACKAGE_PREFIX):
        module = name.rsplit(".", 1)[0]
        while module.startswith(OWN_PACKAGE_PREFIX) and known is None:
            try:
                importlib.import_module(module)
            except ImportError:
                module = module.rsplit(".", 1)[0]
                continue
            known = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name)
            break
    if known is None or not attrs.has(known) or known not in pytree.SUPPORTED_NODES:
        raise ValueError(f"unknown record type {name!r} (not a state record registered with ternary.state.pytree_record)")
    return known


def encode_tree(spec: pytree.TreeSpec, leaves: list[tuple[str, Any]]) -> dict[str, Any]:
    """Structure of a flattened state as JSON; ``leaves`` are its ``(name, leaf)`` pairs in order.

    Leaves are tensors (named) or None.
    """
    return _encode_spec(spec, iter(leaves), "")


def _encode_spec(spec: pytree.TreeSpec, leaves: Iterator[tuple[str, Any]], where: str) -> dict[str, Any]:
    if spec.is_leaf():
        name, leaf = next(leaves)
        return {"kind": "none"} if leaf is None else {"kind": "tensor", "name": name}
    children = spec.children()
    if spec.type is type(None):
        return {"kind": "none"}
    if spec.type in (list, tuple):
        kind = "list" if spec.type is list else "tuple"
        return {"kind": kind, "items": [_encode_spec(c, leaves, f"{where}[{i}]") for i, c in enumerate(children)]}
    if spec.type is dict:
        keys = list(spec.context)
        for key in keys:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where or '<root>'}: dict keys in a state tree must be str or int, got {key!r}")
        return {
            "kind": "dict",
            "keys": keys,
            "items": [_encode_spec(c, leaves, f"{where}[{k!r}]") for k, c in zip(keys, children)],
        }
    type_name = record_type_name(spec.type)
    if type_name is None or not attrs.has(spec.type):
        raise TypeError(
            f"{where or '<root>'}: {spec.type.__name__} is not a snapshot-able node "
            "(use dict, list, tuple, None or records registered with ternary.state.pytree_record)"
        )
    child_names, static_items = spec.context
    return {
        "kind": "record",
        "type": type_name,
        "children": {n: _encode_spec(c, leaves, f"{where}.{n}") for n, c in zip(child_names, children)},
        "static": {n: encode_value(v, f"{where}.{n}".lstrip(".")) for n, v in static_items},
    }


def decode_tree(node: Any, tensor: Callable[[str], torch.Tensor], where: str = "") -> Any:
    """Rebuild a state tree; ``tensor(name)`` supplies leaves; records go through ``__init__``.

    Raises ``ValueError`` (malformed node, unknown type) or whatever a record's
    validators raise, with the record path prepended.
    """
    label = where.lstrip(".") or "<root>"
    if not isinstance(node, dict) or "kind" not in node:
        raise ValueError(f"{label}: malformed tree node")
    kind = node["kind"]
    if kind == "tensor":
        return tensor(node["name"])
    if kind == "none":
        return None
    if kind in ("list", "tuple"):
        items = [decode_tree(c, tensor, f"{where}[{i}]") for i, c in enumerate(node["items"])]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        keys, items = node["keys"], node["items"]
        if len(keys) != len(items):
            raise ValueError(f"{label}: dict node has {len(keys)} keys but {len(items)} items")
        return {k: decode_tree(c, tensor, f"{where}[{k!r}]") for k, c in zip(keys, items)}
    if kind == "record":
        return _decode_record(node, tensor, where)
    raise ValueError(f"{label}: unknown tree node kind {kind!r}")


def _decode_record(node: dict[str, Any], tensor: Callable[[str], torch.Tensor], where: str) -> Any:
    label = where.lstrip(".") or "<root>"
    try:
        cls = find_record_type(node["type"])
    except ValueError as error:
        raise ValueError(f"{label}: {error}") from error
    fields = {f.name: f for f in attrs.fields(cls)}
    values = {n: decode_tree(c, tensor, f"{where}.{n}") for n, c in node["children"].items()}
    values |= {n: decode_value(v, f"{label}.{n}") for n, v in node["static"].items()}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{label}: {cls.__name__} has no fields {unknown}")
    kwargs = {fields[n].alias: v for n, v in values.items() if fields[n].init}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{label}: {error}") from error
