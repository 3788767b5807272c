"""Host-side launch arithmetic shared by the Triton linear launchers (``triton``,
``triton_table_gemv``, ``triton_mma_forward``, ``triton_wgmma_forward``): split counts, padding,
whether a tensor's storage can be read as whole aligned words or by TMA, the card's SM count and compute
capability (looked up once per device, not on every call), and the reduction of split-K partial
sums into the output."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ternary.kernels.registry import triton_interpreted


def even_splits(splits: int, blocks: int) -> int:
    """``splits`` (>= 1) lowered until every split has work: a kernel that gives each split
    ``ceil(blocks / splits)`` blocks would leave e.g. 6 of 16 splits of 20 blocks idle."""
    per_split = -(-blocks // splits)
    return -(-blocks // per_split)


def program_splits(per_sm: int, tiles: int, most: int, blocks: int, device: torch.device) -> int:
    """Split-K count for ``tiles`` output tiles over ``blocks`` reduction blocks: about ``per_sm``
    programs per SM, at most ``most`` splits, rounded by :func:`even_splits` so none is empty."""
    return even_splits(max(1, min(per_sm * sm_count(device) // tiles, most)), blocks)


@functools.lru_cache(maxsize=None)
def balanced_splits(steps: int, row_blocks: int, slots: int) -> int:
    """The split count of ``steps`` that minimises (steps per split) x (waves of ``row_blocks * splits``
    programs over ``slots``), the fewest splits among equals; every split gets work (cached: a decoding
    loop asks the same question for every call of a layer)."""
    best = None
    for per_split in range(1, steps + 1):
        splits = -(-steps // per_split)
        cost = (per_split * -(-(row_blocks * splits) // slots), splits)
        best = cost if best is None else min(best, cost)
    return best[1]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def byte_span(tensor: torch.Tensor) -> int:
    """Bytes from a row-major 2-D tensor's first element to just past its last."""
    rows, cols = tensor.shape
    return ((rows - 1) * tensor.stride(0) + cols) * tensor.element_size()


def readable_as_words(tensor: torch.Tensor, multiple: int) -> bool:
    """Whether a row-major 2-D ``tensor`` starts ``multiple``-byte aligned and its storage reaches
    the next ``multiple``-byte boundary after its last element (whole aligned words can be read)."""
    storage = tensor.untyped_storage()
    return (tensor.stride(1) == 1 and tensor.data_ptr() % multiple == 0
            and tensor.data_ptr() + round_up(byte_span(tensor), multiple) <= storage.data_ptr() + storage.nbytes())


def word_decode_takes(name: str, x: torch.Tensor, T_packed: torch.Tensor, E: torch.Tensor, group_size: int,
                      rows: tuple[int, int], raise_error: bool = False) -> bool:
    """Whether a register-decode forward kernel (``triton_mma_forward``, ``triton_wgmma_forward``)
    takes this call: bf16 activations with ``rows[0] .. rows[1]`` rows, groups of whole 4-byte runs
    (``G`` a positive multiple of 20), ``T_packed`` readable as aligned 4-byte words and ``E`` rows
    with unit column stride. ``raise_error`` turns a refusal into a ``ValueError`` naming kernel
    ``name`` and what it got (its launcher's check; the dispatch asks without it)."""
    taken = (x.dtype == torch.bfloat16 and rows[0] <= x.shape[0] <= rows[1]
             and group_size > 0 and group_size % 20 == 0 and readable_as_words(T_packed, 4) and E.stride(1) == 1)
    if raise_error and not taken:
        raise ValueError(f"triton {name}: takes bf16 activations with {rows[0]}-{rows[1]} rows, G a multiple of 20 "
                         f"and T_packed readable as aligned words; got {x.dtype} {list(x.shape)}, G={group_size}, "
                         f"T_packed {list(T_packed.shape)} at byte {T_packed.data_ptr() % 4} mod 4")
    return taken


def tma_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor [M, N]`` as a TMA descriptor can read it: unit column stride and distinct rows a
    multiple of 16 bytes apart, from a 16-byte aligned start. Else a copy into rows padded to 16 bytes,
    returned as its ``[M, N]`` view: a descriptor made from the view fills the padding columns with
    zeros itself, so the padding is never written (one launch). An empty tensor gives one zero row."""
    rows, width = tensor.shape
    aligned = (tensor.stride(1) == 1 and tensor.stride(0) >= width and tensor.data_ptr() % 16 == 0
               and (tensor.stride(0) * tensor.element_size()) % 16 == 0)
    if rows > 0 and aligned:
        return tensor
    shape = (max(rows, 1), round_up(width, 16 // tensor.element_size()))
    padded = (torch.empty if rows else torch.zeros)(shape, dtype=tensor.dtype, device=tensor.device)[:, :width]
    padded[:rows] = tensor
    return padded


@functools.cache
def _properties(index: int):
    return torch.cuda.get_device_properties(index)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of the CUDA ``device``."""
    return _properties(_index(device)).multi_processor_count


