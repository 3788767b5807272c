"""A ternary linear layer prepared for decoding: forwards of one token, or of up to 64 (a batch of
sequences, or draft tokens), at a time.

:class:`DecodeLinearState` holds what a forward needs from a :class:`LinearState` (``T_packed``,
``E``, ``bias``) plus a second copy of the same bytes in the **row-tiled decode layout**, which the
Triton kernels for one row (``ternary.kernels.linear.triton_lut_gemv`` and ``triton_tiled_gemv``) and
for 2 to 64 bf16 rows (``triton_tiled_mma``) read with coalesced loads:

- ``T_tiles`` uint8 ``[ceil(N / 32), KB32 / 16, 32, 16]``: ``T_tiles[b, c, r, i]`` is byte
  ``16 c + i`` of row ``32 b + r``, where ``KB32`` is ``ceil(K / 5)`` rounded up to a multiple of
  32. So the 16-byte chunks of 32 consecutive rows lie side by side (one 512-byte run), whereas in
  ``T_packed`` they are ``ceil(K / 5)`` bytes apart. Bytes past a row and rows past ``N`` hold 121
  (five zero trits).
- ``E_tiles`` int8 ``[ceil(N / 32), ceil(groups / 4), 32, 4]``: ``E_tiles[b, w, r, i]`` is the
  exponent of group ``4 w + i`` of row ``32 b + r``, for the groups that cover ``KB32`` bytes;
  padding holds 0.

Only the order of the bytes changes: same base-3 digits, same exponents, no floats. The copy costs
about ``N * ceil(K / 5)`` more bytes (a tenth of a bf16 weight). It is for inference: it is built
from a layer, ``linear`` refuses gradients on it and ``ternary.save`` refuses it; training and
snapshots keep the canonical :class:`LinearState`.

The layout needs ``G / 5`` bytes per group to divide 32 or be a multiple of 32 (every 32-byte step
of a row then holds whole groups or lies inside one): G in 5, 10, 20, 40 (the default), 80, 160,
or a multiple of 160. The kernel for several rows also needs ``G / 5`` to be a multiple of 8 (G = 40,
80 or a multiple of 160); other layers run those calls on ``T_packed``.
"""

from __future__ import annotations

import attrs
import torch

from ternary.state.linear_state import (LinearState, _dtype, _group_size, _positive, check_field_shapes,
                                        groups_per_row)
from ternary.state.packing import check_packed, packed_width
from ternary.state.pytree import pytree_record

TILE_ROWS = 32
CHUNK_BYTES = 16
STEP_BYTES = 32
EXPONENTS_PER_WORD = 4
ZERO_TRITS_BYTE = 121


def decode_layout_fits(group_size: int) -> bool:
    """Whether groups of ``group_size`` weights suit the decode layout (see the module docstring)."""
    per_group = group_size // 5
    return group_size % 5 == 0 and per_group > 0 and (STEP_BYTES % per_group == 0 or per_group % STEP_BYTES == 0)


