"""Prototype: the two-step forward with its decode inside a persistent warp-specialised GEMM.

y [M, N] = x [M, K] @ W.T with W = T * 2^E decoded into a transient bf16 buffer w [N, Kp] by a decoder
partition of every program (run decode, 8 bytes -> 40 weights), while two consumer warpgroups multiply
128 x 256 tiles that a loader warp feeds by TMA. A W chunk (256 rows x 1280 columns) becomes readable once
its 16 units (16 rows each) are decoded: flags[j * CHUNKS + c] counts them (release by the decoding warp,
volatile spin + acquire fence + proxy fence by the loader)."""
from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM
from ternary.kernels.linear.triton_launch import round_up, sm_count, tma_rows

TILE_BM, TILE_BN, BK, TILE_STAGES = 128, 256, 64, 3
CHUNK_RUNS = 32  # one run per lane: 256 bytes, 1280 columns, 20 K-steps
UNIT_ROWS = 16
REGS = (168, 24, 96)  # consumer warpgroup 1, loader, decoder
DECODER_WARPS = 2

_ASM = gl.constexpr(RUN_COLUMNS_ASM)
_CONSTRAINTS = gl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))
_RELEASE = gl.constexpr(
    "{ .reg .pred p, q; .reg .u32 l;\n"
    "fence.proxy.async.global;\n"
    "fence.acq_rel.gpu;\n"
    "bar.warp.sync 0xffffffff;\n"
    "mov.u32 l, %laneid;\n"
    "setp.eq.u32 p, l, 0;\n"
    "setp.ne.u32 q, $2, 0;\n"
    "and.pred p, p, q;\n"
    "@p red.release.gpu.global.add.u32 [$1], 1;\n"
    "mov.u32 $0, 0; }")
_ACQUIRE = gl.constexpr("fence.acq_rel.gpu;\nfence.proxy.async.global;\nmov.u32 $0, $1;")


@gluon.jit
def _exp2_bits(e):
    """bf16 bits of 2^e in both 16-bit lanes (int32), subnormals included."""
    e = e.to(gl.int32)
    normal = (e + 127) << 7
    subnormal = gl.full(e.shape, 1, gl.int32, e.type.layout) << gl.minimum(gl.maximum(e + 133, 0), 6)
    return (gl.where(e >= -126, normal, subnormal) & 0xFFFF) * 0x10001


@gluon.jit
def _quad(a, b, c, d, Q: gl.constexpr):
    return gl.convert_layout(gl.reshape(gl.join(gl.join(a, c), gl.join(b, d)), [a.shape[0], 4]), Q)


