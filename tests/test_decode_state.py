"""The decode layout (``ternary.state.decode_state``) and ``linear`` on a ``DecodeLinearState``.

The layout is checked against its definition byte by byte; the forward on the CPU backends must
equal the forward of the ``LinearState`` it was built from bit for bit (both run the same kernels
on ``T_packed``). The tiled kernels themselves run only on a GPU (``test_triton_lut_gemv.py``,
``test_triton_tiled_gemv.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

import ternary
from ternary import DecodeLinearState, LinearState, audit, linear, value_and_hooks
from ternary.state.decode_state import (
    CHUNK_BYTES, STEP_BYTES, TILE_ROWS, ZERO_TRITS_BYTE, check_tiles, decode_layout_fits, tile_rows, untile_rows,
)
from ternary.state.packing import CorruptStateError

# (N, K, G): N = 1, rows past a whole tile, K not a multiple of 5 or of G, every group size that
# fits (1 to 64 bytes per group).
SHAPES = [(1, 7, 40), (33, 333, 40), (64, 4099, 40), (5, 161, 5), (70, 1001, 10), (31, 640, 20), (40, 999, 80),
          (3, 2000, 160), (2, 1500, 320)]


def layer(n: int, k: int, g: int, *, bias: bool = True) -> LinearState:
    return LinearState.random(k, n, group_size=g, bias=bias, generator=torch.Generator().manual_seed(n * 31 + k + g))


@pytest.mark.parametrize("n,k,g", SHAPES)
def test_tiles_hold_each_byte_and_exponent_where_the_layout_says(n, k, g):
    state = layer(n, k, g)
    T_tiles, E_tiles = tile_rows(state.T_packed, state.E, g)
    blocks, chunks, rows, width = T_tiles.shape
    assert (rows, width) == (TILE_ROWS, CHUNK_BYTES) and blocks == -(-n // TILE_ROWS)
    assert (chunks * CHUNK_BYTES) % STEP_BYTES == 0 and chunks * CHUNK_BYTES >= state.T_packed.shape[1]
    gen = torch.Generator().manual_seed(n + k)
    for _ in range(50):
        row, byte = int(torch.randint(n, (1,), generator=gen)), int(torch.randint(state.T_packed.shape[1], (1,),
                                                                                       generator=gen))
        b, r, c, i = row // TILE_ROWS, row % TILE_ROWS, byte // CHUNK_BYTES, byte % CHUNK_BYTES
        assert T_tiles[b, c, r, i] == state.T_packed[row, byte]
        group = int(torch.randint(state.E.shape[1], (1,), generator=gen))
        assert E_tiles[row // TILE_ROWS, group // 4, row % TILE_ROWS, group % 4] == state.E[row, group]
    rows_back = T_tiles.transpose(1, 2).reshape(blocks * TILE_ROWS, chunks * CHUNK_BYTES)
    exponents_back = E_tiles.transpose(1, 2).reshape(blocks * TILE_ROWS, -1)
    assert (rows_back[n:] == ZERO_TRITS_BYTE).all() and (rows_back[:, state.T_packed.shape[1]:] == ZERO_TRITS_BYTE).all()
    assert (exponents_back[n:] == 0).all() and (exponents_back[:, state.E.shape[1]:] == 0).all()
    assert exponents_back.shape[1] * (g // 5) >= chunks * CHUNK_BYTES  # every padded byte has a group


@pytest.mark.parametrize("n,k,g", SHAPES)
def test_untile_gives_the_canonical_tensors_back(n, k, g):
    state = layer(n, k, g)
    packed, exponents = untile_rows(*tile_rows(state.T_packed, state.E, g), n, k, g)
    assert torch.equal(packed, state.T_packed) and torch.equal(exponents, state.E)


def test_group_sizes_that_fit_hold_whole_groups_per_step_or_lie_inside_one():
    for g in range(5, 2001, 5):
        per_group = g // 5
        assert decode_layout_fits(g) == (STEP_BYTES % per_group == 0 or per_group % STEP_BYTES == 0), g
    assert [g for g in range(5, 400, 5) if decode_layout_fits(g)] == [5, 10, 20, 40, 80, 160, 320]
    assert not decode_layout_fits(7) and not decode_layout_fits(0)


def test_from_layer_refuses_group_sizes_and_records_that_do_not_fit():
    with pytest.raises(ValueError, match="group_size=30"):
        DecodeLinearState.from_layer(layer(8, 100, 30))
    with pytest.raises(TypeError, match="LinearState"):
        DecodeLinearState.from_layer({"T_packed": torch.zeros(1)})


def test_constructor_names_a_tensor_of_the_wrong_shape_or_dtype():
    decode = DecodeLinearState.from_layer(layer(33, 333, 40))
    fields = dict(T_packed=decode.T_packed, E=decode.E, bias=decode.bias, T_tiles=decode.T_tiles,
                  E_tiles=decode.E_tiles, in_features=333, out_features=33, group_size=40, bias_frac_bits=16)
    with pytest.raises(ValueError, match=r"T_tiles has shape \[1, 6, 32, 16\]; expected \[2, 6, 32, 16\]"):
        DecodeLinearState(**(fields | {"T_tiles": decode.T_tiles[:1]}))
    with pytest.raises(ValueError, match="E_tiles has shape"):
        DecodeLinearState(**(fields | {"E_tiles": decode.E_tiles[:, :1]}))
    with pytest.raises(TypeError, match="T_tiles: expected dtype torch.uint8"):
        DecodeLinearState(**(fields | {"T_tiles": decode.T_tiles.to(torch.int16)}))
    with pytest.raises(ValueError, match=r"bias_frac_bits must be in \[0, 30\], got -7"):
        DecodeLinearState(**(fields | {"bias_frac_bits": -7}))
    with pytest.raises(ValueError, match="E_tiles on meta"):
        DecodeLinearState(**(fields | {"E_tiles": decode.E_tiles.to("meta")}))
    with pytest.raises(ValueError, match="group_size=60 does not suit"):
        DecodeLinearState(**(fields | {"group_size": 60}))


def test_tile_rows_and_untile_rows_name_what_does_not_fit():
    state = layer(33, 333, 40)
    with pytest.raises(ValueError, match="tile_rows: group_size=60"):
        tile_rows(state.T_packed, state.E, 60)
    with pytest.raises(TypeError, match="T_packed must be a 2-D uint8 tensor"):
        tile_rows(state.T_packed.to(torch.int16), state.E, 40)
    with pytest.raises(ValueError, match=r"E must be int8 \[33, 9\]"):
        tile_rows(state.T_packed, state.E[:, :5], 40)
    T_tiles, E_tiles = tile_rows(state.T_packed, state.E, 40)
    with pytest.raises(ValueError, match="untile_rows: T_tiles has shape"):
        untile_rows(T_tiles, E_tiles, 33, 5000, 40)
    with pytest.raises(TypeError, match="E_tiles must be a torch.int8 tensor"):
        check_tiles(T_tiles, E_tiles.to(torch.uint8), 33, 333, 40)


def test_validate_names_tiles_that_do_not_hold_the_layer():
    decode = DecodeLinearState.from_layer(layer(33, 333, 40))
    decode.E_tiles[0, 1, 3, 2] += 1
    with pytest.raises(ValueError, match="head.E_tiles: does not hold the layer's E"):
        decode.validate("head")
    fresh = DecodeLinearState.from_layer(layer(33, 333, 40))
    fresh.T_tiles[1, 0, 0, 0] = (int(fresh.T_tiles[1, 0, 0, 0]) + 1) % 243
    with pytest.raises(ValueError, match="T_tiles: does not hold the layer's T_packed"):
        fresh.validate()


def test_save_refuses_the_inference_copy(tmp_path):
    decode = DecodeLinearState.from_layer(layer(8, 50, 10))
    with pytest.raises(TypeError, match=r"save: \['head'\] is a DecodeLinearState"):
        ternary.save(tmp_path / "s.safetensors", {"head": decode})
    assert not (tmp_path / "s.safetensors").exists()


def test_validate_names_a_corrupt_byte_in_the_tiles():
    decode = DecodeLinearState.from_layer(layer(33, 333, 40))
    decode.validate()
    decode.T_tiles[1, 2, 0, 5] = 250
    with pytest.raises(CorruptStateError, match=r"layer.T_tiles: byte 250 at index \(1, 2, 0, 5\)"):
        decode.validate("layer")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("rows", [1, 3])
def test_forward_equals_the_layers_forward(backend, rows):
    """On the CPU both run the same kernels on ``T_packed`` (Triton under the interpreter, which
    ``conftest`` turns on); the tiled kernel's own check is in ``test_triton_tiled_gemv.py``."""
    if backend == "triton":
        pytest.importorskip("triton")
        if torch.cuda.is_available():
            pytest.skip("CPU check: on a GPU the tiled kernels run and are compared in test_triton_lut_gemv.py and "
                        "test_triton_tiled_gemv.py")
    state = layer(33, 333, 40)
    decode = DecodeLinearState.from_layer(state)
    x = torch.randn(2, rows, 333, generator=torch.Generator().manual_seed(rows))[:1]
    with torch.no_grad():
        got = linear(decode, x, backend=backend)
        want = linear(state, x, backend=backend)
    assert got.shape == (1, rows, 33) and torch.equal(got, want)


