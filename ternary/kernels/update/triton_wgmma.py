"""Building blocks of the ``wgmma`` update for 16-bit hooks (Gluon: compiled sm_90 GPUs only, never
under ``TRITON_INTERPRET``); the kernel that uses them is ``triton_wgmma_ws.py``.

The update forms each tile's gradient ``grad_y[:, rows].T @ x[:, columns]`` (``BLOCK_N`` weight rows
by ``BLOCK_B = 64`` packed bytes, i.e. ``5 BLOCK_B`` input columns) on tensor cores and applies the
rule of the Triton kernel (``triton.py``; ``vote_bytes``, ``step_exponent``, ``step_bias``) to it
without writing any gradient. With explicit layouts:

- each warpgroup owns 64 weight rows, so one ``wgmma`` of width ``4 BLOCK_B = 256`` covers the
  first 256 of the tile's input columns and one of width ``BLOCK_B`` the last 64
  (:func:`product_step`); each step's ``grad_y`` box is the left operand (transposed in shared
  memory), the two boxes of ``x`` the right ones, all three by TMA (:func:`fetch_step`,
  :func:`hook_descriptors`); the signs are regrouped into digit planes afterwards (``sign_planes``);
- a lane's byte pair owns ten consecutive ``T_accum`` columns, read and written as five 16-bit
  pieces instead of ten bytes (:func:`load_accumulator_pairs`; even ``K``);
- the exponent rule runs on a tile's byte scores (:func:`step_tile_exponents`); the bias rule's
  column sums of ``grad_y`` come from one more product, against a column of ones
  (:func:`ones_operand`), in the tiles of the first byte block.

Only groups inside one byte block (``BLOCK_B`` a multiple of ``G / 5``) and even ``K`` are taken
(:func:`takes`).
"""
from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ternary.kernels.linear.triton_launch import sm_count, tma_rows
from ternary.kernels.update import UpdatedTensors
from ternary.kernels.update.sign_planes import natural_to_planes, signs_layout
from ternary.kernels.update.triton_rule import load_exponents, step_bias, store_stepped_exponents

# Packed bytes per tile: 320 input columns, one 256-wide wgmma (the widest there is) and one 64-wide.
WGMMA_BLOCK_B = 64
_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@gluon.jit
def fetch_step(g_desc, xl_desc, xh_desc, g_tiles, xl_tiles, xh_tiles, ready, step, slot, n0, column,
               BLOCK_M: gl.constexpr, BLOCK_B: gl.constexpr):
    """Start the TMA copies of hook-row step ``step`` into ring slot ``slot``: ``grad_y`` rows
    ``BLOCK_M step ..`` at columns ``n0 ..`` and the two boxes of ``x`` of the byte block at
    column ``column``; ``ready[slot]`` completes when all three have landed."""
    bar = ready.index(slot)
    nbytes: gl.constexpr = g_desc.block_type.nbytes + xl_desc.block_type.nbytes + xh_desc.block_type.nbytes
    mbarrier.expect(bar, nbytes)
    row = step * BLOCK_M
    tma.async_copy_global_to_shared(g_desc, [row, n0], bar, g_tiles.index(slot))
    tma.async_copy_global_to_shared(xl_desc, [row, column], bar, xl_tiles.index(slot))
    tma.async_copy_global_to_shared(xh_desc, [row, column + 4 * BLOCK_B], bar, xh_tiles.index(slot))


