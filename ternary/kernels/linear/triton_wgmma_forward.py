"""Forward for bf16 activation rows on ``wgmma`` tensor cores: the weights decoded straight into
the registers of the left operand, the activations read by the tensor cores from shared memory,
where TMA puts them once per program (a Gluon kernel: compiled sm_90 GPUs only, never under
``TRITON_INTERPRET``).

``out[t, n] = sum_k x[t, k] W[n, k]`` is computed as ``W_tile [BLOCK_N, 32] @ x_tile [32, BLOCK_T]``
products over steps of 32 packed bytes, one per digit position ``d``, as in ``triton_mma_forward``;
the differences are the instruction and where the activations live:

- ``wgmma``'s register operand has ``k_width = 2``: a lane holds columns ``2 q, 2 q + 1, 2 q + 8,
  2 q + 9`` of each 16-column half. The kernel gives column ``c = 16 h + 8 a + 2 q + e`` the
  weight of byte ``16 h + 4 q + 2 a + e``, so a lane's four columns of a row are still one
  4-byte run (one word decode, :func:`operand`), and the activation planes carry the same column
  order (:func:`wgmma_planes`).
- each step's five activation tiles ``[BLOCK_T, 32]`` arrive in shared memory by TMA, in a ring of
  ``STAGES`` slots, and every warp's ``wgmma`` reads them there: the activations cross L2 once
  per program, where the ``mma.sync`` kernel had each warp load them into registers.

Split-K programs write fp32 partial sums ``[splits, M, N]`` that ``finish_splits`` reduces (with the
bias); a single split writes the output and its bias from the kernel.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.triton_launch import byte_span, finish_splits, program_splits, word_decode_takes
from ternary.kernels.linear.gluon_words import (STEP_BYTES, corrupt_bits, poison_rows, row_runs, run_operands,
                                                split_steps, step_runs, word_weights)
from ternary.kernels.linear.triton_mma_forward import run_layout

WGMMA_MIN_ROWS = 2
# Rows beyond one tile run in row tiles (the dispatch stops at triton.WGMMA_MAX_ROWS); the limit keeps the
# TMA row coordinates (5 steps x padded rows) well inside int32 for layers up to K = 10^5.
WGMMA_ROWS_LIMIT = 65536
WGMMA_STEP_BYTES = STEP_BYTES
# (BLOCK_N, warps, STAGES, programs per SM) by the row tile BLOCK_T (M padded to a power of two, at most
# the largest key). H100 sweeps (benchmarks/results/h100/wgmma_forward/), best or within 3% of the best
# on the four benchmark shapes.
WGMMA_TILES = {8: (64, 4, 4, 16), 16: (64, 4, 2, 16), 32: (128, 4, 4, 4), 64: (128, 8, 4, 2), 128: (128, 4, 2, 2)}
WGMMA_MAX_SPLITS = 64

_STEP = gl.constexpr(WGMMA_STEP_BYTES)


@gluon.jit
def operand(w, A: gl.constexpr):
    """``[BLOCK_N, 32]`` weights with column ``j`` holding byte ``j`` (four-byte runs per lane) as
    ``wgmma``'s register operand ``A``: column ``16 h + 8 a + 2 q + e`` holds byte ``16 h + 4 q +
    2 a + e``, which moves registers within each lane only."""
    n: gl.constexpr = w.shape[0]
    w = gl.permute(gl.reshape(w, [n, 2, 4, 2, 2]), [0, 1, 3, 2, 4])
    return gl.convert_layout(gl.reshape(w, [n, _STEP]), A)


@gluon.jit
def _fetch(x_desc, tiles, ready, step, slot, pred, t0, T_PAD):
    """Start the TMA copies of step ``step``'s five activation tiles ``[BLOCK_T, 32]`` (activation
    rows ``t0 ..``) into ring slot ``slot`` (tiles ``5 slot .. 5 slot + 4``). Boxes and shared
    buffers need power-of-two rows, so a step takes five copies; they signal one barrier, and the
    compiler puts a CTA barrier after each."""
    bar = ready.index(slot)
    mbarrier.expect(bar, 5 * x_desc.block_type.nbytes, pred=pred)
    for d in gl.static_range(5):
        tma.async_copy_global_to_shared(x_desc, [(5 * step + d) * T_PAD + t0, 0], bar,
                                        tiles.index(5 * slot + d), pred=pred)


@gluon.jit
def _step(acc, corrupt, word, e, tiles, ready, x_desc, i, step, last, t0, T_PAD, RUN_LAYOUT: gl.constexpr,
          A: gl.constexpr, STAGES: gl.constexpr):
    """``acc`` plus the five digit products of step ``step`` (the ``i``-th of the program), whose
    activations wait in slot ``i mod STAGES``; the slot is then refilled with step ``step +
    STAGES``. (Leaving the products in flight while the next step's weights are decoded, and
    refilling the previous slot instead, was 10-25% slower on the H100: 213 registers at 128 x 128.)"""
    corrupt = corrupt | corrupt_bits(word)
    word, bits = run_operands(word, e, RUN_LAYOUT)
    w0, w1, w2, w3, w4 = word_weights(word, bits)
    w0 = operand(w0, A)
    w1 = operand(w1, A)
    w2 = operand(w2, A)
    w3 = operand(w3, A)
    w4 = operand(w4, A)
    slot = i % STAGES
    mbarrier.wait(ready.index(slot), (i // STAGES) & 1)
    acc = warpgroup_mma(w0, tiles.index(5 * slot).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma(w1, tiles.index(5 * slot + 1).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma(w2, tiles.index(5 * slot + 2).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma(w3, tiles.index(5 * slot + 3).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma(w4, tiles.index(5 * slot + 4).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=[acc, w0, w1, w2, w3, w4])[0]
    gl.thread_barrier()
    _fetch(x_desc, tiles, ready, step + STAGES, slot, step + STAGES < last, t0, T_PAD)
    return acc, corrupt


@gluon.jit
def _wgmma_forward_kernel(x_desc, p_ptr, e_ptr, bias_ptr, out_ptr, M, N, KB, NG, stride_pn, stride_en, stride_os,
                          stride_om, words_end, STEPS_PER_SPLIT, T_PAD, bias_scale, BYTES_PER_GROUP: gl.constexpr,
                          BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr, STAGES: gl.constexpr,
                          RUN_LAYOUT: gl.constexpr, PARTIAL: gl.constexpr, HAS_BIAS: gl.constexpr):
    """``out[s, t, n] = sum_k x[t, k] W[n, k]`` over split ``s = program_id(1)`` of the steps, for
    weight rows ``program_id(0) * BLOCK_N ..`` and activation rows ``program_id(2) * BLOCK_T ..``,
    the activations in :func:`wgmma_planes` order behind ``x_desc`` (``[BLOCK_T, 32]`` boxes, rows
    of ``T_PAD`` per step and digit). ``PARTIAL``: fp32 partial sums to reduce; otherwise (one
    split) ``out [M, N]`` is the output itself, in its dtype, with the bias ``bias * bias_scale``."""
    WARPS: gl.constexpr = gl.num_warps()
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                         instr_shape=[16, BLOCK_T, 16])
    A: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    words, word0, shift, e_rows, run = row_runs(p_ptr, e_ptr, N, stride_pn, stride_en, BLOCK_N, RUN_LAYOUT)
    first, last, whole = split_steps(KB, STEPS_PER_SPLIT)
    tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES * 5, BLOCK_T, _STEP], x_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for slot in gl.static_range(STAGES):
        mbarrier.init(ready.index(slot), count=1)
    fence_async_shared()
    t0 = gl.program_id(2) * BLOCK_T
    for slot in gl.static_range(STAGES):
        _fetch(x_desc, tiles, ready, first + slot, slot, first + slot < last, t0, T_PAD)
    acc = gl.zeros([BLOCK_N, BLOCK_T], gl.float32, acc_layout)
    corrupt = gl.zeros([BLOCK_N, _STEP // 4], gl.int32, RUNS)
    for step in range(first, whole):
        word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, False)
        acc, corrupt = _step(acc, corrupt, word, e, tiles, ready, x_desc, step - first, step, last, t0, T_PAD,
                             RUN_LAYOUT, A, STAGES)
    for step in range(whole, last):
        word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, True)
        acc, corrupt = _step(acc, corrupt, word, e, tiles, ready, x_desc, step - first, step, last, t0, T_PAD,
                             RUN_LAYOUT, A, STAGES)
    for slot in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(slot))
    acc = poison_rows(acc, corrupt, acc_layout)
    out_rows = gl.expand_dims(gl.program_id(0) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, acc_layout)),
                              1)
    out_tokens = gl.expand_dims(t0 + gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, acc_layout)), 0).to(gl.int64)
    out = out_ptr + gl.program_id(1) * stride_os + out_tokens * stride_om + out_rows
    mask = (out_rows < N) & (out_tokens < M)
    if PARTIAL:
        gl.store(out, acc, mask=mask)
    else:
        if HAS_BIAS:
            acc = acc + gl.load(bias_ptr + out_rows, mask=out_rows < N, other=0).to(gl.float32) * bias_scale
        gl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _wgmma_planes_kernel(x_ptr, out_ptr, M, K, T_PAD, stride_xm, stride_xk, BLOCK_T: tl.constexpr,
                         STEP: tl.constexpr):
    """Step ``s = program_id(0)``, rows ``program_id(1) * BLOCK_T ..`` of :func:`wgmma_planes`."""
    step = tl.program_id(0)
    token = (tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)[:, None]).to(tl.int64)
    column = tl.arange(0, STEP)[None, :]
    byte = (column // 16) * 16 + ((column % 8) // 2) * 4 + ((column % 16) // 8) * 2 + column % 2
    k = 5 * (STEP * step + byte)
    rows = x_ptr + token * stride_xm
    out = out_ptr + step.to(tl.int64) * (5 * STEP) * T_PAD + token * STEP + column
    for digit in tl.static_range(5):
        value = tl.load(rows + (k + digit) * stride_xk, mask=(token < M) & (k + digit < K), other=0.0)
        tl.store(out + digit * STEP * T_PAD, value.to(tl.bfloat16))


def wgmma_planes(x: torch.Tensor, t_pad: int, steps: int, block_t: int) -> torch.Tensor:
    """Activations ``x [M, K]`` (M <= ``t_pad``, a multiple of ``block_t``) regrouped for the
    kernel: ``[steps * 5 * t_pad, 32]`` bf16, row ``(5 s + d) t_pad + t`` column ``16 h + 8 a + 2 q +
    e`` holding ``x[t, 5 (32 s + j) + d]`` for byte ``j = 16 h + 4 q + 2 a + e`` (the column order
    of :func:`operand`), zero-padded."""
    out = torch.empty((steps * 5 * t_pad, WGMMA_STEP_BYTES), dtype=torch.bfloat16, device=x.device)
    _wgmma_planes_kernel[(steps, t_pad // block_t)](x, out, x.shape[0], x.shape[1], t_pad, x.stride(0), x.stride(1),
                                                    BLOCK_T=block_t, STEP=WGMMA_STEP_BYTES)
    return out


def takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this call (the caller checks the card and the interpreter): bf16
    activations with at least ``WGMMA_MIN_ROWS`` rows on whole-run groups and word-readable ``T_packed``
    (``triton_launch.word_decode_takes``)."""
    return word_decode_takes("wgmma_forward", x, T_packed, E, group_size, (WGMMA_MIN_ROWS, WGMMA_ROWS_LIMIT))