def capability(device: torch.device) -> tuple[int, int]:
    """``(major, minor)`` compute capability of the CUDA ``device``."""
    properties = _properties(_index(device))
    return properties.major, properties.minor


@triton.jit
def _finish_kernel(ws_ptr, bias_ptr, out_ptr, M, C, stride_ws, stride_wm, stride_om, stride_b, bias_scale, SPLITS,
                   HAS_BIAS: tl.constexpr, SPLIT_BLOCK: tl.constexpr, BLOCK: tl.constexpr):
    """``out[m, c] = sum_s ws[s, m, c] (+ bias[c] * bias_scale)`` rounded to the output dtype, ``SPLIT_BLOCK``
    splits at a time (each tile's sum in a fixed tree order; one split at a time adds them in split order);
    rows on the grid's first axis (up to 2^31 - 1 of them; the second axis stops at 65535), offsets in int64."""
    m = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = c < C
    s = tl.arange(0, SPLIT_BLOCK)[:, None]
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for first in range(0, SPLITS, SPLIT_BLOCK):
        part = tl.load(ws_ptr + (first + s) * stride_ws + m * stride_wm + c[None, :],
                       mask=mask[None, :] & (first + s < SPLITS), other=0.0)
        total += tl.sum(part, axis=0)
    if HAS_BIAS:
        total += tl.load(bias_ptr + c * stride_b, mask=mask, other=0).to(tl.float32) * bias_scale
    tl.store(out_ptr + m * stride_om + c, total.to(out_ptr.dtype.element_ty), mask=mask)


# Columns per program of the finishing kernel: FINISH_BLOCK; without splits to reduce (the two-step forward's
# bias) 1024 for outputs of at least FINISH_WIDE_ELEMENTS (split-K reductions were not measured with 1024).
# H100, same process (results/h100/bias_finish/probe18a.log): the bias on a [2048, 16384] bf16 product took
# 46.5 us with 1024 against 81.0 with 256.
FINISH_BLOCK = 256
FINISH_WIDE_ELEMENTS = 1 << 20
# Below FINISH_FEW_PROGRAMS programs of FINISH_BLOCK columns (two per SM of an H100 / H200), each program adds
# FINISH_SPLIT_BLOCK splits at a time over 64 columns. H200, same process (results/h200/twenty_fifth/probes/
# pieces_gpu1.log): a one-row 16384-column reduction of 15 splits 2.22 -> 1.89 us; whole one-row 4096 x 4096
# calls (results/h200/twenty_fifth/probes/inkernel_tables_gpu2.log) 7.34 -> 6.58 us.
FINISH_FEW_PROGRAMS = 256
FINISH_SPLIT_BLOCK = 16


def finish_splits(ws: torch.Tensor, bias: torch.Tensor | None, bias_frac_bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Reduce the split workspace ``[S, M, C]`` (unit column stride) to ``[M, C]`` in ``dtype``, adding the
    bias ``[C]`` (int32, any stride) times ``2^-bias_frac_bits`` in fp32 before rounding to ``dtype``."""
    splits, m, c = ws.shape
    out = torch.empty((m, c), dtype=dtype, device=ws.device)
    wide = splits == 1 and m * c >= FINISH_WIDE_ELEMENTS
    few = splits > 1 and m * triton.cdiv(c, FINISH_BLOCK) < FINISH_FEW_PROGRAMS
    block = 32 if triton_interpreted() else 1024 if wide else 64 if few else FINISH_BLOCK
    _finish_kernel[(m, triton.cdiv(c, block))](
        ws, bias if bias is not None else ws, out, m, c, ws.stride(0), ws.stride(1), out.stride(0),
        bias.stride(0) if bias is not None else 0, 2.0**-bias_frac_bits, splits, HAS_BIAS=bias is not None,
        SPLIT_BLOCK=FINISH_SPLIT_BLOCK if few else 1, BLOCK=block,
    )
    return out
