"""The shared check of a layer's integer tensors: every broken tensor is named, good ones pass."""

from __future__ import annotations

import pytest
import torch

from ternary.kernels.layer_checks import check_layer_tensors
from ternary.state.linear_state import LinearState


def good(k: int = 23, n: int = 7, g: int = 10) -> dict:
    layer = LinearState.random(k, n, group_size=g, generator=torch.Generator().manual_seed(0))
    return dict(T_packed=layer.T_packed, E=layer.E, E_accum=layer.E_accum, T_accum=layer.T_accum, bias=layer.bias)


def test_a_matching_layer_passes_and_absent_bias_is_skipped():
    tensors = good()
    check_layer_tensors("here", in_features=23, group_size=10, device=torch.device("cpu"), contiguous=True, **tensors)
    check_layer_tensors("here", in_features=23, group_size=10, **{**tensors, "bias": None})


@pytest.mark.parametrize(
    "name,broken,message",
    [
        ("T_packed", lambda t: t.to(torch.int16), r"here: T_packed must be uint8 \[7, 5\], got int16"),
        ("E", lambda t: t[:, :1], r"here: E must be int8 \[7, 3\], got int8 \[7, 1\]"),
        ("E_accum", lambda t: t.to(torch.int32), "here: E_accum must be int8"),
        ("T_accum", lambda t: t[:, :-1], r"here: T_accum must be int8 \[7, 23\]"),
        ("bias", lambda t: t.to(torch.int64), r"here: bias must be int32 \[7\], got int64"),
        ("T_accum", lambda t: torch.zeros(23, 7, dtype=torch.int8).t(), "here: T_accum must be contiguous"),
    ],
)
def test_each_broken_tensor_is_named(name, broken, message):
    tensors = good(23, 7, 10)
    tensors[name] = broken(tensors[name])
    with pytest.raises(ValueError, match=message):
        check_layer_tensors("here", in_features=23, group_size=10, contiguous=True, **tensors)


def test_group_size_in_features_and_device_are_checked():
    with pytest.raises(ValueError, match="group_size=12 must be a positive multiple of 5"):
        check_layer_tensors("here", in_features=23, group_size=12, **good())
    with pytest.raises(ValueError, match="here: in_features=0 must be positive"):
        check_layer_tensors("here", in_features=0, group_size=10, T_packed=torch.empty(7, 0, dtype=torch.uint8))
    with pytest.raises(ValueError, match="here: E is on cpu, expected meta"):
        check_layer_tensors("here", in_features=23, group_size=10, device=torch.device("meta"),
                            T_packed=torch.empty(7, 5, dtype=torch.uint8, device="meta"), E=good()["E"])
