"""The two-step buffer in column order, eight packed bytes at a time (compiled NVIDIA GPUs only:
the decode is inline PTX, which ``TRITON_INTERPRET`` cannot run).

Each element of a tile of ``BLOCK_N`` rows by ``BLOCK_R`` runs is one run of eight consecutive bytes of
a weight row, whose forty weights are columns ``40 r .. 40 r + 39`` of the row. Eight byte loads, two
scale words and one call of ``triton_base3.RUN_COLUMNS_ASM`` give the forty bf16 weights in column
order as twenty 32-bit words, about 4 instructions per weight where the per-weight integer decode
(:func:`triton._dequantize_kernel`) takes ~28.

A run's 80 bytes start 16 bytes into a 32-byte sector when the run is odd, so a lane storing its own
run alone would write half sectors (H100: twice the L2 sector writes, and partial sectors evicted
before the other half arrived cost DRAM reads; 0.5-1.1 TB/s). The two runs of a pair therefore sit in
neighbouring lanes (the tile is one-dimensional with runs fastest and one element per lane in turn, so
elements ``2 i`` and ``2 i + 1``, runs ``2 q`` and ``2 q + 1`` of one row as ``BLOCK_R`` is even, sit in
lanes ``L`` and ``L ^ 1``) and swap two chunks through shuffles: each of the five 16-byte stores of the
pair writes one whole sector.

A run lies within one scale group per four bytes when ``G`` is a multiple of 20, the condition of
:func:`takes`. The buffer's rows hold whole runs and whole 128-byte lines (``Kp = round_up(round_up(K,
40), 64)`` columns), so every store is 16-byte aligned.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_ASM, bf16_exp2_bits
from ternary.kernels.linear.triton_launch import round_up
from ternary.kernels.registry import triton_interpreted
from ternary.state.packing import packed_width

RUN_BYTES = 8
RUN_COLUMNS = 5 * RUN_BYTES
# Row stride of the buffer in elements: whole runs, then whole 128-byte lines.
ROW_ALIGN = 64
# (BLOCK_N, BLOCK_R, warps): weight rows and runs per program. H100, same process, ten tiles
# (benchmarks/results/h100/run_decode/run_decode_bench.log): one row of 256 runs on 8 warps was best on
# three of the four benchmark shapes (16384^2 225.8 us, 2.38 TB/s written; the per-weight decode 363 us)
# and within 3% of the best on 4096^2; 16 rows of 32 runs on 4 warps was the slowest (275 us). The stores
# ask L2 to keep the buffer (evict_last), which cuBLAS reads next: 4096^2 14.0 against 15.7 us, level
# elsewhere; evict_first and .cs were 4-25% slower, and fully coalesced stores (a [runs, 32] tile Triton
# converts through shared memory) no faster (run_decode/decode_ab.log, decode_hints.log). At ~2.4 TB/s
# it writes what a copy kernel does; a plain fill_ of the buffer reaches 3.3 TB/s on the same card.
# Narrower rows take :func:`launch_tile`. H200, same process, in turns (benchmarks/results/h200/thirtieth/probes/
# tile_ab.log): K = 4096 (103 runs, (1, 128, 4)) decodes 4096^2 in 12.3 against 13.3 us and 14336 x 4096 in 40.4
# against 41.6; the decode-in-GEMM's pre-decode (64 runs a row, (1, 64, 2)) took the 4096^2 M = 2048 forward from
# 106.5 to 101.8 us (0.86x -> 0.90x of cuBLAS), the other shapes level.
RUN_DECODE_TILE = (1, 256, 8)


def launch_tile(runs: int) -> tuple[int, int, int]:
    """The tile for rows of ``runs`` runs: one row a program and one run a thread, as few threads as cover
    the row (at least one warp), at most ``RUN_DECODE_TILE``. A tile wider than the row leaves its threads
    idle: K = 4096 has 103 runs, and the decode-in-GEMM's pre-decode 64 a row."""
    block_r = min(RUN_DECODE_TILE[1], max(32, triton.next_power_of_2(runs)))
    return 1, block_r, block_r // 32


_RUN_BYTES = tl.constexpr(RUN_BYTES)
_HALF_RUN_COLUMNS = tl.constexpr(RUN_COLUMNS // 2)
_ASM = tl.constexpr(RUN_COLUMNS_ASM)
_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 20 + ["r"] * 11))


@triton.jit
def _run_byte(row_bytes, first, offset: tl.constexpr, KB):
    """Byte ``first + offset`` of each row as int32 (121, a zero weight in every digit, past ``KB``)."""
    return tl.load(row_bytes + first + offset, mask=first + offset < KB, other=121).to(tl.int32)


