"""The ``wgmma`` update for 16-bit hooks: a persistent, warp-specialised kernel (Gluon, compiled sm_90
GPUs only, never under ``TRITON_INTERPRET``) built from ``triton_wgmma.py``'s parts.

Tiles are 64 weight rows by 64 packed bytes (one ``64x256`` and one ``64x64`` ``wgmma`` per 16 hook
rows: the widest products there are, which is what feeds the tensor cores best). Each of the card's
SMs runs one program that walks the tiles ``program_id, program_id + programs, ..`` with two groups
of warps working at once:

- **product** (one warpgroup): the TMA boxes of every step into a ring of ``STAGES`` slots, each slot
  refilled once the products that read it retire (``ready`` barriers per slot); each tile's
  gradient, then only its signs, ``[64, 320]`` int8, go to shared memory (the rule needs nothing
  else of the gradient) and the next tile's product starts at once (``signs_ready`` /
  ``signs_free`` barriers). ``x`` is read as it is, in natural column order, so the product warps
  regroup the signs into the rule's digit planes in shared memory before handing them over
  (``sign_planes``; digit planes of ``x`` would cost a pass over ``x`` before the kernel);
- **rule** (the default partition, ``warps``): the rule on the stored signs, a few rows at a time
  in a blocked layout of byte pairs (``T_accum`` as 16-bit pieces), then the exponents, while the
  product warps accumulate the next tile.

The product issues its own copies (no loader warp), so the kernel has 12 warps: ``ptxas`` compiles
it under ``65536 / 384`` registers per thread, enough for a ``64x256`` product's 128 accumulators
(16 warps would leave 128, too few to compile it), and the product takes more per thread at run time.

The bias needs ``grad_y``'s column sums: in the tiles of the first byte block the product warps
issue one more ``wgmma`` per step, against a column of ones, and step the bias themselves.

The rule of one tile runs while the product accumulates the next, so at 16384^2 from about 8192 hook
rows on an H100 the rule costs the product little; at 2048 the two take about as long, and below
that the rule decides (README, "Why 64-byte tiles"). Takes what ``triton_wgmma.takes`` takes.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, warpgroup_mma_wait

from ternary.kernels.update import UpdatedTensors
from ternary.kernels.update.triton_rule import GROUP_N, tile_at, vote_bytes
from ternary.kernels.update.triton_wgmma import (WGMMA_BLOCK_B, accumulator_layout, allocate_ring_and_signs,
                                                 fetch_step, hand_over_signs, launch_operands, load_accumulator_pairs,
                                                 load_tile_exponents, product_step, step_tile_bias,
                                                 step_tile_exponents, store_accumulator_pairs, last_block_past_k)

# (BLOCK_M hook rows per step, BLOCK_N weight rows, BLOCK_B bytes, STAGES, rule warps), rule rows per
# pass, registers per thread of the product warps. H100, bf16 hooks, same process
# (benchmarks/results/h100/update_wide/): fed by a loader warp, the product alone at 16384^2 M = 8192
# took 6.4-6.6 ms with this tile against 6.7-7.0 ms for two warpgroups of 64x128 and 64x32 products
# on 32-byte blocks, and 7.5-7.7 ms with 3 stages; the whole kernel 7.3-7.5 ms against 7.7-8.3 ms for
# the 32-byte tiles (README, "Why 64-byte tiles"). The rule's 8 warps each take one row of 64 bytes
# per pass (a byte pair per lane), hence 8-row passes; 4 rule warps doubled M = 2048.
WS_UPDATE_TILE = (64, 64, WGMMA_BLOCK_B, 4, 8)
WS_RULE_ROWS = 8
WS_PRODUCT_REGISTERS = 216


@gluon.jit
def _fetch_next(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, cursor, steps, row_tiles, byte_blocks,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, STAGES: gl.constexpr,
                GROUP_N: gl.constexpr):
    """Start the copies of the step at ``cursor`` (the ring's fetch count, then the step's tile, its
    hook-row step and its tile coordinates) into ring slot ``count % STAGES``, if this program has
    that tile, and return the cursor of the next step (the tile coordinates are worked out once per
    tile, so a step's fetch is a few scalar operations)."""
    count, tile, step, pid_n, pid_b = cursor
    tiles = row_tiles * byte_blocks
    if (tile < tiles) & (step < steps):  # no hook rows: no step to fetch, nothing to wait for
        fetch_step(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, step, count % STAGES,
                   pid_n * BLOCK_N, pid_b * 5 * BLOCK_B, BLOCK_M, BLOCK_B)
    step += 1
    if step >= steps:
        step = 0
        tile += gl.num_programs(0)
        # past the last tile the coordinates go unused; clamped, tile_at never divides by zero
        pid_n, pid_b = tile_at(gl.minimum(tile, tiles - 1), row_tiles, byte_blocks, GROUP_N)
    return count + 1, tile, step, pid_n, pid_b


@gluon.jit
def _accumulate(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ones, ready, count, cursor, steps, row_tiles,
                byte_blocks, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr,
                STAGES: gl.constexpr, GROUP_N: gl.constexpr, SUMS: gl.constexpr, PADDING: gl.constexpr):
    """One tile's products over its ``steps`` ring slots from the ``count``-th on, each slot refilled
    (:func:`_fetch_next` at ``cursor``) once its products retire: returns the accumulators
    ``[BLOCK_N, 4 BLOCK_B]``, ``[BLOCK_N, BLOCK_B]`` (left as zeros with ``PADDING``: see
    ``triton_wgmma.product_step``) and, with ``SUMS``, the column sums of ``grad_y`` in column 0 of
    ``[BLOCK_N, 8]``, and the new ``count`` and ``cursor``."""
    WARPS: gl.constexpr = gl.num_warps()
    LOW: gl.constexpr = accumulator_layout(WARPS, 4 * BLOCK_B)
    HIGH: gl.constexpr = accumulator_layout(WARPS, BLOCK_B)
    COLUMN_SUMS: gl.constexpr = accumulator_layout(WARPS, 8)
    acc_low = gl.zeros([BLOCK_N, 4 * BLOCK_B], gl.float32, LOW)
    acc_high = gl.zeros([BLOCK_N, BLOCK_B], gl.float32, HIGH)
    acc_sums = gl.zeros([BLOCK_N, 8], gl.float32, COLUMN_SUMS)
    for step in range(steps):
        slot = count % STAGES
        acc_low, acc_high, acc_sums = product_step(g_tiles, xl_tiles, xh_tiles, ones, ready, slot,
                                                   (count // STAGES) & 1, acc_low, acc_high, acc_sums, SUMS, 0, PADDING)
        if step > 0:  # the previous step's products are retired: refill its slot
            cursor = _fetch_next(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, cursor, steps,
                                 row_tiles, byte_blocks, BLOCK_M, BLOCK_N, BLOCK_B, STAGES, GROUP_N)
        count += 1
    if PADDING:
        acc_low, acc_sums = warpgroup_mma_wait(0, deps=[acc_low, acc_sums])
    elif SUMS:
        acc_low, acc_high, acc_sums = warpgroup_mma_wait(0, deps=[acc_low, acc_high, acc_sums])
    else:
        acc_low, acc_high = warpgroup_mma_wait(0, deps=[acc_low, acc_high])
    cursor = _fetch_next(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, cursor, steps, row_tiles,
                         byte_blocks, BLOCK_M, BLOCK_N, BLOCK_B, STAGES, GROUP_N)
    return acc_low, acc_high, acc_sums, count, cursor


@gluon.jit
def _product(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ones, ready, signs_low, signs_high, signs_ready,
             signs_free, bias_ptr, new_bias_ptr, M, N, KB, bias_step, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr,
             BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, STAGES: gl.constexpr, GROUP_N: gl.constexpr,
             LAST_PAST_K: gl.constexpr):
    """Each tile's ``grad_y[:, rows].T @ x[:, columns]`` (``[BLOCK_N, 5 BLOCK_B]`` fp32 in registers),
    handed over as signs regrouped into digit planes: ``signs_low [BLOCK_N, 4 BLOCK_B]`` (digits
    0..3), ``signs_high``. With ``HAS_BIAS`` the tiles of one byte block also sum ``grad_y``'s columns and
    step the bias of their rows: with ``LAST_PAST_K`` (``triton_wgmma.last_block_past_k``) the last block's,
    in place of their product past ``K``, else the first block's by one more product."""
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    steps = gl.cdiv(M, BLOCK_M)
    first_n, first_b = tile_at(gl.program_id(0), row_tiles, byte_blocks, GROUP_N)
    cursor = (0, gl.program_id(0), 0, first_n, first_b)
    for _slot in gl.static_range(STAGES):  # the ring starts full
        cursor = _fetch_next(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, cursor, steps, row_tiles,
                             byte_blocks, BLOCK_M, BLOCK_N, BLOCK_B, STAGES, GROUP_N)
    count = 0
    handoffs = 0
    sums_block = 0
    if LAST_PAST_K:
        sums_block = byte_blocks - 1
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        if HAS_BIAS and pid_b == sums_block:  # without a bias, a compile-time False: one step loop
            acc_low, acc_high, acc_sums, count, cursor = _accumulate(
                g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ones, ready, count, cursor, steps, row_tiles,
                byte_blocks, BLOCK_M, BLOCK_N, BLOCK_B, STAGES, GROUP_N, True, LAST_PAST_K)
            step_tile_bias(acc_sums, bias_ptr, new_bias_ptr, N, pid_n * BLOCK_N, bias_step)
        else:
            acc_low, acc_high, _, count, cursor = _accumulate(
                g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ones, ready, count, cursor, steps, row_tiles,
                byte_blocks, BLOCK_M, BLOCK_N, BLOCK_B, STAGES, GROUP_N, False, False)
        hand_over_signs(acc_low, acc_high, signs_low, signs_high, signs_ready, signs_free, handoffs)
        handoffs += 1


@gluon.jit
def _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, n0, jb, group0, N, K, KB, NG, stride_pn, stride_tn, stride_en,
               BYTES_PER_GROUP: gl.constexpr, BLOCK_B: gl.constexpr, RULE_ROWS: gl.constexpr, PAIRS: gl.constexpr):
    """The state of rows ``n0 .. n0 + RULE_ROWS`` of a tile whose byte block has bytes
    ``jb [BLOCK_B]`` and groups ``group0 ..``: packed bytes ``[RULE_ROWS, BLOCK_B]`` (int32), the
    five ``T_accum`` digit tiles and the exponents with their offsets and mask."""
    rows = gl.expand_dims(n0 + gl.arange(0, RULE_ROWS, layout=gl.SliceLayout(1, PAIRS)), 1)
    byte = gl.load(p_ptr + rows.to(gl.int64) * stride_pn + gl.expand_dims(jb, 0),
                   mask=(rows < N) & gl.expand_dims(jb < KB, 0), other=121).to(gl.int32)
    a0, a1, a2, a3, a4 = load_accumulator_pairs(ta_ptr, rows, gl.expand_dims(5 * jb, 0), N, K, stride_tn, PAIRS)
    e, e_acc, e_at, e_mask = load_tile_exponents(e_ptr, ea_ptr, n0, group0, N, NG, stride_en, RULE_ROWS,
                                                 BLOCK_B // BYTES_PER_GROUP, PAIRS, BYTES_PER_GROUP)
    return byte, a0, a1, a2, a3, a4, e, e_acc, e_at, e_mask


@gluon.jit
def _rule(signs_low, signs_high, signs_ready, signs_free, p_ptr, ta_ptr, e_ptr, ea_ptr, new_p_ptr, new_ta_ptr,
          new_e_ptr, new_ea_ptr, N, K, KB, NG, stride_pn, stride_tn, stride_en, theta_t, theta_e, e_min, e_max,
          BYTES_PER_GROUP: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr, RULE_ROWS: gl.constexpr,
          GROUP_N: gl.constexpr):
    """The rule on each handed-over tile, ``RULE_ROWS`` rows at a time (the bias is the product
    warps'). Each part's state is loaded while the part before it votes (the first part's while
    the product runs), since the stores keep the compiler from moving the loads up itself."""
    WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert((32 % (BLOCK_B // 2) == 0) & (RULE_ROWS % (WARPS * 64 // BLOCK_B) == 0),
                     "a pass is whole rows of byte pairs, one pair per lane")
    PAIRS: gl.constexpr = gl.BlockedLayout([1, 2], [32 // (BLOCK_B // 2), BLOCK_B // 2], [WARPS, 1], [1, 0])
    PARTS: gl.constexpr = BLOCK_N // RULE_ROWS
    row_tiles = gl.cdiv(N, BLOCK_N)
    byte_blocks = gl.cdiv(KB, BLOCK_B)
    handoffs = 0
    for tile in range(gl.program_id(0), row_tiles * byte_blocks, gl.num_programs(0)):
        pid_n, pid_b = tile_at(tile, row_tiles, byte_blocks, GROUP_N)
        jb = pid_b * BLOCK_B + gl.arange(0, BLOCK_B, layout=gl.SliceLayout(0, PAIRS))
        group0 = pid_b * (BLOCK_B // BYTES_PER_GROUP)
        state = _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, pid_n * BLOCK_N, jb, group0, N, K, KB, NG, stride_pn,
                           stride_tn, stride_en, BYTES_PER_GROUP, BLOCK_B, RULE_ROWS, PAIRS)
        mbarrier.wait(signs_ready, handoffs & 1)
        for part in gl.static_range(PARTS):
            n0 = pid_n * BLOCK_N + part * RULE_ROWS
            byte, a0, a1, a2, a3, a4, e, e_acc, e_at, e_mask = state
            if part + 1 < PARTS:
                state = _load_part(p_ptr, ta_ptr, e_ptr, ea_ptr, n0 + RULE_ROWS, jb, group0, N, K, KB, NG, stride_pn,
                                   stride_tn, stride_en, BYTES_PER_GROUP, BLOCK_B, RULE_ROWS, PAIRS)
            rows = gl.expand_dims(n0 + gl.arange(0, RULE_ROWS, layout=gl.SliceLayout(1, PAIRS)), 1)
            low = signs_low.slice(part * RULE_ROWS, RULE_ROWS, dim=0)
            new_byte, a0, a1, a2, a3, a4, score = vote_bytes(
                low.slice(0, BLOCK_B, dim=1).load(PAIRS), low.slice(BLOCK_B, BLOCK_B, dim=1).load(PAIRS),
                low.slice(2 * BLOCK_B, BLOCK_B, dim=1).load(PAIRS), low.slice(3 * BLOCK_B, BLOCK_B, dim=1).load(PAIRS),
                signs_high.slice(part * RULE_ROWS, RULE_ROWS, dim=0).load(PAIRS), byte, a0, a1, a2, a3, a4, 5 * jb,
                K, theta_t)
            gl.store(new_p_ptr + rows.to(gl.int64) * stride_pn + gl.expand_dims(jb, 0), new_byte.to(gl.uint8),
                     mask=(rows < N) & gl.expand_dims(jb < KB, 0))
            store_accumulator_pairs(new_ta_ptr, rows, gl.expand_dims(5 * jb, 0), N, K, stride_tn, a0, a1, a2, a3, a4)
            step_tile_exponents(score, e, e_acc, e_at, e_mask, new_e_ptr, new_ea_ptr, theta_e, e_min, e_max,
                                BYTES_PER_GROUP)
        mbarrier.arrive(signs_free)
        handoffs += 1


@gluon.jit
def _ws_vote_kernel(
    g_desc, xl_desc, xh_desc, p_ptr, ta_ptr, e_ptr, ea_ptr, bias_ptr,
    new_p_ptr, new_ta_ptr, new_e_ptr, new_ea_ptr, new_bias_ptr,
    M, N, K, KB, NG, stride_pn, stride_tn, stride_en,
    theta_t, theta_e, e_min, e_max, bias_step,
    BYTES_PER_GROUP: gl.constexpr, HAS_BIAS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    BLOCK_B: gl.constexpr, STAGES: gl.constexpr, GROUP_N: gl.constexpr, RULE_ROWS: gl.constexpr,
    PRODUCT_REGISTERS: gl.constexpr, LAST_PAST_K: gl.constexpr,
):
    """Shared memory and barriers of one persistent program, then the two partitions (module
    docstring). ``grad_y [M, N]`` is read by ``g_desc`` (``[BLOCK_M, BLOCK_N]`` boxes), ``x [M, K]``
    by ``xl_desc`` / ``xh_desc`` (``[BLOCK_M, 4 BLOCK_B]`` / ``[BLOCK_M, BLOCK_B]`` boxes); the state
    tensors and their new copies by pointer with the given row strides. ``ones`` is the right
    operand of the bias's column sums (filled, unused without a bias)."""
    # ones is written by these warps; the fence below and the barrier entering the partitions order its
    # stores before the product warps' wgmma reads them
    g_tiles, xl_tiles, xh_tiles, ones, signs_low, signs_high = allocate_ring_and_signs(
        g_desc, xl_desc, xh_desc, STAGES, BLOCK_M, BLOCK_N, BLOCK_B)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    signs_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    signs_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for each in gl.static_range(STAGES):
        mbarrier.init(ready.index(each), count=1)
    mbarrier.init(signs_ready, count=1)
    mbarrier.init(signs_free, count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_rule, (signs_low, signs_high, signs_ready, signs_free, p_ptr, ta_ptr, e_ptr, ea_ptr, new_p_ptr, new_ta_ptr,
                 new_e_ptr, new_ea_ptr, N, K, KB, NG, stride_pn, stride_tn, stride_en, theta_t, theta_e, e_min,
                 e_max, BYTES_PER_GROUP, BLOCK_N, BLOCK_B, RULE_ROWS, GROUP_N)),
        (_product, (g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ones.permute((1, 0)), ready, signs_low,
                    signs_high, signs_ready, signs_free, bias_ptr, new_bias_ptr, M, N, KB, bias_step, HAS_BIAS, BLOCK_M,
                    BLOCK_N, BLOCK_B, STAGES, GROUP_N, LAST_PAST_K)),
    ], [BLOCK_N // 16], [PRODUCT_REGISTERS])


def ws_update(T_packed, E, E_accum, T_accum, bias, x, grad_y, new: UpdatedTensors, *, in_features: int,
              group_size: int, theta_t: int, theta_e: int, e_min: int, e_max: int, bias_step: int) -> UpdatedTensors:
    """Write the update of one checked layer (``n > 0``) into ``new`` and return it; the caller has
    checked ``triton_wgmma.takes``. One program per SM (fewer for fewer tiles)."""
    n, kb = T_packed.shape
    block_m, block_n, block_b, stages, warps = WS_UPDATE_TILE
    grad_y, descriptors, programs, bias_in, bias_out = launch_operands(  # grad_y: alive till the launch
        T_packed, E, E_accum, T_accum, bias, x, grad_y, new, group_size, block_m, block_n, block_b)
    _ws_vote_kernel[(programs,)](
        *descriptors, T_packed, T_accum, E, E_accum, bias_in, new.T_packed, new.T_accum, new.E, new.E_accum, bias_out,
        x.shape[0], n, in_features, kb, E.shape[1], T_packed.stride(0), T_accum.stride(0),
        E.stride(0), theta_t, theta_e, e_min, e_max, bias_step,
        BYTES_PER_GROUP=group_size // 5, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_B=block_b, STAGES=stages, GROUP_N=GROUP_N, RULE_ROWS=WS_RULE_ROWS,
        PRODUCT_REGISTERS=WS_PRODUCT_REGISTERS, LAST_PAST_K=last_block_past_k(in_features, block_b),
        num_warps=warps)
    return new
