"""Forward for many bf16 activation rows as a warp-specialised ``wgmma`` GEMM: a producer partition
decodes the packed weights into shared memory while the consumer warpgroups run the products (a
Gluon kernel: compiled sm_90 GPUs only, never under ``TRITON_INTERPRET``).

``out[t, n] = sum_k x[t, k] W[n, k]`` over steps of 32 packed bytes per weight row, as five
``x_d [BLOCK_T, 32] @ W_d^T [32, BLOCK_N]`` products per step (``d`` the digit position, ``W_d[n, j]``
the weight of byte ``j``'s digit ``d``, ``x_d[t, j] = x[t, 5 j + d]``):

- the producer (4 warps) waits for a free ring slot, starts the TMA copies of the step's five
  activation tiles into it, word-decodes the step's ``[BLOCK_N, 32]`` bytes (``gluon_words``) chunk
  by chunk into the five ``W_d`` tiles of the slot and signals it ready;
- the consumers (the kernel's warps, 64 activation rows per warpgroup) wait for a ready slot, issue
  its five asynchronous ``wgmma`` and free the previous step's slot once those completed, so the
  tensor cores always have one step queued while the producer decodes the next.

A corrupt byte (> 242) gets a NaN scale, so its run decodes to NaN weights and its weight row's
outputs are NaN (as in the other forward kernels). Activations are read from digit planes in
natural byte order (``wgmma_planes`` with ``permuted = False``).
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.gluon_words import STEP_BYTES, corrupt_bits, scale_bits, spread_runs, word_weights
from ternary.kernels.linear.triton_launch import word_decode_takes
from ternary.kernels.linear.triton_wgmma_forward import wgmma_planes

# (BLOCK_T activation rows, BLOCK_N weight rows, STEP bytes, X_STAGES (TMA ring: activations and packed
# bytes), W_STAGES (decoded weights), consumer warps, decoder warpgroups, registers per decoder thread,
# kernel maxnreg)
WS_TILE = (256, 128, 16, 4, 2, 8, 1, 152, 168)
# Shared layout of the packed tiles: unswizzled, so that they can be read back as int32 words.
_PACKED_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
WS_ROWS_TAKEN = (64, 65536)

_STEP = gl.constexpr(STEP_BYTES)
_NAN_BITS = gl.constexpr(0x7FC07FC0)


@gluon.jit
def _issue_loads(x_desc, w_desc, x_tiles, packed_tiles, loaded, x_free, step, t0, n0, T_PAD, STEP: gl.constexpr,
                 X_STAGES: gl.constexpr):
    """Once its slot is free, start the TMA copies of step ``step``'s five activation tiles and its
    ``[BLOCK_N, STEP]`` packed bytes into X ring slot ``step mod X_STAGES``. The planes count 32-byte
    steps: a 16-byte step is half of one."""
    slot = step % X_STAGES
    mbarrier.wait(x_free.index(slot), ((step // X_STAGES) & 1) ^ 1)
    bar = loaded.index(slot)
    mbarrier.expect(bar, 5 * x_desc.block_type.nbytes + w_desc.block_type.nbytes)
    plane_step = step * STEP // _STEP
    for d in gl.static_range(5):
        tma.async_copy_global_to_shared(x_desc, [(5 * plane_step + d) * T_PAD + t0, step * STEP % _STEP], bar,
                                        x_tiles.index(5 * slot + d))
    tma.async_copy_global_to_shared(w_desc, [n0, step * STEP], bar, packed_tiles.index(slot))


@gluon.jit
def _produce(x_desc, w_desc, e_ptr, x_tiles, packed_tiles, w_tiles, loaded, x_free, ready, w_free, N, NG, stride_en,
             steps, T_PAD, BYTES_PER_GROUP: gl.constexpr, BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr,
             STEP: gl.constexpr, X_STAGES: gl.constexpr, W_STAGES: gl.constexpr, ROW0: gl.constexpr,
             ROWS: gl.constexpr):
    """A decoder partition (4 warps) for rows ``ROW0 .. ROW0 + ROWS`` of the weight tile: per step it
    reads its rows of the packed tile from shared memory, decodes them (the exponents loaded one step
    ahead) and stores them into the five ``W_d`` tiles of W ring slot ``step mod W_STAGES``. The
    decoder of row 0 also keeps the TMA copies ``X_STAGES - 2`` steps ahead."""
    RUNS_PER_ROW: gl.constexpr = STEP // 4
    RUN_LAYOUT: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 4], threads_per_warp=[32 // RUNS_PER_ROW,
                                                RUNS_PER_ROW, 1], warps_per_cta=[4, 1, 1], order=[2, 1, 0])
    RUNS: gl.constexpr = gl.SliceLayout(2, RUN_LAYOUT)
    WORDS: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    t0 = gl.program_id(0) * BLOCK_T
    n0 = gl.program_id(1) * BLOCK_N
    rows = gl.minimum(n0 + ROW0 + gl.expand_dims(gl.arange(0, ROWS, layout=gl.SliceLayout(1, RUNS)), 1), N - 1)
    e_rows = e_ptr + rows.to(gl.int64) * stride_en
    run_byte = 4 * gl.expand_dims(gl.arange(0, RUNS_PER_ROW, layout=gl.SliceLayout(0, RUNS)), 0)
    if ROW0 == 0:
        for step in gl.static_range(X_STAGES - 2):
            _issue_loads(x_desc, w_desc, x_tiles, packed_tiles, loaded, x_free, step, t0, n0, T_PAD, STEP, X_STAGES)
    e = gl.load(e_rows + gl.minimum(run_byte // BYTES_PER_GROUP, NG - 1))
    for step in range(steps):
        if ROW0 == 0 and step + X_STAGES - 2 < steps:
            _issue_loads(x_desc, w_desc, x_tiles, packed_tiles, loaded, x_free, step + X_STAGES - 2, t0, n0, T_PAD,
                         STEP, X_STAGES)
        next_e = gl.load(e_rows + gl.minimum(((step + 1) * STEP + run_byte) // BYTES_PER_GROUP, NG - 1))
        x_slot = step % X_STAGES
        mbarrier.wait(loaded.index(x_slot), (step // X_STAGES) & 1)
        packed = packed_tiles.index(x_slot)._reinterpret(gl.int32, [BLOCK_N, RUNS_PER_ROW], WORDS)
        word = packed.slice(ROW0, ROWS).load(RUNS)
        bits = gl.where((corrupt_bits(word) & -2139062144) != 0, _NAN_BITS, scale_bits(e))  # any byte > 242
        spread_word, spread_bits = spread_runs(word, bits, RUN_LAYOUT)
        w0, w1, w2, w3, w4 = word_weights(spread_word, spread_bits)
        slot = step % W_STAGES
        mbarrier.wait(w_free.index(slot), ((step // W_STAGES) & 1) ^ 1)
        w_tiles.index(5 * slot).slice(ROW0, ROWS).store(w0)
        w_tiles.index(5 * slot + 1).slice(ROW0, ROWS).store(w1)
        w_tiles.index(5 * slot + 2).slice(ROW0, ROWS).store(w2)
        w_tiles.index(5 * slot + 3).slice(ROW0, ROWS).store(w3)
        w_tiles.index(5 * slot + 4).slice(ROW0, ROWS).store(w4)
        fence_async_shared()
        mbarrier.arrive(ready.index(slot), count=1)
        e = next_e


@gluon.jit
def _consume(x_tiles, w_tiles, ready, x_free, w_free, steps, BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr,
             X_STAGES: gl.constexpr, W_STAGES: gl.constexpr, ACC_LAYOUT: gl.constexpr):
    """The consumer partition: ``[BLOCK_T, BLOCK_N]`` fp32 sums over every step, one step's products
    in flight while the next is waited for; a step's slots are freed once its products completed."""
    acc = gl.zeros([BLOCK_T, BLOCK_N], gl.float32, ACC_LAYOUT)
    for step in range(steps):
        slot = step % W_STAGES
        x_slot = step % X_STAGES
        mbarrier.wait(ready.index(slot), (step // W_STAGES) & 1)
        for d in gl.static_range(5):
            acc = warpgroup_mma(x_tiles.index(5 * x_slot + d), w_tiles.index(5 * slot + d).permute((1, 0)), acc,
                                is_async=True)
        acc = warpgroup_mma_wait(5, deps=[acc])
        mbarrier.arrive(w_free.index((step + W_STAGES - 1) % W_STAGES), count=1, pred=step > 0)
        mbarrier.arrive(x_free.index((step + X_STAGES - 1) % X_STAGES), count=1, pred=step > 0)
    return (warpgroup_mma_wait(0, deps=[acc]), )


@gluon.jit
def _ws_forward_kernel(x_desc, w_desc, e_ptr, bias_ptr, out_ptr, M, N, NG, stride_en, stride_om, steps, T_PAD,
                       bias_scale, BYTES_PER_GROUP: gl.constexpr, X_STAGES: gl.constexpr, W_STAGES: gl.constexpr,
                       DECODERS: gl.constexpr, DECODER_REGS: gl.constexpr, W_LAYOUT: gl.constexpr,
                       HAS_BIAS: gl.constexpr):
    """``out[t, n] = sum_k x[t, k] W[n, k] (+ bias[n] * bias_scale)`` for activation rows
    ``program_id(0) * BLOCK_T ..`` and weight rows ``program_id(1) * BLOCK_N ..``: the activations in
    natural-order digit planes behind ``x_desc`` (``[BLOCK_T, STEP]`` boxes, ``T_PAD`` rows per
    32-byte step and digit), the packed bytes in rows padded to whole steps behind ``w_desc``
    (``[BLOCK_N, STEP]`` boxes), ``steps`` steps of ``STEP`` bytes."""
    WARPS: gl.constexpr = gl.num_warps()
    BLOCK_T: gl.constexpr = x_desc.block_type.shape[0]
    STEP: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = w_desc.block_type.shape[0]
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    x_tiles = gl.allocate_shared_memory(gl.bfloat16, [X_STAGES * 5, BLOCK_T, STEP], x_desc.layout)
    packed_tiles = gl.allocate_shared_memory(gl.uint8, [X_STAGES, BLOCK_N, STEP], w_desc.layout)
    w_tiles = gl.allocate_shared_memory(gl.bfloat16, [W_STAGES * 5, BLOCK_N, STEP], W_LAYOUT)
    loaded = gl.allocate_shared_memory(gl.int64, [X_STAGES, 1], mbarrier.MBarrierLayout())
    x_free = gl.allocate_shared_memory(gl.int64, [X_STAGES, 1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [W_STAGES, 1], mbarrier.MBarrierLayout())
    w_free = gl.allocate_shared_memory(gl.int64, [W_STAGES, 1], mbarrier.MBarrierLayout())
    for slot in gl.static_range(X_STAGES):
        mbarrier.init(loaded.index(slot), count=1)
        mbarrier.init(x_free.index(slot), count=1)
    for slot in gl.static_range(W_STAGES):
        mbarrier.init(ready.index(slot), count=DECODERS)
        mbarrier.init(w_free.index(slot), count=1)
    fence_async_shared()
    if DECODERS == 1:
        acc = gl.warp_specialize([
            (_consume, (x_tiles, w_tiles, ready, x_free, w_free, steps, BLOCK_T, BLOCK_N, X_STAGES, W_STAGES,
                        acc_layout)),
            (_produce, (x_desc, w_desc, e_ptr, x_tiles, packed_tiles, w_tiles, loaded, x_free, ready, w_free, N, NG,
                        stride_en, steps, T_PAD, BYTES_PER_GROUP, BLOCK_T, BLOCK_N, STEP, X_STAGES, W_STAGES, 0,
                        BLOCK_N)),
        ], [4], [DECODER_REGS])[0]
    else:
        acc = gl.warp_specialize([
            (_consume, (x_tiles, w_tiles, ready, x_free, w_free, steps, BLOCK_T, BLOCK_N, X_STAGES, W_STAGES,
                        acc_layout)),
            (_produce, (x_desc, w_desc, e_ptr, x_tiles, packed_tiles, w_tiles, loaded, x_free, ready, w_free, N, NG,
                        stride_en, steps, T_PAD, BYTES_PER_GROUP, BLOCK_T, BLOCK_N, STEP, X_STAGES, W_STAGES, 0,
                        BLOCK_N // 2)),
            (_produce, (x_desc, w_desc, e_ptr, x_tiles, packed_tiles, w_tiles, loaded, x_free, ready, w_free, N, NG,
                        stride_en, steps, T_PAD, BYTES_PER_GROUP, BLOCK_T, BLOCK_N, STEP, X_STAGES, W_STAGES,
                        BLOCK_N // 2, BLOCK_N // 2)),
        ], [4, 4], [DECODER_REGS, DECODER_REGS])[0]
    rows = gl.expand_dims(gl.program_id(0) * BLOCK_T + gl.arange(0, BLOCK_T, layout=gl.SliceLayout(1, acc_layout)), 1)
    cols = gl.expand_dims(gl.program_id(1) * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout)), 0)
    if HAS_BIAS:
        acc = acc + gl.load(bias_ptr + cols, mask=cols < N, other=0).to(gl.float32) * bias_scale
    gl.store(out_ptr + rows.to(gl.int64) * stride_om + cols, acc.to(out_ptr.dtype.element_ty),
             mask=(rows < M) & (cols < N))


def takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this call (the caller checks the card and the interpreter)."""
    return word_decode_takes("ws_forward", x, T_packed, E, group_size, WS_ROWS_TAKEN)


def aligned_packed(T_packed: torch.Tensor, step: int) -> torch.Tensor:
    """A transient copy of ``T_packed [N, KB]`` with rows padded to a multiple of ``step`` bytes (16
    or 32) by the byte 121 (five zero trits), which TMA can read: ``[N, KBp]`` uint8."""
    kb = T_packed.shape[1]
    return torch.nn.functional.pad(T_packed, (0, triton.cdiv(kb, step) * step - kb), value=121)


def ws_forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None, *,
               group_size: int, bias_frac_bits: int, tile: tuple[int, ...] | None = None,
               validated: bool = False) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-bias_frac_bits`` in bf16 for a call the kernel
    :func:`takes` (else ``ValueError``); ``tile`` overrides ``WS_TILE``."""
    if not validated:
        word_decode_takes("ws_forward", x, T_packed, E, group_size, WS_ROWS_TAKEN, raise_error=True)
    m = x.shape[0]
    n, kb = T_packed.shape
    block_t, block_n, step, x_stages, w_stages, warps, decoders, regs, maxnreg = tile if tile is not None else WS_TILE
    packed = aligned_packed(T_packed, step)
    steps = packed.shape[1] // step
    plane_steps = triton.cdiv(kb, STEP_BYTES)
    t_tiles = triton.cdiv(m, block_t)
    if plane_steps * 5 * t_tiles * block_t >= 2**31:
        raise ValueError(f"triton ws_forward: {m} rows of {kb} packed bytes pass the TMA's int32 row coordinates")
    planes = wgmma_planes(x, t_tiles * block_t, plane_steps, block_t, permuted=False)
    x_desc = TensorDescriptor.from_tensor(planes, [block_t, step],
                                          gl.NVMMASharedLayout.get_default_for([block_t, step], gl.bfloat16))
    w_desc = TensorDescriptor.from_tensor(packed, [block_n, step], _PACKED_LAYOUT)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _ws_forward_kernel[(t_tiles, triton.cdiv(n, block_n))](
        x_desc, w_desc, E, bias if bias is not None else E, out, m, n, E.shape[1], E.stride(0), out.stride(0), steps,
        t_tiles * block_t, 2.0**-bias_frac_bits, BYTES_PER_GROUP=group_size // 5, X_STAGES=x_stages,
        W_STAGES=w_stages, DECODERS=decoders, DECODER_REGS=regs,
        W_LAYOUT=gl.NVMMASharedLayout.get_default_for([block_n, step], gl.bfloat16), HAS_BIAS=bias is not None,
        num_warps=warps, maxnreg=maxnreg,
    )
    return out
