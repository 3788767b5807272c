"""The two-step buffer in column order, eight packed bytes at a time (a Gluon kernel: compiled NVIDIA GPUs
of ``MIN_CAPABILITY`` or newer only; the decode is inline PTX, and Gluon has no interpreter).

Each thread decodes one *run*: eight consecutive bytes of a weight row, whose forty weights are columns
``40 r .. 40 r + 39`` of the row. Eight byte loads, one or two scale words and one call of
``triton_base3.RUN_COLUMNS_IN_ORDER_ASM`` give the forty bf16 weights as twenty 32-bit words (80 bytes).

**Stores through shared memory.** A lane that stores its own 80 bytes writes 16-byte pieces 80 bytes
apart, so each warp store touches sixteen 128-byte lines or more. On the H200 that pattern alone
(constant words, no decode) took 40.0 us for the 117 MB buffer of 14336 x 4096, as long as the whole
decode, where a plain store of 512 contiguous bytes a warp takes 26.8 us (4.4 TB/s;
``benchmarks/results/h200/thirty_first/``). So each thread puts its run's words at ``80 t`` bytes into
shared memory (a ``[R, 16]`` and a ``[R, 4]`` store over padded layouts: 16-byte stores without bank
conflicts), and after one barrier each warp stores 512 contiguous bytes an instruction.

**Programs.** Runs are numbered through the buffer, ``g = row * ROW_RUNS + run``, and a program takes
``BLOCK_RUNS`` consecutive ones whichever rows they fall in, so no thread idles at a row's end (one row a
program left a fifth to a third of the threads idle at K = 4096 and 14336). The buffer's rows are whole
runs and whole 128-byte lines, ``Kp = 40 round_up(runs, 8)`` columns (:func:`buffer_columns`): a
program's output is then one contiguous span, and the runs past the row's bytes decode to zeros (bytes
past ``KB`` read as 121, a zero in every digit). Into other buffers (``launch`` without ``whole_rows``: the
decode-in-GEMM's pre-decode of a block of rows and chunks) each 16-byte piece finds its row and run, and only
the runs of ``T_packed`` are written.

A run lies within one scale group per four bytes when ``G`` is a multiple of 20, the condition of
:func:`takes`.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ternary.kernels.linear.gluon_words import scale_bits
from ternary.kernels.linear.triton_base3 import RUN_COLUMNS_IN_ORDER_ASM
from ternary.kernels.linear.triton_launch import capability, round_up
from ternary.kernels.registry import triton_interpreted
from ternary.state.packing import packed_width

RUN_BYTES = 8
RUN_COLUMNS = 5 * RUN_BYTES
# bf16x2 FMAs need sm_80. Nothing else in the kernel is Hopper's: it compiles for sm_80 to the same staging and
# stores (five 16-byte shared stores and loads and five 16-byte global stores a run); measured on sm_90 only.
MIN_CAPABILITY = (8, 0)
# Columns in a 128-byte line of bf16, and runs in a whole number of lines (8 x 40 = 320 = 5 x 64).
ROW_ALIGN = 64
LINE_RUNS = 8
# Runs (threads) per program. H200, same process, in turns (benchmarks/results/h200/thirty_first/probes/
# flat2_ab.log): 64, 128 and 256 within 1 % of each other at the four benchmark shapes, two runs a thread no
# faster; against the one-row-a-program kernel with lane-pair stores, 14336 x 4096 36.9 against 40.7 us,
# 4096 x 14336 36.7 / 41.4, 16384^2 159.3 / 176.1, 4096^2 10.0 / 12.1. The stores ask L2 to keep the lines for
# the GEMM that reads them next (evict_last); without it the decode alone was 1-2 % faster and the two-step
# grad-x level within the rounds' spread.
BLOCK_RUNS = 64

_RUN_BYTES = gl.constexpr(RUN_BYTES)
_ASM = gl.constexpr(RUN_COLUMNS_IN_ORDER_ASM)
_CONSTRAINTS = gl.constexpr(",".join(["=r"] * 20 + ["r"] * 10))
_FLAT = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, [0]))
_ROWS_OF_FOUR = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))


@gluon.jit
def run_operands(t_ptr, e_ptr, rows, runs, row_ok, KB, NG, stride_pn, stride_en, BYTES_PER_GROUP: gl.constexpr,
                 ONE_SCALE_PER_RUN: gl.constexpr):
    """The run asm's ten operands for run ``runs`` of row ``rows`` (int tensors of one layout, ``rows`` inside
    the tensors): its eight bytes as int32 (121, a zero weight in every digit, past ``KB`` or where not
    ``row_ok``), then the bf16 bits of ``2^E`` in both halves for bytes 0-3 and for bytes 4-7."""
    rows = rows.to(gl.int64)
    row_bytes = t_ptr + rows * stride_pn
    row_scales = e_ptr + rows * stride_en
    first = _RUN_BYTES * runs
    b0 = gl.load(row_bytes + first, mask=row_ok & (first < KB), other=121).to(gl.int32)
    b1 = gl.load(row_bytes + first + 1, mask=row_ok & (first + 1 < KB), other=121).to(gl.int32)
    b2 = gl.load(row_bytes + first + 2, mask=row_ok & (first + 2 < KB), other=121).to(gl.int32)
    b3 = gl.load(row_bytes + first + 3, mask=row_ok & (first + 3 < KB), other=121).to(gl.int32)
    b4 = gl.load(row_bytes + first + 4, mask=row_ok & (first + 4 < KB), other=121).to(gl.int32)
    b5 = gl.load(row_bytes + first + 5, mask=row_ok & (first + 5 < KB), other=121).to(gl.int32)
    b6 = gl.load(row_bytes + first + 6, mask=row_ok & (first + 6 < KB), other=121).to(gl.int32)
    b7 = gl.load(row_bytes + first + 7, mask=row_ok & (first + 7 < KB), other=121).to(gl.int32)
    g_low = first // BYTES_PER_GROUP
    low = scale_bits(gl.load(row_scales + g_low, mask=g_low < NG, other=0))
    if ONE_SCALE_PER_RUN:
        high = low
    else:
        g_high = (first + 4) // BYTES_PER_GROUP
        high = scale_bits(gl.load(row_scales + g_high, mask=g_high < NG, other=0))
    return b0, b1, b2, b3, b4, b5, b6, b7, low, high


@gluon.jit
def quad(a, b, c, d):
    """``[R, 4]`` of four ``[R]`` words, in that order along the last axis."""
    return gl.reshape(gl.join(gl.join(a, c), gl.join(b, d)), [a.shape[0], 4])


@gluon.jit
def _stage(staged, w, BLOCK_R: gl.constexpr):
    """Thread ``t``'s twenty words ``w`` into words ``20 t .. 20 t + 19`` of ``staged``: words 0-15 as one
    ``[R, 16]`` store whose rows are padded by 4 words, words 16-19 as one ``[R, 4]`` store 16 words in,
    padded by 16."""
    quads = gl.join(gl.join(quad(w[0], w[1], w[2], w[3]), quad(w[8], w[9], w[10], w[11])),
                    gl.join(quad(w[4], w[5], w[6], w[7]), quad(w[12], w[13], w[14], w[15])))
    sixteen = gl.reshape(gl.permute(quads, (0, 2, 3, 1)), [BLOCK_R, 16])
    first: gl.constexpr = gl.PaddedSharedLayout.with_identity_for([[16, 4]], [BLOCK_R, 16], [1, 0])
    last: gl.constexpr = gl.PaddedSharedLayout.with_identity_for([[4, 16]], [BLOCK_R, 4], [1, 0])
    staged._reinterpret(gl.int32, [BLOCK_R, 16], first).store(sixteen)
    staged.slice(4, 1)._reinterpret(gl.int32, [BLOCK_R, 4], last).store(quad(w[16], w[17], w[18], w[19]))


@gluon.jit
def _piece_offsets(at, N, stride_wn, ROW_RUNS: gl.constexpr, CONTIGUOUS: gl.constexpr, BLOCK_R: gl.constexpr):
    """Where word ``at`` (``[4 R]``, four consecutive a thread) of this program's span goes in the buffer, and
    whether it is written. ``CONTIGUOUS``: rows exactly ``20 ROW_RUNS`` words apart, so the span is
    contiguous; otherwise each 16-byte piece's row and run (``stride_wn`` words a row)."""
    span = gl.program_id(0).to(gl.int64) * (20 * BLOCK_R)
    if CONTIGUOUS:
        offsets = span + at
        return offsets, offsets < gl.to_tensor(N).to(gl.int64) * (20 * ROW_RUNS)
    piece = at // 4
    local = piece // 5
    g = gl.program_id(0) * BLOCK_R + local
    row = g // ROW_RUNS
    run = g - row * ROW_RUNS
    start = row.to(gl.int64) * stride_wn + 20 * run + 4 * (piece - 5 * local)
    return start + at % 4, row < N


