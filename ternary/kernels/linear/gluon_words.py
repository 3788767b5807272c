"""Gluon device helper shared by the Gluon linear kernels (``triton_table_gemv``,
``triton_mma_forward``), which read ``T_packed`` rows as aligned words although rows are
``ceil(K / 5)`` bytes apart."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl


@gluon.jit
def realign(lo_word, hi_word, shift):
    """The 32 bits starting ``shift`` bits into ``hi_word:lo_word`` (one funnel shift)."""
    return gl.inline_asm_elementwise("shf.r.clamp.b32 $0, $1, $2, $3;", "=r,r,r,r", [lo_word, hi_word, shift],
                                     dtype=gl.int32, is_pure=True, pack=1)
