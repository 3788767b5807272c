"""TileLang backend of the ternary linear op: ``forward`` and ``grad_x``.

Same launchers as ``reference.py``. The kernels (``tilelang_programs.py``) read
``T_packed`` / ``E`` directly, build each weight ``T * 2^E`` as exact bf16 bits
(every int8 E, no clamping, never fp16), multiply on the tensor cores with float32
accumulation and cast the result to the activation dtype. fp32 and fp16 activations
are split into exact bf16 pieces inside the kernel, so they keep their precision.

fp32 domain: the three-piece split of a value is exact for |v| >= 2^-110. Before the
split, each fp32 row is multiplied by a power of two 2^s that puts its largest |x|
into [2^-40, 2^-39) when it is smaller (``row_shifts``: one reduction and a few
elementwise ops on the device, no host sync, CUDA-graph safe; the kernel multiplies the
output row by 2^-s, exact unless the output is subnormal, where it is the one rounding
the fp32 result needs anyway). So every element within a factor 2^70 of its row's
largest |x| is split exactly, whatever the row's magnitude (fp32 subnormals included)
and whatever E (the weights are not scaled; a scaled product stays below 2^89, so
sums of up to 2^39 terms cannot overflow). Only elements more than 2^70 below their
row's peak (and below 2^-110) can lose low bits; that needs E to differ by about 2^70
between groups of one row to matter. Rows whose peak is >= 2^127 are halved first
(bf16 rounding would otherwise overflow them to Inf). Before the shift, fp32 inputs
near 2^-120 (E band 112..127) missed the 2e-5 budget on the GPU (2.3-2.5e-5); a torch
emulation of the kernel's numerics in ``tests/test_tilelang.py`` reproduces that and
shows the shift removes it.

Programs are compiled on first use, one per :class:`KernelSpec` (op, layer shape,
dtype, bias, M bucket, GPU arch; M itself is dynamic), kept for the process and
cached on disk by TileLang (``TILELANG_CACHE_DIR``); ``ternary prewarm`` compiles
them ahead of time.

Measured (``benchmarks/tilelang_check.py``, bf16, N x K = 4096 x 4096 and 4096 x 14336):
correct over the whole int8 E range, but 4-7x slower than bf16 cuBLAS at every M from 1
to 8192 and slower than the Triton backend, so ``auto`` tries Triton first (see
``registry.AUTO_CUDA_ORDER``). The weight decode runs on the producer warps and is the
bottleneck; at small M the grid (N / block_n CTAs) is also too small to fill the GPU
(block_n = 32 halved the M = 1 time in a sweep, not yet validated for correctness).

The vote **update** has no TileLang kernel: under the ``tilelang`` backend the registry
runs the Triton update. The update is a reduction over M of sign votes with an integer
epilogue (saturating accumulators, trit and exponent steps, repacking); it is bound by
reading the hooks, not by tensor-core math, so TileLang's tile/GEMM machinery buys
nothing there, while one kernel that is tested bit for bit against the reference is
simpler to keep right than two.

TileLang is imported only when a program has to be built, so this module imports
without it. Bytes of ``T_packed`` are not validated on the host (that would cost a
reduction and a sync per call): a corrupt byte (> 242) decodes to NaN weights, so
every output it feeds is NaN and the non-finite checks report it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import time
from typing import Any, NamedTuple

import torch

from ternary.kernels.layer_checks import check_layer_tensors

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
SMALL_M = 64
M_BUCKETS = ("small", "large")
OPS = ("forward", "grad_x")
TMA_ALIGNMENT = 16


class KernelSpec(NamedTuple):
    """Everything that selects one compiled program (M is dynamic inside a bucket)."""

    op: str
    out_features: int
    in_features: int
    group_size: int
    dtype: str
    has_bias: bool
    bias_frac_bits: int
    bucket: str
    arch: str

    def describe(self) -> str:
        bias = "+bias" if self.has_bias else ""
        return (
            f"{self.op}{bias} N={self.out_features} K={self.in_features} G={self.group_size} "
            f"{self.dtype} M-{self.bucket} {self.arch}"
        )


def m_bucket(rows: int) -> str:
    """``small`` for ``rows <= SMALL_M`` (decode-sized batches), else ``large``."""
    return "small" if rows <= SMALL_M else "large"


def tile_for(spec: KernelSpec):
    """Block shape of ``spec``: 64-row tiles for small M or split activations, else 128."""
    from ternary.kernels.linear.tilelang_programs import Tile

    wide = spec.bucket == "large" and spec.dtype == "bfloat16"
    if spec.op == "forward":
        return Tile(128, 128, 80, 3, 256) if wide else Tile(64, 128, 80, 2, 128)
    return Tile(128, 64, 80, 3, 256) if wide else Tile(64, 64, 80, 2, 128)


def program_for(spec: KernelSpec):
    """The TileLang PrimFunc of ``spec`` (not compiled)."""
    from ternary.kernels.linear import tilelang_programs as programs

    tile = tile_for(spec)
    n, k, g = spec.out_features, spec.in_features, spec.group_size
    if spec.op == "forward":
        return programs.forward_program(n, k, g, spec.dtype, spec.has_bias, spec.bias_frac_bits, tile)
    if spec.op == "grad_x":
        return programs.grad_x_program(n, k, g, spec.dtype, tile)
    raise ValueError(f"tilelang: unknown op {spec.op!r}; known: {OPS}")


_KERNELS: dict[KernelSpec, Any] = {}
_KERNELS_LOCK = threading.Lock()


def compiled(spec: KernelSpec):
    """Compiled kernel of ``spec`` (built once per process; TileLang's disk cache makes rebuilds cheap)."""
    kernel = _KERNELS.get(spec)
    if kernel is None:
        compile_specs([spec], workers=1)
        kernel = _KERNELS[spec]
    return kernel


def compile_specs(specs: list[KernelSpec], workers: int | None = None) -> dict[KernelSpec, float]:
    """Compile every spec not yet loaded, ``workers`` at a time (nvcc runs outside the GIL).

    Programs are traced one by one in this thread, then lowered and compiled in a
    thread pool. Returns the seconds each spec took (0.0 if it was already loaded).
    """
    import tilelang

    from ternary.kernels.linear import tilelang_programs as programs

    # TileLang logs every compile at INFO level on stdout, which would corrupt the JSON
    # that commands such as `ternary smoke --json` print; prewarm reports compiles itself.
    tilelang.set_log_level("WARNING")
    todo = [spec for spec in dict.fromkeys(specs) if spec not in _KERNELS]
    traced = {}
    for spec in todo:
        start = time.perf_counter()
        traced[spec] = (program_for(spec), time.perf_counter() - start)

    def build(spec: KernelSpec) -> float:
        program, trace_seconds = traced[spec]
        start = time.perf_counter()
        split = programs.SPLIT_PIECES[spec.dtype] > 1
        kernel = programs.compile_program(program, spec.arch, split_activations=split)
        with _KERNELS_LOCK:
            _KERNELS.setdefault(spec, kernel)
        return trace_seconds + time.perf_counter() - start

    seconds = {spec: 0.0 for spec in specs}
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers or os.cpu_count() or 1, len(todo)))) as pool:
            seconds.update(zip(todo, pool.map(build, todo)))
    return seconds