@gluon.jit
def _clear(zero_ptr, ZEROS, BLOCK: gl.constexpr, LAYOUT: gl.constexpr):
    """``zero_ptr[0 : ZEROS] = 0`` (int32) by the first program."""
    if gl.program_id(0) == 0:
        for start in range(0, ZEROS, BLOCK):
            offsets = start + gl.arange(0, BLOCK, layout=LAYOUT)
            gl.store(zero_ptr + offsets, gl.zeros([BLOCK], gl.int32, LAYOUT), mask=offsets < ZEROS)


@gluon.jit
def _run_decode_kernel(p_ptr, e_ptr, w_ptr, zero_ptr, N, KB, NG, ZEROS, stride_pn, stride_en, stride_wn,
                       BYTES_PER_GROUP: gl.constexpr, ONE_SCALE_PER_RUN: gl.constexpr, ROW_RUNS: gl.constexpr,
                       CONTIGUOUS: gl.constexpr, BLOCK_R: gl.constexpr, CLEARS: gl.constexpr):
    """``w [N, 20 ROW_RUNS]`` (int32 pairs of bf16) ``= T * 2^E`` in column order for runs ``g`` of
    ``[program * BLOCK_R, (program + 1) * BLOCK_R)``, one a thread; corrupt bytes (> 242) give NaN in their
    five columns. ``CLEARS``: also set the ``ZEROS`` int32 at ``zero_ptr`` to zero (a caller's flags, saving it
    a launch)."""
    WARPS: gl.constexpr = BLOCK_R // 32
    RUNS: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    PIECES: gl.constexpr = gl.BlockedLayout([4], [32], [WARPS], [0])
    if CLEARS:
        _clear(zero_ptr, ZEROS, 4 * BLOCK_R, PIECES)
    g = gl.program_id(0) * BLOCK_R + gl.arange(0, BLOCK_R, layout=RUNS)
    rn = g // ROW_RUNS
    operands = run_operands(p_ptr, e_ptr, gl.minimum(rn, N - 1), g - rn * ROW_RUNS, rn < N, KB, NG, stride_pn,
                            stride_en, BYTES_PER_GROUP, ONE_SCALE_PER_RUN)
    words = gl.inline_asm_elementwise(_ASM, _CONSTRAINTS, operands, dtype=(gl.int32, ) * 20, is_pure=True, pack=1)
    staged = gl.allocate_shared_memory(gl.int32, [8 * BLOCK_R, 4], _ROWS_OF_FOUR)  # shapes are powers of two
    _stage(staged, words, BLOCK_R)
    gl.thread_barrier()  # other threads' words are read next (the compiler's own barrier pass would add it too)
    at = gl.arange(0, 4 * BLOCK_R, layout=PIECES)
    for s in gl.static_range(5):
        pieces = staged.slice(s * BLOCK_R, BLOCK_R)._reinterpret(gl.int32, [4 * BLOCK_R], _FLAT).load(PIECES)
        offsets, ok = _piece_offsets(s * (4 * BLOCK_R) + at, N, stride_wn, ROW_RUNS, CONTIGUOUS, BLOCK_R)
        gl.store(w_ptr + offsets, pieces, mask=ok, eviction_policy="evict_last")


