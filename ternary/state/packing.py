"""Base-3 packing of ternary weights: five trits per byte, row-aligned.

Byte ``j`` of row ``n`` holds the trits of columns ``5j .. 5j+4`` as digits
``d_i = T + 1`` in {0, 1, 2}: ``byte = d0 + 3 d1 + 9 d2 + 27 d3 + 81 d4``.
Padding columns past ``in_features`` hold trit 0 (digit 1). Every valid byte is
``<= MAX_VALID_BYTE`` (242); anything larger is corrupt state and is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from ternary.state.device_checks import first_flagged

TRITS_PER_BYTE = 5
MAX_VALID_BYTE = 242
_POWERS = (1, 3, 9, 27, 81)


class CorruptStateError(ValueError):
    """Packed ternary state holds a byte that no trit pattern produces."""


def packed_width(in_features: int) -> int:
    """Number of packed bytes per row for ``in_features`` trits."""
    return -(-in_features // TRITS_PER_BYTE)


def byte_to_trits_table(device: torch.device | str | None = None) -> torch.Tensor:
    """Lookup table ``[256, 5]`` int8: the five trits of each byte value.

    Rows 243..255 are filled with zeros; callers validate before decoding. Built once per
    device and shared by every caller, so it must not be written to.
    """
    return _trits_table(torch.device(device if device is not None else "cpu"))


@functools.cache
def _trits_table(device: torch.device) -> torch.Tensor:
    codes = torch.arange(256, dtype=torch.int32, device=device)
    digits = torch.stack([(codes // p) % 3 for p in _POWERS], dim=1)
    table = (digits - 1).to(torch.int8)
    table[MAX_VALID_BYTE + 1 :] = 0
    return table


def _check_dtype(packed: torch.Tensor, name: str) -> None:
    if packed.dtype != torch.uint8:
        raise TypeError(f"{name}: expected dtype uint8, got {packed.dtype}")


def _holds_corrupt(worst: torch.Tensor) -> torch.Tensor:
    """Whether tensors whose largest byte is ``worst`` (any shape) hold a corrupt byte."""
    return worst > MAX_VALID_BYTE


def check_packed(packed: torch.Tensor, name: str = "T_packed") -> None:
    """Raise :class:`CorruptStateError` naming ``name`` and the first bad offset."""
    _check_dtype(packed, name)
    bad = packed > MAX_VALID_BYTE
    if bool(bad.any()):
        flat = int(torch.nonzero(bad.reshape(-1))[0, 0])
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), packed.shape))
        value = int(packed.reshape(-1)[flat])
        count = int(bad.sum())
        raise CorruptStateError(
            f"{name}: byte {value} at index {index} (flat offset {flat}) is not a valid "
            f"base-3 trit byte (must be <= {MAX_VALID_BYTE}); {count} corrupt byte(s) in total"
        )


def queue_packed_check(packed: torch.Tensor, name: str = "T_packed") -> Callable[[], None]:
    """Queue :func:`check_packed` of ``packed`` on its device as one reduction, without a host sync,
    and return the function that reads the result and raises as :func:`check_packed` does. Call it
    after queuing work that may read the unchecked bytes and writes nothing but fresh outputs, so
    that the device never idles while the host waits for the check."""
    _check_dtype(packed, name)
    worst = packed.amax() if packed.numel() else None

    def raise_if_corrupt() -> None:
        if worst is not None and bool(_holds_corrupt(worst)):
            check_packed(packed, name)

    return raise_if_corrupt


def check_packed_all(named: Sequence[tuple[str, torch.Tensor]]) -> None:
    """:func:`check_packed` of many ``(name, packed)`` pairs with one host sync per device: a
    tensor of the wrong dtype is reported first, then the first corrupt tensor as
    :func:`check_packed` reports it."""
    for name, packed in named:
        _check_dtype(packed, name)
    bad = first_flagged([packed for _, packed in named], torch.amax, _holds_corrupt)
    if bad is not None:
        check_packed(named[bad][1], named[bad][0])


def pack(trits: torch.Tensor) -> torch.Tensor:
    """Pack trits ``[N, K]`` (values in {-1, 0, +1}, any integer dtype) to uint8 ``[N, ceil(K/5)]``."""
    if trits.dim() != 2:
        raise ValueError(f"pack: expected a 2-D [N, K] tensor of trits, got shape {tuple(trits.shape)}")
    if trits.dtype.is_floating_point or trits.dtype == torch.bool or trits.is_complex():
        raise TypeError(f"pack: expected an integer tensor of trits, got {trits.dtype}")
    n, k = trits.shape
    if trits.numel() and bool(((trits < -1) | (trits > 1)).any()):
        raise ValueError("pack: trits must be in {-1, 0, +1}")
    width = packed_width(k)
    digits = torch.ones((n, width * TRITS_PER_BYTE), dtype=torch.int32, device=trits.device)
    digits[:, :k] = trits.to(torch.int32) + 1
    digits = digits.view(n, width, TRITS_PER_BYTE)
    weights = torch.tensor(_POWERS, dtype=torch.int32, device=trits.device)
    return (digits * weights).sum(dim=-1).to(torch.uint8)


def unpack(packed: torch.Tensor, in_features: int, *, name: str = "T_packed", check: bool = True) -> torch.Tensor:
    """Unpack uint8 ``[N, ceil(K/5)]`` to int8 trits ``[N, K]`` with ``K = in_features``.

    Raises :class:`CorruptStateError` if a byte is > 242, unless ``check=False`` (the caller
    has checked the bytes already, e.g. with :func:`check_packed_all`; a corrupt byte then
    decodes to zeros).
    """
    if packed.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D [N, ceil(K/5)] tensor, got shape {tuple(packed.shape)}")
    if packed.shape[1] != packed_width(in_features):
        raise ValueError(
            f"{name}: {packed.shape[1]} bytes per row cannot hold in_features={in_features} "
            f"(need {packed_width(in_features)})"
        )
    if check:
        check_packed(packed, name)
    table = byte_to_trits_table(packed.device)
    trits = table[packed.long()]
    return trits.reshape(packed.shape[0], -1)[:, :in_features].contiguous()


def random_packed(
    out_features: int,
    in_features: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform random trits drawn directly in packed form ``[N, ceil(K/5)]`` uint8.

    A uniform byte in [0, 243) is five independent uniform trits, so no ``[N, K]``
    temporary is made. Padding digits of the last byte are set to 1 (trit 0).
    """
    width = packed_width(in_features)
    packed = torch.randint(
        0, MAX_VALID_BYTE + 1, (out_features, width), generator=generator, dtype=torch.int16, device="cpu"
    )
    tail = in_features - (width - 1) * TRITS_PER_BYTE
    if width and tail < TRITS_PER_BYTE:
        kept = 3**tail
        padding = sum(_POWERS[tail:])
        packed[:, -1] = packed[:, -1] % kept + padding
    return packed.to(torch.uint8).to(device)
