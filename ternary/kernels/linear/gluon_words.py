"""Gluon device helpers shared by the Gluon linear kernels (``triton_table_gemv``,
``triton_mma_forward``, ``triton_wgmma_forward``, ``triton_wgmma_grad_x``), which read ``T_packed``
rows as aligned words although rows are ``ceil(K / 5)`` bytes apart: the funnel-shift realignment,
and for the word-decode kernels each lane's 4-byte runs (eight per 32-byte step), their exponents,
the corrupt-byte flags and the word decode into bf16 weights."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.triton_base3 import WORD_WEIGHTS_ASM

# Packed bytes per step of the register-decode kernels: one 4-byte run per lane and row in each half of
# a 32-byte operand tile.
STEP_BYTES = 32
_WORD_ASM = gl.constexpr(WORD_WEIGHTS_ASM)
_STEP = gl.constexpr(STEP_BYTES)


@gluon.jit
def realign(lo_word, hi_word, shift):
    """The 32 bits starting ``shift`` bits into ``hi_word:lo_word`` (one funnel shift)."""
    return gl.inline_asm_elementwise("shf.r.clamp.b32 $0, $1, $2, $3;", "=r,r,r,r", [lo_word, hi_word, shift],
                                     dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def word_weights(word, bits):
    """Five bf16 weight tiles (digit positions 0..4) from ``word`` and ``bits`` (int32, each
    element repeated over the four positions of its run; ``WORD_WEIGHTS_ASM``)."""
    return gl.inline_asm_elementwise(_WORD_ASM, "=r,=r,=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r,r",
                                     [word, bits], dtype=(gl.bfloat16,) * 5, is_pure=True, pack=4)


@gluon.jit
def scale_bits(e):
    """bf16 bits of exactly ``2^e`` in both halves of an int32, for int8 ``e`` (-127 and -128 are
    bf16 subnormals)."""
    e = e.to(gl.int32)
    return gl.where(e >= -126, (e + 127) * 0x00800080, 0x00400040 >> gl.maximum(-127 - e, 0))


@gluon.jit
def corrupt_bits(word):
    """Top bit of every byte of ``word`` that is > 242 (``b >= 128`` and ``(b & 127) + 13 >= 128``).
    The sum stays inside each byte; it may pass 2^31, which int32 addition wraps harmlessly."""
    return word & ((word & 0x7F7F7F7F) + 0x0D0D0D0D)


@gluon.jit
def step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP: gl.constexpr,
              MASKED: gl.constexpr):
    """Each lane's runs from 32-byte step ``step`` on (``[BLOCK_N, R]`` int32 for ``run`` indices
    ``[1, R]``, realigned) and their exponents; with ``MASKED`` (runs that reach ``KB``) word reads
    stay inside the tensor and bytes past the row read as 121 (all-zero trits)."""
    index = word0 + step * (_STEP // 4) + run
    if MASKED:
        word = realign(gl.load(words + gl.minimum(index, words_end - 1)),
                       gl.load(words + gl.minimum(index + 1, words_end - 1)), shift)
        valid = gl.minimum(gl.maximum(KB - (step * _STEP + 4 * run), 0), 4)
        keep = gl.where(valid >= 4, -1, (1 << (8 * gl.minimum(valid, 3))) - 1)
        word = (word & keep) | (0x79797979 & ~keep)
    else:
        word = realign(gl.load(words + index), gl.load(words + gl.minimum(index + 1, words_end - 1)), shift)
    e = gl.load(e_rows + gl.minimum((step * _STEP + 4 * run) // BYTES_PER_GROUP, NG - 1))
    return word, e


@gluon.jit
def row_runs(p_ptr, e_ptr, N, stride_pn, stride_en, BLOCK_N: gl.constexpr, RUN_LAYOUT: gl.constexpr):
    """Per weight row of program ``program_id(0)`` (``[BLOCK_N, 1]``, rows past ``N`` clamped to the
    last): the int32 view of ``T_packed``, the row's first word and bit shift (for ``realign``),
    its exponent row; and each lane's run index ``[1, 8]`` within a step, in ``RUN_LAYOUT``'s
    ``[BLOCK_N, 8]`` slice."""
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    rows = gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, RUNS))
    clamped = gl.expand_dims(gl.minimum(rows, N - 1).to(gl.int64), 1)
    run = gl.expand_dims(gl.arange(0, _STEP // 4, layout=gl.SliceLayout(0, RUNS)), 0)
    first_byte = clamped * stride_pn
    shift = ((first_byte & 3) * 8).to(gl.int32)
    return p_ptr.to(gl.pointer_type(gl.int32)), first_byte >> 2, shift, e_ptr + clamped * stride_en, run


@gluon.jit
def split_steps(KB, STEPS_PER_SPLIT):
    """The steps ``[first, last)`` of split ``program_id(1)``, and ``whole``: where the steps that
    end inside the row stop (the rest is the one masked tail step, if it falls in this split)."""
    steps = gl.cdiv(KB, _STEP)
    first = gl.program_id(1) * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, steps)
    return first, last, gl.maximum(gl.minimum(last, KB // _STEP), first)


@gluon.jit
def run_operands(word, e, RUN_LAYOUT: gl.constexpr):
    """``word`` and the bf16 bits of ``2^e`` (``[BLOCK_N, R]`` each, ``R`` runs) repeated over the four
    bytes of each run and reshaped to ``[BLOCK_N, 4 R]``: the inputs of ``word_weights``, whose
    outputs then have column ``j`` holding byte ``j`` of the runs."""
    bits = scale_bits(e)
    quad = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(0, RUN_LAYOUT)))
    quad = gl.expand_dims(gl.expand_dims(quad, 0), 0)
    word, _ = gl.broadcast(gl.expand_dims(word, 2), quad)
    bits, _ = gl.broadcast(gl.expand_dims(bits, 2), quad)
    width: gl.constexpr = 4 * word.shape[1]
    return gl.reshape(word, [word.shape[0], width]), gl.reshape(bits, [bits.shape[0], width])


@gluon.jit
def poison_rows(acc, corrupt, ACC_LAYOUT: gl.constexpr):
    """``acc [BLOCK_N, BLOCK_T]`` with NaN in the weight rows whose ``corrupt`` flags (``corrupt_bits``
    of every run, or-ed) mark a byte > 242."""
    bad_rows = gl.max(((corrupt & -2139062144) != 0).to(gl.int32), axis=1) != 0  # any byte's top bit flagged
    bad_rows = gl.expand_dims(gl.convert_layout(bad_rows, gl.SliceLayout(1, ACC_LAYOUT)), 1)
    return gl.where(bad_rows, float("nan"), acc)
