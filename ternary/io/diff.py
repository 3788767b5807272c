"""What changed between two state trees (or two snapshot files), layer by layer.

For every :class:`~ternary.state.LinearState` (found anywhere in the tree) the diff
counts trit transitions by kind, exponent steps up and down, bias changes, the share of
logical weights ``W = T * 2^E`` whose value changed, and histograms of the vote
accumulators on both sides. Other integer tensors (e.g. graph edge state) get an
element-wise summary. The two trees must have the same structure.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from typing import Any, Iterable

import attrs
import torch
import torch.utils._pytree as pytree

from ternary.state.linear_state import LinearState

TRIT_KINDS = {
    "-1->0": (-1, 0),
    "0->+1": (0, 1),
    "+1->0": (1, 0),
    "0->-1": (0, -1),
    "-1->+1": (-1, 1),
    "+1->-1": (1, -1),
}
ROOT = "<root>"


class StructureMismatchError(ValueError):
    """The two trees differ in structure; the message lists the paths that differ."""


@attrs.frozen
class Histogram:
    """Counts of integer values (value -> count, present values only)."""

    counts: dict[int, int]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> "Histogram":
        values, counts = torch.unique(tensor, return_counts=True)
        return cls({int(v): int(c) for v, c in zip(values, counts)})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def mean_abs(self) -> float:
        return sum(abs(v) * c for v, c in self.counts.items()) / self.total if self.total else 0.0

    @property
    def nonzero_share(self) -> float:
        return 1.0 - self.counts.get(0, 0) / self.total if self.total else 0.0

    def __add__(self, other: "Histogram") -> "Histogram":
        return Histogram(dict(sorted((Counter(self.counts) + Counter(other.counts)).items())))

    def as_dict(self) -> dict[str, Any]:
        return {
            "histogram": {str(v): c for v, c in sorted(self.counts.items())},
            "mean_abs": self.mean_abs,
            "nonzero_share": self.nonzero_share,
        }


@attrs.frozen
class LayerDiff:
    """Changes in one ternary layer (or, for the total, summed over layers).

    ``trits`` maps each kind in :data:`TRIT_KINDS` to a count; ``weights_changed`` counts
    logical weights whose value changed (trit changed, or the group's E moved under a
    nonzero trit); bias figures are in fixed-point units and ``None`` without a bias.
    """

    path: str
    weights: int
    groups: int
    trits: dict[str, int]
    e_up: int
    e_down: int
    e_max_step: int
    weights_changed: int
    t_accum: tuple[Histogram, Histogram]
    e_accum: tuple[Histogram, Histogram]
    biases: int
    bias_changed: int
    bias_abs_change: int

    @property
    def trits_changed(self) -> int:
        return sum(self.trits.values())

    @property
    def sign_flips(self) -> int:
        return self.trits["-1->+1"] + self.trits["+1->-1"]

    @property
    def changed_share(self) -> float:
        return self.weights_changed / self.weights if self.weights else 0.0

    @property
    def unchanged(self) -> bool:
        return not (self.trits_changed or self.e_up or self.e_down or self.bias_changed)

    def __add__(self, other: "LayerDiff") -> "LayerDiff":
        return LayerDiff(
            path="<total>",
            weights=self.weights + other.weights,
            groups=self.groups + other.groups,
            trits={k: self.trits[k] + other.trits[k] for k in TRIT_KINDS},
            e_up=self.e_up + other.e_up,
            e_down=self.e_down + other.e_down,
            e_max_step=max(self.e_max_step, other.e_max_step),
            weights_changed=self.weights_changed + other.weights_changed,
            t_accum=(self.t_accum[0] + other.t_accum[0], self.t_accum[1] + other.t_accum[1]),
            e_accum=(self.e_accum[0] + other.e_accum[0], self.e_accum[1] + other.e_accum[1]),
            biases=self.biases + other.biases,
            bias_changed=self.bias_changed + other.bias_changed,
            bias_abs_change=self.bias_abs_change + other.bias_abs_change,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "weights": self.weights,
            "weights_changed": self.weights_changed,
            "changed_share": self.changed_share,
            "trits": dict(self.trits),
            "trits_changed": self.trits_changed,
            "sign_flips": self.sign_flips,
            "groups": self.groups,
            "e_up": self.e_up,
            "e_down": self.e_down,
            "e_max_step": self.e_max_step,
            "t_accum": {"a": self.t_accum[0].as_dict(), "b": self.t_accum[1].as_dict()},
            "e_accum": {"a": self.e_accum[0].as_dict(), "b": self.e_accum[1].as_dict()},
            "biases": self.biases,
            "bias_changed": self.bias_changed,
            "bias_abs_change": self.bias_abs_change,
        }


@attrs.frozen
class TensorDiff:
    """Element-wise changes of an integer tensor outside any layer record."""

    path: str
    elements: int
    changed: int
    abs_change: int

    @property
    def changed_share(self) -> float:
        return self.changed / self.elements if self.elements else 0.0

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"changed_share": self.changed_share}


@attrs.frozen
class StateDiff:
    """The diff of two trees: per layer, other tensors, and the total over the layers shown."""

    layers: tuple[LayerDiff, ...]
    tensors: tuple[TensorDiff, ...]

    @property
    def total(self) -> LayerDiff:
        empty = _empty_layer()
        return sum(self.layers, empty) if self.layers else empty

    @property
    def unchanged(self) -> bool:
        return all(layer.unchanged for layer in self.layers) and not any(t.changed for t in self.tensors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": [layer.as_dict() for layer in self.layers],
            "tensors": [tensor.as_dict() for tensor in self.tensors],
            "total": self.total.as_dict(),
            "unchanged": self.unchanged,
        }


def _empty_layer() -> LayerDiff:
    nothing = Histogram({})
    return LayerDiff(
        path="<total>", weights=0, groups=0, trits=dict.fromkeys(TRIT_KINDS, 0), e_up=0, e_down=0, e_max_step=0,
        weights_changed=0, t_accum=(nothing, nothing), e_accum=(nothing, nothing), biases=0, bias_changed=0,
        bias_abs_change=0,
    )


def diff_layer(path: str, a: LinearState, b: LinearState) -> LayerDiff:
    """Changes from layer ``a`` to layer ``b`` (same shapes and static fields)."""
    ta, tb = a.trits(), b.trits()
    pair_code = ((ta.to(torch.int64) + 1) * 3 + (tb.to(torch.int64) + 1)).reshape(-1)
    pairs = torch.bincount(pair_code, minlength=9).tolist()
    trits = {kind: pairs[(old + 1) * 3 + (new + 1)] for kind, (old, new) in TRIT_KINDS.items()}
    e_step = b.E.to(torch.int16) - a.E.to(torch.int16)
    e_moved = (e_step != 0).repeat_interleave(a.group_size, dim=1)[:, : a.in_features]
    weight_changed = (ta != tb) | (e_moved & (tb != 0))
    biases = bias_changed = bias_abs_change = 0
    if a.bias is not None and b.bias is not None:
        bias_step = b.bias.to(torch.int64) - a.bias.to(torch.int64)
        biases, bias_changed, bias_abs_change = a.bias.numel(), int((bias_step != 0).sum()), int(bias_step.abs().sum())
    return LayerDiff(
        path=path,
        weights=ta.numel(),
        groups=a.E.numel(),
        trits=trits,
        e_up=int((e_step > 0).sum()),
        e_down=int((e_step < 0).sum()),
        e_max_step=int(e_step.abs().max()) if e_step.numel() else 0,
        weights_changed=int(weight_changed.sum()),
        t_accum=(Histogram.of(a.T_accum), Histogram.of(b.T_accum)),
        e_accum=(Histogram.of(a.E_accum), Histogram.of(b.E_accum)),
        biases=biases,
        bias_changed=bias_changed,
        bias_abs_change=bias_abs_change,
    )


def diff_tensor(path: str, a: torch.Tensor, b: torch.Tensor) -> TensorDiff:
    step = b.to(torch.int64) - a.to(torch.int64)
    return TensorDiff(path=path, elements=a.numel(), changed=int((step != 0).sum()), abs_change=int(step.abs().sum()))


def _is_layer(node: Any) -> bool:
    return isinstance(node, LinearState)


def _nodes(tree: Any) -> list[tuple[str, Any]]:
    """``(path, node)`` for each layer record and each tensor outside layer records."""
    flat, _ = pytree.tree_flatten_with_path(tree, is_leaf=_is_layer)
    return [(pytree.keystr(p).lstrip(".") or ROOT, node) for p, node in flat if node is not None]


def _signature(node: Any) -> tuple[Any, ...]:
    if _is_layer(node):
        return ("LinearState", node.in_features, node.out_features, node.group_size, node.bias_frac_bits, node.bias is None)
    if isinstance(node, torch.Tensor):
        return (str(node.dtype), tuple(node.shape))
    return (type(node).__name__,)


def _check_same_structure(a: list[tuple[str, Any]], b: list[tuple[str, Any]], trees: tuple[Any, Any]) -> None:
    sig_a = {path: _signature(node) for path, node in a}
    sig_b = {path: _signature(node) for path, node in b}
    only_a = sorted(set(sig_a) - set(sig_b))
    only_b = sorted(set(sig_b) - set(sig_a))
    differ = sorted(p for p in set(sig_a) & set(sig_b) if sig_a[p] != sig_b[p])
    if only_a or only_b or differ:
        parts = [
            f"{label}: {', '.join(paths)}"
            for label, paths in (("only in A", only_a), ("only in B", only_b), ("different shape/dtype/fields", differ))
            if paths
        ]
        raise StructureMismatchError("states differ in structure; " + "; ".join(parts))
    if pytree.tree_structure(trees[0]) != pytree.tree_structure(trees[1]):
        raise StructureMismatchError("states differ in structure (container types or record fields) at the same paths")


def _as_tree(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        from ternary.io.snapshot import load

        return load(source)[0]
    return source


_INDEX = re.compile(r"\[(?:'([^']*)'|(-?\d+))\]")


def dotted(path: str) -> str:
    """``blocks[0].attn.q`` -> ``blocks.0.attn.q``; ``['embed']`` -> ``embed`` (glob-friendly: no brackets)."""
    return _INDEX.sub(lambda m: "." + (m.group(1) if m.group(1) is not None else m.group(2)), path).lstrip(".")


def _matches(path: str, patterns: Iterable[str] | None) -> bool:
    """A pattern matches the path as written or its :func:`dotted` form."""
    return patterns is None or any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(dotted(path), p) for p in patterns)


def diff(a: Any, b: Any, *, layers: str | Iterable[str] | None = None) -> StateDiff:
    """What changed from ``a`` to ``b`` (state trees, or paths of snapshot files).

    ``layers``: fnmatch pattern(s) matched against each layer/tensor path as written
    (``blocks[0].attn.q``) or in :func:`dotted` form (``blocks.0.attn.q``), so
    ``blocks.0.*`` and ``*attn*`` work; the total covers only what matches. Raises
    :class:`StructureMismatchError` listing the differing paths, and
    :class:`~ternary.io.errors.SnapshotError` for a bad file.
    """
    tree_a, tree_b = _as_tree(a), _as_tree(b)
    nodes_a, nodes_b = _nodes(tree_a), _nodes(tree_b)
    _check_same_structure(nodes_a, nodes_b, (tree_a, tree_b))
    patterns = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
    layer_diffs, tensor_diffs = [], []
    for (path, node_a), (_, node_b) in zip(nodes_a, nodes_b):
        if not _matches(path, patterns):
            continue
        if _is_layer(node_a):
            layer_diffs.append(diff_layer(path, node_a, node_b))
        elif isinstance(node_a, torch.Tensor):
            tensor_diffs.append(diff_tensor(path, node_a, node_b))
    return StateDiff(layers=tuple(layer_diffs), tensors=tuple(tensor_diffs))