@triton.jit
def _run_scale(row_scales, first, BYTES_PER_GROUP: tl.constexpr, NG):
    """bf16 bits of ``2^E`` for the group of byte ``first``, in both 16-bit lanes of an int32."""
    group = first // BYTES_PER_GROUP
    e = tl.load(row_scales + group, mask=group < NG, other=0)
    return (bf16_exp2_bits(e).to(tl.int32) & 0xFFFF) * 0x10001


@triton.jit
def _quad(a, b, c, d):
    """``[..., 4]`` of four equally shaped tensors, in that order along the new last axis."""
    return tl.reshape(tl.join(tl.join(a, c), tl.join(b, d)), a.shape + (4,))


@triton.jit
def _store_sector_half(pointers, words, mask):
    """One 16-byte store per run, asking L2 to keep the lines for the GEMM that reads them next."""
    tl.store(pointers, words, mask=mask, eviction_policy="evict_last")


@triton.jit
def _clear(zero_ptr, ZEROS, BLOCK: tl.constexpr):
    """``zero_ptr[0 : ZEROS] = 0`` (int32) by the first program."""
    if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
        for start in range(0, ZEROS, BLOCK):
            offsets = start + tl.arange(0, BLOCK)
            tl.store(zero_ptr + offsets, tl.zeros((BLOCK, ), dtype=tl.int32), mask=offsets < ZEROS)


@triton.jit
def _run_decode_kernel(p_ptr, e_ptr, w_ptr, zero_ptr, N, KB, NG, RUNS, ZEROS, stride_pn, stride_en, stride_w16,
                       BYTES_PER_GROUP: tl.constexpr, ONE_SCALE_PER_RUN: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_R: tl.constexpr, CLEARS: tl.constexpr):
    """``w [N, 40 RUNS]`` (viewed as int32 pairs of bf16) ``= T * 2^E`` in column order; corrupt bytes
    (> 242) give NaN in their five columns. ``stride_w16`` is the row stride in 16-byte units;
    ``ONE_SCALE_PER_RUN``: the eight bytes of a run share one scale group. ``CLEARS``: also set the ``ZEROS``
    int32 at ``zero_ptr`` to zero (a caller's flags, saving it a launch)."""
    if CLEARS:
        _clear(zero_ptr, ZEROS, BLOCK_N * BLOCK_R)
    index = tl.arange(0, BLOCK_N * BLOCK_R)  # runs fastest: a warp's lanes take consecutive runs of a row
    rn = tl.program_id(0) * BLOCK_N + index // BLOCK_R
    runs = tl.program_id(1) * BLOCK_R + index % BLOCK_R
    rows = tl.minimum(rn, N - 1).to(tl.int64)
    first = _RUN_BYTES * runs
    row_bytes = p_ptr + rows * stride_pn
    row_scales = e_ptr + rows * stride_en
    low = _run_scale(row_scales, first, BYTES_PER_GROUP, NG)
    if ONE_SCALE_PER_RUN:
        high = low
    else:
        high = _run_scale(row_scales, first + 4, BYTES_PER_GROUP, NG)
    parity = runs % 2
    words = tl.inline_asm_elementwise(
        _ASM, _CONSTRAINTS,
        [_run_byte(row_bytes, first, 0, KB), _run_byte(row_bytes, first, 1, KB), _run_byte(row_bytes, first, 2, KB),
         _run_byte(row_bytes, first, 3, KB), _run_byte(row_bytes, first, 4, KB), _run_byte(row_bytes, first, 5, KB),
         _run_byte(row_bytes, first, 6, KB), _run_byte(row_bytes, first, 7, KB), low, high, parity],
        dtype=(tl.int32,) * 20, is_pure=False, pack=1)  # not pure: its shuffles need the whole warp here
    # Store j of a lane pair writes sector j of its 160 bytes: the even run's lane the first half, the
    # odd run's lane the second half. A lane writes its partner's chunks (stores 3, 4 of the even
    # lane, 0, 1 of the odd) only where the partner run exists.
    row_ok = rn < N
    own = row_ok & (runs < RUNS)
    partner = row_ok & ((runs ^ 1) < RUNS)
    first_two = tl.where(parity == 0, own, partner)[:, None]
    last_two = tl.where(parity == 0, partner, own)[:, None]
    pair_base = rn.to(tl.int64) * (stride_w16 * 4) + _HALF_RUN_COLUMNS * (runs - parity) + 4 * parity
    out = w_ptr + pair_base[:, None] + tl.arange(0, 4)[None, :]
    _store_sector_half(out, _quad(words[0], words[1], words[2], words[3]), first_two)
    _store_sector_half(out + 8, _quad(words[4], words[5], words[6], words[7]), first_two)
    _store_sector_half(out + 16, _quad(words[8], words[9], words[10], words[11]), own[:, None])
    _store_sector_half(out + 24, _quad(words[12], words[13], words[14], words[15]), last_two)
    _store_sector_half(out + 32, _quad(words[16], words[17], words[18], words[19]), last_two)