def takes(T_packed: torch.Tensor, group_size: int, dtype: torch.dtype) -> bool:
    """Whether :func:`dequantize_runs` can build this buffer: bf16, compiled on a CUDA card of
    ``MIN_CAPABILITY`` or newer, and every four bytes of a run inside one scale group."""
    return (dtype == torch.bfloat16 and T_packed.is_cuda and not triton_interpreted()
            and capability(T_packed.device) >= MIN_CAPABILITY and group_size % (5 * 4) == 0)


def buffer_columns(in_features: int) -> int:
    """``Kp``: the buffer's row width in columns, whole runs and whole 128-byte lines."""
    return RUN_COLUMNS * round_up(triton.cdiv(packed_width(in_features), RUN_BYTES), LINE_RUNS)


def check_block(block: int) -> None:
    """Runs per program: a power of two from one warp (32, one run a thread) to 512 (64 KB of shared memory)."""
    if block < 32 or block > 512 or block & (block - 1):
        raise ValueError(f"dequantize_runs: block = {block} runs per program must be a power of two in [32, 512]")


def launch(T_packed: torch.Tensor, E: torch.Tensor, words: torch.Tensor, *, group_size: int,
           whole_rows: bool = False, block: int | None = None, clear: torch.Tensor | None = None) -> None:
    """Decode into ``words [N', W]`` (int32 pairs of bf16, unit column stride, ``N' >= N`` rows of ``W >= 20 runs``
    words) ``block`` runs a program (default ``BLOCK_RUNS``; a power of two the caller has checked).

    ``whole_rows``: ``words`` is the buffer of :func:`dequantize_runs`, contiguous rows of exactly ``20
    round_up(runs, LINE_RUNS)`` words, and every word of its first ``N`` rows is written, the runs past
    ``T_packed``'s bytes as zeros. Otherwise exactly the words of ``T_packed``'s runs are. Each row width
    (``ROW_RUNS``, a constant of the kernel) compiles once. ``clear``, a contiguous int32 tensor on the same device,
    is also set to zero by the launch's first program: kernels launched after it on the stream see zeros, the
    launch's other programs may not."""
    if clear is not None and (clear.dtype != torch.int32 or not clear.is_contiguous()
                              or clear.device != words.device):
        raise ValueError(f"triton_run_decode.launch: clear must be a contiguous int32 tensor on {words.device}; got "
                         f"{clear.dtype} {list(clear.shape)} with strides {list(clear.stride())} on {clear.device}")
    n, kb = T_packed.shape
    runs = triton.cdiv(kb, RUN_BYTES)
    row_runs = round_up(runs, LINE_RUNS) if whole_rows else runs
    fits = words.shape[0] >= n and words.shape[1] >= 20 * runs and words.stride(1) == 1
    if not fits or (whole_rows and (not words.is_contiguous() or words.shape[1] != 20 * row_runs)):
        raise ValueError(f"triton_run_decode.launch: words {list(words.shape)} with strides {list(words.stride())} "
                         f"cannot hold {n} rows of {runs} runs (20 int32 a run, unit column stride"
                         + (f"; whole_rows: contiguous rows of exactly {20 * row_runs} words)" if whole_rows else ")"))
    if n * row_runs == 0:
        if clear is not None:
            clear.zero_()
        return
    block = block or BLOCK_RUNS
    bytes_per_group = group_size // 5
    _run_decode_kernel[(triton.cdiv(n * row_runs, block), )](
        T_packed, E, words, words if clear is None else clear, n, kb, E.shape[1],
        0 if clear is None else clear.numel(), T_packed.stride(0), E.stride(0), words.stride(0),
        BYTES_PER_GROUP=bytes_per_group, ONE_SCALE_PER_RUN=bytes_per_group % RUN_BYTES == 0, ROW_RUNS=row_runs,
        CONTIGUOUS=whole_rows, BLOCK_R=block, CLEARS=clear is not None, num_warps=block // 32,
    )


