"""What one call of each Triton path puts on the card, counted in a CUDA graph that captured it after an eager
call (``benchmarks.graph_nodes``): the kernels listed below and nothing else, and two calls twice as many.

A call that gains launches has gained per-call work: a decode-in-GEMM call once rebuilt its unit order from
~20 small kernels inside every capture, 40 us on a 100 us call, for two sessions before the benchmark showed it.
A change that adds a launch on purpose updates its row here. sm_90 only: the counts are those of the Hopper
paths and of the cuBLAS measured with them (an H200, torch 2.11 with CUDA 13)."""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from benchmarks.graph_nodes import node_kinds, nodes_per_call  # noqa: E402
from ternary import DecodeLinearState, LinearState, linear  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.update import triton as update_kernels  # noqa: E402
from ternary.kernels.update import triton_wgmma_wide  # noqa: E402

pytestmark = pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.get_device_capability()[0] != 9,
                                reason="the counts are those of the sm_90 paths (H200, cuBLAS 13 of torch 2.11)")
G = 40


def _layer(n: int, k: int) -> LinearState:
    return LinearState.random(k, n, group_size=G, bias=True, generator=torch.Generator().manual_seed(n + k),
                              device=DEVICE)


def _rows(m: int, width: int) -> torch.Tensor:
    return torch.randn(m, width, generator=torch.Generator().manual_seed(m + width)).to(DEVICE, torch.bfloat16)


def _forward(layer: LinearState, m: int):
    x = _rows(m, layer.in_features)
    return lambda: kernels.forward(x, layer.T_packed, layer.E, layer.bias, in_features=layer.in_features,
                                   group_size=G, bias_frac_bits=layer.bias_frac_bits)


def _forward_decode(layer: LinearState, m: int):
    decode, x = DecodeLinearState.from_layer(layer), _rows(m, layer.in_features)
    return lambda: kernels.forward_decode(x, layer.T_packed, layer.E, decode.T_tiles, decode.E_tiles, layer.bias,
                                          in_features=layer.in_features, group_size=G,
                                          bias_frac_bits=layer.bias_frac_bits)


def _public_linear(layer: LinearState, m: int):
    x = _rows(m, layer.in_features)

    def call():
        with torch.no_grad():
            return linear(layer, x, backend="triton")
    return call


def _grad_x(layer: LinearState, m: int):
    grad_y = _rows(m, layer.out_features)
    return lambda: kernels.grad_x(grad_y, layer.T_packed, layer.E, in_features=layer.in_features, group_size=G)


def _update(layer: LinearState, m: int):
    x, grad_y = _rows(m, layer.in_features), _rows(m, layer.out_features)
    return lambda: update_kernels.update(layer.T_packed, layer.E, layer.E_accum, layer.T_accum, layer.bias, x, grad_y,
                                         in_features=layer.in_features, group_size=G, theta_t=4, theta_e=8, e_min=-20,
                                         e_max=4, bias_step=1, validated=True)


SMALL, WIDE, DEEP, EVEN = (1000, 1001), (4096, 1000), (4096, 2600), (1000, 1002)
# (path, layer, rows, kernels per call): what they are (as named by the driver on an H200, twenty-ninth session)
CASES = [
    ("forward", SMALL, 1, 3),  # x's digit planes, the CUDA-core GEMV, the split sum with the bias
    ("forward", SMALL, 16, 3),  # activation fragments, the mma.sync kernel, the split sum
    ("forward", SMALL, 128, 4),  # two-step (the buffer stays in L2): run decode, cuBLAS (split-K: two), the bias
    ("forward", WIDE, 2048, 2),  # decode-in-GEMM: the first chunks' run decode (which zeroes the flags), the kernel
    ("forward", SMALL, 8192, 3),  # two-step: the run decode, cuBLAS, the bias
    ("forward_decode", SMALL, 1, 2),  # the LUT GEMV and the split sum
    ("forward_decode", SMALL, 16, 3),  # regrouped activations, the tiled mma.sync kernel, the split sum
    ("forward_decode", SMALL, 40, 3),  # the same with five column tiles (the T_packed fallback would also take 3:
    # test_triton_tiled_mma's dispatch test checks that 17-64 rows take the tiled kernel)
    ("public_linear", WIDE, 2048, 2),  # as the forward: the bridge adds nothing
    ("public_linear", SMALL, 1, 3),
    ("grad_x", SMALL, 1, 2),  # the CUDA-core GEMV over the weight rows, the split sum
    ("grad_x", SMALL, 16, 2),  # the register-decode kernel, the split sum
    ("grad_x", DEEP, 2048, 2),  # two-step: the run decode and cuBLAS (the layer is below the fused threshold)
    ("grad_x", SMALL, 8192, 2),
    ("update", SMALL, 64, 2),  # odd K: x's digit planes and the Triton vote kernel
    ("update", EVEN, 8192, 2),  # x copied into padded rows for TMA (1002 bf16 are not 16-byte aligned; the padding
    # is never written: the descriptor fills zeros past K), the 64-row wgmma kernel; aligned rows: the kernel alone
]
PATHS = {"forward": _forward, "forward_decode": _forward_decode, "public_linear": _public_linear,
         "grad_x": _grad_x, "update": _update}


@pytest.mark.parametrize("path, shape, m, count", CASES)
def test_a_call_launches_its_kernels_and_nothing_else(path, shape, m, count):
    call = PATHS[path](_layer(*shape), m)
    once, twice = nodes_per_call(call), nodes_per_call(call, 2)
    assert node_kinds(once) == {"kernel": count}, f"{path} M={m} on {shape}: {once}"
    assert node_kinds(twice) == {"kernel": 2 * count}, f"{path} M={m} on {shape}, two calls: {twice}"


def test_fused_grad_x_and_wide_update_launch_theirs(monkeypatch):
    """The fused grad-x (its weight threshold lowered to reach a small layer: the first row blocks' run decode,
    which also zeroes the flags, and the kernel) and the wide update (forced, and seen to run: x padded for TMA
    as above and the kernel, its trit table kept after the first call)."""
    monkeypatch.setattr(kernels, "DECODE_GEMM_GRAD_X_MIN_WEIGHTS", 0)
    fused = nodes_per_call(_grad_x(_layer(*DEEP), 2048))
    assert node_kinds(fused) == {"kernel": 2}, fused
    wide_calls = []
    wide_update = triton_wgmma_wide.wide_update
    monkeypatch.setattr(triton_wgmma_wide, "takes", lambda *args: True)
    monkeypatch.setattr(triton_wgmma_wide, "wide_update",
                        lambda *args, **kwargs: wide_calls.append(1) or wide_update(*args, **kwargs))
    wide = nodes_per_call(_update(_layer(*EVEN), 8192))
    assert node_kinds(wide) == {"kernel": 2}, wide
    assert wide_calls == [1, 1]