@gluon.jit
def _decode(t_ptr, e_ptr, w_ptr, flags_ptr, order_ptr, N, KB, NG, RUNS, stride_pn, stride_en, stride_w16, UNITS,
            CHUNKS, BYTES_PER_GROUP: gl.constexpr, ONE_SCALE_PER_RUN: gl.constexpr, BN: gl.constexpr,
            UNIT_ROWS: gl.constexpr):
    """Each warp decodes units order[slot], order[slot + 4 P], ..: 16 rows x 32 runs, one run per lane."""
    WARPS: gl.constexpr = gl.num_warps()
    PIECES: gl.constexpr = BN // UNIT_ROWS
    L: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    Q: gl.constexpr = gl.BlockedLayout([1, 4], [32, 1], [WARPS, 1], [1, 0])
    QR: gl.constexpr = gl.SliceLayout(1, Q)
    i = gl.arange(0, 32 * WARPS, layout=L)
    lane = i % 32
    slot = gl.program_id(0) * WARPS + i // 32
    stride = gl.num_programs(0) * WARPS
    parity = lane % 2
    four = gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, Q)), 0)
    for r in range(gl.cdiv(UNITS, stride)):
        k = r * stride + slot
        valid = k < UNITS
        unit = gl.load(order_ptr + gl.minimum(k, UNITS - 1))
        jc = unit // PIECES
        row0 = (jc // CHUNKS) * BN + (unit % PIECES) * UNIT_ROWS
        runs = (jc % CHUNKS) * 32 + lane
        first = 8 * runs
        for rr in range(UNIT_ROWS):
            rn = row0 + rr
            row_ok = valid & (rn < N)
            rows = gl.minimum(rn, N - 1).to(gl.int64)
            row_bytes = t_ptr + rows * stride_pn
            row_scales = e_ptr + rows * stride_en
            b0 = gl.load(row_bytes + first, mask=row_ok & (first < KB), other=121).to(gl.int32)
            b1 = gl.load(row_bytes + first + 1, mask=row_ok & (first + 1 < KB), other=121).to(gl.int32)
            b2 = gl.load(row_bytes + first + 2, mask=row_ok & (first + 2 < KB), other=121).to(gl.int32)
            b3 = gl.load(row_bytes + first + 3, mask=row_ok & (first + 3 < KB), other=121).to(gl.int32)
            b4 = gl.load(row_bytes + first + 4, mask=row_ok & (first + 4 < KB), other=121).to(gl.int32)
            b5 = gl.load(row_bytes + first + 5, mask=row_ok & (first + 5 < KB), other=121).to(gl.int32)
            b6 = gl.load(row_bytes + first + 6, mask=row_ok & (first + 6 < KB), other=121).to(gl.int32)
            b7 = gl.load(row_bytes + first + 7, mask=row_ok & (first + 7 < KB), other=121).to(gl.int32)
            g_low = first // BYTES_PER_GROUP
            low = _exp2_bits(gl.load(row_scales + g_low, mask=g_low < NG, other=0))
            if ONE_SCALE_PER_RUN:
                high = low
            else:
                g_high = (first + 4) // BYTES_PER_GROUP
                high = _exp2_bits(gl.load(row_scales + g_high, mask=g_high < NG, other=0))
            words = gl.inline_asm_elementwise(_ASM, _CONSTRAINTS, [b0, b1, b2, b3, b4, b5, b6, b7, low, high, parity],
                                              dtype=(gl.int32, ) * 20, is_pure=False, pack=1)
            own = row_ok & (runs < RUNS)
            partner = row_ok & ((runs ^ 1) < RUNS)
            first_two = gl.expand_dims(gl.convert_layout(gl.where(parity == 0, own, partner), QR), 1) & (four >= 0)
            last_two = gl.expand_dims(gl.convert_layout(gl.where(parity == 0, partner, own), QR), 1) & (four >= 0)
            own2 = gl.expand_dims(gl.convert_layout(own, QR), 1) & (four >= 0)
            base = rn.to(gl.int64) * (stride_w16 * 4) + 20 * (runs - parity) + 4 * parity
            out = w_ptr + gl.expand_dims(gl.convert_layout(base, QR), 1) + four
            gl.store(out, _quad(words[0], words[1], words[2], words[3], Q), mask=first_two)
            gl.store(out + 8, _quad(words[4], words[5], words[6], words[7], Q), mask=first_two)
            gl.store(out + 16, _quad(words[8], words[9], words[10], words[11], Q), mask=own2)
            gl.store(out + 24, _quad(words[12], words[13], words[14], words[15], Q), mask=last_two)
            gl.store(out + 32, _quad(words[16], words[17], words[18], words[19], Q), mask=last_two)
        gl.inline_asm_elementwise(_RELEASE, "=r,l,r", [flags_ptr + jc, valid.to(gl.int32)], dtype=gl.int32,
                                  is_pure=False, pack=1)


@gluon.jit
def _load(x_desc, w_desc, x_tiles, w_tiles, ready, free, flags_ptr, tiles, m_tiles, k_steps, CHUNKS,
          WAIT: gl.constexpr, PIECES: gl.constexpr, STEPS_PER_CHUNK: gl.constexpr, STAGES: gl.constexpr):
    """The loader warp: every step's two boxes into the ring once both consumers freed the slot (and, the first
    time a tile reaches a chunk of W, once the chunk's flag counts all its units)."""
    BM_: gl.constexpr = x_desc.block_type.shape[0]
    BK_: gl.constexpr = x_desc.block_type.shape[1]
    BN_: gl.constexpr = w_desc.block_type.shape[0]
    ONE: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
    count = 0
    for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
        j = t // m_tiles
        m = t % m_tiles
        for s in range(k_steps):
            if WAIT:
                if s % STEPS_PER_CHUNK == 0:
                    flag = flags_ptr + j * CHUNKS + s // STEPS_PER_CHUNK
                    v = gl.load(flag, volatile=True)
                    while v < PIECES:
                        v = gl.load(flag, volatile=True)
                    gl.inline_asm_elementwise(_ACQUIRE, "=r,r", [gl.full([32 * gl.num_warps()], 0, gl.int32, ONE) + v],
                                              dtype=gl.int32, is_pure=False, pack=1)
            slot = count % STAGES
            mbarrier.wait(free.index(slot), ((count // STAGES) & 1) ^ 1)
            bar = ready.index(slot)
            mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(x_desc, [m * BM_, s * BK_], bar, x_tiles.index(slot))
            tma.async_copy_global_to_shared(w_desc, [j * BN_, s * BK_], bar, w_tiles.index(slot))
            count += 1


@gluon.jit
def _consume(x_tiles, w_tiles, ready, free, y_desc, c_smem, tiles, m_tiles, k_steps, WG: gl.constexpr,
             STAGES: gl.constexpr):
    """One consumer warpgroup (its own partition): rows ``WG * BM / 2 ..`` of each tile."""
    BM_: gl.constexpr = x_tiles.shape[1]
    HALF: gl.constexpr = BM_ // 2
    BN_: gl.constexpr = w_tiles.shape[1]
    ACC: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN_, 16])
    count = 0
    for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
        j = t // m_tiles
        m = t % m_tiles
        acc = gl.zeros([HALF, BN_], gl.float32, ACC)
        for s in range(k_steps):
            slot = count % STAGES
            mbarrier.wait(ready.index(slot), (count // STAGES) & 1)
            acc = warpgroup_mma(x_tiles.index(slot).slice(HALF * WG, HALF, dim=0),
                                w_tiles.index(slot).permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma_wait(1, deps=[acc])
            mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), count=1, pred=s > 0)
            count += 1
        acc = warpgroup_mma_wait(0, deps=[acc])
        mbarrier.arrive(free.index((count + STAGES - 1) % STAGES), count=1)
        tma.store_wait(0)
        c_smem.store(acc.to(gl.bfloat16))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [m * BM_ + HALF * WG, j * BN_], c_smem)
    tma.store_wait(0)


@gluon.jit
def _fused_kernel(x_desc, w_desc, y_desc, t_ptr, e_ptr, w_ptr, flags_ptr, order_ptr, y_ptr, M, N, KB, NG, RUNS, stride_pn,
                  stride_en, stride_w16, stride_ym, UNITS, CHUNKS, tiles, m_tiles, k_steps,
                  BYTES_PER_GROUP: gl.constexpr, ONE_SCALE_PER_RUN: gl.constexpr, WAIT: gl.constexpr,
                  STAGES: gl.constexpr, UNIT_ROWS: gl.constexpr, STEPS_PER_CHUNK: gl.constexpr,
                  CONSUMER_REGS: gl.constexpr, LOADER_REGS: gl.constexpr, DECODER_REGS: gl.constexpr,
                  DECODER_WARPS: gl.constexpr):
    BM_: gl.constexpr = x_desc.block_type.shape[0]
    BK_: gl.constexpr = x_desc.block_type.shape[1]
    BN_: gl.constexpr = w_desc.block_type.shape[0]
    x_tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BM_, BK_], x_desc.layout)
    w_tiles = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BN_, BK_], w_desc.layout)
    c0 = gl.allocate_shared_memory(gl.bfloat16, [BM_ // 2, BN_], y_desc.layout)
    c1 = gl.allocate_shared_memory(gl.bfloat16, [BM_ // 2, BN_], y_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    free = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for each in gl.static_range(STAGES):
        mbarrier.init(ready.index(each), count=1)
        mbarrier.init(free.index(each), count=2)
    fence_async_shared()
    gl.warp_specialize([
        (_consume, (x_tiles, w_tiles, ready, free, y_desc, c0, tiles, m_tiles, k_steps, 0, STAGES)),
        (_consume, (x_tiles, w_tiles, ready, free, y_desc, c1, tiles, m_tiles, k_steps, 1, STAGES)),
        (_load, (x_desc, w_desc, x_tiles, w_tiles, ready, free, flags_ptr, tiles, m_tiles, k_steps, CHUNKS, WAIT,
                 BN_ // UNIT_ROWS, STEPS_PER_CHUNK, STAGES)),
        (_decode, (t_ptr, e_ptr, w_ptr, flags_ptr, order_ptr, N, KB, NG, RUNS, stride_pn, stride_en, stride_w16,
                   UNITS, CHUNKS, BYTES_PER_GROUP, ONE_SCALE_PER_RUN, BN_, UNIT_ROWS)),
    ], [4, 1, DECODER_WARPS], [CONSUMER_REGS, LOADER_REGS, DECODER_REGS])


@functools.cache
def _layout(rows: int, cols: int):
    return gl.NVMMASharedLayout.get_default_for([rows, cols], gl.bfloat16)


@functools.cache
def unit_order(n_tiles: int, chunks: int, m_tiles: int, programs: int, pieces: int, device) -> torch.Tensor:
    """Unit ids (j * chunks + c) * pieces + q sorted by when the tiles first need chunk c of row tile j."""
    keys = sorted(((j * m_tiles) // programs * chunks + c, j, c) for j in range(n_tiles) for c in range(chunks))
    ids = [(j * chunks + c) * pieces + q for _, j, c in keys for q in range(pieces)]
    return torch.tensor(ids, dtype=torch.int32, device=device)


def forward(x, T_packed, E, *, in_features, group_size, fused=True, w=None, programs=None, regs=REGS, tile=None, interfere=False):
    """y = x @ W.T (bf16). fused=False multiplies the given pre-decoded buffer w [N, Kp] (GEMM alone)."""
    m, k = x.shape
    n, kb = T_packed.shape
    x = tma_rows(x)
    BM, BN, STAGES = tile or (TILE_BM, TILE_BN, TILE_STAGES)
    runs = triton.cdiv(kb, 8)
    width = 40 * runs
    kp = round_up(width, 64)
    chunks = triton.cdiv(runs, CHUNK_RUNS)
    decode_into = torch.empty((n, kp), dtype=torch.bfloat16, device=x.device) if (fused or interfere) else w
    if fused:
        w = decode_into
    n_tiles, m_tiles = triton.cdiv(n, BN), triton.cdiv(m, BM)
    tiles = n_tiles * m_tiles
    programs = min(programs or sm_count(x.device), tiles)
    flags = torch.zeros(n_tiles * chunks, dtype=torch.int32, device=x.device)
    order = unit_order(n_tiles, chunks, m_tiles, programs, BN // UNIT_ROWS, x.device)
    y = torch.empty((m, round_up(n, 8)), dtype=torch.bfloat16, device=x.device)[:, :n]
    x_desc = TensorDescriptor.from_tensor(x, [BM, BK], _layout(BM, BK))
    w_desc = TensorDescriptor(w, [n, width], [w.stride(0), 1], [BN, BK], _layout(BN, BK))
    bpg = group_size // 5
    y_desc = TensorDescriptor.from_tensor(y, [BM // 2, BN], _layout(BM // 2, BN))
    _fused_kernel[(programs, )](
        x_desc, w_desc, y_desc, T_packed, E, decode_into.view(torch.int32), flags, order, y, m, n, kb, E.shape[1], runs,
        T_packed.stride(0), E.stride(0), w.stride(0) // 8, y.stride(0), order.numel() if (fused or interfere) else 0, chunks, tiles,
        m_tiles, triton.cdiv(width, BK), BYTES_PER_GROUP=bpg, ONE_SCALE_PER_RUN=bpg % 8 == 0, WAIT=fused,
        STAGES=STAGES, UNIT_ROWS=UNIT_ROWS, STEPS_PER_CHUNK=CHUNK_RUNS * 40 // BK,
        CONSUMER_REGS=regs[0], LOADER_REGS=regs[1], DECODER_REGS=regs[2], DECODER_WARPS=DECODER_WARPS, num_warps=4)
    return y, w
