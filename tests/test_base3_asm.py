"""The PTX pair decode of ``triton_base3`` (``_WEIGHT_PAIRS_ASM``), run on the CPU.

The inline assembly only runs on a GPU, so CI executes its text with a small interpreter of
the instructions it uses (32-bit integer ops, ``prmt``, ``bf16x2`` FMA) over NumPy arrays:
every pair of byte values (corrupt ones included) and a spread of scale exponents must give
exactly the weights of the lookup-table unpack, and NaN in all five for a corrupt byte. The
real instructions are compared bit for bit with the fp32 decode on the GPU
(``test_triton_linear.py::test_bf16_pair_decode_matches_fp32_quotients``).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU, skips without Triton)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ternary.kernels.linear import triton_base3  # noqa: E402
from ternary.state.packing import byte_to_trits_table

MASK = np.uint64(0xFFFFFFFF)


def _bf16_to_float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def _float_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even fp64 -> bf16 bits (inputs here are exact in fp32)."""
    with np.errstate(over="ignore"):  # garbage lanes of corrupt bytes may overflow; they are not compared
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    nan = np.isnan(values)
    return np.where(nan, np.uint64(0x7FC0), rounded).astype(np.uint64)


def _prmt(a: np.ndarray, b: np.ndarray, selector: int) -> np.ndarray:
    """PTX ``prmt.b32`` (default mode): byte ``i`` of the result is byte ``sel_i`` of ``{b, a}``,
    sign-replicated when bit 3 of the selector nibble is set."""
    pool = (b.astype(np.uint64) << np.uint64(32)) | a.astype(np.uint64)
    out = np.zeros_like(pool)
    for i in range(4):
        nibble = (selector >> (4 * i)) & 0xF
        byte = (pool >> np.uint64(8 * (nibble & 7))) & np.uint64(0xFF)
        if nibble & 8:
            byte = np.where(byte & np.uint64(0x80), np.uint64(0xFF), np.uint64(0))
        out |= byte << np.uint64(8 * i)
    return out


def _fma_bf16x2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    lanes = []
    for shift in (np.uint64(0), np.uint64(16)):
        lane = [_bf16_to_float((v >> shift) & np.uint64(0xFFFF)) for v in (a, b, c)]
        lanes.append(_float_to_bf16(lane[0] * lane[1] + lane[2]) << shift)
    return lanes[0] | lanes[1]


def _exponent_bits(exponent: int) -> int:
    """The bf16 bits of ``2^exponent`` for an int8 exponent (subnormals below -126)."""
    return (exponent + 127) << 7 if exponent >= -126 else 1 << (exponent + 133)