@triton.constexpr_function
def accumulator_layout(warps, width):
    """Register layout of a ``[R, width]`` fp32 ``wgmma`` accumulator of ``warps`` warps (one
    warpgroup per 64 rows): the accumulators of a tile's first ``4 BLOCK_B`` input columns, of its
    last ``BLOCK_B`` and of the column sums (8)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[warps, 1], instr_shape=[16, width, 16])


@gluon.jit
def product_step(g_tiles, xl_tiles, xh_tiles, ones, ready, slot, phase, acc_low, acc_high, acc_sums,
                 SUMS: gl.constexpr, ROW0: gl.constexpr = 0, PADDING: gl.constexpr = False):
    """Wait for ring slot ``slot`` to arrive (``phase``), issue its two products (the tile's first 256
    input columns and its last 64, the ``grad_y`` box's columns ``ROW0 ..`` — this warpgroup's weight
    rows, as many as the accumulators have — transposed as the left operand), with ``SUMS`` a third one
    against ``ones`` (:func:`ones_operand`) that adds the box's column sums to column 0 of ``acc_sums``,
    and retire this warpgroup's products of the previous step: returns ``acc_low``, ``acc_high``,
    ``acc_sums``. With ``PADDING`` (and ``SUMS``: a tile whose last 64 columns all lie past ``K``, so that
    their products are zero) the sums take the place of the second product and ``acc_high`` stays as it is."""
    mbarrier.wait(ready.index(slot), phase)
    g_t = g_tiles.index(slot).slice(ROW0, acc_low.shape[0], dim=1).permute((1, 0))
    acc_low = warpgroup_mma(g_t, xl_tiles.index(slot), acc_low, is_async=True)
    if PADDING:
        acc_sums = warpgroup_mma(g_t, ones, acc_sums, is_async=True)
        acc_low, acc_sums = warpgroup_mma_wait(2, deps=[acc_low, acc_sums])
    else:
        acc_high = warpgroup_mma(g_t, xh_tiles.index(slot), acc_high, is_async=True)
        if SUMS:
            acc_sums = warpgroup_mma(g_t, ones, acc_sums, is_async=True)
            acc_low, acc_high, acc_sums = warpgroup_mma_wait(3, deps=[acc_low, acc_high, acc_sums])
        else:
            acc_low, acc_high = warpgroup_mma_wait(2, deps=[acc_low, acc_high])
    return acc_low, acc_high, acc_sums


def last_block_past_k(in_features: int, block_b: int) -> bool:
    """Whether the last byte block's last ``block_b`` columns (the ``[.., block_b]`` product of its tiles)
    all lie past ``K = in_features``. Then, with a bias, those tiles take ``grad_y``'s column sums in place of
    that product (its operand is zeros: :func:`product_step` ``PADDING``), at no extra product; otherwise the
    tiles of the first byte block take the sums with a third one. (Without a bias the tiles keep the zero
    product: leaving it out needs a second step loop, whose registers make the rule warps spill.) True for every
    ``K`` whose last block holds at most ``4 block_b`` columns (``K mod 5 block_b`` in ``1 .. 4 block_b``)."""
    blocks = triton.cdiv(triton.cdiv(in_features, 5), block_b)
    return 5 * block_b * (blocks - 1) + 4 * block_b >= in_features


@gluon.jit
def allocate_ring_and_signs(g_desc, xl_desc, xh_desc, STAGES: gl.constexpr, BLOCK_M: gl.constexpr,
                            BLOCK_N: gl.constexpr, BLOCK_B: gl.constexpr):
    """The shared memory of an update program: the ring's ``grad_y`` / ``x`` slots (``[STAGES, BLOCK_M,
    BLOCK_N]``, ``[STAGES, BLOCK_M, 4 BLOCK_B]``, ``[STAGES, BLOCK_M, BLOCK_B]``), the bias's ``ones`` operand
    (:func:`ones_operand`, written by the calling warps: fence it before the partitions read it) and the
    signs' buffers ``[BLOCK_N, 4 BLOCK_B]`` / ``[BLOCK_N, BLOCK_B]`` (int8, ``sign_planes.signs_layout``)."""
    g_tiles = gl.allocate_shared_memory(g_desc.dtype, [STAGES, BLOCK_M, BLOCK_N], g_desc.layout)
    xl_tiles = gl.allocate_shared_memory(xl_desc.dtype, [STAGES, BLOCK_M, 4 * BLOCK_B], xl_desc.layout)
    xh_tiles = gl.allocate_shared_memory(xh_desc.dtype, [STAGES, BLOCK_M, BLOCK_B], xh_desc.layout)
    ONES: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    ones = gl.allocate_shared_memory(g_desc.dtype, [8, BLOCK_M], ONES, ones_operand(BLOCK_M, g_desc.dtype))
    SIGNS: gl.constexpr = signs_layout()
    signs_low = gl.allocate_shared_memory(gl.int8, [BLOCK_N, 4 * BLOCK_B], SIGNS)
    signs_high = gl.allocate_shared_memory(gl.int8, [BLOCK_N, BLOCK_B], SIGNS)
    return g_tiles, xl_tiles, xh_tiles, ones, signs_low, signs_high


@gluon.jit
def hand_over_signs(acc_low, acc_high, signs_low, signs_high, signs_ready, signs_free, handoffs):
    """Hand the signs of a tile's gradient (``acc_low [R, 4 BLOCK_B]``, ``acc_high [R, BLOCK_B]`` fp32) to the
    rule warps: once they freed the buffers (the ``handoffs``-th hand-over), store them as int8 in natural
    column order into ``signs_low`` / ``signs_high`` (``[R, ..]``, this warpgroup's rows), regroup them into
    digit planes (``sign_planes``) and arrive on ``signs_ready``."""
    sign_low = (acc_low > 0).to(gl.int8) - (acc_low < 0).to(gl.int8)
    sign_high = (acc_high > 0).to(gl.int8) - (acc_high < 0).to(gl.int8)
    mbarrier.wait(signs_free, (handoffs & 1) ^ 1)
    signs_low.store(sign_low)
    signs_high.store(sign_high)
    natural_to_planes(signs_low, signs_high)
    mbarrier.arrive(signs_ready)


