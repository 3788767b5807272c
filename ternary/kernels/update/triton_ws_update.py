"""PROTOTYPE (compiled offline for sm_90 only; never run on a GPU): a persistent, warp-specialised
wgmma update.

Partitions of one program per SM, which walks the tiles ``program_id, program_id + programs, ..``:
- loader (1 warp): TMA boxes of every step of every tile into a ring of STAGES slots;
- MMA (8 warps = two warpgroups of 64 weight rows): the product of each tile, then the accumulators
  are stored into shared memory (``acc_low`` / ``acc_high``) for the epilogue, and the next tile's
  product starts at once;
- epilogue (default partition, 4 warps): the rule on the stored tile in row chunks, in a blocked
  layout of byte pairs (T_accum as 16-bit pieces), while the MMA warps accumulate the next tile.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.triton_base3 import digit_planes
from ternary.kernels.linear.triton_launch import round_up, sm_count, tma_rows
from ternary.kernels.update import UpdatedTensors
from ternary.kernels.update.triton_rule import GROUP_N, step_bias, step_exponent, vote_bytes
from ternary.kernels.update.triton_wgmma import _load_accumulators, _store_accumulators


@gluon.jit
def _tile_at(tile, row_tiles, byte_blocks, GROUP_N: gl.constexpr):
    """``(pid_n, pid_b)`` of linear tile ``tile`` in the grouped order of ``tile_of_program``."""
    in_group = GROUP_N * byte_blocks
    first_n = (tile // in_group) * GROUP_N
    size_n = gl.minimum(row_tiles - first_n, GROUP_N)
    return first_n + (tile % in_group) % size_n, (tile % in_group) // size_n


@gluon.jit
def _loader(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, empty, M, N, KB,
            BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, STAGES: gl.constexpr,
            GROUP_N: gl.constexpr):
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    steps = gl.cdiv(M, BLOCK_M)
    nbytes: gl.constexpr = g_desc.block_type.nbytes + xl_desc.block_type.nbytes + xh_desc.block_type.nbytes
    count = 0
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = _tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        column = pid_b * 5 * BLOCK_B
        for step in range(steps):
            slot = count % STAGES
            mbarrier.wait(empty.index(slot), ((count // STAGES) & 1) ^ 1)
            bar = ready.index(slot)
            mbarrier.expect(bar, nbytes)
            tma.async_copy_global_to_shared(g_desc, [step * BLOCK_M, pid_n * BLOCK_N], bar, g_tiles.index(slot))
            tma.async_copy_global_to_shared(xl_desc, [step * BLOCK_M, column], bar, xl_tiles.index(slot))
            tma.async_copy_global_to_shared(xh_desc, [step * BLOCK_M, column + 4 * BLOCK_B], bar, xh_tiles.index(slot))
            count += 1


@gluon.jit
def _mma(g_tiles, xl_tiles, xh_tiles, ready, empty, acc_low_smem, acc_high_smem, acc_ready, acc_free, M, N, KB,
         BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, STAGES: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    LOW: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                  instr_shape=[16, 4 * BLOCK_B, 16])
    HIGH: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1],
                                                   instr_shape=[16, BLOCK_B, 16])
    tiles = gl.cdiv(N, BLOCK_N) * gl.cdiv(KB, BLOCK_B)
    steps = gl.cdiv(M, BLOCK_M)
    count = 0
    handoffs = 0
    for tile in range(gl.program_id(0), tiles, gl.num_programs(0)):
        acc_low = gl.zeros([BLOCK_N, 4 * BLOCK_B], gl.float32, LOW)
        acc_high = gl.zeros([BLOCK_N, BLOCK_B], gl.float32, HIGH)
        for step in range(steps):
            slot = count % STAGES
            mbarrier.wait(ready.index(slot), (count // STAGES) & 1)
            g_t = g_tiles.index(slot).permute((1, 0))
            acc_low = warpgroup_mma(g_t, xl_tiles.index(slot), acc_low, is_async=True)
            acc_high = warpgroup_mma(g_t, xh_tiles.index(slot), acc_high, is_async=True)
            acc_low, acc_high = warpgroup_mma_wait(2, deps=[acc_low, acc_high])
            mbarrier.arrive(empty.index((count + STAGES - 1) % STAGES), pred=step > 0)
            count += 1
        acc_low, acc_high = warpgroup_mma_wait(0, deps=[acc_low, acc_high])
        mbarrier.arrive(empty.index((count + STAGES - 1) % STAGES))
        mbarrier.wait(acc_free, (handoffs & 1) ^ 1)
        acc_low_smem.store(acc_low)
        acc_high_smem.store(acc_high)
        fence_async_shared()
        mbarrier.arrive(acc_ready)
        handoffs += 1


@gluon.jit
def _epilogue(acc_low_smem, acc_high_smem, acc_ready, acc_free, gy_ptr, p_ptr, ta_ptr, e_ptr, ea_ptr, bias_ptr,
              new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr, M, N, K, KB, NG, stride_gm, stride_pn,
              stride_tn, stride_en, theta_t, theta_e, e_min, e_max, bias_step,
              BYTES_PER_GROUP: gl.constexpr, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
              BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, CHUNK: gl.constexpr, GROUP_N: gl.constexpr):
    WARPS: gl.constexpr = gl.num_warps()
    EPI: gl.constexpr = gl.BlockedLayout([1, 2], [2, 16], [WARPS, 1], [1, 0])
    SCORES: gl.constexpr = gl.BlockedLayout([1, 1], [32, 1], [WARPS, 1], [1, 0])
    GROUPS: gl.constexpr = BLOCK_B // BYTES_PER_GROUP
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    handoffs = 0
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = _tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        mbarrier.wait(acc_ready, handoffs & 1)
        for chunk in gl.static_range(BLOCK_N // CHUNK):
            rn = pid_n * BLOCK_N + chunk * CHUNK + gl.arange(0, CHUNK, layout=gl.SliceLayout(1, EPI))
            jb = pid_b * BLOCK_B + gl.arange(0, BLOCK_B, layout=gl.SliceLayout(0, EPI))
            rows = gl.expand_dims(rn, 1)
            tile_mask = (rows < N) & gl.expand_dims(jb < KB, 0)
            bytes_at = rows * stride_pn + gl.expand_dims(jb, 0)
            byte = gl.load(p_ptr + bytes_at, mask=tile_mask, other=121).to(gl.int32)
            col = gl.expand_dims(5 * jb, 0)
            a0, a1, a2, a3, a4 = _load_accumulators(ta_ptr, rows, col, N, K, stride_tn, EPI)
            low = acc_low_smem.slice(chunk * CHUNK, CHUNK, dim=0)
            g0 = low.slice(0, BLOCK_B, dim=1).load(EPI)
            g1 = low.slice(BLOCK_B, BLOCK_B, dim=1).load(EPI)
            g2 = low.slice(2 * BLOCK_B, BLOCK_B, dim=1).load(EPI)
            g3 = low.slice(3 * BLOCK_B, BLOCK_B, dim=1).load(EPI)
            g4 = acc_high_smem.slice(chunk * CHUNK, CHUNK, dim=0).load(EPI)
            new_byte, a0, a1, a2, a3, a4, score = vote_bytes(g0, g1, g2, g3, g4, byte, a0, a1, a2, a3, a4, 5 * jb,
                                                             K, theta_t)
            gl.store(new_p_ptr + bytes_at, new_byte.to(gl.uint8), mask=tile_mask)
            _store_accumulators(new_ta_ptr, rows, col, N, K, stride_tn, a0, a1, a2, a3, a4)
            group_score = gl.convert_layout(gl.sum(gl.reshape(score, [CHUNK, GROUPS, BYTES_PER_GROUP]), axis=2),
                                            SCORES)
            g_rows = gl.expand_dims(pid_n * BLOCK_N + chunk * CHUNK
                                    + gl.arange(0, CHUNK, layout=gl.SliceLayout(1, SCORES)), 1)
            groups = gl.expand_dims(pid_b * GROUPS + gl.arange(0, GROUPS, layout=gl.SliceLayout(0, SCORES)), 0)
            g_mask = (g_rows < N) & (groups < NG)
            offsets = g_rows * stride_en + groups
            e = gl.load(e_ptr + offsets, mask=g_mask, other=0).to(gl.int32)
            e_acc = gl.load(ea_ptr + offsets, mask=g_mask, other=0).to(gl.int32)
            e, e_acc = step_exponent(e, e_acc, group_score, theta_e, e_min, e_max)
            gl.store(new_e_ptr + offsets, e.to(gl.int8), mask=g_mask)
            gl.store(new_ea_ptr + offsets, e_acc.to(gl.int8), mask=g_mask)
        mbarrier.arrive(acc_free)
        handoffs += 1
        if HAS_BIAS:
            if pid_b == 0:
                ROWS: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [WARPS, 1], [1, 0])
                m = gl.expand_dims(gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, ROWS)), 1)
                n = gl.expand_dims(pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, ROWS)), 0)
                partial = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, ROWS)
                for step in range(gl.cdiv(M, BLOCK_M)):
                    hook_rows = step * BLOCK_M + m
                    partial += gl.load(gy_ptr + hook_rows.to(gl.int64) * stride_gm + n,
                                       mask=(hook_rows < M) & (n < N), other=0).to(gl.float32)
                col_sum = gl.sum(partial, axis=0)
                rb = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, ROWS))
                bias = gl.load(bias_ptr + rb, mask=rb < N, other=0)
                gl.store(new_bias_ptr + rb, step_bias(bias, col_sum, bias_step), mask=rb < N)
    return (handoffs, )


@gluon.jit
def _ws_vote_kernel(
    g_desc, xl_desc, xh_desc, gy_ptr, p_ptr, ta_ptr, e_ptr, ea_ptr, bias_ptr,
    new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr,
    M, N, K, KB, NG, stride_gm, stride_pn, stride_tn, stride_en,
    theta_t, theta_e, e_min, e_max, bias_step,
    BYTES_PER_GROUP: gl.constexpr, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    BLOCK_B: gl.constexpr, STAGES: gl.constexpr, GROUP_N: gl.constexpr, CHUNK: gl.constexpr,
    MMA_WARPS: gl.constexpr, MMA_REGS: gl.constexpr,
):
    g_tiles = gl.allocate_shared_memory(g_desc.dtype, [STAGES, BLOCK_M, BLOCK_N], g_desc.layout)
    xl_tiles = gl.allocate_shared_memory(xl_desc.dtype, [STAGES, BLOCK_M, 4 * BLOCK_B], xl_desc.layout)
    xh_tiles = gl.allocate_shared_memory(xh_desc.dtype, [STAGES, BLOCK_M, BLOCK_B], xh_desc.layout)
    ACC: gl.constexpr = gl.SwizzledSharedLayout(vec=2, per_phase=1, max_phase=16, order=[1, 0])
    acc_low_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_N, 4 * BLOCK_B], ACC)
    acc_high_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_N, BLOCK_B], ACC)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    acc_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    acc_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for each in gl.static_range(STAGES):
        mbarrier.init(ready.index(each), count=1)
        mbarrier.init(empty.index(each), count=1)
    mbarrier.init(acc_ready, count=1)
    mbarrier.init(acc_free, count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_epilogue, (acc_low_smem, acc_high_smem, acc_ready, acc_free, gy_ptr, p_ptr, ta_ptr, e_ptr, ea_ptr, bias_ptr,
                     new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr, M, N, K, KB, NG, stride_gm,
                     stride_pn, stride_tn, stride_en, theta_t, theta_e, e_min, e_max, bias_step, BYTES_PER_GROUP,
                     HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_B, CHUNK, GROUP_N)),
        (_loader, (g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, empty, M, N, KB, BLOCK_M, BLOCK_N,
                   BLOCK_B, STAGES, GROUP_N)),
        (_mma, (g_tiles, xl_tiles, xh_tiles, ready, empty, acc_low_smem, acc_high_smem, acc_ready, acc_free, M, N, KB,
                BLOCK_M, BLOCK_N, BLOCK_B, STAGES)),
    ], [1, MMA_WARPS], [40, MMA_REGS])


_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def ws_update(T_packed, E, E_accum, T_accum, bias, x, grad_y, new: UpdatedTensors, *, in_features, group_size,
              theta_t, theta_e, e_min, e_max, bias_step, tile=(64, 128, 32, 3, 4), chunk=32, mma_regs=152):
    block_m, block_n, block_b, stages, warps = tile
    n, kb = T_packed.shape
    m = x.shape[0]
    dtype = _DTYPES[x.dtype]
    blocks = triton.cdiv(kb, block_b)
    planes = digit_planes(x, max(block_m, round_up(m, block_m)), blocks * block_b, block_b, z_form=False,
                          dtype=x.dtype, blocked=True)
    planes = planes.view(planes.shape[0], -1)
    grad_y = tma_rows(grad_y)
    layout = lambda shape: gl.NVMMASharedLayout.get_default_for(shape, dtype)
    g_desc = TensorDescriptor.from_tensor(grad_y, [block_m, block_n], layout([block_m, block_n]))
    xl_desc = TensorDescriptor.from_tensor(planes, [block_m, 4 * block_b], layout([block_m, 4 * block_b]))
    xh_desc = TensorDescriptor.from_tensor(planes, [block_m, block_b], layout([block_m, block_b]))
    tiles = triton.cdiv(n, block_n) * blocks
    _ws_vote_kernel[(min(tiles, sm_count(x.device)),)](
        g_desc, xl_desc, xh_desc, grad_y, T_packed, T_accum, E, E_accum, bias if bias is not None else E,
        new.T_packed, new.T_accum, new.E, new.E_accum, new.bias if bias is not None else E,
        m, n, in_features, kb, E.shape[1], grad_y.stride(0), T_packed.stride(0), T_accum.stride(0), E.stride(0),
        theta_t, theta_e, e_min, e_max, bias_step,
        BYTES_PER_GROUP=group_size // 5, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_B=block_b, STAGES=stages, GROUP_N=GROUP_N, CHUNK=chunk, MMA_WARPS=8, MMA_REGS=mma_regs,
        num_warps=warps,
    )
    return new


# Offline check (2026-11-27, twelfth session): compiles for sm_90 with (64, 128, 32, 3 stages, 4 warps),
# CHUNK = 32, MMA registers 152: setmaxnreg 152 (MMA) / 40 (loader) / 168 (epilogue), 53 spill stores
# in the epilogue, 194.7 KB shared memory. Next: run tests/test_triton_wgmma_update.py's checks
# against it on an H100, then time it against triton_wgmma at M = 64, 2048 and 8192.
