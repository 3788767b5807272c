"""The ``wgmma`` update on wide tiles: 128 weight rows by 64 packed bytes, two product warpgroups sharing
each box of ``x``, fed by a loader warp (a Gluon kernel: compiled sm_90 GPUs only, never under
``TRITON_INTERPRET``).

Same work and result as ``triton_wgmma_ws`` (the 64-row kernel), with the tile doubled along the weight rows:
each step's ``x`` boxes (``[64, 320]``, 40 KB) now feed twice the products, so the bytes a step brings
into shared memory per product fall by about 40 % (56 KB for 128 x 320 outputs, 48 KB for 64 x 320). Every
SM runs one program with four partitions:

- two product warpgroups, rows ``0 .. 63`` and ``64 .. 127`` of the tile, each a ``64 x 256`` and a ``64 x 64``
  ``wgmma`` per 16 hook rows from a ring of ``STAGES`` slots; each releases a slot once its products that read
  it retire (``free`` counts both), and hands over its signs in digit planes (``sign_planes``);
- a loader warp that refills each slot by TMA once both warpgroups freed it;
- two rule warps that run the rule on the handed-over signs in ``f16x2`` arithmetic
  (``pair_rule.rule_partition``): the integer rule of the 64-row kernel would need more warps than the
  registers leave (``ptxas`` compiles the ``64 x 320`` products only under 12 warps in all).

The rule of a tile runs while the products accumulate the next one. Two rule warps keep up with the products
from about 8192 hook rows; below that the rule decides and the 64-row kernel is faster, as it is on layers of
few tiles (a 128-row tile halves the tiles, so the last round of tiles weighs twice as much): :func:`takes`.
"""

from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, warpgroup_mma_wait

from ternary.kernels.update import UpdatedTensors
from ternary.kernels.update.pair_rule import rule_partition, rule_words, trit_table
from ternary.kernels.update.triton_rule import GROUP_N, tile_at
from ternary.kernels.update.triton_wgmma import (WGMMA_BLOCK_B, accumulator_layout, allocate_ring_and_signs,
                                                 fetch_step, hand_over_signs, launch_operands, product_step,
                                                 step_tile_bias, last_block_past_k)

# (BLOCK_M hook rows per step, BLOCK_N weight rows, STAGES, rule warps, rule rows per pass); registers per
# thread of the product warpgroups, the loader and the rule warps. Three 56 KB slots and the 40 KB of signs
# fill the shared memory; 192 registers are the fewest with which the 64 x 320 products do not spill, and
# with them the loader and rule warps share 120 (H200, benchmarks/results/h200/twenty_eighth/).
WIDE_UPDATE_TILE = (64, 128, 3, 2, 4)
WIDE_REGISTERS = (192, 120, 120)
# When the wide tiles take the update (:func:`takes`). H200, bf16 hooks, same process in turns with the 64-row
# kernel and the GEMM (benchmarks/results/h200/twenty_eighth/): 16384^2 M = 8192 1.07-1.08x the GEMM against
# 1.19-1.20x (6656 tiles, 50 rounds on 132 SMs), at M = 4096 level (1.24x / 1.23x); 4096 x 14336 and
# 14336 x 4096 (11 rounds) level or 2-4 % slower; 4096^2 (3.2 rounds) 1.52x against 1.35x; 16384^2 at M = 2048
# 2.03x against 1.57x, where two rule warps fall behind.
WIDE_MIN_ROWS = 8192
WIDE_MIN_ROUNDS = 24


def takes(n: int, kb: int, m: int, programs: int) -> bool:
    """Whether an update the 64-row kernel takes goes to the wide tiles instead: ``m`` hook rows of at least
    ``WIDE_MIN_ROWS`` and at least ``WIDE_MIN_ROUNDS`` tiles of 128 rows per each of ``programs`` SMs."""
    block_n = WIDE_UPDATE_TILE[1]
    tiles = triton.cdiv(n, block_n) * triton.cdiv(kb, WGMMA_BLOCK_B)
    return m >= WIDE_MIN_ROWS and tiles >= WIDE_MIN_ROUNDS * programs