def test_forward_refuses_gradients_and_hooks():
    state = layer(8, 50, 10)
    decode = DecodeLinearState.from_layer(state)
    x = torch.randn(2, 50, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        linear(decode, x)
    with pytest.raises(RuntimeError, match="inference only"):
        value_and_hooks(lambda s, v: linear(s, v).sum())(decode, x.detach())
    with pytest.raises(ValueError, match="in_features=50"):
        linear(decode, torch.randn(2, 49))


def test_record_is_an_integer_pytree():
    decode = DecodeLinearState.from_layer(layer(33, 333, 40))
    report = audit({"head": decode})
    assert report.ok and not report.float_leaves and report.leaves_by_dtype == {"uint8": 2, "int8": 2, "int32": 1}
    leaves, spec = pytree.tree_flatten(decode)
    rebuilt = pytree.tree_unflatten([leaf.clone() for leaf in leaves], spec)
    assert isinstance(rebuilt, DecodeLinearState) and rebuilt.group_size == 40
    assert all(torch.equal(getattr(rebuilt, name), getattr(decode, name))
               for name in ("T_packed", "E", "bias", "T_tiles", "E_tiles"))
    no_bias = DecodeLinearState.from_layer(layer(4, 20, 20, bias=False))
    assert no_bias.bias is None and len(pytree.tree_leaves(no_bias)) == 4