def takes(T_packed: torch.Tensor, group_size: int, dtype: torch.dtype) -> bool:
    """Whether :func:`dequantize_runs` can build this buffer: bf16, compiled on a CUDA card, and
    every four bytes of a run inside one scale group."""
    return (dtype == torch.bfloat16 and T_packed.is_cuda and not triton_interpreted()
            and group_size % (5 * 4) == 0)


def launch(T_packed: torch.Tensor, E: torch.Tensor, words: torch.Tensor, *, group_size: int,
           tile: tuple[int, int, int] | None = None, clear: torch.Tensor | None = None) -> None:
    """Run the kernel into ``words [N, Kp / 2]`` (int32, row stride a multiple of 4 words, ``Kp`` at least
    40 columns per run) on ``tile`` (default :func:`launch_tile`); the caller has checked the shapes and the
    tile (:func:`dequantize_runs`). ``clear``, a contiguous
    int32 tensor on the same device, is also set to zero by program (0, 0) of the launch: kernels launched after
    it on the stream see zeros, the launch's other programs may not."""
    if clear is not None and (clear.dtype != torch.int32 or not clear.is_contiguous()
                              or clear.device != words.device):
        raise ValueError(f"triton_run_decode.launch: clear must be a contiguous int32 tensor on {words.device}; got "
                         f"{clear.dtype} {list(clear.shape)} with strides {list(clear.stride())} on {clear.device}")
    n, kb = T_packed.shape
    runs = triton.cdiv(kb, RUN_BYTES)
    block_n, block_r, warps = tile or launch_tile(runs)
    bytes_per_group = group_size // 5
    _run_decode_kernel[(triton.cdiv(n, block_n), triton.cdiv(runs, block_r))](
        T_packed, E, words, words if clear is None else clear, n, kb, E.shape[1], runs,
        0 if clear is None else clear.numel(), T_packed.stride(0), E.stride(0), words.stride(0) // 4,
        BYTES_PER_GROUP=bytes_per_group, ONE_SCALE_PER_RUN=bytes_per_group % RUN_BYTES == 0, BLOCK_N=block_n,
        BLOCK_R=block_r, CLEARS=clear is not None, num_warps=warps,
    )


def check_tile(tile: tuple[int, int, int]) -> None:
    """Powers of two, an even number of runs per program (lane pairs hold run pairs) and at least one
    run per thread (smaller tiles replicate runs across threads and lose the 16-byte stores)."""
    block_n, block_r, warps = tile
    powers = all(v >= 1 and v & (v - 1) == 0 for v in tile)
    if not powers or block_r < 2 or block_n * block_r < 32 * warps:
        raise ValueError(f"dequantize_runs: tile (BLOCK_N, BLOCK_R, warps) = {tile} needs powers of two, "
                         "BLOCK_R >= 2 and at least one run per thread (BLOCK_N * BLOCK_R >= 32 * warps)")


def dequantize_runs(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
                    tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Dense bf16 ``W [N, K] = T * 2^E`` (a view of an ``[N, Kp]`` buffer, see above), for layers
    :func:`takes` accepts; ``tile = (BLOCK_N, BLOCK_R, warps)`` overrides :func:`launch_tile`."""
    n, kb = T_packed.shape
    if kb != packed_width(in_features) or E.shape != (n, -(-in_features // group_size)):
        raise ValueError(f"dequantize_runs: T_packed {list(T_packed.shape)} and E {list(E.shape)} do not fit "
                         f"in_features={in_features}, group_size={group_size}: expected "
                         f"[{n}, {packed_width(in_features)}] and [{n}, {-(-in_features // group_size)}]")
    if tile is not None:
        check_tile(tile)
    if not takes(T_packed, group_size, torch.bfloat16):
        raise ValueError("dequantize_runs: needs a CUDA T_packed, compiled Triton and a group size that is "
                         f"a multiple of 20 (got group_size={group_size})")
    columns = round_up(round_up(in_features, RUN_COLUMNS), ROW_ALIGN)
    w = torch.empty((n, columns), dtype=torch.bfloat16, device=T_packed.device)
    launch(T_packed, E, w.view(torch.int32), group_size=group_size, tile=tile)
    return w[:, :in_features]