@gluon.jit
def _load(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, free, M, N, KB, BLOCK_M: gl.constexpr,
          BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, STAGES: gl.constexpr, GROUP_N: gl.constexpr):
    """The loader warp: every step's three boxes (``triton_wgmma.fetch_step``) into the ring slot both product
    warpgroups freed, tile after tile."""
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    steps = gl.cdiv(M, BLOCK_M)
    count = 0
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        for step in range(steps):
            slot = count % STAGES
            mbarrier.wait(free.index(slot), ((count // STAGES) & 1) ^ 1)
            fetch_step(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, step, slot, pid_n * BLOCK_N,
                       pid_b * 5 * BLOCK_B, BLOCK_M, BLOCK_B)
            count += 1


@gluon.jit
def _accumulate(g_tiles, xl_tiles, xh_tiles, ones, ready, free, count, steps, HALF_INDEX: gl.constexpr,
                SUMS: gl.constexpr, PADDING: gl.constexpr):
    """One warpgroup's products of a tile over ``steps`` ring slots from the ``count``-th on: its 64 weight
    rows (``HALF_INDEX``) by the tile's 320 columns as ``[64, 256]`` and ``[64, 64]`` fp32, with ``SUMS`` the
    column sums of ``grad_y`` in column 0 of ``[64, 8]`` (with ``PADDING`` in place of the ``[64, 64]``
    product, which stays zero: ``product_step``); each slot is freed once this warpgroup's products that read
    it retire. Returns the three accumulators and the new ``count``."""
    STAGES: gl.constexpr = g_tiles.shape[0]
    ROWS: gl.constexpr = 64
    BLOCK_B: gl.constexpr = xh_tiles.shape[2]
    WARPS: gl.constexpr = gl.num_warps()
    acc_low = gl.zeros([ROWS, 4 * BLOCK_B], gl.float32, accumulator_layout(WARPS, 4 * BLOCK_B))
    acc_high = gl.zeros([ROWS, BLOCK_B], gl.float32, accumulator_layout(WARPS, BLOCK_B))
    acc_sums = gl.zeros([ROWS, 8], gl.float32, accumulator_layout(WARPS, 8))
    for step in range(steps):
        slot = count % STAGES
        acc_low, acc_high, acc_sums = product_step(g_tiles, xl_tiles, xh_tiles, ones, ready, slot,
                                                   (count // STAGES) & 1, acc_low, acc_high, acc_sums, SUMS,
                                                   HALF_INDEX * ROWS, PADDING)
        mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), pred=step > 0)
        count += 1
    if PADDING:
        acc_low, acc_sums = warpgroup_mma_wait(0, deps=[acc_low, acc_sums])
    elif SUMS:
        acc_low, acc_high, acc_sums = warpgroup_mma_wait(0, deps=[acc_low, acc_high, acc_sums])
    else:
        acc_low, acc_high = warpgroup_mma_wait(0, deps=[acc_low, acc_high])
    mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), pred=steps > 0)
    return acc_low, acc_high, acc_sums, count


@gluon.jit
def _product(g_tiles, xl_tiles, xh_tiles, ones, ready, free, signs_low, signs_high, signs_ready, signs_free,
             bias_ptr, new_bias_ptr, M, N, KB, bias_step, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
             GROUP_N: gl.constexpr, HALF_INDEX: gl.constexpr, LAST_PAST_K: gl.constexpr):
    """One product warpgroup: rows ``64 HALF_INDEX ..`` of each tile, handed over as signs in digit planes into
    its half of ``signs_low [128, 256]`` / ``signs_high [128, 64]``. With ``HAS_BIAS`` the tiles of one byte
    block also sum ``grad_y``'s columns and step the bias of their rows: with ``LAST_PAST_K``
    (``triton_wgmma.last_block_past_k``) the last block's, in place of their product past ``K``, else the
    first block's."""
    BLOCK_N: gl.constexpr = g_tiles.shape[2]
    BLOCK_B: gl.constexpr = xh_tiles.shape[2]
    HALF: gl.constexpr = BLOCK_N // 2
    own_low = signs_low.slice(HALF_INDEX * HALF, HALF, dim=0)
    own_high = signs_high.slice(HALF_INDEX * HALF, HALF, dim=0)
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    steps = gl.cdiv(M, BLOCK_M)
    count = 0
    handoffs = 0
    sums_block = 0
    if LAST_PAST_K:
        sums_block = byte_blocks - 1
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        if HAS_BIAS and pid_b == sums_block:  # without a bias, a compile-time False: one step loop
            acc_low, acc_high, acc_sums, count = _accumulate(g_tiles, xl_tiles, xh_tiles, ones, ready, free, count,
                                                             steps, HALF_INDEX, True, LAST_PAST_K)
            step_tile_bias(acc_sums, bias_ptr, new_bias_ptr, N, pid_n * BLOCK_N + HALF_INDEX * HALF, bias_step)
        else:
            acc_low, acc_high, _, count = _accumulate(g_tiles, xl_tiles, xh_tiles, ones, ready, free, count, steps,
                                                      HALF_INDEX, False, False)
        hand_over_signs(acc_low, acc_high, own_low, own_high, signs_ready, signs_free, handoffs)
        handoffs += 1


