"""Base-3 packing: round trips, layout, corruption detection."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from ternary import CorruptStateError, pack, unpack
from ternary.state.packing import (MAX_VALID_BYTE, byte_to_trits_table, check_packed_all, packed_width,
                                    queue_packed_check, random_packed)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 9), k=st.integers(1, 41), seed=st.integers(0, 2**31 - 1))
def test_round_trip_any_shape(n: int, k: int, seed: int) -> None:
    trits = torch.randint(-1, 2, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.int8)
    packed = pack(trits)
    assert packed.dtype == torch.uint8 and packed.shape == (n, packed_width(k))
    assert int(packed.max()) <= MAX_VALID_BYTE
    assert torch.equal(unpack(packed, k), trits)


def test_byte_layout_matches_contract() -> None:
    trits = torch.tensor([[-1, 0, 1, 1, -1, 1, 0]], dtype=torch.int8)
    digits = (trits + 1).tolist()[0]
    first = sum(d * 3**i for i, d in enumerate(digits[:5]))
    second = digits[5] + 3 * digits[6] + sum(3**i for i in range(2, 5))
    assert pack(trits).tolist() == [[first, second]]


def test_rows_do_not_share_bytes(gen: torch.Generator) -> None:
    trits = torch.randint(-1, 2, (4, 7), generator=gen, dtype=torch.int8)
    packed = pack(trits)
    for row in range(4):
        assert torch.equal(pack(trits[row : row + 1]), packed[row : row + 1])


def test_padding_is_trit_zero() -> None:
    packed = pack(torch.ones((1, 6), dtype=torch.int8))
    assert int(packed[0, 1]) == 2 + 1 * 3 + 9 + 27 + 81


def test_corrupt_byte_names_tensor_and_offset() -> None:
    packed = pack(torch.zeros((3, 10), dtype=torch.int8))
    packed[2, 1] = 250
    with pytest.raises(CorruptStateError, match=r"layer\.T_packed.*250.*\(2, 1\).*offset 5"):
        unpack(packed, 10, name="layer.T_packed")


def test_pack_rejects_non_trits() -> None:
    with pytest.raises(ValueError, match="trits must be in"):
        pack(torch.tensor([[2]], dtype=torch.int8))
    with pytest.raises(TypeError, match="integer"):
        pack(torch.zeros((1, 5)))


def test_unpack_checks_width() -> None:
    with pytest.raises(ValueError, match="in_features=11"):
        unpack(torch.zeros((1, 2), dtype=torch.uint8), 11)


def test_table_matches_unpack() -> None:
    table = byte_to_trits_table()
    codes = torch.arange(MAX_VALID_BYTE + 1, dtype=torch.uint8).view(-1, 1)
    assert torch.equal(unpack(codes, 5), table[: MAX_VALID_BYTE + 1])
    by_division = [[(b // 3**i) % 3 - 1 for i in range(5)] if b <= MAX_VALID_BYTE else [0] * 5 for b in range(256)]
    assert table.tolist() == by_division


def test_table_is_built_once_per_device() -> None:
    assert byte_to_trits_table() is byte_to_trits_table("cpu") is byte_to_trits_table(torch.device("cpu"))


@pytest.mark.parametrize("k", [1, 5, 7, 40, 83])
def test_random_packed_is_valid_and_uniform(k: int, gen: torch.Generator) -> None:
    packed = random_packed(300, k, generator=gen)
    trits = unpack(packed, k)
    counts = torch.bincount((trits + 1).reshape(-1).long(), minlength=3).float() / trits.numel()
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.06)
    tail = k % 5
    if tail:
        padding = packed[:, -1].long() // 3**tail
        assert torch.all(padding == sum(3**i for i in range(5 - tail)))


def test_check_packed_all_names_the_first_corrupt_tensor() -> None:
    """The batched check (one host sync per device) reports what ``check_packed`` reports for
    the first corrupt tensor in order; empty tensors pass; a wrong dtype is named."""
    gen = torch.Generator().manual_seed(5)
    tensors = [random_packed(4, 12, generator=gen) for _ in range(4)] + [torch.empty((0, 3), dtype=torch.uint8)]
    named = [(f"layer{i}.T_packed", t) for i, t in enumerate(tensors)]
    check_packed_all(named)
    tensors[3][1, 2] = 243
    tensors[2][0, 1] = 255
    with pytest.raises(CorruptStateError, match=r"layer2\.T_packed: byte 255 at index \(0, 1\)"):
        check_packed_all(named)
    with pytest.raises(TypeError, match="layer9.T_packed: expected dtype uint8"):
        check_packed_all(named[:2] + [("layer9.T_packed", tensors[0].to(torch.int16))])


def test_queued_packed_check_raises_only_when_read_and_only_for_corrupt_bytes() -> None:
    """The queued check returns at once; its result, read later, passes valid bytes (the largest
    valid one included) and reports a corrupt one as ``check_packed`` does, by name and index."""
    packed = random_packed(4, 23, generator=torch.Generator().manual_seed(3))
    packed[1, 0] = MAX_VALID_BYTE
    queue_packed_check(packed)()
    queue_packed_check(packed[:0])()
    packed[2, 3] = MAX_VALID_BYTE + 1
    raise_if_corrupt = queue_packed_check(packed, "layer2.T_packed")
    with pytest.raises(CorruptStateError, match=r"layer2.T_packed: byte 243 at index \(2, 3\)"):
        raise_if_corrupt()
    with pytest.raises(TypeError, match="layer2.T_packed"):
        queue_packed_check(packed.to(torch.int16), "layer2.T_packed")