def run_asm(text: str, operands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the instructions of ``text`` on uint64 arrays holding 32-bit values; element ``i`` of
    every array is lane ``i`` (``shfl.sync.bfly`` reads element ``i ^ mask``)."""
    regs = dict(operands)

    def value(token: str) -> np.ndarray:
        token = token.strip()
        if token in regs:
            return regs[token]
        return np.full_like(next(iter(operands.values())), int(token, 0))

    for line in text.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, args = line.split(None, 1)
        dst, *src = [a.strip() for a in args.split(",")]
        v = [value(s) for s in src[:2]] if not op.startswith("prmt") else None
        if op == "shfl.sync.bfly.b32":
            result = v[0][np.arange(v[0].size) ^ int(src[1], 0)]
        elif op == "setp.ne.b32":
            regs[dst] = v[0] != v[1]
            continue
        elif op == "selp.b32":
            result = np.where(regs[src[2]], v[0], v[1])
        elif op == "mov.b32":
            result = value(src[0])
        elif op == "prmt.b32":
            result = _prmt(value(src[0]), value(src[1]), int(src[2], 0))
        elif op == "mad.lo.u32":
            result = v[0] * v[1] + value(src[2])
        elif op == "mul.lo.u32":
            result = v[0] * v[1]
        elif op == "add.u32":
            result = v[0] + v[1]
        elif op == "shr.u32":
            result = v[0] >> v[1]
        elif op == "shl.b32":
            result = v[0] << v[1]
        elif op == "and.b32":
            result = v[0] & v[1]
        elif op == "or.b32":
            result = v[0] | v[1]
        elif op == "fma.rn.bf16x2":
            result = _fma_bf16x2(v[0], v[1], value(src[2]))
        else:
            raise AssertionError(f"instruction {op!r} has no model here; add one")
        regs[dst] = result & MASK
    return regs


def _asm_text() -> str:
    text = triton_base3._WEIGHT_PAIRS_ASM
    return getattr(text, "value", text)


def test_every_instruction_of_the_asm_is_modelled():
    ops = {line.split()[0] for line in _asm_text().splitlines()
           if line.strip() and line.strip() not in "{}" and not line.strip().startswith(".reg")}
    assert ops <= {"mov.b32", "prmt.b32", "mad.lo.u32", "mul.lo.u32", "add.u32", "shr.u32", "shl.b32",
                   "and.b32", "or.b32", "fma.rn.bf16x2"}


@pytest.mark.parametrize("text", [triton_base3.RUN_COLUMNS_ASM, triton_base3.RUN_COLUMNS_IN_ORDER_ASM])
def test_every_instruction_of_the_run_decode_is_modelled(text):
    ops = {line.split()[0] for line in text.splitlines()
           if line.strip() and line.strip() not in "{}" and not line.strip().startswith(".reg")}
    assert ops <= {"prmt.b32", "and.b32", "or.b32", "add.u32", "fma.rn.bf16x2", "mov.b32", "shfl.sync.bfly.b32",
                   "setp.ne.b32", "selp.b32"}


@pytest.mark.parametrize("exponents", [(0, 0), (-128, 127), (-127, 5), (120, -126), (-3, -126)])
def test_pair_decode_gives_every_byte_pairs_weights(exponents):
    low, high = np.meshgrid(np.arange(256, dtype=np.uint64), np.arange(256, dtype=np.uint64), indexing="ij")
    low, high = low.ravel(), high.ravel()
    e_low, e_high = exponents
    scale_bits = [_exponent_bits(e_low), _exponent_bits(e_high)]
    packed_scale = np.full_like(low, scale_bits[0] | (scale_bits[1] << 16))
    out = run_asm(_asm_text(), {"$5": low | (high << np.uint64(8)) | np.uint64(0xABCD0000), "$6": packed_scale})

    table = byte_to_trits_table().numpy().astype(np.float64)
    for half, (byte, e) in enumerate(((low, e_low), (high, e_high))):
        for digit in range(5):
            got = _bf16_to_float((out[f"${digit}"] >> np.uint64(16 * half)) & np.uint64(0xFFFF))
            want = table[byte.astype(np.int64), digit] * 2.0**e
            corrupt = byte > 242
            assert np.isnan(got[corrupt]).all()
            assert np.array_equal(got[~corrupt], want[~corrupt]), (digit, half)


@triton.jit
def _exponent_bits_kernel(e_ptr, out_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, triton_base3.bf16_exp2_bits(tl.load(e_ptr + offsets)))


def test_bf16_exponent_bits_are_exact_for_every_int8():
    """``bf16_exp2_bits`` (run as a kernel: compiled on a GPU, interpreted on the CPU) gives
    the bf16 bits of exactly ``2^e`` for every int8 ``e``, subnormals (-128, -127) included."""
    exponents = torch.arange(-128, 128, dtype=torch.int8, device=DEVICE)
    bits = torch.empty(256, dtype=torch.int16, device=DEVICE)
    _exponent_bits_kernel[(1,)](exponents, bits, BLOCK=256)
    values = _bf16_to_float(bits.cpu().numpy().view(np.uint16).astype(np.uint64))
    assert np.array_equal(values, 2.0 ** np.arange(-128, 128, dtype=np.float64))


def test_word_decode_gives_each_byte_position_its_weights():
    """``WORD_WEIGHTS_ASM`` (four bytes of one scale group per call, no corrupt-byte marks): every
    valid byte value in each of the four positions, beside other valid bytes, gives exactly the
    lookup-table weights times 2^E in output ``$2d + position // 2``, lane ``position % 2``, for
    exponents at both ends of the int8 range (bf16 subnormals at -127 and -128)."""
    text = triton_base3.WORD_WEIGHTS_ASM  # run_asm raises on any instruction it does not model
    table = byte_to_trits_table().numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    values = np.arange(243, dtype=np.uint64)
    for exponent in (0, -128, -127, -126, 127, 5):
        bits = _exponent_bits(exponent)
        for position in range(4):
            others = rng.integers(0, 243, size=(3, values.size)).astype(np.uint64)
            column = iter(others)
            bytes_ = [values if p == position else next(column) for p in range(4)]
            word = sum(b << np.uint64(8 * p) for p, b in enumerate(bytes_))
            out = run_asm(text, {"$10": word, "$14": np.full_like(word, bits | (bits << 16))})
            for p, byte in enumerate(bytes_):
                for digit in range(5):
                    lane = (out[f"${2 * digit + p // 2}"] >> np.uint64(16 * (p % 2))) & np.uint64(0xFFFF)
                    want = table[byte.astype(np.int64), digit] * 2.0**exponent
                    assert np.array_equal(_bf16_to_float(lane), want), (exponent, position, p, digit)


def _pair_image(out: dict[str, np.ndarray], pairs: bool) -> np.ndarray:
    """The 160 bytes (as 40 words) of each lane pair ``2 q, 2 q + 1``'s runs in column order. With ``pairs``
    as the lanes store them: the even lane's output chunk ``j`` (``$4j..$4j+3``) at bytes ``32 j``, the odd
    lane's at ``32 j + 16``; otherwise each lane's ``$0..$19`` are its run's words."""
    lanes = out["$0"].size
    image = np.zeros((lanes // 2, 40), dtype=np.uint64)
    for j in range(5):
        for w in range(4):
            if pairs:
                image[:, 8 * j + w] = out[f"${4 * j + w}"][0::2]
                image[:, 8 * j + 4 + w] = out[f"${4 * j + w}"][1::2]
            else:
                image[:, 4 * j + w] = out[f"${4 * j + w}"][0::2]
                image[:, 20 + 4 * j + w] = out[f"${4 * j + w}"][1::2]
    return image


@pytest.mark.parametrize("pairs", [True, False])
@pytest.mark.parametrize("exponents", [(0, 0, 0, 0), (-128, 127, -127, 5), (120, -126, 3, -128)])
def test_run_decode_gives_every_byte_its_columns(exponents, pairs):
    """``RUN_COLUMNS_ASM`` on pairs of lanes holding neighbouring runs (``RUN_COLUMNS_IN_ORDER_ASM``: on any
    lanes): every byte value, corrupt ones included, in each of the eight positions of an even and of an
    odd run, beside random bytes, lands as the lookup-table weights times ``2^E`` of its word in columns
    ``5 p .. 5 p + 4`` of its run (run ``2 q`` in the pair's first 80 bytes, ``2 q + 1`` in the next), and as
    NaN in exactly those five columns when it is > 242. ``exponents``: the two words' E of even runs, then
    of odd runs."""
    text = triton_base3.RUN_COLUMNS_ASM if pairs else triton_base3.RUN_COLUMNS_IN_ORDER_ASM
    table = byte_to_trits_table().numpy().astype(np.float64)
    rng = np.random.default_rng(1)
    values = np.repeat(np.arange(256, dtype=np.uint64), 2)  # each value in an even and in an odd lane
    parity = np.arange(values.size, dtype=np.uint64) & np.uint64(1)
    lane_exponents = [np.where(parity == 1, exponents[2 + w], exponents[w]) for w in range(2)]
    scales = {f"${28 + w}": np.array([_exponent_bits(int(e)) * 0x10001 for e in lane_exponents[w]], dtype=np.uint64)
              for w in range(2)}
    for position in range(8):
        bytes_ = [values if p == position else rng.integers(0, 243, size=values.size).astype(np.uint64)
                  for p in range(8)]
        # each byte arrives in the low byte of its register; the upper bytes must not matter
        noise = [rng.integers(0, 2**24, size=values.size).astype(np.uint64) << np.uint64(8) for _ in range(8)]
        operands = {f"${20 + p}": b | n for p, (b, n) in enumerate(zip(bytes_, noise))} | scales | {"$30": parity}
        image = _pair_image(run_asm(text, operands), pairs)
        for lane_parity in (0, 1):
            words = image[:, 20 * lane_parity:20 * lane_parity + 20]
            for p, byte in enumerate(bytes_):
                byte = byte[lane_parity::2]
                corrupt = byte > 242
                for digit in range(5):
                    column = 5 * p + digit
                    got = _bf16_to_float((words[:, column // 2] >> np.uint64(16 * (column % 2))) & np.uint64(0xFFFF))
                    scale = 2.0 ** exponents[2 * lane_parity + p // 4]
                    want = table[np.minimum(byte, 242).astype(np.int64), digit] * scale
                    assert np.isnan(got[corrupt]).all(), (position, lane_parity, p, digit)
                    assert np.array_equal(got[~corrupt], want[~corrupt]), (exponents, position, lane_parity, p, digit)


def test_natural_signs_regroup_into_digit_planes():
    """``sign_planes.NATURAL_TO_PLANES_ASM`` on rows of distinct bytes: the 320 bytes of a row in natural
    column order come out as its five digit planes (byte ``5 j + d`` at ``64 d + j``), every byte once."""
    from ternary.kernels.update import sign_planes

    assert {line.split()[0] for line in sign_planes.NATURAL_TO_PLANES_ASM.splitlines()
            if line not in "{}" and not line.startswith(".reg")} == {"prmt.b32"}
    rng = np.random.default_rng(5)
    rows = np.stack([rng.permutation(320) for _ in range(6)])  # distinct values: 16-bit "bytes" for the check
    for half in (rows % 256, rows // 256 * 85):  # low and high bits of each label, as two byte images
        natural = half.astype(np.uint8)
        words = natural.view("<u4").astype(np.uint64)
        out = run_asm(sign_planes.NATURAL_TO_PLANES_ASM, {f"${80 + i}": words[:, i].copy() for i in range(80)})
        planes = np.stack([out[f"${i}"] for i in range(80)], 1).astype(np.uint32).view(np.uint8)
        expected = np.concatenate([natural[:, digit::5] for digit in range(5)], 1)
        assert np.array_equal(planes.reshape(natural.shape), expected)
