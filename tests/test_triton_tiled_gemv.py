"""The one-row forward over the row-tiled decode layout (``triton_tiled_gemv``).

The Gluon kernel runs only compiled on a GPU; on the CPU the dispatch falls back to the forward on
``T_packed`` (checked here too). Float outputs are compared with a float64 product of the reference
weights by relative RMS error, with the budgets of the shuffle-table kernel whose arithmetic this
kernel shares (``test_triton_table_gemv``): fp32 activations ``FP32_BUDGET``, bf16 ``BF16_BUDGET``.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary import DecodeLinearState, LinearState, linear  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_tiled_gemv as tiled  # noqa: E402
from ternary.state.decode_state import tile_rows  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_table_gemv import (BF16_BUDGET, FP32_BUDGET, FRAC_BITS, corrupt_layer, float64_forward,  # noqa: E402
                                    layer)

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")

# (N, K, G): N = 1, rows past a whole tile and past a whole program, K not a multiple of 5 or of
# G, every group size the layout takes (1, 2, 4, 8, 16, 32, 64 and 96 bytes per group). Launch tiles
# (rows per lane, warps, programs per SM): None is the default dispatch (this kernel for G = 5, 10 and
# 20, the one-lookup kernel of ``triton_lut_gemv`` for the rest); then small and large programs, and one
# split (programs per SM 0), which walks many steps in one program with the next step's loads in flight.
SHAPES = [(1, 7, 40), (33, 333, 40), (1000, 4099, 40), (300, 161, 5), (513, 1001, 10), (130, 640, 20),
          (257, 999, 80), (64, 2000, 160), (100, 3000, 320), (50, 5000, 480), (4096, 4096, 40)]


def decode_state(n, k, g, seed):
    """A ``DecodeLinearState`` on ``DEVICE`` of the shared test layer, and the layer's generator."""
    packed, exponents, bias, gen = layer(n, k, g, seed)
    state = LinearState(T_packed=packed, E=exponents, E_accum=torch.zeros_like(exponents),
                        T_accum=torch.zeros((n, k), dtype=torch.int8), bias=bias, in_features=k, out_features=n,
                        group_size=g, bias_frac_bits=FRAC_BITS)
    return pytree.tree_map(lambda t: t.to(DEVICE), DecodeLinearState.from_layer(state)), gen


@GPU_ONLY
@pytest.mark.parametrize("n,k,g", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", [None, (1, 2, 1), (2, 4, 3), (4, 8, 2), (4, 4, 0)])
def test_tiled_gemv_matches_float64(n, k, g, dtype, tile):
    check_one_row_against_float64(n, k, g, dtype, tile)


def check_one_row_against_float64(n, k, g, dtype, tile):
    """``forward_decode`` of one ``dtype`` row of the shared test layer (``N x K``, groups of ``g``) with the
    launch ``tile`` against float64, within the budget of ``dtype``."""
    state, gen = decode_state(n, k, g, seed=n + k + g)
    x = torch.randn(1, k, generator=gen).to(dtype)
    expected = float64_forward(x, state.T_packed, state.E, state.bias, k, g)
    got = kernels.forward_decode(x.cuda(), state.T_packed, state.E, state.T_tiles, state.E_tiles, state.bias,
                                 in_features=k, group_size=g, bias_frac_bits=FRAC_BITS, tile=tile)
    assert got.dtype == dtype and got.shape == (1, n)
    assert relative_rms(got, expected) < (FP32_BUDGET if dtype == torch.float32 else BF16_BUDGET)


@GPU_ONLY
def test_tiled_gemv_poisons_rows_of_corrupt_bytes_and_keeps_extreme_exponents():
    """Bytes 243 and 255 at a row's first and last column and 250 inside make those rows NaN and no
    other; exponents 127 and -128 stay exact (activations scaled so nothing overflows)."""
    packed, exponents, x, check = corrupt_layer()
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, 40))
    check(kernels.forward_decode(x.cuda(), packed.cuda(), exponents.cuda(), T_tiles, E_tiles, None,
                                 in_features=x.shape[1], group_size=40, bias_frac_bits=FRAC_BITS,
                                 tile=(tiled.TILED_ROWS_PER_LANE, tiled.TILED_WARPS, tiled.TILED_PROGRAMS_PER_SM)))