@gluon.jit
def _wide_vote_kernel(
    g_desc, xl_desc, xh_desc, p_ptr, ta_ptr, table_ptr, e_ptr, ea_ptr, bias_ptr,
    new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr,
    M, N, K, KB, NG, stride_pn, stride_tn, stride_en,
    theta_high, theta_low, hold, theta_e, e_min, e_max, bias_step,
    BYTES_PER_GROUP: gl.constexpr, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    BLOCK_B: gl.constexpr, STAGES: gl.constexpr, GROUP_N: gl.constexpr, RULE_WARPS: gl.constexpr,
    RULE_ROWS: gl.constexpr, PRODUCT_REGISTERS: gl.constexpr, LOADER_REGISTERS: gl.constexpr,
    RULE_REGISTERS: gl.constexpr, LAST_PAST_K: gl.constexpr,
):
    """Shared memory and barriers of one persistent program, then the four partitions (module docstring; the
    arguments as ``triton_wgmma_ws._ws_vote_kernel``'s, the threshold words and the table of
    ``pair_rule``). The first product warpgroup is the default partition."""
    # ones is written by these warps; the fence below and the barrier entering the partitions order its
    # stores before the product warps' wgmma reads them
    g_tiles, xl_tiles, xh_tiles, ones, signs_low, signs_high = allocate_ring_and_signs(
        g_desc, xl_desc, xh_desc, STAGES, BLOCK_M, BLOCK_N, BLOCK_B)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    signs_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    signs_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for each in gl.static_range(STAGES):
        mbarrier.init(ready.index(each), count=1)
        mbarrier.init(free.index(each), count=2)
    mbarrier.init(signs_ready, count=2)
    mbarrier.init(signs_free, count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_product, (g_tiles, xl_tiles, xh_tiles, ones.permute((1, 0)), ready, free, signs_low, signs_high,
                    signs_ready, signs_free, bias_ptr, new_bias_ptr, M, N, KB, bias_step, HAS_BIAS, BLOCK_M, GROUP_N,
                    0, LAST_PAST_K)),
        (_product, (g_tiles, xl_tiles, xh_tiles, ones.permute((1, 0)), ready, free, signs_low, signs_high,
                    signs_ready, signs_free, bias_ptr, new_bias_ptr, M, N, KB, bias_step, HAS_BIAS, BLOCK_M, GROUP_N,
                    1, LAST_PAST_K)),
        (_load, (g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, free, M, N, KB, BLOCK_M, BLOCK_N,
                 BLOCK_B, STAGES, GROUP_N)),
        (rule_partition, (signs_low, signs_high, signs_ready, signs_free, p_ptr, ta_ptr, table_ptr, e_ptr, ea_ptr,
                          new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, N, K, KB, NG, stride_pn, stride_tn,
                          stride_en, theta_high, theta_low, hold, theta_e, e_min, e_max, BYTES_PER_GROUP, BLOCK_N,
                          BLOCK_B, RULE_ROWS, GROUP_N)),
    ], [4, 1, RULE_WARPS], [PRODUCT_REGISTERS, LOADER_REGISTERS, RULE_REGISTERS])


def wide_update(T_packed, E, E_accum, T_accum, bias, x, grad_y, new: UpdatedTensors, *, in_features: int,
                group_size: int, theta_t: int, theta_e: int, e_min: int, e_max: int, bias_step: int) -> UpdatedTensors:
    """Write the update of one checked layer (``n > 0``) into ``new`` and return it; the caller has checked
    ``triton_wgmma.takes``. One program per SM (fewer for fewer tiles)."""
    n, kb = T_packed.shape
    block_m, block_n, stages, rule_warps, rule_rows = WIDE_UPDATE_TILE
    grad_y, descriptors, programs, bias_in, bias_out = launch_operands(  # grad_y: alive till the launch
        T_packed, E, E_accum, T_accum, bias, x, grad_y, new, group_size, block_m, block_n, WGMMA_BLOCK_B)
    _wide_vote_kernel[(programs,)](
        *descriptors, T_packed, T_accum, trit_table(x.device, in_features % 5), E, E_accum, bias_in, new.T_packed,
        new.T_accum, new.E, new.E_accum, bias_out, x.shape[0], n, in_features, kb, E.shape[1], T_packed.stride(0),
        T_accum.stride(0), E.stride(0), *rule_words(theta_t), theta_e, e_min, e_max, bias_step,
        BYTES_PER_GROUP=group_size // 5, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_B=WGMMA_BLOCK_B, STAGES=stages, GROUP_N=GROUP_N, RULE_WARPS=rule_warps, RULE_ROWS=rule_rows,
        PRODUCT_REGISTERS=WIDE_REGISTERS[0], LOADER_REGISTERS=WIDE_REGISTERS[1], RULE_REGISTERS=WIDE_REGISTERS[2],
        LAST_PAST_K=last_block_past_k(in_features, WGMMA_BLOCK_B), num_warps=4)
    return new
