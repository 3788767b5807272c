"""The two-step forward and grad-x with their decode inside the GEMM: one persistent warp-specialised kernel
decodes the layer into the transient bf16 buffer and multiplies it as it is written (a Gluon kernel with inline
PTX: compiled sm_90 GPUs only, never under ``TRITON_INTERPRET``).

``y [M, N] = x [M, K] @ W.T (+ bias * 2^-B)`` for bf16 ``x``, or ``grad_x [M, K] = grad_y [M, N] @ W``, with
``W = T * 2^E`` decoded into ``w [N, Kp]`` (the run decode's column order, ``triton_run_decode``; rows of whole
runs rounded up to whole 128-byte lines). Every program (one per SM) has four partitions:

- two consumer warpgroups, each multiplying 64 rows of a ``128 x 256`` output tile by ``wgmma`` from a ring
  of shared-memory slots, and storing its half of the tile through shared memory by TMA;
- a loader warp that fills the ring by TMA: ``x`` (or ``grad_y``) boxes ``[128, 64]``, ``w`` boxes ``[256, 64]``
  (forward, read K-major) or ``[64, 256]`` (grad-x, the right operand MN-major);
- two decoder warps (one partition each) that write ``w`` in units of ``UNIT_ROWS`` rows by ``CHUNK_RUNS`` runs
  of eight bytes (forty columns), one run of one row per lane (``32 / CHUNK_RUNS`` rows at a time), the decode of
  ``triton_run_decode`` (its ``run_operands``) with stores from registers: neighbouring lanes swap halves so each
  of their 16-byte stores completes a 32-byte sector (``RUN_COLUMNS_ASM``).

A *chunk* ``(j, c)`` is rows ``256 j ..`` (a row block) by runs ``CHUNK_RUNS c ..`` of ``w``:
``flags[j * CHUNKS + c]`` counts its decoded units. A decoder publishes a unit with a proxy fence (its
generic-proxy stores become visible to TMA), a ``gpu``-scope fence, a warp barrier and ``red.release`` adds to
the chunk's flag and to the count of units done. The loader, before its first box from a chunk, spins on the
flag with volatile loads, then fences (acquire, proxy); a tile that begins once every unit is done waits for
nothing. Units are claimed from a counter in the order the tiles first need them (:func:`unit_order`), so
decoders that run at all decode every unit: no program waits on a program that is not resident.

The first round of output tiles needs its first chunks at once, faster than the decoders deliver; ``PRE`` of
them (forward: the first chunks of its row blocks; grad-x: the first row blocks of its chunks) are decoded by the
full-card run decode just before the kernel, and the loader does not wait for them. That launch also zeroes the
flags, the claim counter and the count of units done (``triton_run_decode.launch``'s ``clear``).
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.kept_tensors import kept
from ternary.kernels.layer_checks import check_layer_tensors
from ternary.kernels.linear import triton_run_decode
from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM
from ternary.kernels.linear.triton_launch import capability, round_up, sm_count, tma_rows

BLOCK_M, BLOCK_N, BLOCK_K, STAGES = 128, 256, 64, 3
# (CHUNK_RUNS, UNIT_ROWS, PRE): PRE is the chunks of the first round's row blocks decoded before the kernel.
# H200, same process, in turns (benchmarks/results/h200/twenty_seventh/probes/decode_gemm_configs.log,
# decode_gemm_m.log): chunks of 32 runs (1280 columns) in 16-row units were the fastest or within the
# run-to-run spread of it at M = 2048-8192; chunks of 8 runs were 2-10% slower (four rows a step: 64-byte
# pieces of rows); two pre-decoded chunks gained up to 8% over one at M = 2048, 4096^2. Four over two
# (twenty_ninth/probes/): +0.4-2.2% at M = 2048 in a same-process A/B, -1.8% to +2.0% in another, and a benchmark
# run with four within the spread of two runs with two; so two stays.
DECODE_GEMM_CONFIG = (32, 16, 2)
# Grad-x: the same units; PRE is the 256-row blocks decoded before the kernel.
DECODE_GEMM_GRAD_X_CONFIG = (32, 16, 1)
# Decoder warps, one partition each: with the loader and the two consumer warpgroups, 11 of the 12 warps
# ptxas allows the 64 x 256 products' registers.
DECODERS = 2
# Registers per thread: consumer warpgroups, loader, decoders. ptxas gives the 64 x 256 products 168 only
# with at most 12 warps in all.
REGISTERS = (168, 24, 96)

_ASM = gl.constexpr(RUN_COLUMNS_ASM)
_CONSTRAINTS = gl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))
_CLAIM = gl.constexpr(
    "{ .reg .pred p; .reg .u32 l, v;\n"
    "mov.u32 v, 0;\n"
    "mov.u32 l, %laneid;\n"
    "setp.eq.u32 p, l, 0;\n"
    "@p atom.global.add.u32 v, [$1], 1;\n"
    "shfl.sync.idx.b32 $0, v, 0, 0x1f, 0xffffffff; }")
_RELEASE = gl.constexpr(
    "{ .reg .pred p; .reg .u32 l;\n"
    "fence.proxy.async.global;\n"
    "fence.acq_rel.gpu;\n"
    "bar.warp.sync 0xffffffff;\n"
    "mov.u32 l, %laneid;\n"
    "setp.eq.u32 p, l, 0;\n"
    "@p red.release.gpu.global.add.u32 [$1], 1;\n"
    "@p red.release.gpu.global.add.u32 [$2], 1;\n"
    "mov.u32 $0, 0; }")
_ACQUIRE = gl.constexpr("fence.acq_rel.gpu;\nfence.proxy.async.global;\nmov.u32 $0, $1;")


@gluon.jit
def _claim(counter_ptr, LANES: gl.constexpr):
    """The next unit index for this warp (lane 0 adds one to the counter; a scalar)."""
    pointers = counter_ptr + gl.full([32], 0, gl.int32, LANES)
    claimed = gl.inline_asm_elementwise(_CLAIM, "=r,l", [pointers], dtype=gl.int32, is_pure=False, pack=1)
    return gl.max(claimed, axis=0)


@gluon.jit
def _quad(a, b, c, d, QUADS: gl.constexpr):
    """``[32, 4]`` of four ``[32]`` word tensors in that order along the last axis (``triton_run_decode.quad``), in
    layout ``QUADS``."""
    return gl.convert_layout(triton_run_decode.quad(a, b, c, d), QUADS)


@gluon.jit
def _decode_rows(t_ptr, e_ptr, w_ptr, rn, runs, parity, N, KB, NG, RUNS, stride_pn, stride_en, stride_w16,
                 BYTES_PER_GROUP: gl.constexpr, ONE_SCALE_PER_RUN: gl.constexpr, QUADS: gl.constexpr):
    """Run ``runs [32]`` of row ``rn [32]`` per lane into ``w`` (int32 words, row stride ``4 stride_w16``);
    lanes ``2 i, 2 i + 1`` hold the two runs of a 160-byte pair and each of their five stores writes one
    whole 32-byte sector (``RUN_COLUMNS_ASM``'s lane pairs; the operands are the run decode's)."""
    row_ok = rn < N
    operands = triton_run_decode.run_operands(t_ptr, e_ptr, gl.minimum(rn, N - 1), runs, row_ok, KB, NG, stride_pn,
                                              stride_en, BYTES_PER_GROUP, ONE_SCALE_PER_RUN)
    words = gl.inline_asm_elementwise(_ASM, _CONSTRAINTS, operands + (parity, ),
                                      dtype=(gl.int32, ) * 20, is_pure=False, pack=1)
    own = row_ok & (runs < RUNS)
    partner = row_ok & ((runs ^ 1) < RUNS)
    ROWS: gl.constexpr = gl.SliceLayout(1, QUADS)
    four = gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, QUADS)), 0)
    first_two = gl.expand_dims(gl.convert_layout(gl.where(parity == 0, own, partner), ROWS), 1) & (four >= 0)
    last_two = gl.expand_dims(gl.convert_layout(gl.where(parity == 0, partner, own), ROWS), 1) & (four >= 0)
    own_quads = gl.expand_dims(gl.convert_layout(own, ROWS), 1) & (four >= 0)
    base = rn.to(gl.int64) * (stride_w16 * 4) + 20 * (runs - parity) + 4 * parity
    out = w_ptr + gl.expand_dims(gl.convert_layout(base, ROWS), 1) + four
    gl.store(out, _quad(words[0], words[1], words[2], words[3], QUADS), mask=first_two)
    gl.store(out + 8, _quad(words[4], words[5], words[6], words[7], QUADS), mask=first_two)
    gl.store(out + 16, _quad(words[8], words[9], words[10], words[11], QUADS), mask=own_quads)
    gl.store(out + 24, _quad(words[12], words[13], words[14], words[15], QUADS), mask=last_two)
    gl.store(out + 32, _quad(words[16], words[17], words[18], words[19], QUADS), mask=last_two)


@gluon.jit
def _decode(t_ptr, e_ptr, w_ptr, flags_ptr, counter_ptr, done_ptr, order_ptr, N, KB, NG, RUNS, stride_pn, stride_en,
            stride_w16, UNITS, CHUNKS, BYTES_PER_GROUP: gl.constexpr, ONE_SCALE_PER_RUN: gl.constexpr,
            BN: gl.constexpr, UNIT_ROWS: gl.constexpr, CHUNK_RUNS: gl.constexpr):
    """One decoder warp: claims units ``order[k]`` until none is left; unit ``(j * CHUNKS + c) * PIECES + q``
    is rows ``j BN + q UNIT_ROWS ..`` (``UNIT_ROWS``) by runs ``c CHUNK_RUNS ..`` (``CHUNK_RUNS``) of ``w``,
    ``32 / CHUNK_RUNS`` rows a step; its end adds one to ``flags[j * CHUNKS + c]`` and to the count of units
    done."""
    PIECES: gl.constexpr = BN // UNIT_ROWS
    ROWS_PER_STEP: gl.constexpr = 32 // CHUNK_RUNS
    LANES: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    QUADS: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [1, 1], [1, 0])
    lane = gl.arange(0, 32, layout=LANES)
    parity = lane % 2
    k = _claim(counter_ptr, LANES)
    while k < UNITS:
        unit = gl.load(order_ptr + k)
        chunk = unit // PIECES
        row0 = (chunk // CHUNKS) * BN + (unit % PIECES) * UNIT_ROWS + lane // CHUNK_RUNS
        runs = (chunk % CHUNKS) * CHUNK_RUNS + lane % CHUNK_RUNS
        for step in range(UNIT_ROWS // ROWS_PER_STEP):
            _decode_rows(t_ptr, e_ptr, w_ptr, row0 + step * ROWS_PER_STEP, runs, parity, N, KB, NG, RUNS,
                         stride_pn, stride_en, stride_w16, BYTES_PER_GROUP, ONE_SCALE_PER_RUN, QUADS)
        zero = gl.full([32], 0, gl.int32, LANES)
        gl.inline_asm_elementwise(_RELEASE, "=r,l,l", [flags_ptr + chunk + zero, done_ptr + zero], dtype=gl.int32,
                                  is_pure=False, pack=1)
        k = _claim(counter_ptr, LANES)


@gluon.jit
def _wait(flag, count, LANES: gl.constexpr):
    """Spin until ``flag`` reaches ``count``, then acquire (the decoders' stores, for the TMA proxy too)."""
    v = gl.load(flag, volatile=True)
    while v < count:
        v = gl.load(flag, volatile=True)
    gl.inline_asm_elementwise(_ACQUIRE, "=r,r", [gl.full([32], 0, gl.int32, LANES) + v], dtype=gl.int32,
                              is_pure=False, pack=1)


@gluon.jit
def _load(x_desc, w_desc, x_tiles, w_tiles, ready, free, flags_ptr, done_ptr, UNITS, tiles, m_tiles, k_steps,
          CHUNKS, PRE_TILES, PRE_CHUNKS, PIECES: gl.constexpr, CHUNK_COLUMNS: gl.constexpr, GRAD_X: gl.constexpr,
          STAGES: gl.constexpr):
    """The loader warp: each step's two boxes into the ring once both consumers freed the slot. Before the first
    box from a chunk ``(j, c)`` of ``w`` (row block ``j`` of ``BN`` rows, ``CHUNK_COLUMNS`` columns ``c``) it waits
    for the chunk's flag, unless the chunk was decoded before the kernel (``j < PRE_TILES`` and ``c <
    PRE_CHUNKS``) or every unit was done when the tile began. Forward: tile ``t`` reads row block ``t //
    m_tiles`` along ``K``; grad-x: columns ``(t // m_tiles) BN ..`` along ``N``, a row block every ``BN / BK``
    steps."""
    BM: gl.constexpr = x_desc.block_type.shape[0]
    BK: gl.constexpr = x_desc.block_type.shape[1]
    BN: gl.constexpr = w_desc.block_type.shape[1 if GRAD_X else 0]
    STEPS_PER_CHUNK: gl.constexpr = CHUNK_COLUMNS // BK
    STEPS_PER_BLOCK: gl.constexpr = BN // BK
    LANES: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    count = 0
    for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
        q = t // m_tiles
        m = t % m_tiles
        done = gl.load(done_ptr, volatile=True)
        pending = done < UNITS
        if done >= UNITS:
            _wait(done_ptr, UNITS, LANES)
        for s in range(k_steps):
            if GRAD_X:
                j = s // STEPS_PER_BLOCK
                c = (q * BN) // CHUNK_COLUMNS
                first = s % STEPS_PER_BLOCK == 0
            else:
                j = q
                c = s // STEPS_PER_CHUNK
                first = s % STEPS_PER_CHUNK == 0
            if first & pending & ((j >= PRE_TILES) | (c >= PRE_CHUNKS)):
                _wait(flags_ptr + j * CHUNKS + c, PIECES, LANES)
            slot = count % STAGES
            mbarrier.wait(free.index(slot), ((count // STAGES) & 1) ^ 1)
            bar = ready.index(slot)
            mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(x_desc, [m * BM, s * BK], bar, x_tiles.index(slot))
            if GRAD_X:
                tma.async_copy_global_to_shared(w_desc, [s * BK, q * BN], bar, w_tiles.index(slot))
            else:
                tma.async_copy_global_to_shared(w_desc, [q * BN, s * BK], bar, w_tiles.index(slot))
            count += 1


@gluon.jit
def _consume(x_tiles, w_tiles, ready, free, y_desc, out_tile, bias_ptr, N, stride_b, bias_scale, tiles, m_tiles,
             k_steps, HALF_INDEX: gl.constexpr, HAS_BIAS: gl.constexpr, GRAD_X: gl.constexpr, STAGES: gl.constexpr):
    """One consumer warpgroup: rows ``HALF_INDEX * BM / 2 ..`` of each output tile, accumulated in fp32 from
    the bias (so that its 64 columns per thread are live only where the accumulator is built), rounded to bf16
    once and stored by TMA through ``out_tile``."""
    BM: gl.constexpr = x_tiles.shape[1]
    HALF: gl.constexpr = BM // 2
    BN: gl.constexpr = w_tiles.shape[2 if GRAD_X else 1]
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 16])
    count = 0
    for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
        j = t // m_tiles
        m = t % m_tiles
        acc = gl.zeros([HALF, BN], gl.float32, ACC)
        if HAS_BIAS:
            cols = j * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, ACC))
            bias = gl.load(bias_ptr + cols * stride_b, mask=cols < N, other=0).to(gl.float32) * bias_scale
            acc = acc + gl.expand_dims(bias, 0)
        for s in range(k_steps):
            slot = count % STAGES
            mbarrier.wait(ready.index(slot), (count // STAGES) & 1)
            if GRAD_X:
                b = w_tiles.index(slot)
            else:
                b = w_tiles.index(slot).permute((1, 0))
            acc = warpgroup_mma(x_tiles.index(slot).slice(HALF * HALF_INDEX, HALF, dim=0), b, acc, is_async=True)
            acc = warpgroup_mma_wait(1, deps=[acc])
            mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), count=1, pred=s > 0)
            count += 1
        acc = warpgroup_mma_wait(0, deps=[acc])
        mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), count=1)
        tma.store_wait(0)
        out_tile.store(acc.to(gl.bfloat16))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [m * BM + HALF * HALF_INDEX, j * BN], out_tile)
    tma.store_wait(0)


