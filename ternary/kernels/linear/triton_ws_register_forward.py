"""Forward for many bf16 activation rows as a warp-specialised ``wgmma`` GEMM with the weights decoded
straight into the register operand (a Gluon kernel: compiled sm_90 GPUs only, never under
``TRITON_INTERPRET``).

The product and the decode are those of ``triton_wgmma_forward`` (``W_tile [64, 32] @ x_tile [32,
BLOCK_T]`` per digit position and step, the activation planes of ``wgmma_planes``); the schedule
differs:

- a loader warp keeps a ring of ``STAGES`` activation steps filled by TMA (one mbarrier per slot for
  "loaded", one for "free");
- two consumer warpgroups, each its own partition, own 64 weight rows each: they decode their rows,
  wait for the step's activations, run the five products and free the slot. They never wait for each
  other, so one warpgroup's decode overlaps the other's products on the tensor cores.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.gluon_words import STEP_BYTES, corrupt_bits, poison_rows, run_operands, step_runs, word_weights
from ternary.kernels.linear.triton_launch import byte_span, word_decode_takes
from ternary.kernels.linear.triton_mma_forward import run_layout
from ternary.kernels.linear.triton_wgmma_forward import operand, wgmma_planes, x_layout

# (BLOCK_T activation rows, STAGES, consumer registers, kernel maxnreg)
WS_TILE = (128, 4, 160, 168)
WS_ROWS_TAKEN = (64, 65536)
# weight rows per consumer warpgroup, and consumer warpgroups per program
WS_GROUP_ROWS = 64
WS_GROUPS = 2

_STEP = gl.constexpr(STEP_BYTES)
_GROUP_ROWS = gl.constexpr(WS_GROUP_ROWS)


@gluon.jit
def _load(x_desc, tiles, loaded, free, KB, T_PAD, STAGES: gl.constexpr):
    """The loader partition: TMA copies of each step's five activation tiles into ring slot ``step
    mod STAGES`` once both consumers freed it."""
    BLOCK_T: gl.constexpr = x_desc.block_type.shape[0]
    t0 = gl.program_id(1) * BLOCK_T
    for step in range(gl.cdiv(KB, _STEP)):
        slot = step % STAGES
        mbarrier.wait(free.index(slot), ((step // STAGES) & 1) ^ 1)
        bar = loaded.index(slot)
        mbarrier.expect(bar, 5 * x_desc.block_type.nbytes)
        for d in gl.static_range(5):
            tma.async_copy_global_to_shared(x_desc, [(5 * step + d) * T_PAD + t0, 0], bar, tiles.index(5 * slot + d))


@gluon.jit
def _rows(p_ptr, e_ptr, bias_ptr, out_ptr, tiles, loaded, free, M, N, KB, NG, stride_pn, stride_en, stride_om,
          words_end, bias_scale, ROW0: gl.constexpr, BYTES_PER_GROUP: gl.constexpr, BLOCK_T: gl.constexpr,
          STAGES: gl.constexpr, RUN_LAYOUT: gl.constexpr, HAS_BIAS: gl.constexpr):
    """A consumer partition (4 warps): ``out[t, n]`` for its 64 weight rows ``n`` (``ROW0`` into the
    program's tile) and the program's activation rows, decoding each step into the register operand."""
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_T, 16])
    A: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    n0 = gl.program_id(0) * (2 * _GROUP_ROWS) + ROW0
    rows = gl.minimum(n0 + gl.expand_dims(gl.arange(0, _GROUP_ROWS, layout=gl.SliceLayout(1, RUNS)), 1), N - 1)
    first_byte = rows.to(gl.int64) * stride_pn
    shift = ((first_byte & 3) * 8).to(gl.int32)
    word0 = first_byte >> 2
    e_rows = e_ptr + rows.to(gl.int64) * stride_en
    run = gl.expand_dims(gl.arange(0, _STEP // 4, layout=gl.SliceLayout(0, RUNS)), 0)
    words = p_ptr.to(gl.pointer_type(gl.int32))
    steps = gl.cdiv(KB, _STEP)
    whole = KB // _STEP
    acc = gl.zeros([_GROUP_ROWS, BLOCK_T], gl.float32, acc_layout)
    corrupt = gl.zeros([_GROUP_ROWS, _STEP // 4], gl.int32, RUNS)
    for step in range(steps):
        if step < whole:
            word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, False)
        else:
            word, e = step_runs(words, word0, words_end, shift, e_rows, run, step, KB, NG, BYTES_PER_GROUP, True)
        corrupt = corrupt | corrupt_bits(word)
        spread_word, bits = run_operands(word, e, RUN_LAYOUT)
        w0, w1, w2, w3, w4 = word_weights(spread_word, bits)
        w0 = operand(w0, A)
        w1 = operand(w1, A)
        w2 = operand(w2, A)
        w3 = operand(w3, A)
        w4 = operand(w4, A)
        slot = step % STAGES
        mbarrier.wait(loaded.index(slot), (step // STAGES) & 1)
        acc = warpgroup_mma(w0, tiles.index(5 * slot).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(w1, tiles.index(5 * slot + 1).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(w2, tiles.index(5 * slot + 2).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(w3, tiles.index(5 * slot + 3).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(w4, tiles.index(5 * slot + 4).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=[acc, w0, w1, w2, w3, w4])[0]
        mbarrier.arrive(free.index(slot), count=1)
    acc = poison_rows(acc, corrupt, acc_layout)
    out_rows = gl.expand_dims(n0 + gl.arange(0, _GROUP_ROWS, layout=gl.SliceLayout(1, acc_layout)), 1)
    tokens = gl.expand_dims(gl.program_id(1) * BLOCK_T + gl.arange(0, BLOCK_T, layout=gl.SliceLayout(0, acc_layout)),
                            0).to(gl.int64)
    if HAS_BIAS:
        acc = acc + gl.load(bias_ptr + out_rows, mask=out_rows < N, other=0).to(gl.float32) * bias_scale
    gl.store(out_ptr + tokens * stride_om + out_rows, acc.to(out_ptr.dtype.element_ty),
             mask=(out_rows < N) & (tokens < M))


@gluon.jit
def _ws_forward_kernel(x_desc, p_ptr, e_ptr, bias_ptr, out_ptr, M, N, KB, NG, stride_pn, stride_en, stride_om,
                       words_end, T_PAD, bias_scale, BYTES_PER_GROUP: gl.constexpr, STAGES: gl.constexpr,
                       CONSUMER_REGS: gl.constexpr, RUN_LAYOUT: gl.constexpr, HAS_BIAS: gl.constexpr):
    """``out[t, n] = sum_k x[t, k] W[n, k] (+ bias[n] * bias_scale)`` for weight rows ``program_id(0)
    * 128 ..`` and activation rows ``program_id(1) * BLOCK_T ..``, the activations in
    :func:`wgmma_planes` order behind ``x_desc`` (``[BLOCK_T, 32]`` boxes, ``T_PAD`` rows per step and
    digit). Launched with 4 warps: the first consumer is the default partition."""
    BLOCK_T: gl.constexpr = x_desc.block_type.shape[0]
    tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES * 5, BLOCK_T, _STEP], x_desc.layout)
    loaded = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for slot in gl.static_range(STAGES):
        mbarrier.init(loaded.index(slot), count=1)
        mbarrier.init(free.index(slot), count=2)
    fence_async_shared()
    gl.warp_specialize([
        (_rows, (p_ptr, e_ptr, bias_ptr, out_ptr, tiles, loaded, free, M, N, KB, NG, stride_pn, stride_en, stride_om,
                 words_end, bias_scale, 0, BYTES_PER_GROUP, BLOCK_T, STAGES, RUN_LAYOUT, HAS_BIAS)),
        (_rows, (p_ptr, e_ptr, bias_ptr, out_ptr, tiles, loaded, free, M, N, KB, NG, stride_pn, stride_en, stride_om,
                 words_end, bias_scale, _GROUP_ROWS, BYTES_PER_GROUP, BLOCK_T, STAGES, RUN_LAYOUT, HAS_BIAS)),
        (_load, (x_desc, tiles, loaded, free, KB, T_PAD, STAGES)),
    ], [4, 1], [CONSUMER_REGS, 40])


def takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this call (the caller checks the card and the interpreter)."""
    return word_decode_takes("ws_forward", x, T_packed, E, group_size, WS_ROWS_TAKEN)


def ws_forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None, *,
               group_size: int, bias_frac_bits: int, tile: tuple[int, ...] | None = None,
               validated: bool = False) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-bias_frac_bits`` in bf16 for a call the kernel
    :func:`takes` (else ``ValueError``); ``tile`` overrides ``WS_TILE``."""
    if not validated:
        word_decode_takes("ws_forward", x, T_packed, E, group_size, WS_ROWS_TAKEN, raise_error=True)
    m = x.shape[0]
    n, kb = T_packed.shape
    block_t, stages, regs, maxnreg = tile if tile is not None else WS_TILE
    steps = triton.cdiv(kb, STEP_BYTES)
    t_tiles = triton.cdiv(m, block_t)
    if steps * 5 * t_tiles * block_t >= 2**31:
        raise ValueError(f"triton ws_forward: {m} rows of {kb} packed bytes pass the TMA's int32 row coordinates")
    planes = wgmma_planes(x, t_tiles * block_t, steps, block_t)
    x_desc = TensorDescriptor.from_tensor(planes, [block_t, STEP_BYTES], x_layout(block_t))
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _ws_forward_kernel[(triton.cdiv(n, WS_GROUPS * WS_GROUP_ROWS), t_tiles)](
        x_desc, T_packed, E, bias if bias is not None else E, out, m, n, kb, E.shape[1], T_packed.stride(0),
        E.stride(0), out.stride(0), triton.cdiv(byte_span(T_packed), 4), t_tiles * block_t, 2.0**-bias_frac_bits,
        BYTES_PER_GROUP=group_size // 5, STAGES=stages, CONSUMER_REGS=regs, RUN_LAYOUT=run_layout(WS_GROUP_ROWS, 4),
        HAS_BIAS=bias is not None, num_warps=4,
        maxnreg=maxnreg,
    )
    return out