@GPU_ONLY
def test_linear_takes_the_tiled_kernel_for_one_row_only(monkeypatch):
    calls = []
    original = tiled.tiled_gemv
    monkeypatch.setattr(tiled, "tiled_gemv", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    state, gen = decode_state(513, 1001, 10, seed=9)  # G / 5 = 2: not the one-lookup kernel's
    for rows, takes in ((1, True), (3, False)):
        x = torch.randn(rows, 1001, generator=gen)
        expected = float64_forward(x, state.T_packed, state.E, state.bias, 1001, 10)
        with torch.no_grad():
            got = linear(state, x.cuda(), backend="triton")
        assert (len(calls) == 1) == takes
        calls.clear()
        assert relative_rms(got, expected) < 5e-5


@GPU_ONLY
def test_linear_takes_a_token_of_a_batch_with_the_default_backend():
    state, gen = decode_state(257, 999, 40, seed=3)
    x = torch.randn(1, 1, 999, generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        got = linear(state, x.cuda())
    assert got.shape == (1, 1, 257) and got.dtype == torch.bfloat16
    assert relative_rms(got[0], float64_forward(x[0], state.T_packed, state.E, state.bias, 999, 40)) < BF16_BUDGET


@GPU_ONLY
def test_tiles_must_be_contiguous_on_the_activations_device():
    state, gen = decode_state(64, 500, 40, seed=2)
    x = torch.randn(1, 500, generator=gen).cuda()
    strided = torch.cat([state.T_tiles, state.T_tiles], dim=-1)[..., :16]  # same values, rows 32 bytes apart
    assert torch.equal(strided, state.T_tiles) and not strided.is_contiguous()
    with pytest.raises(ValueError, match="T_tiles must be contiguous"):
        kernels.forward_decode(x, state.T_packed, state.E, strided, state.E_tiles, None, in_features=500, group_size=40,
                               bias_frac_bits=FRAC_BITS)
    storage = torch.empty(state.E_tiles.numel() + 1, dtype=torch.int8, device="cuda")
    shifted = storage[1:].view(state.E_tiles.shape)  # one byte past an aligned start
    shifted.copy_(state.E_tiles)
    with pytest.raises(ValueError, match="E_tiles must be contiguous on cuda:0 and start 4-byte aligned"):
        kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, shifted, None, in_features=500, group_size=40,
                               bias_frac_bits=FRAC_BITS)
    with pytest.raises(ValueError, match="E_tiles must be contiguous on cuda:0"):
        kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, state.E_tiles.cpu(), None, in_features=500,
                               group_size=40, bias_frac_bits=FRAC_BITS)


def test_forward_decode_checks_the_tiles_against_the_layer_on_every_path():
    state, gen = decode_state(64, 500, 40, seed=2)
    x = torch.randn(1, 500, generator=gen).to(DEVICE)
    with pytest.raises(ValueError, match="triton forward: T_tiles has shape"):
        kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles[:, :-2], state.E_tiles, None,
                               in_features=500, group_size=40, bias_frac_bits=FRAC_BITS)
    with pytest.raises(ValueError, match="triton forward: group_size=60 does not suit"):
        kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, state.E_tiles, None, in_features=500,
                               group_size=60, bias_frac_bits=FRAC_BITS)


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the interpreter's dispatch")
def test_interpreter_dispatch_runs_the_forward_on_t_packed(monkeypatch):
    called = []
    monkeypatch.setattr(tiled, "tiled_gemv", lambda *a, **k: called.append(1))
    state, gen = decode_state(64, 150, 40, seed=1)
    x = torch.randn(1, 150, generator=gen)
    got = kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, state.E_tiles, state.bias, in_features=150,
                                 group_size=40, bias_frac_bits=FRAC_BITS)
    assert not called
    assert relative_rms(got, float64_forward(x, state.T_packed, state.E, state.bias, 150, 40)) < 5e-5