@gluon.jit
def _decode_gemm_kernel(x_desc, w_desc, y_desc, t_ptr, e_ptr, w_ptr, flags_ptr, counter_ptr, done_ptr, order_ptr,
                        bias_ptr,
                        N, KB, NG, RUNS, stride_pn, stride_en, stride_w16, stride_b, bias_scale, UNITS, CHUNKS,
                        PRE_TILES, PRE_CHUNKS, tiles, m_tiles, k_steps, BYTES_PER_GROUP: gl.constexpr,
                        ONE_SCALE_PER_RUN: gl.constexpr, HAS_BIAS: gl.constexpr, GRAD_X: gl.constexpr,
                        STAGES: gl.constexpr,
                        UNIT_ROWS: gl.constexpr, CHUNK_RUNS: gl.constexpr, DECODERS: gl.constexpr,
                        CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr, DECODER_REGS: gl.constexpr):
    BM: gl.constexpr = x_desc.block_type.shape[0]
    BK: gl.constexpr = x_desc.block_type.shape[1]
    BN: gl.constexpr = w_desc.block_type.shape[1 if GRAD_X else 0]
    W_ROWS: gl.constexpr = BK if GRAD_X else BN
    W_COLUMNS: gl.constexpr = BN if GRAD_X else BK
    x_tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BM, BK], x_desc.layout)
    w_tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES, W_ROWS, W_COLUMNS], w_desc.layout)
    out_low = gl.allocate_shared_memory(gl.bfloat16, [BM // 2, BN], y_desc.layout)
    out_high = gl.allocate_shared_memory(gl.bfloat16, [BM // 2, BN], y_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for each in gl.static_range(STAGES):
        mbarrier.init(ready.index(each), count=1)
        mbarrier.init(free.index(each), count=2)
    fence_async_shared()
    decode = (t_ptr, e_ptr, w_ptr, flags_ptr, counter_ptr, done_ptr, order_ptr, N, KB, NG, RUNS, stride_pn, stride_en,
              stride_w16, UNITS, CHUNKS, BYTES_PER_GROUP, ONE_SCALE_PER_RUN, BN, UNIT_ROWS, CHUNK_RUNS)
    gl.static_assert(DECODERS == 2, "two decoder warps")
    gl.warp_specialize([
        (_consume, (x_tiles, w_tiles, ready, free, y_desc, out_low, bias_ptr, N, stride_b, bias_scale, tiles,
                    m_tiles, k_steps, 0, HAS_BIAS, GRAD_X, STAGES)),
        (_consume, (x_tiles, w_tiles, ready, free, y_desc, out_high, bias_ptr, N, stride_b, bias_scale, tiles,
                    m_tiles, k_steps, 1, HAS_BIAS, GRAD_X, STAGES)),
        (_load, (x_desc, w_desc, x_tiles, w_tiles, ready, free, flags_ptr, done_ptr, UNITS, tiles, m_tiles, k_steps,
                 CHUNKS, PRE_TILES, PRE_CHUNKS, BN // UNIT_ROWS, CHUNK_RUNS * 40, GRAD_X, STAGES)),
        (_decode, decode), (_decode, decode)],
        [4, 1, 1, 1], [CONSUMER_REGS, LOADER_REGS, DECODER_REGS, DECODER_REGS])


@functools.cache
def _shared_layout(rows: int, cols: int):
    return gl.NVMMASharedLayout.get_default_for([rows, cols], gl.bfloat16)


def unit_order(row_blocks: int, chunks: int, m_tiles: int, programs: int, pieces: int, pre_tiles: int,
               pre_chunks: int, tiles_per_chunk: int, device: torch.device) -> torch.Tensor:
    """Unit ids ``(j * chunks + c) * pieces + q`` (int32 on ``device``) in the order the output tiles first need
    chunk ``c`` of row block ``j``, without the chunks decoded before the kernel (``c < pre_chunks`` of ``j <
    pre_tiles``); built by device operations only, so that a CUDA graph can capture it.

    Forward (``tiles_per_chunk = 0``): the tiles of output row block ``j`` read row block ``j`` of ``w`` chunk by
    chunk, so the order is the round of ``j``'s first tile, then ``c``. Grad-x: the output column tiles ``c *
    tiles_per_chunk ..`` read chunk ``c`` row block by row block, so it is the round of the first of them, then
    ``j``."""
    j = torch.arange(row_blocks, device=device).repeat_interleave(chunks)
    c = torch.arange(chunks, device=device).repeat(row_blocks)
    if tiles_per_chunk:
        key = ((c * tiles_per_chunk * m_tiles) // programs * row_blocks + j) * chunks + c
    else:
        key = ((j * m_tiles) // programs * chunks + c) * row_blocks + j
    before = (j < pre_tiles) & (c < pre_chunks)
    key = torch.where(before, key + key.max() + 1, key)  # keys are distinct: pre-decoded ones sort last
    left = row_blocks * chunks - min(pre_tiles, row_blocks) * min(pre_chunks, chunks)
    pairs = torch.argsort(key)[:left]
    return (pairs[:, None] * pieces + torch.arange(pieces, device=device)).flatten().to(torch.int32)


# Unit orders kept per geometry: at most one per layer shape, direction and row tile count (``DECODE_GEMM_ROWS``
# spans 33), at most ``4 * 16 * K / 40`` bytes each.
_ORDERS: dict[tuple, torch.Tensor] = {}


def _unit_order_for_call(geometry: tuple, device: torch.device) -> torch.Tensor:
    """:func:`unit_order` of ``geometry`` (its arguments before ``device``), kept per geometry and device
    (``kept_tensors.kept``: a call after the first, captured or not, launches nothing to build it; inside a CUDA
    graph capture an order not yet kept is built into the graph)."""
    return kept(_ORDERS, (*geometry, device), device, lambda: unit_order(*geometry, device))


def output_tiles(m: int, n: int) -> int:
    """Output tiles ``[BLOCK_M, BLOCK_N]`` of an ``[m, n]`` product."""
    return triton.cdiv(m, BLOCK_M) * triton.cdiv(n, BLOCK_N)


def takes(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel can take the call: at least one row of bf16 activations (or ``grad_y``) on a compiled
    sm_90 card (``wgmma``) with the layer, a layer the run decode takes (``G`` a multiple of 20), and ``T_packed``
    and ``E`` rows with unit column stride."""
    return (x.dtype == torch.bfloat16 and x.shape[0] > 0
            and triton_run_decode.takes(T_packed, group_size, torch.bfloat16) and x.is_cuda
            and x.device == T_packed.device == E.device and capability(x.device)[0] == 9
            and T_packed.stride(1) == 1 and E.stride(1) == 1)


def check_config(config: tuple[int, int, int], grad_x: bool = False) -> None:
    """``(CHUNK_RUNS, UNIT_ROWS, PRE)``: chunks of whole runs per lane and of whole steps (grad-x: whole output
    tiles), units of whole row steps in whole row blocks, ``PRE >= 0``."""
    chunk_runs, unit_rows, pre = config
    columns = triton_run_decode.RUN_COLUMNS * chunk_runs
    fits = (chunk_runs in (1, 2, 4, 8, 16, 32) and columns % (BLOCK_N if grad_x else BLOCK_K) == 0
            and unit_rows > 0 and BLOCK_N % unit_rows == 0 and unit_rows % (32 // chunk_runs) == 0
            and pre >= 0)
    if not fits:
        raise ValueError(f"triton_decode_gemm: {'grad-x ' if grad_x else ''}config {config} needs CHUNK_RUNS "
                         f"dividing 32 with chunks of whole {BLOCK_N if grad_x else BLOCK_K}-column "
                         f"{'tiles' if grad_x else 'steps'}, UNIT_ROWS dividing {BLOCK_N} in whole steps of "
                         "32 / CHUNK_RUNS rows and PRE >= 0")


def _launch(a: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None, *,
            out_columns: int, group_size: int, bias_frac_bits: int, config: tuple[int, int, int],
            grad_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``a [M, R] @ w.T`` (forward, ``R = K``) or ``a [M, R] @ w`` (grad-x, ``R = N``) into ``[M, out_columns]``
    bf16, with the buffer ``w [N, Kp]`` (columns past ``40 * ceil(KB / 8)`` unwritten).

    Decoded before the kernel: forward, the first ``PRE`` chunks of the row blocks the first round of tiles
    reads; grad-x, the first ``PRE`` row blocks of the chunks it reads."""
    check_config(config, grad_x)
    if not takes(a, T_packed, E, group_size):
        raise ValueError(f"triton_decode_gemm: takes bf16 {'grad_y' if grad_x else 'x'} with rows on a compiled sm_90 "
                         f"card with the layer, G a multiple of 20 and T_packed / E rows with unit column stride; got "
                         f"{a.dtype} {list(a.shape)} on {a.device}, T_packed on {T_packed.device}, E on {E.device}, "
                         f"G={group_size}, T_packed strides {T_packed.stride()}, E strides {E.stride()}")
    chunk_runs, unit_rows, pre = config
    m = a.shape[0]
    n, kb = T_packed.shape
    a = tma_rows(a)
    runs = triton.cdiv(kb, triton_run_decode.RUN_BYTES)
    width = triton_run_decode.RUN_COLUMNS * runs
    w = torch.empty((n, round_up(width, triton_run_decode.ROW_ALIGN)), dtype=torch.bfloat16, device=a.device)
    chunks = triton.cdiv(runs, chunk_runs)
    row_blocks, m_tiles, tiles = triton.cdiv(n, BLOCK_N), triton.cdiv(m, BLOCK_M), output_tiles(m, out_columns)
    programs = min(sm_count(a.device), tiles)
    first_round = triton.cdiv(programs, m_tiles)  # output row blocks (forward) or column tiles (grad-x)
    tiles_per_chunk = triton_run_decode.RUN_COLUMNS * chunk_runs // BLOCK_N if grad_x else 0
    if grad_x:
        pre_tiles, pre_chunks = min(pre, row_blocks), min(chunks, triton.cdiv(first_round, tiles_per_chunk))
    else:
        pre_tiles, pre_chunks = min(row_blocks, first_round), min(pre, chunks)
    flags = torch.empty(row_blocks * chunks + 2, dtype=torch.int32, device=a.device)  # + claims, units done
    if pre_tiles and pre_chunks:  # the pre-decode also zeroes the flags
        rows, cols = min(n, pre_tiles * BLOCK_N), min(kb, pre_chunks * chunk_runs * triton_run_decode.RUN_BYTES)
        triton_run_decode.launch(T_packed[:rows, :cols], E[:rows, :triton.cdiv(cols, group_size // 5)],
                                 w.view(torch.int32)[:rows], group_size=group_size, clear=flags)
    else:
        pre_tiles = pre_chunks = 0
        flags.zero_()
    order = _unit_order_for_call((row_blocks, chunks, m_tiles, programs, BLOCK_N // unit_rows, pre_tiles, pre_chunks,
                                  tiles_per_chunk), a.device)
    y = torch.empty((m, round_up(out_columns, 8)), dtype=torch.bfloat16, device=a.device)[:, :out_columns]
    a_desc = TensorDescriptor.from_tensor(a, [BLOCK_M, BLOCK_K], _shared_layout(BLOCK_M, BLOCK_K))
    box = [BLOCK_K, BLOCK_N] if grad_x else [BLOCK_N, BLOCK_K]
    w_desc = TensorDescriptor(w, [n, width], [w.stride(0), 1], box, _shared_layout(*box))
    y_desc = TensorDescriptor.from_tensor(y, [BLOCK_M // 2, BLOCK_N], _shared_layout(BLOCK_M // 2, BLOCK_N))
    bytes_per_group = group_size // 5
    _decode_gemm_kernel[(programs, )](
        a_desc, w_desc, y_desc, T_packed, E, w.view(torch.int32), flags, flags[-2:-1], flags[-1:], order,
        bias if bias is not None else flags, n, kb, E.shape[1], runs, T_packed.stride(0), E.stride(0),
        w.stride(0) // 8, bias.stride(0) if bias is not None else 0, 2.0**-bias_frac_bits, order.numel(), chunks,
        pre_tiles, pre_chunks, tiles, m_tiles, triton.cdiv(n if grad_x else width, BLOCK_K),
        BYTES_PER_GROUP=bytes_per_group, ONE_SCALE_PER_RUN=bytes_per_group % triton_run_decode.RUN_BYTES == 0,
        HAS_BIAS=bias is not None, GRAD_X=grad_x, STAGES=STAGES, UNIT_ROWS=unit_rows, CHUNK_RUNS=chunk_runs,
        DECODERS=DECODERS, CONSUMER_REGS=REGISTERS[0], LOADER_REGS=REGISTERS[1], DECODER_REGS=REGISTERS[2],
        num_warps=4)
    return y, w


def forward(x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, bias: torch.Tensor | None, *,
            in_features: int, group_size: int, bias_frac_bits: int, config: tuple[int, int, int] | None = None,
            keep_buffer: bool = False):
    """``y [M, N] = x [M, K] @ W.T + bias [N] * 2^-bias_frac_bits`` in bf16 (a view with row stride ``round_up(N,
    8)``) for a call :func:`takes` accepts. ``config = (CHUNK_RUNS, UNIT_ROWS, PRE)`` overrides
    ``DECODE_GEMM_CONFIG``; ``keep_buffer`` also returns the decoded weights ``W [N, K]`` (a view of the buffer)."""
    check_layer_tensors("triton_decode_gemm forward", in_features=in_features, group_size=group_size,
                        T_packed=T_packed, E=E, bias=bias)
    y, w = _launch(x, T_packed, E, bias, out_columns=T_packed.shape[0], group_size=group_size,
                   bias_frac_bits=bias_frac_bits, config=config or DECODE_GEMM_CONFIG, grad_x=False)
    return (y, w[:, :in_features]) if keep_buffer else y


def grad_x(grad_y: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
           config: tuple[int, int, int] | None = None, keep_buffer: bool = False):
    """``grad_x [M, K] = grad_y [M, N] @ W`` in bf16 for a call :func:`takes` accepts; ``config`` overrides
    ``DECODE_GEMM_GRAD_X_CONFIG``, ``keep_buffer`` as for :func:`forward`."""
    check_layer_tensors("triton_decode_gemm grad_x", in_features=in_features, group_size=group_size,
                        T_packed=T_packed, E=E)
    y, w = _launch(grad_y, T_packed, E, None, out_columns=in_features, group_size=group_size, bias_frac_bits=0,
                   config=config or DECODE_GEMM_GRAD_X_CONFIG, grad_x=True)
    return (y, w[:, :in_features]) if keep_buffer else y