@gluon.jit
def step_tile_bias(acc_sums, bias_ptr, new_bias_ptr, N, n0, bias_step):
    """The bias rule for rows ``n0 ..`` of a tile from ``grad_y``'s column sums in column 0 of
    ``acc_sums [BLOCK_N, 8]`` (the other columns are zero, so the row sums are exact)."""
    col_sum = gl.sum(acc_sums, axis=1)
    rb = n0 + gl.arange(0, acc_sums.shape[0], layout=gl.SliceLayout(1, acc_sums.type.layout))
    bias = gl.load(bias_ptr + rb, mask=rb < N, other=0)
    gl.store(new_bias_ptr + rb, step_bias(bias, col_sum, bias_step), mask=rb < N)


@gluon.jit
def ones_operand(BLOCK_M: gl.constexpr, dtype: gl.constexpr):
    """``[8, BLOCK_M]`` of ``dtype``, ones in row 0 and zeros elsewhere: stored K-major and
    transposed, the ``[BLOCK_M, 8]`` right operand that turns a product of ``grad_y``'s box into
    the box's column sums (:func:`product_step`)."""
    LAYOUT: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [gl.num_warps(), 1], [1, 0])
    row = gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(1, LAYOUT)), 1)
    column = gl.expand_dims(gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, LAYOUT)), 0)
    return (row + 0 * column == 0).to(dtype)