@functools.cache
def x_layout(block_t: int) -> gl.NVMMASharedLayout:
    """Shared layout of the activation tiles ``[block_t, 32]`` bf16 (64-byte rows, 64-byte swizzle)."""
    return gl.NVMMASharedLayout.get_default_for([block_t, WGMMA_STEP_BYTES], gl.bfloat16)


def default_tile(m: int) -> tuple[int, int, int, int, int]:
    """``(BLOCK_T, BLOCK_N, warps, stages, programs per SM)`` for ``m`` activation rows."""
    block_t = min(max(8, triton.next_power_of_2(m)), max(WGMMA_TILES))
    return (block_t, *WGMMA_TILES[block_t])


def wgmma_forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None, *,
                  group_size: int, bias_frac_bits: int, tile: tuple[int, int, int, int, int] | None = None,
                  validated: bool = False) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-bias_frac_bits`` in bf16 for a call the kernel
    :func:`takes` (else ``ValueError``; ``validated`` skips that check for a caller that made it);
    ``tile = (BLOCK_T, BLOCK_N, warps, stages, programs per SM)`` overrides :func:`default_tile`.
    Split-K launches (too few tiles to fill the card) reduce their partial sums with
    ``finish_splits``; a single split writes ``y`` from the kernel."""
    if not validated:
        word_decode_takes("wgmma_forward", x, T_packed, E, group_size, (WGMMA_MIN_ROWS, WGMMA_ROWS_LIMIT),
                          raise_error=True)
    m = x.shape[0]
    n, kb = T_packed.shape
    bias = None if bias is None else bias.contiguous()  # the single-split kernel reads it with unit stride
    block_t, block_n, warps, stages, per_sm = tile if tile is not None else default_tile(m)
    steps = triton.cdiv(kb, WGMMA_STEP_BYTES)
    t_tiles = triton.cdiv(m, block_t)
    if steps * 5 * t_tiles * block_t >= 2**31:
        raise ValueError(f"triton wgmma_forward: {m} rows of {kb} packed bytes pass the TMA's int32 row coordinates")
    planes = wgmma_planes(x, t_tiles * block_t, steps, block_t)
    x_desc = TensorDescriptor.from_tensor(planes, [block_t, WGMMA_STEP_BYTES], x_layout(block_t))
    tiles = triton.cdiv(n, block_n) * t_tiles
    splits = program_splits(per_sm, tiles, min(max(steps // 2, 1), WGMMA_MAX_SPLITS), steps, x.device)
    partial = splits > 1
    out = (torch.empty((splits, m, n), dtype=torch.float32, device=x.device) if partial
           else torch.empty((1, m, n), dtype=x.dtype, device=x.device))
    _wgmma_forward_kernel[(triton.cdiv(n, block_n), splits, t_tiles)](
        x_desc, T_packed, E, bias if bias is not None else E, out, m, n, kb, E.shape[1], T_packed.stride(0),
        E.stride(0), out.stride(0), out.stride(1), triton.cdiv(byte_span(T_packed), 4), triton.cdiv(steps, splits),
        t_tiles * block_t, 2.0**-bias_frac_bits, BYTES_PER_GROUP=group_size // 5, BLOCK_N=block_n,
        BLOCK_T=block_t, STAGES=stages, RUN_LAYOUT=run_layout(block_n, warps), PARTIAL=partial,
        HAS_BIAS=bias is not None, num_warps=warps,
    )
    return finish_splits(out, bias, bias_frac_bits, x.dtype) if partial else out[0]
