"""Compile ahead of time the TileLang kernels a model configuration or a shape list needs.

A kernel is selected by a :class:`~ternary.kernels.linear.tilelang.KernelSpec`: op
(``forward``, and ``grad_x`` for training), layer shape ``N x K``, group size, activation
dtype, bias, M bucket and GPU arch (M itself is dynamic inside its bucket). Compiled
kernels land in TileLang's disk cache (``TILELANG_CACHE_DIR``, default
``~/.tilelang/cache``), so the next process, or the next prewarm, only loads them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.utils._pytree as pytree

from ternary.kernels.linear.tilelang import DTYPE_NAMES, M_BUCKETS, KernelSpec, m_bucket
from ternary.state.linear_state import DEFAULT_BIAS_FRAC_BITS, LinearState

CACHE_DIR_VARIABLE = "TILELANG_CACHE_DIR"
DEFAULT_ARCH = "sm_90a"
DTYPE_CHOICES = tuple(DTYPE_NAMES.values())


class LayerShape(NamedTuple):
    """Static shape of one ternary linear layer as the kernels see it."""

    out_features: int
    in_features: int
    group_size: int
    has_bias: bool
    bias_frac_bits: int


class ShapeRequest(NamedTuple):
    """One ``--shape M,N,K,G``: a layer ``N x K`` with groups of ``G``, called with ``M`` rows."""

    rows: int
    out_features: int
    in_features: int
    group_size: int


class Compiled(NamedTuple):
    spec: KernelSpec
    seconds: float


def parse_shape(text: str) -> ShapeRequest:
    """``"M,N,K,G"`` -> :class:`ShapeRequest`; G must be a multiple of 5."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shape {text!r}: expected four positive integers M,N,K,G")
    request = ShapeRequest(*(int(p) for p in parts))
    if request.group_size % 5:
        raise ValueError(f"--shape {text!r}: G={request.group_size} must be a multiple of 5")
    return request


def default_arch() -> str:
    """The local GPU's arch, or ``sm_90a`` (Hopper) when there is none."""
    if torch.cuda.is_available():
        from ternary.kernels.linear.tilelang import device_arch

        return device_arch(torch.cuda.current_device())
    return DEFAULT_ARCH


def specs_for(
    layers: list[tuple[LayerShape, tuple[str, ...]]], dtypes: tuple[str, ...], *, training: bool, arch: str
) -> list[KernelSpec]:
    """Kernel specs for ``(layer, M buckets)`` pairs: ``forward`` (and ``grad_x`` when ``training``)."""
    specs: list[KernelSpec] = []
    for layer, buckets in layers:
        for dtype in dtypes:
            for bucket in buckets:
                bits = layer.bias_frac_bits if layer.has_bias else 0
                specs.append(KernelSpec(
                    "forward", layer.out_features, layer.in_features, layer.group_size, dtype, layer.has_bias,
                    bits, bucket, arch,
                ))
                if training:
                    specs.append(KernelSpec(
                        "grad_x", layer.out_features, layer.in_features, layer.group_size, dtype, False, 0, bucket, arch
                    ))
    return list(dict.fromkeys(specs))


def shape_layers(requests: list[ShapeRequest], *, bias: bool) -> list[tuple[LayerShape, tuple[str, ...]]]:
    return [
        (LayerShape(r.out_features, r.in_features, r.group_size, bias, DEFAULT_BIAS_FRAC_BITS), (m_bucket(r.rows),))
        for r in requests
    ]


def model_layers(preset: str, *, rows: int) -> list[tuple[LayerShape, tuple[str, ...]]]:
    """Every ternary layer of model preset ``preset`` (built on the meta device: no memory, no data).

    Layers see up to ``rows`` rows (batch x context); MoE experts and heads can see
    fewer, so above ``SMALL_M`` rows both buckets are compiled. Embedding tables are
    LinearStates too and are included, which costs a few extra kernels at most.
    """
    from ternary.model.config import preset as model_preset
    from ternary.model.network import init_model

    state = init_model(model_preset(preset), device="meta")
    leaves = pytree.tree_leaves(state, is_leaf=lambda node: isinstance(node, LinearState))
    shapes = dict.fromkeys(
        LayerShape(s.out_features, s.in_features, s.group_size, s.bias is not None, s.bias_frac_bits)
        for s in leaves if isinstance(s, LinearState)
    )
    buckets = M_BUCKETS if m_bucket(rows) == "large" else ("small",)
    return [(shape, buckets) for shape in shapes]


def prewarm(specs: list[KernelSpec], *, cache_dir: str | os.PathLike | None = None, workers: int | None = None):
    """Compile ``specs`` (in parallel) into the TileLang cache; returns ``([Compiled], wall seconds)``.

    ``cache_dir`` sets ``TILELANG_CACHE_DIR`` for this process (TileLang reads it live).
    """
    if cache_dir is not None:
        os.environ[CACHE_DIR_VARIABLE] = str(Path(cache_dir).expanduser().resolve())
    from ternary.kernels.linear.tilelang import compile_specs

    start = time.perf_counter()
    seconds = compile_specs(specs, workers=workers)
    return [Compiled(spec, seconds[spec]) for spec in specs], time.perf_counter() - start


def cache_dir() -> str:
    """The TileLang cache directory this process uses."""
    return os.environ.get(CACHE_DIR_VARIABLE) or str(Path("~/.tilelang/cache").expanduser())
