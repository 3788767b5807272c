"""The ``f16x2`` rule (``pair_rule``) on the CPU: its PTX text run through a model of the instructions it
uses (:func:`interpret`, any other instruction fails) against the integer rule ``triton_rule.vote_bytes`` (a
Triton kernel: under the interpreter on the CPU, on the card where there is one) on every accumulator, sign
and trit, and its table words against ``unpack``. The kernel built on it is checked on the card
(``test_triton_wgmma_update.py``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ternary.kernels.update import pair_rule  # noqa: E402
from ternary.kernels.update.triton_rule import vote_bytes  # noqa: E402
from ternary.state.packing import unpack  # noqa: E402


def _halves(word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    word = word.astype(np.uint32)
    return ((word & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64),
            (word >> 16).astype(np.uint16).view(np.float16).astype(np.float64))


def _word(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    low = low.astype(np.float16).view(np.uint16).astype(np.uint32)
    high = high.astype(np.float16).view(np.uint16).astype(np.uint32)
    return low | high << 16


def _prmt(a: np.ndarray, b: np.ndarray, select: int) -> np.ndarray:
    pool = a.astype(np.uint64) | b.astype(np.uint64) << 32
    out = np.zeros_like(a, dtype=np.uint32)
    for k in range(4):
        nibble = (select >> (4 * k)) & 0xF
        assert nibble < 8, "sign-replicating selectors are not used"
        out |= ((pool >> np.uint64(8 * nibble)) & np.uint64(0xFF)).astype(np.uint32) << np.uint32(8 * k)
    return out


_F16 = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
_SET = {"ge": np.greater_equal, "le": np.less_equal, "ne": np.not_equal}


def interpret(asm: str, inputs: list[np.ndarray], outputs: int) -> list[np.ndarray]:
    """Run the PTX of ``asm`` on uint32 arrays: operands ``$0..`` are the outputs then ``inputs``; only the
    instructions the rule uses are known (any other fails the test)."""
    regs: dict[str, np.ndarray] = {f"${outputs + i}": np.asarray(v, dtype=np.int64).astype(np.uint32)
                                   for i, v in enumerate(inputs)}
    shape = regs[f"${outputs}"].shape

    def value(token: str) -> np.ndarray:
        if token in regs:
            return regs[token]
        number = int(token, 0)
        return np.full(shape, number & 0xFFFFFFFF, dtype=np.uint32)

    for line in asm.splitlines():
        line = line.strip()
        if line in ("{", "}") or line.startswith(".reg"):
            continue
        match = re.fullmatch(r"([\w.]+)\s+(.*);", line)
        assert match, line
        op, args = match.group(1), [a.strip() for a in match.group(2).split(",")]
        dest, sources = args[0], [value(a) for a in args[1:]]
        parts = op.split(".")
        if op == "mov.b32":
            result = sources[0]
        elif op == "prmt.b32":
            result = _prmt(sources[0], sources[1], int(args[3], 0))
        elif op in ("xor.b32", "and.b32"):
            result = sources[0] ^ sources[1] if op == "xor.b32" else sources[0] & sources[1]
        elif op == "shr.u32":
            result = sources[0] >> sources[1]
        elif op == "sub.s32":
            result = (sources[0].astype(np.int64) - sources[1].astype(np.int64)).astype(np.uint32)
        elif op == "bfe.u32":
            result = (sources[0] >> sources[1]) & ((np.uint32(1) << sources[2]) - np.uint32(1))
        elif parts[-1] == "f16x2" and parts[0] in _F16:
            (a0, a1), (b0, b1) = _halves(sources[0]), _halves(sources[1])
            result = _word(_F16[parts[0]](a0, b0), _F16[parts[0]](a1, b1))
        elif op == "fma.rn.f16x2":
            (a0, a1), (b0, b1), (c0, c1) = (_halves(s) for s in sources)
            result = _word(a0 * b0 + c0, a1 * b1 + c1)
        elif parts[0] == "set" and parts[2:] == ["f16x2", "f16x2"]:
            (a0, a1), (b0, b1) = _halves(sources[0]), _halves(sources[1])
            compare = _SET[parts[1]]
            result = _word(compare(a0, b0).astype(np.float64), compare(a1, b1).astype(np.float64))
        else:
            raise AssertionError(f"instruction the model does not know: {line}")
        regs[dest] = result.astype(np.uint32)
    return [regs[f"${i}"] for i in range(outputs)]


@triton.jit
def _vote_bytes_kernel(sign_ptr, byte_ptr, acc_ptr, new_byte_ptr, new_acc_ptr, score_ptr, K, theta_t,
                       CASES: tl.constexpr):
    """``triton_rule.vote_bytes`` on ``CASES`` byte pairs: ``sign [5, CASES, 2]`` (digit, case, byte),
    ``byte [CASES, 2]``, ``acc [5, CASES, 2]`` in; the new bytes, accumulators and scores out alike."""
    case = tl.arange(0, CASES)[:, None]
    pair = tl.arange(0, 2)[None, :]
    at = case * 2 + pair
    plane = CASES * 2
    g0 = tl.load(sign_ptr + at).to(tl.float32)
    g1 = tl.load(sign_ptr + plane + at).to(tl.float32)
    g2 = tl.load(sign_ptr + 2 * plane + at).to(tl.float32)
    g3 = tl.load(sign_ptr + 3 * plane + at).to(tl.float32)
    g4 = tl.load(sign_ptr + 4 * plane + at).to(tl.float32)
    a0 = tl.load(acc_ptr + at)
    a1 = tl.load(acc_ptr + plane + at)
    a2 = tl.load(acc_ptr + 2 * plane + at)
    a3 = tl.load(acc_ptr + 3 * plane + at)
    a4 = tl.load(acc_ptr + 4 * plane + at)
    byte, a0, a1, a2, a3, a4, score = vote_bytes(g0, g1, g2, g3, g4, tl.load(byte_ptr + at), a0, a1, a2, a3, a4,
                                                 5 * tl.arange(0, 2), K, theta_t)
    tl.store(new_byte_ptr + at, byte)
    tl.store(score_ptr + at, score)
    tl.store(new_acc_ptr + at, a0.to(tl.int32))
    tl.store(new_acc_ptr + plane + at, a1.to(tl.int32))
    tl.store(new_acc_ptr + 2 * plane + at, a2.to(tl.int32))
    tl.store(new_acc_ptr + 3 * plane + at, a3.to(tl.int32))
    tl.store(new_acc_ptr + 4 * plane + at, a4.to(tl.int32))


def _every_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sign [5, C, 2], byte [C, 2], acc [5, C, 2])`` int32 for ``C = 4096`` byte pairs in which each of the
    ten weights (digit, byte) meets every accumulator, sign and trit: case ``c`` of weight ``w`` is ``c``
    moved by ``w * 409``, read as accumulator ``c mod 256``, sign ``(c / 256) mod 3 - 1`` and trit ``(c /
    768) mod 3 - 1`` (digit 4 of ``c >= 3072``: the corrupt byte's 2, in a byte of 243 .. 255)."""
    cases = 4096
    index = torch.arange(cases)
    sign = torch.empty(5, cases, 2, dtype=torch.int32)
    acc = torch.empty(5, cases, 2, dtype=torch.int32)
    digits = torch.empty(5, cases, 2, dtype=torch.int32)
    for byte in range(2):
        for digit in range(5):
            case = (index + (5 * byte + digit) * 409) % cases
            acc[digit, :, byte] = case % 256 - 128
            sign[digit, :, byte] = (case // 256) % 3 - 1
            trit = torch.where(case >= 3072, 2, (case // 768) % 3 - 1) if digit == 4 else (case // 768) % 3 - 1
            digits[digit, :, byte] = trit + 1
    low = sum(digits[d] * 3**d for d in range(4))
    byte = torch.where(digits[4] == 3, 243 + low % 13, low + 81 * digits[4])  # corrupt: 243 .. 255
    return sign, byte.to(torch.int32), acc


def _integer_rule(sign: torch.Tensor, byte: torch.Tensor, acc: torch.Tensor, K: int, theta_t: int):
    """``vote_bytes``'s new accumulators ``[5, C, 2]``, bytes and scores ``[C, 2]`` (on the CPU)."""
    sign, byte, acc = (t.to(DEVICE) for t in (sign, byte, acc))
    new_acc, new_byte, score = torch.empty_like(acc), torch.empty_like(byte), torch.empty_like(byte)
    _vote_bytes_kernel[(1,)](sign, byte, acc, new_byte, new_acc, score, K, theta_t, CASES=byte.shape[0])
    return new_acc.cpu(), new_byte.cpu(), score.cpu()


def _pieces(values: torch.Tensor) -> list[np.ndarray]:
    """The five 16-bit pieces of a pair's ten int8 values ``[5 digits, C, 2 bytes]`` in column order."""
    columns = torch.cat([values[:, :, 0], values[:, :, 1]]).numpy().astype(np.int64) & 0xFF  # [10, C]
    return [columns[2 * i] | columns[2 * i + 1] << 8 for i in range(5)]


def _ptx_rule(sign: torch.Tensor, byte: torch.Tensor, acc: torch.Tensor, theta_t: int, partial: int = 0):
    """The PTX's new accumulators ``[5, C, 2]``, bytes ``[C, 2]`` and scores ``[C, 2]``; ``partial`` > 0 reads
    byte ``j + 1``'s words from the table's partial half."""
    table = pair_rule.trit_table(torch.device("cpu"), partial).numpy()
    low, high = table[0][byte[:, 0].numpy()], table[1 if partial else 0][byte[:, 1].numpy()]
    planes = [(sign[d, :, 0].numpy().astype(np.int64) & 0xFF) | (sign[d, :, 1].numpy().astype(np.int64) & 0xFF) << 8
              for d in range(5)]
    words = [np.full(byte.shape[0], w) for w in pair_rule.rule_words(theta_t)]
    out = interpret(pair_rule.PAIR_RULE_ASM, _pieces(acc) + planes + [low[:, w] for w in range(3)]
                    + [high[:, w] for w in range(3)] + words, 9)
    columns = np.stack([(out[i] >> (8 * h)) & 0xFF for i in range(5) for h in range(2)]).astype(np.uint8).view(np.int8)
    new_acc = torch.from_numpy(columns.astype(np.int32)).view(2, 5, -1).permute(1, 2, 0)
    new_byte = torch.from_numpy(np.stack([out[5], out[6]], axis=1).astype(np.int32))
    score = torch.from_numpy(np.stack([out[7], out[8]], axis=1).view(np.int32).astype(np.int32))
    return new_acc, new_byte, score


@pytest.mark.parametrize("theta_t", [1, 2, 3, 4, 16, 126, 127, 128, 129, 130, 1000, 2**20])
def test_pair_rule_ptx_equals_the_integer_rule_on_every_accumulator_sign_and_trit(theta_t):
    """Each of a byte pair's ten weights meets every (accumulator, sign, trit) triple, the corrupt digit 2
    included; accumulators, bytes and scores equal ``vote_bytes``'s bit for bit at every threshold,
    those past the last that changes anything (128) among them."""
    sign, byte, acc = _every_case()
    expected = _integer_rule(sign, byte, acc, 10, theta_t)
    new_acc, new_byte, score = _ptx_rule(sign, byte, acc, theta_t)
    assert torch.equal(new_acc, expected[0])
    assert torch.equal(new_byte, expected[1])
    assert torch.equal(score, expected[2])
    assert (new_acc != acc).any() and (new_byte != byte).any() and score.abs().max() > 0  # the cases move


@pytest.mark.parametrize("partial", [1, 2, 3, 4])
def test_pair_rule_keeps_trit_zero_past_k_in_a_partial_byte(partial):
    """Byte ``j + 1`` holds the row's last ``partial`` columns: read from the table's second half, its
    digits ``>= partial`` come out as trit 0, as ``vote_bytes`` with ``K = 5 + partial`` makes them,
    whatever the byte held there; the accumulators and scores of the columns inside ``K`` are equal."""
    sign, byte, acc = _every_case()
    sign[partial:, :, 1] = 0  # past K the product's gradient is zero and the kernel reads no accumulator
    acc[partial:, :, 1] = 0
    expected = _integer_rule(sign, byte, acc, 5 + partial, 16)
    new_acc, new_byte, score = _ptx_rule(sign, byte, acc, 16, partial)
    valid = byte[:, 1] < 243
    assert torch.equal(new_byte[valid], expected[1][valid])
    assert torch.equal(new_acc[:, :, 0], expected[0][:, :, 0])
    assert torch.equal(new_acc[:partial, :, 1], expected[0][:partial, :, 1])
    assert torch.equal(score[valid], expected[2][valid])
    assert (new_byte[:, 1] // 3**partial == 121 // 3**partial).all()


def test_trit_table_words_hold_the_unpacked_trits_of_every_byte():
    """Words ``(t0, t1)``, ``(t2, t3)``, ``(t4, 0)`` of each valid byte hold ``unpack``'s trits as halves;
    the partial halves zero the digits past their count."""
    values = torch.arange(243, dtype=torch.int64)
    trits = unpack(values.to(torch.uint8)[:, None], 5).to(torch.float64)  # [243, 5]
    for digits in range(5):
        words = pair_rule.trit_table(torch.device("cpu"), digits)[1 if digits else 0][:243].numpy().astype(np.int64)
        halves = [_halves(words[:, w]) for w in range(3)]
        got = torch.from_numpy(np.stack([halves[0][0], halves[0][1], halves[1][0], halves[1][1], halves[2][0]], 1))
        kept = trits.clone()
        if digits:
            kept[:, digits:] = 0
        assert torch.equal(got, kept)
        assert (words[:, 3] == 0).all() and (halves[2][1] == 0).all()


def test_rule_words_refuse_a_threshold_below_one_and_cap_the_rest():
    """A threshold below 1 would make both comparisons true (the integer rule never sees one: ``update``
    refuses it, and so does ``rule_words`` for a direct caller); from 129 on the words are the same, since no
    saturated accumulator reaches them."""
    for theta in (0, -3):
        with pytest.raises(ValueError, match=f"theta_t={theta} must be at least 1"):
            pair_rule.rule_words(theta)
    assert pair_rule.rule_words(129) == pair_rule.rule_words(2**20) != pair_rule.rule_words(128)
