"""A tile's signs from natural column order into digit planes, in shared memory (Gluon, compiled
sm_90 GPUs only).

The ``wgmma`` update reads ``x`` as it is, in natural column order, instead of its digit planes
(which cost a pass over ``x`` before the kernel). Its product tile then holds the gradient of
input columns ``c = 5 j + d`` of the tile's byte block in column ``c``, while the rule wants
digit ``d`` of byte ``j`` at column ``64 d + j`` (a tile of 64 bytes). Column ``c`` goes to
``64 (c mod 5) + c div 5``: no layout expresses that, so after storing the signs in natural order
(``[64, 256]`` and ``[64, 64]`` int8, the two products) each thread loads one row's 320 signs as
80 words and one block of inline PTX (:data:`NATURAL_TO_PLANES_ASM`) regroups them with
``prmt``: word ``m`` of plane ``d`` holds bytes ``4 m .. 4 m + 3`` of that digit, i.e. natural
columns ``20 m + 5 i + d`` (``i < 4``), which lie in natural words ``5 m .. 5 m + 4``. The
regrouped words are stored back over the natural ones.
"""

from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# Bytes of a tile's byte block, words per digit plane of one row, natural words of one row.
PLANE_BYTES = 64
PLANE_WORDS = PLANE_BYTES // 4
ROW_WORDS = 5 * PLANE_WORDS


def _prmt_selector(picks: list[tuple[int, int]]) -> int:
    """``prmt.b32`` selector placing byte ``picks[i] = (0 or 1, byte)`` of ``{b, a}`` (a: 0, b: 1)
    at result byte ``i``; positions ``None`` select byte 0 (unused)."""
    selector = 0
    for position, pick in enumerate(picks):
        if pick is not None:
            operand, byte = pick
            selector |= (4 * operand + byte) << (4 * position)
    return selector


def natural_to_planes_asm() -> str:
    """The PTX of one row: operands ``$0 .. $79`` are the plane words (plane ``d`` word ``m`` is
    ``$(16 d + m)``), ``$80 .. $159`` the natural words in order (``ROW_WORDS = 80``). Each plane word takes one byte
    from each of four distinct natural words: two ``prmt`` gather two bytes each, a third joins them."""
    lines = ["{", ".reg .b32 lo, hi;"]
    for digit in range(5):
        for word in range(PLANE_WORDS):
            sources = [divmod(20 * word + 5 * i + digit, 4) for i in range(4)]
            natural = [source_word for source_word, _ in sources]
            assert len(set(natural)) == 4 and natural == sorted(natural)
            (w0, b0), (w1, b1), (w2, b2), (w3, b3) = sources
            out = PLANE_WORDS * digit + word
            a0, a1, a2, a3 = (ROW_WORDS + w for w in (w0, w1, w2, w3))
            lines.append(f"prmt.b32 lo, ${a0}, ${a1}, {_prmt_selector([(0, b0), (1, b1), None, None]):#x};")
            lines.append(f"prmt.b32 hi, ${a2}, ${a3}, {_prmt_selector([None, None, (0, b2), (1, b3)]):#x};")
            lines.append(f"prmt.b32 ${out}, lo, hi, {_prmt_selector([(0, 0), (0, 1), (1, 2), (1, 3)]):#x};")
    lines.append("}")
    return "\n".join(lines)


NATURAL_TO_PLANES_ASM = natural_to_planes_asm()
_ASM = gl.constexpr(NATURAL_TO_PLANES_ASM)
_CONSTRAINTS = gl.constexpr(",".join(["=r"] * ROW_WORDS + ["r"] * ROW_WORDS))
_WORDS = gl.constexpr(PLANE_WORDS)
_BYTES = gl.constexpr(PLANE_BYTES)


@triton.constexpr_function
def signs_layout():
    """Shared layout of the signs' int8 buffers ``[rows, 4 PLANE_BYTES]`` and ``[rows, PLANE_BYTES]``:
    16-byte units swizzled by row mod 4, so a slice of one plane (64 bytes) keeps its units and the
    word view (:func:`_words_layout`) sees the same bytes."""
    return gl.SwizzledSharedLayout(vec=16, per_phase=1, max_phase=4, order=[1, 0])


@triton.constexpr_function
def _words_layout():
    """:func:`signs_layout` seen as int32 words."""
    return gl.SwizzledSharedLayout(vec=4, per_phase=1, max_phase=4, order=[1, 0])


@gluon.jit
def natural_to_planes(signs_low, signs_high):
    """Regroup the signs in ``signs_low [R, 256]`` / ``signs_high [R, 64]`` (int8, natural column
    order, :func:`signs_layout`) into digit planes in place: plane ``d < 4`` at columns
    ``64 d ..`` of ``signs_low``, plane 4 in ``signs_high``. Run by one warpgroup (``R = 64``):
    warp ``w`` takes rows ``16 w ..``, the rows it stored; both lanes of a row do the whole row (a
    row's natural words do not split into halves that a layout can give each lane)."""
    gl.static_assert(signs_high.shape[1] == _BYTES, "tiles of PLANE_BYTES bytes")
    ROWS: gl.constexpr = signs_low.shape[0]
    ROW: gl.constexpr = gl.BlockedLayout([1, _WORDS], [16, 2], [gl.num_warps(), 1], [1, 0])
    low = signs_low._reinterpret(gl.int32, [ROWS, 4 * _WORDS], _words_layout())
    high = signs_high._reinterpret(gl.int32, [ROWS, _WORDS], _words_layout())
    p0, p1, p2, p3, p4 = gl.inline_asm_elementwise(
        _ASM, _CONSTRAINTS,
        [low.slice(0, _WORDS, dim=1).load(ROW), low.slice(_WORDS, _WORDS, dim=1).load(ROW),
         low.slice(2 * _WORDS, _WORDS, dim=1).load(ROW),
         low.slice(3 * _WORDS, _WORDS, dim=1).load(ROW), high.load(ROW)],
        dtype=(gl.int32, gl.int32, gl.int32, gl.int32, gl.int32), is_pure=True, pack=_WORDS)
    low.store(_side_by_side(_side_by_side(p0, p1), _side_by_side(p2, p3)))  # one store: one barrier before it
    high.store(p4)


@gluon.jit
def _side_by_side(a, b):
    """``[R, W]`` and ``[R, W]`` as ``[R, 2 W]``: ``a``'s columns, then ``b``'s (no data moves)."""
    joined = gl.permute(gl.join(a, b), (0, 2, 1))
    return gl.reshape(joined, [a.shape[0], 2 * a.shape[1]])