def tiled_shapes(out_features: int, in_features: int, group_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``T_tiles`` and ``E_tiles`` for a layer of this size."""
    blocks = -(-out_features // TILE_ROWS)
    width = -(-packed_width(in_features) // STEP_BYTES) * STEP_BYTES
    groups = -(-width // (group_size // 5))  # covers the padded steps too: at least ceil(K / G)
    words = -(-groups // EXPONENTS_PER_WORD)
    return (blocks, width // CHUNK_BYTES, TILE_ROWS, CHUNK_BYTES), (blocks, words, TILE_ROWS, EXPONENTS_PER_WORD)


def _fit_error(where: str, group_size: int) -> ValueError:
    return ValueError(f"{where}: group_size={group_size} does not suit the decode layout "
                      "(G / 5 bytes per group must divide 32 or be a multiple of 32)")


def check_tiles(T_tiles: torch.Tensor, E_tiles: torch.Tensor, out_features: int, in_features: int, group_size: int,
                where: str = "decode layout") -> None:
    """Raise a one-line error naming the tensor when ``T_tiles`` / ``E_tiles`` are not uint8 / int8 of
    :func:`tiled_shapes` for this layer, or the group size does not suit the layout."""
    if not decode_layout_fits(group_size):
        raise _fit_error(where, group_size)
    for name, tensor, dtype, shape in zip(("T_tiles", "E_tiles"), (T_tiles, E_tiles), (torch.uint8, torch.int8),
                                          tiled_shapes(out_features, in_features, group_size)):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype:
            raise TypeError(f"{where}: {name} must be a {dtype} tensor, got {getattr(tensor, 'dtype', type(tensor))}")
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{where}: {name} has shape {list(tensor.shape)}; expected {list(shape)} for "
                             f"out_features={out_features}, in_features={in_features}, group_size={group_size}")


def tile_rows(T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T_tiles, E_tiles)`` of ``T_packed [N, ceil(K / 5)]`` (uint8) and ``E [N, ceil(K / G)]`` (int8),
    new tensors; raises naming the tensor or the group size that does not fit."""
    if not decode_layout_fits(group_size):
        raise _fit_error("tile_rows", group_size)
    if T_packed.dtype != torch.uint8 or T_packed.dim() != 2:
        raise TypeError(f"tile_rows: T_packed must be a 2-D uint8 tensor, got {T_packed.dtype} {list(T_packed.shape)}")
    n, width = T_packed.shape
    groups = -(-width // (group_size // 5))
    if E.dtype != torch.int8 or tuple(E.shape) != (n, groups):
        raise ValueError(f"tile_rows: E must be int8 [{n}, {groups}] for T_packed {list(T_packed.shape)} and "
                         f"group_size={group_size}, got {E.dtype} {list(E.shape)}")
    (blocks, chunks, _, _), (_, words, _, _) = tiled_shapes(n, width * 5, group_size)
    rows = torch.full((blocks * TILE_ROWS, chunks * CHUNK_BYTES), ZERO_TRITS_BYTE, dtype=torch.uint8,
                      device=T_packed.device)
    rows[:n, :width] = T_packed
    exponents = torch.zeros((blocks * TILE_ROWS, words * EXPONENTS_PER_WORD), dtype=torch.int8, device=E.device)
    exponents[:n, :groups] = E
    T_tiles = rows.view(blocks, TILE_ROWS, chunks, CHUNK_BYTES).transpose(1, 2).contiguous()
    E_tiles = exponents.view(blocks, TILE_ROWS, words, EXPONENTS_PER_WORD).transpose(1, 2).contiguous()
    return T_tiles, E_tiles


def untile_rows(T_tiles: torch.Tensor, E_tiles: torch.Tensor, out_features: int, in_features: int,
                group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`tile_rows`: ``(T_packed, E)`` in the canonical layout (new tensors)."""
    check_tiles(T_tiles, E_tiles, out_features, in_features, group_size, "untile_rows")
    blocks, chunks, _, _ = T_tiles.shape
    words = E_tiles.shape[1]
    rows = T_tiles.transpose(1, 2).reshape(blocks * TILE_ROWS, chunks * CHUNK_BYTES)
    exponents = E_tiles.transpose(1, 2).reshape(blocks * TILE_ROWS, words * EXPONENTS_PER_WORD)
    width, groups = packed_width(in_features), groups_per_row(in_features, group_size)
    return rows[:out_features, :width].contiguous(), exponents[:out_features, :groups].contiguous()


@pytree_record(child_fields=("T_packed", "E", "bias", "T_tiles", "E_tiles"))
@attrs.frozen(eq=False, kw_only=True)
class DecodeLinearState:
    """One ternary linear layer for inference, in both layouts (see the module docstring).

    Tensors: ``T_packed`` uint8 ``[N, ceil(K/5)]``, ``E`` int8 ``[N, ceil(K/G)]``, ``bias`` int32
    ``[N]`` or None (as in :class:`LinearState`), ``T_tiles`` and ``E_tiles`` (:func:`tiled_shapes`).
    Static: ``in_features``, ``out_features``, ``group_size``, ``bias_frac_bits``. Build it with
    :meth:`from_layer`; ``ternary.functional.linear`` takes it like a :class:`LinearState`, without
    gradients.
    """

    T_packed: torch.Tensor = attrs.field(validator=_dtype(torch.uint8))
    E: torch.Tensor = attrs.field(validator=_dtype(torch.int8))
    bias: torch.Tensor | None = attrs.field(default=None, validator=_dtype(torch.int32))
    T_tiles: torch.Tensor = attrs.field(validator=_dtype(torch.uint8))
    E_tiles: torch.Tensor = attrs.field(validator=_dtype(torch.int8))
    in_features: int = attrs.field(validator=_positive)
    out_features: int = attrs.field(validator=_positive)
    group_size: int = attrs.field(validator=_group_size)
    bias_frac_bits: int = attrs.field()

    def __attrs_post_init__(self) -> None:
        n, k = self.out_features, self.in_features
        check_tiles(self.T_tiles, self.E_tiles, n, k, self.group_size, "DecodeLinearState")
        expected = {"T_packed": (n, packed_width(k)), "E": (n, groups_per_row(k, self.group_size))}
        if self.bias is not None:
            expected["bias"] = (n,)
        check_field_shapes(self, expected)
        if not 0 <= self.bias_frac_bits <= 30:
            raise ValueError(f"DecodeLinearState.bias_frac_bits must be in [0, 30], got {self.bias_frac_bits}")
        devices = {name: getattr(self, name).device for name in (*expected, "T_tiles", "E_tiles")}
        if len(set(devices.values())) > 1:
            placed = ", ".join(f"{name} on {device}" for name, device in devices.items())
            raise ValueError(f"DecodeLinearState: tensors on several devices ({placed})")

    @classmethod
    def from_layer(cls, layer: LinearState) -> DecodeLinearState:
        """The decode form of ``layer`` (its ``T_packed``, ``E`` and ``bias`` shared, the tiles new).
        Raises ``ValueError`` naming the group size where the layout does not suit it."""
        if not isinstance(layer, LinearState):
            raise TypeError(f"DecodeLinearState.from_layer: expected a LinearState, got {type(layer).__name__}")
        if not decode_layout_fits(layer.group_size):
            raise _fit_error("DecodeLinearState.from_layer", layer.group_size)
        T_tiles, E_tiles = tile_rows(layer.T_packed, layer.E, layer.group_size)
        return cls(T_packed=layer.T_packed, E=layer.E, bias=layer.bias, T_tiles=T_tiles, E_tiles=E_tiles,
                   in_features=layer.in_features, out_features=layer.out_features, group_size=layer.group_size,
                   bias_frac_bits=layer.bias_frac_bits)

    @property
    def device(self) -> torch.device:
        return self.T_packed.device

    def validate(self, name: str = "DecodeLinearState") -> None:
        """Check the packed bytes of both copies (raises naming the tensor and the offset) and that the
        tiles hold exactly ``T_packed`` and ``E`` in the decode layout (``ValueError`` naming the one
        that differs)."""
        check_packed(self.T_packed, f"{name}.T_packed")
        check_packed(self.T_tiles, f"{name}.T_tiles")
        for tile_name, tiles, expected in zip(("T_tiles", "E_tiles"), (self.T_tiles, self.E_tiles),
                                              tile_rows(self.T_packed, self.E, self.group_size)):
            if not torch.equal(tiles, expected):
                raise ValueError(f"{name}.{tile_name}: does not hold the layer's "
                                 f"{'T_packed' if tile_name == 'T_tiles' else 'E'} in the decode layout")