def dequantize_runs(T_packed: torch.Tensor, E: torch.Tensor, *, in_features: int, group_size: int,
                    block: int | None = None) -> torch.Tensor:
    """Dense bf16 ``W [N, K] = T * 2^E``: a view of an ``[N, Kp]`` buffer (:func:`buffer_columns`) whose
    columns past ``K`` are zeros, for layers :func:`takes` accepts; ``block`` overrides ``BLOCK_RUNS``."""
    n, kb = T_packed.shape
    if kb != packed_width(in_features) or E.shape != (n, -(-in_features // group_size)):
        raise ValueError(f"dequantize_runs: T_packed {list(T_packed.shape)} and E {list(E.shape)} do not fit "
                         f"in_features={in_features}, group_size={group_size}: expected "
                         f"[{n}, {packed_width(in_features)}] and [{n}, {-(-in_features // group_size)}]")
    if block is not None:
        check_block(block)
    if not takes(T_packed, group_size, torch.bfloat16):
        raise ValueError(f"dequantize_runs: needs a CUDA T_packed on a card of compute capability {MIN_CAPABILITY} "
                         f"or newer, compiled Triton, and a group size that is a multiple of 20 (got "
                         f"group_size={group_size})")
    w = torch.empty((n, buffer_columns(in_features)), dtype=torch.bfloat16, device=T_packed.device)
    launch(T_packed, E, w.view(torch.int32), group_size=group_size, whole_rows=True, block=block)
    return w[:, :in_features]
