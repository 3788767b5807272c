"""Register frozen ``attrs`` records as torch pytrees.

Child fields (tensors or nested records) become children (keyed by attribute name, so
``torch.utils._pytree.tree_flatten_with_path`` yields paths such as
``blocks[0].attn.q.T_packed``); every other field is static and lives in the
context. A child field set to ``None`` is recorded in the context too, so the
leaf list only ever holds tensors.

Unflatten never calls ``__init__``: transforms such as ``torch.func.vmap`` rebuild
records with placeholder leaves that would fail the validators.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import attrs
import torch.utils._pytree as pytree

R = TypeVar("R")


def _unflatten_factory(cls: type) -> Callable[[Any, Any], Any]:
    def unflatten(children: Any, context: Any) -> Any:
        tensor_names, static_items = context
        record = object.__new__(cls)
        for name, value in zip(tensor_names, children):
            object.__setattr__(record, name, value)
        for name, value in static_items:
            object.__setattr__(record, name, value)
        return record

    return unflatten


def pytree_record(*, child_fields: tuple[str, ...]) -> Callable[[type[R]], type[R]]:
    """Class decorator: register an attrs class whose ``child_fields`` hold tensors, nested records or None."""

    def register(cls: type[R]) -> type[R]:
        all_names = tuple(f.name for f in attrs.fields(cls))
        unknown = set(child_fields) - set(all_names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown tensor fields {sorted(unknown)}")
        static_names = tuple(n for n in all_names if n not in child_fields)

        def split(record: Any) -> tuple[list[str], list[Any], tuple[tuple[str, Any], ...]]:
            present = [n for n in child_fields if getattr(record, n) is not None]
            absent = tuple((n, None) for n in child_fields if getattr(record, n) is None)
            static = tuple((n, getattr(record, n)) for n in static_names) + absent
            return present, [getattr(record, n) for n in present], static

        def flatten(record: Any) -> tuple[list[Any], Any]:
            names, children, static = split(record)
            return children, (tuple(names), static)

        def flatten_with_keys(record: Any) -> tuple[list[tuple[Any, Any]], Any]:
            names, children, static = split(record)
            keyed = [(pytree.GetAttrKey(n), c) for n, c in zip(names, children)]
            return keyed, (tuple(names), static)

        pytree.register_pytree_node(
            cls,
            flatten,
            _unflatten_factory(cls),
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
            flatten_with_keys_fn=flatten_with_keys,
        )
        return cls

    return register