@functools.cache
def device_arch(index: int) -> str:
    """CUDA arch of device ``index`` as nvcc names it (``sm_90a`` on Hopper, for wgmma/TMA)."""
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


@functools.cache
def _no_bias(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


def row_shifts(rows: torch.Tensor) -> torch.Tensor:
    """int32 ``[M]``: the power of two each fp32 row is scaled by before the bf16 split
    (``tilelang_decode.split_row_shift`` of the row's largest |x|); computed on the device."""
    from ternary.kernels.linear.tilelang_decode import split_row_shift

    peak = torch.linalg.vector_norm(rows, float("inf"), dim=1)
    return split_row_shift(torch.frexp(peak).exponent, torch.where).to(torch.int32)


def _shift_arg(rows: torch.Tensor) -> torch.Tensor:
    """The ``Shift`` input of a program: row shifts for fp32, else the 1-element placeholder."""
    return row_shifts(rows) if rows.dtype == torch.float32 else _no_bias(rows.device)


def _dtype_name(tensor: torch.Tensor, name: str) -> str:
    if tensor.dtype not in DTYPE_NAMES:
        raise TypeError(f"tilelang linear: {name} has dtype {tensor.dtype}; supported: bfloat16, float16, float32")
    return DTYPE_NAMES[tensor.dtype]


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """Contiguous, with a 16-byte aligned base address (TMA descriptors need it)."""
    tensor = tensor.contiguous()
    return tensor if tensor.data_ptr() % TMA_ALIGNMENT == 0 else tensor.clone()


def _check_state(rows: torch.Tensor, T_packed, E, in_features: int, group_size: int, bias=None) -> None:
    if rows.device.type != "cuda":
        raise ValueError(f"tilelang linear: tensors must be on a CUDA device, got {rows.device}")
    check_layer_tensors("tilelang linear", in_features=in_features, group_size=group_size, device=rows.device,
                        T_packed=T_packed, E=E, bias=bias)


def forward(
    x: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    in_features: int,
    group_size: int,
    bias_frac_bits: int,
) -> torch.Tensor:
    """``y [M, N] = x [M, K] @ W.T + bias * 2^-B`` in ``x.dtype``."""
    n = T_packed.shape[0]
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"tilelang linear: x has shape {list(x.shape)}; expected [M, {in_features}]")
    _check_state(x, T_packed, E, in_features, group_size, bias)
    rows = x.shape[0]
    y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    if rows == 0:
        return y
    spec = KernelSpec(
        "forward", n, in_features, group_size, _dtype_name(x, "x"), bias is not None,
        bias_frac_bits if bias is not None else 0,
        m_bucket(rows), device_arch(x.device.index or 0),
    )
    bias_arg = _no_bias(x.device) if bias is None else _aligned(bias)
    x = _aligned(x)
    compiled(spec)(x, _aligned(T_packed), _aligned(E), bias_arg, _shift_arg(x), y)
    return y


def grad_x(
    grad_y: torch.Tensor,
    T_packed: torch.Tensor,
    E: torch.Tensor,
    *,
    in_features: int,
    group_size: int,
) -> torch.Tensor:
    """``grad_x [M, K] = grad_y [M, N] @ W`` in ``grad_y.dtype``."""
    n = T_packed.shape[0]
    if grad_y.dim() != 2 or grad_y.shape[1] != n:
        raise ValueError(f"tilelang linear: grad_y has shape {list(grad_y.shape)}; expected [M, {n}]")
    _check_state(grad_y, T_packed, E, in_features, group_size)
    rows = grad_y.shape[0]
    dx = torch.empty((rows, in_features), dtype=grad_y.dtype, device=grad_y.device)
    if rows == 0:
        return dx
    spec = KernelSpec(
        "grad_x", n, in_features, group_size, _dtype_name(grad_y, "grad_y"), False, 0,
        m_bucket(rows), device_arch(grad_y.device.index or 0),
    )
    grad_y = _aligned(grad_y)
    compiled(spec)(grad_y, _aligned(T_packed), _aligned(E), _shift_arg(grad_y), dx)
    return dx