@gluon.jit
def _pairs(tile):
    """Even and odd byte columns of a ``[R, BB]`` tile in the accumulator layout, where a lane holds
    bytes ``2 q``, ``2 q + 1`` side by side: two ``[R, BB / 2]`` tensors (no data moves)."""
    return gl.split(gl.reshape(tile, [tile.shape[0], tile.shape[1] // 2, 2]))


@gluon.jit
def _low(piece):
    return (piece << 24) >> 24


@gluon.jit
def _pieces_at(ta_ptr, rows, even_col, N, stride_tn):
    """Where the byte pairs of a tile (``rows [R, 1]``, ``even_col [1, BB]``) keep their five 16-bit
    ``T_accum`` pieces: the first piece's pointer, the pair's first column and its row mask, each
    ``[R, BB / 2]``."""
    first, _ = _pairs(rows.to(gl.int64) * stride_tn + even_col)
    col, _ = _pairs(gl.zeros_like(rows) + even_col)
    row_ok, _ = _pairs((rows < N) & (even_col >= 0))
    return (ta_ptr + first).to(gl.pointer_type(gl.int16)), col, row_ok


@gluon.jit
def load_accumulator_pairs(ta_ptr, rows, even_col, N, K, stride_tn, LAYOUT: gl.constexpr):
    """``T_accum`` of a tile as five digit tiles ``[R, BB]`` (int32) in the layout of ``rows`` /
    ``even_col`` (``[R, 1]`` and ``[1, BB]``, the accumulator layout): each byte pair's ten values
    (columns ``5 j .. 5 j + 9`` from even ``j``) come as five 16-bit loads, not ten byte loads.
    ``LAYOUT`` is the layout of ``rows`` / ``even_col`` (the pairs rejoin into it without moving data)."""
    pieces, col, row_ok = _pieces_at(ta_ptr, rows, even_col, N, stride_tn)
    p0 = gl.load(pieces, mask=row_ok & (col < K), other=0).to(gl.int32)
    p1 = gl.load(pieces + 1, mask=row_ok & (col + 2 < K), other=0).to(gl.int32)
    p2 = gl.load(pieces + 2, mask=row_ok & (col + 4 < K), other=0).to(gl.int32)
    p3 = gl.load(pieces + 3, mask=row_ok & (col + 6 < K), other=0).to(gl.int32)
    p4 = gl.load(pieces + 4, mask=row_ok & (col + 8 < K), other=0).to(gl.int32)
    shape: gl.constexpr = [rows.shape[0], even_col.shape[1]]
    a0 = gl.convert_layout(gl.reshape(gl.join(_low(p0), p2 >> 8), shape), LAYOUT)
    a1 = gl.convert_layout(gl.reshape(gl.join(p0 >> 8, _low(p3)), shape), LAYOUT)
    a2 = gl.convert_layout(gl.reshape(gl.join(_low(p1), p3 >> 8), shape), LAYOUT)
    a3 = gl.convert_layout(gl.reshape(gl.join(p1 >> 8, _low(p4)), shape), LAYOUT)
    a4 = gl.convert_layout(gl.reshape(gl.join(_low(p2), p4 >> 8), shape), LAYOUT)
    return a0, a1, a2, a3, a4


@gluon.jit
def store_accumulator_pairs(ta_ptr, rows, even_col, N, K, stride_tn, a0, a1, a2, a3, a4):
    """Inverse of :func:`load_accumulator_pairs`: five 16-bit stores per byte pair."""
    pieces, col, row_ok = _pieces_at(ta_ptr, rows, even_col, N, stride_tn)
    e0, o0 = _pairs(a0.to(gl.int32) & 0xFF)
    e1, o1 = _pairs(a1.to(gl.int32) & 0xFF)
    e2, o2 = _pairs(a2.to(gl.int32) & 0xFF)
    e3, o3 = _pairs(a3.to(gl.int32) & 0xFF)
    e4, o4 = _pairs(a4.to(gl.int32) & 0xFF)
    gl.store(pieces, (e0 | (e1 << 8)).to(gl.int16), mask=row_ok & (col < K))
    gl.store(pieces + 1, (e2 | (e3 << 8)).to(gl.int16), mask=row_ok & (col + 2 < K))
    gl.store(pieces + 2, (e4 | (o0 << 8)).to(gl.int16), mask=row_ok & (col + 4 < K))
    gl.store(pieces + 3, (o1 | (o2 << 8)).to(gl.int16), mask=row_ok & (col + 6 < K))
    gl.store(pieces + 4, (o3 | (o4 << 8)).to(gl.int16), mask=row_ok & (col + 8 < K))


@triton.constexpr_function
def _scores_layout(tile_layout, bytes_per_group, rows, warps):
    """Register layout of a tile's group scores ``[rows, groups]``: the byte tile's own when a group
    is one byte (no data moves), else lanes down the rows and warps across the groups."""
    if bytes_per_group == 1:
        return tile_layout
    lanes = min(rows, 32)
    return gl.BlockedLayout([1, 1], [lanes, 32 // lanes], [1, warps], [1, 0])


@gluon.jit
def load_tile_exponents(e_ptr, ea_ptr, n0, group0, N, NG, stride_en, ROWS: gl.constexpr, GROUPS: gl.constexpr,
                        TILE_LAYOUT: gl.constexpr, BYTES_PER_GROUP: gl.constexpr):
    """``E`` / ``E_accum`` of a tile's groups (rows ``n0 ..``, groups ``group0 ..``) as int32
    ``[ROWS, GROUPS]``, with their offsets and mask, for :func:`step_tile_exponents`; the byte
    tile whose scores they take is in ``TILE_LAYOUT``."""
    SCORES: gl.constexpr = _scores_layout(TILE_LAYOUT, BYTES_PER_GROUP, ROWS, gl.num_warps())
    g_rows = gl.expand_dims(n0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, SCORES)), 1)
    g_cols = gl.expand_dims(group0 + gl.arange(0, GROUPS, layout=gl.SliceLayout(0, SCORES)), 0)
    mask = (g_rows < N) & (g_cols < NG)
    offsets = g_rows.to(gl.int64) * stride_en + g_cols
    e, e_acc = load_exponents(e_ptr, ea_ptr, offsets, mask)
    return e, e_acc, offsets, mask


@gluon.jit
def step_tile_exponents(score, e, e_acc, offsets, mask, new_e_ptr, new_ea_ptr, theta_e, e_min, e_max,
                        BYTES_PER_GROUP: gl.constexpr):
    """The exponent rule for the groups loaded by :func:`load_tile_exponents` from the byte scores
    ``score [ROWS, GROUPS * BYTES_PER_GROUP]``: a group's score is the sum of its bytes'."""
    if BYTES_PER_GROUP == 1:
        group_score = score
    else:
        shape: gl.constexpr = [score.shape[0], score.shape[1] // BYTES_PER_GROUP, BYTES_PER_GROUP]
        group_score = gl.convert_layout(gl.sum(gl.reshape(score, shape), axis=2), e.type.layout)
    store_stepped_exponents(new_e_ptr, new_ea_ptr, offsets, mask, e, e_acc, group_score, theta_e, e_min, e_max)


def _pairs_addressable(T_accum: torch.Tensor) -> bool:
    """Whether ``T_accum`` can be read and written as 16-bit pieces: even ``K``, an even start and
    an even row stride."""
    return T_accum.shape[1] % 2 == 0 and T_accum.data_ptr() % 2 == 0 and T_accum.stride(0) % 2 == 0


def _groups_inside_blocks(group_size: int) -> bool:
    """Whether every scale group of ``group_size`` inputs lies inside one ``WGMMA_BLOCK_B``-byte block."""
    return group_size % 5 == 0 and WGMMA_BLOCK_B % (group_size // 5) == 0


def takes(x: torch.Tensor, grad_y: torch.Tensor, T_accum: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel takes this update (the caller checks the card and the interpreter): bf16 or
    fp16 hooks of one dtype, scale groups that lie inside one byte block, and ``T_accum`` rows that
    16-bit accesses can address (even ``K``)."""
    return (x.dtype in _DTYPES and grad_y.dtype == x.dtype and _groups_inside_blocks(group_size)
            and _pairs_addressable(T_accum))


def check_outputs(state: UpdatedTensors, new: UpdatedTensors, group_size: int) -> None:
    """Refuse, naming the tensor, what the kernel cannot do: ``T_accum`` that its 16-bit pieces
    cannot address, outputs whose strides differ from their inputs' (one row stride serves both),
    and scale groups that would straddle its byte blocks."""
    for name, tensor in (("T_accum", state.T_accum), ("the new T_accum", new.T_accum)):
        if not _pairs_addressable(tensor):
            raise ValueError(f"wgmma update: {name} needs even K, an even start and an even row stride for its "
                             f"16-bit accesses, got shape {list(tensor.shape)}, row stride {tensor.stride(0)}, "
                             f"start at byte {tensor.data_ptr() % 2} mod 2")
    for name, old, out in zip(UpdatedTensors._fields, state, new):
        if old is not None and out.stride() != old.stride():
            raise ValueError(f"wgmma update: the new {name}'s strides {out.stride()} differ from {name}'s "
                             f"{old.stride()}")
    if not _groups_inside_blocks(group_size):
        raise ValueError(f"wgmma update: groups of G={group_size} straddle its {WGMMA_BLOCK_B}-byte blocks "
                         f"(G must be 5 times a divisor of {WGMMA_BLOCK_B})")


def hook_descriptors(x: torch.Tensor, grad_y: torch.Tensor, block_m: int, block_n: int,
                     block_b: int) -> tuple[torch.Tensor, TensorDescriptor, TensorDescriptor, TensorDescriptor]:
    """``grad_y`` as TMA reads it and the three TMA descriptors of a step: ``grad_y`` boxes
    ``[block_m, block_n]`` and ``x`` in natural column order (no pass over it before the kernel) in
    boxes ``[block_m, 4 block_b]`` and ``[block_m, block_b]``, read at column ``5 block_b`` times the
    byte block; the boxes fill past ``x``'s rows and columns with zeros."""
    dtype = _DTYPES[x.dtype]
    x = tma_rows(x)
    grad_y = tma_rows(grad_y)

    def boxes(tensor: torch.Tensor, box: tuple[int, int]) -> TensorDescriptor:
        return TensorDescriptor.from_tensor(tensor, list(box), box_layout(box, dtype))

    return (grad_y, boxes(grad_y, (block_m, block_n)), boxes(x, (block_m, 4 * block_b)),
            boxes(x, (block_m, block_b)))


def launch_operands(T_packed, E, E_accum, T_accum, bias, x, grad_y, new: UpdatedTensors, group_size: int,
                    block_m: int, block_n: int, block_b: int):
    """What both ``wgmma`` update launchers pass first, after :func:`check_outputs`: ``grad_y`` as its descriptor
    reads it (keep it alive till the launch), the three :func:`hook_descriptors`, the programs (one per SM, fewer
    for fewer ``[block_n, block_b]`` tiles), and the bias and new bias (``E`` stands in for both without a bias:
    never read or written, ``HAS_BIAS``)."""
    check_outputs(UpdatedTensors(T_packed, E, E_accum, T_accum, bias), new, group_size)
    grad_y, *descriptors = hook_descriptors(x, grad_y, block_m, block_n, block_b)
    n, kb = T_packed.shape
    programs = min(triton.cdiv(n, block_n) * triton.cdiv(kb, block_b), sm_count(x.device))
    return grad_y, descriptors, programs, E if bias is None else bias, E if bias is None else new.bias


@functools.cache
def box_layout(box: tuple[int, int], dtype) -> gl.NVMMASharedLayout:
    """Shared layout of a TMA box ``box`` of ``dtype`` (built once: a layout costs the host ~10 us)."""
    return gl.NVMMASharedLayout.get_default_for(list(box), dtype)
