"""Triton linear kernels (forward, grad-x) against the torch reference.

Shapes include K large enough for several byte blocks per program and several split-K
programs (the v2 small-M kernels once passed small shapes but failed at large ones).

On CPU they run under ``TRITON_INTERPRET=1`` (set before the kernels are defined); on a
GPU the same tests run compiled. Float outputs are compared by relative RMS error:

- fp32 activations: ``FP32_BUDGET`` (the fused paths use fp32 accumulation and, on GPU,
  3-pass TF32 products; the GEMV (M <= 2) rewrites each byte's dot product as
  ``sum_i r_i z_i + z_5`` over shifted quotients up to 241, so it is looser);
- bf16 activations: ``BF16_BUDGET`` (one bf16 rounding of the output, ~2^-9 relative).
"""

from __future__ import annotations

import functools

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_launch  # noqa: E402
from ternary.state.packing import random_packed  # noqa: E402

FP32_BUDGET = 1e-5
GEMV_FP32_BUDGET = 5e-5
BF16_BUDGET = 1e-2
FRAC_BITS = 16

# (M, N, K, G): K not a multiple of 5 or of G, N = 1, M = 1, G = 15 (groups straddle tiles);
# K = 800 is 160 bytes, whole byte blocks with no partial one on the CPU and GPU tiles.
SHAPES = [(1, 5, 7, 5), (3, 33, 83, 40), (17, 1, 127, 40), (2, 5, 40, 15), (1, 33, 83, 15), (1, 9, 1500, 40),
          (5, 9, 1500, 40), (2, 9, 1500, 40), (2, 9, 800, 40)]


def relative_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().cpu(), expected.double().cpu()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-300))


def layer(n: int, k: int, g: int, seed: int, *, e_low: int = -6, e_high: int = 4, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    packed = random_packed(n, k, generator=gen)
    exponents = torch.randint(e_low, e_high, (n, -(-k // g)), generator=gen).to(torch.int8)
    bias_t = torch.randint(-(2**20), 2**20, (n,), generator=gen, dtype=torch.int32) if bias else None
    return [t if t is None else t.to(DEVICE) for t in (packed, exponents, bias_t)], gen


def forced_branch(two_step, planes: bool):
    """A two-step path (forward or grad-x) with its branch forced: digit planes or column order."""

    def run(*args, **kwargs):
        saved = kernels._plane_order
        kernels._plane_order = lambda *_: planes
        try:
            return two_step(*args, **kwargs)
        finally:
            kernels._plane_order = saved

    return run


def forward_paths(m: int):
    paths = [("dispatch", kernels.forward), ("fused", kernels.forward_fused), ("two_step", kernels.forward_two_step),
             ("two_step_columns", forced_branch(kernels.forward_two_step, False)),
             ("two_step_planes", forced_branch(kernels.forward_two_step, True))]
    return paths + ([("gemv", kernels.forward_gemv)] if m <= kernels.GEMV_MAX_ROWS else [])


@pytest.mark.parametrize("m,n,k,g", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_fp32_matches_reference(m, n, k, g, with_bias):
    (packed, exponents, bias), gen = layer(n, k, g, seed=m * 7919 + n * 31 + k, bias=with_bias)
    x = torch.randn(m, k, generator=gen).to(DEVICE)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    expected = reference.forward(x, packed, exponents, bias, **kw)
    for name, path in forward_paths(m):
        y = path(x, packed, exponents, bias, **kw)
        assert y.dtype == torch.float32 and y.shape == (m, n), name
        budget = GEMV_FP32_BUDGET if name == "gemv" or (name == "dispatch" and m <= kernels.GEMV_MAX_ROWS) else FP32_BUDGET
        assert relative_rms(y, expected) <= budget, (name, relative_rms(y, expected))


@pytest.mark.parametrize("m,n,k,g", [(1, 33, 83, 40), (17, 5, 127, 15)])
def test_forward_bf16_matches_reference(m, n, k, g):
    (packed, exponents, bias), gen = layer(n, k, g, seed=11 + m)
    x = torch.randn(m, k, generator=gen).to(DEVICE, torch.bfloat16)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    expected = reference.forward(x, packed, exponents, bias, **kw)
    for name, path in forward_paths(m):
        y = path(x, packed, exponents, bias, **kw)
        assert y.dtype == torch.bfloat16, name
        assert relative_rms(y, expected) <= BF16_BUDGET, (name, relative_rms(y, expected))


@pytest.mark.parametrize("m,n,k,g", SHAPES)
def test_grad_x_matches_reference(m, n, k, g):
    (packed, exponents, _), gen = layer(n, k, g, seed=5 + m * 3 + k)
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE)
    kw = dict(in_features=k, group_size=g)
    expected = reference.grad_x(grad_y, packed, exponents, **kw)
    paths = [("dispatch", kernels.grad_x), ("two_step", kernels.grad_x_two_step),
             ("two_step_columns", forced_branch(kernels.grad_x_two_step, False)),
             ("two_step_planes", forced_branch(kernels.grad_x_two_step, True))]
    if m <= kernels.GEMV_MAX_ROWS:
        paths.append(("gemv", kernels.grad_x_gemv))
    if m <= kernels.GRAD_X_FUSED_ROWS:
        paths.append(("fused", kernels.grad_x_fused))
    for name, path in paths:
        out = path(grad_y, packed, exponents, **kw)
        assert out.shape == (m, k) and out.dtype == torch.float32, name
        assert relative_rms(out, expected) <= FP32_BUDGET, (name, relative_rms(out, expected))
    bf16 = kernels.grad_x(grad_y.to(torch.bfloat16), packed, exponents, **kw)
    assert bf16.dtype == torch.bfloat16
    assert relative_rms(bf16, reference.grad_x(grad_y.to(torch.bfloat16), packed, exponents, **kw)) <= BF16_BUDGET


@pytest.mark.parametrize("tile", [(8, 16, 4, 3), (4, 32, 4, 64), (8, 16, 4, 0)])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_gemv_launch_overrides_match_reference(tile, m, monkeypatch):
    """The GEMV's tile / split overrides (benchmark sweeps) keep its result: splits above the
    byte-block count are capped, 0 splits means one, rows past N and bytes past K stay out of
    the sums. M = 3 runs the 4-row kernel (GEMV_MAX_ROWS raised for it), whose fourth row is
    padding that must stay out of the output."""
    monkeypatch.setattr(kernels, "GEMV_MAX_ROWS", max(kernels.GEMV_MAX_ROWS, m))
    n, k, g = 9, 1500, 40
    (packed, exponents, bias), gen = layer(n, k, g, seed=21)
    x = torch.randn(m, k, generator=gen).to(DEVICE)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    y = kernels.forward_gemv(x, packed, exponents, bias, tile=tile, **kw)
    assert relative_rms(y, reference.forward(x, packed, exponents, bias, **kw)) <= GEMV_FP32_BUDGET


@pytest.mark.parametrize("tile", [(8, 16, 4, 3), (4, 32, 4, 64), (8, 16, 4, 0), (16, 16, 4, 2)])
@pytest.mark.parametrize("m", [1, 2])
def test_grad_x_gemv_launch_overrides_match_reference(tile, m):
    """The grad-x GEMV's tile / split overrides keep its result: N = 37 is not a multiple of
    the row tile (rows past N stay out), splits above the row-tile count are capped, 0 means
    one; K = 1213 leaves a partial byte block."""
    n, k, g = 37, 1213, 40
    (packed, exponents, _), gen = layer(n, k, g, seed=27)
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE)
    got = kernels.grad_x_gemv(grad_y, packed, exponents, in_features=k, group_size=g, tile=tile)
    want = reference.grad_x(grad_y, packed, exponents, in_features=k, group_size=g)
    assert got.shape == (m, k) and relative_rms(got, want) <= FP32_BUDGET


def test_grad_x_gemv_keeps_precision_scale_and_headroom():
    """Training-sized gradients: every term of the GEMV's sums is an exact product, so
    - scaling grad_y by 2^-20 scales the result exactly (an absolute offset would not);
    - a common-mode grad_y over N = 2048 rows (sums much larger than the result in a
      quotient-based form) stays at fp32 accuracy against float64;
    - E = 127 with a finite reference stays finite;
    - a transposed (non-contiguous) grad_y gives the same result."""
    n, k, g = 2048, 83, 40
    (packed, exponents, _), gen = layer(n, k, g, seed=33, e_low=-3, e_high=3)
    grad_y = (torch.randn(2, n, generator=gen) + 3.0).to(DEVICE)
    kw = dict(in_features=k, group_size=g)
    base = kernels.grad_x_gemv(grad_y, packed, exponents, **kw)
    assert torch.equal(kernels.grad_x_gemv(grad_y * 2.0**-20, packed, exponents, **kw), base * 2.0**-20)
    want = reference.grad_x(grad_y.double(), packed, exponents, **kw)
    assert relative_rms(base, want) <= FP32_BUDGET
    columns = grad_y.T.contiguous().T
    assert not columns.is_contiguous() and torch.equal(kernels.grad_x_gemv(columns, packed, exponents, **kw), base)
    top = torch.full_like(exponents, 127)
    small = grad_y[:1] * 1e-3
    got = kernels.grad_x_gemv(small, packed, top, **kw)
    want = reference.grad_x(small.double(), packed, top, **kw)
    assert torch.isfinite(want).all() and torch.isfinite(got).all()
    assert relative_rms(got, want) <= FP32_BUDGET


@pytest.mark.parametrize("m,n,k,g,tile", [(20, 37, 413, 15, None), (20, 37, 413, 15, (32, 16, 4, 2)),
                                         (5, 1024, 83, 40, None)])
def test_grad_x_fused_over_row_tiles_and_splits(m, n, k, g, tile):
    """The fused grad-x: M = 20 is two 16-row programs, the second partial; N = 37 leaves rows
    past N that must stay out of the sums; N = 1024 is split over the weight rows on the GPU
    as well as on the CPU interpreter (two splits there); K = 413 leaves a partial byte
    block, G = 15 groups straddle byte blocks; one launch override. Also the properties of
    the GEMV test below: exact power-of-two scaling and a transposed grad_y."""
    (packed, exponents, _), gen = layer(n, k, g, seed=41)
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE)
    kw = dict(in_features=k, group_size=g, tile=tile)
    got = kernels.grad_x_fused(grad_y, packed, exponents, **kw)
    want = reference.grad_x(grad_y.double(), packed, exponents, in_features=k, group_size=g)
    assert got.shape == (m, k) and relative_rms(got, want) <= FP32_BUDGET
    assert torch.equal(kernels.grad_x_fused(grad_y * 2.0**-20, packed, exponents, **kw), got * 2.0**-20)
    columns = grad_y.T.contiguous().T
    assert not columns.is_contiguous() and torch.equal(kernels.grad_x_fused(columns, packed, exponents, **kw), got)
    bf16 = kernels.grad_x_fused(grad_y.to(torch.bfloat16), packed, exponents, **kw)
    want = reference.grad_x(grad_y.to(torch.bfloat16), packed, exponents, in_features=k, group_size=g)
    assert bf16.dtype == torch.bfloat16 and relative_rms(bf16, want) <= BF16_BUDGET


def test_grad_x_gemv_refuses_more_rows_than_it_takes():
    (packed, exponents, _), gen = layer(5, 83, 40, seed=3)
    grad_y = torch.randn(kernels.GEMV_MAX_ROWS + 1, 5, generator=gen).to(DEVICE)
    with pytest.raises(ValueError, match="grad_x_gemv"):
        kernels.grad_x_gemv(grad_y, packed, exponents, in_features=83, group_size=40)


def test_even_splits_leave_no_split_idle():
    """Property of the split-count rule: never more splits than asked, every block covered,
    every split (``ceil(blocks / splits)`` blocks each, as ``_split_range`` cuts them) non-empty."""
    for blocks in range(1, 200):
        for wanted in range(1, min(blocks, 40) + 1):
            splits = kernels.even_splits(wanted, blocks)
            per_split = -(-blocks // splits)
            assert 1 <= splits <= wanted
            assert (splits - 1) * per_split < blocks <= splits * per_split, (blocks, wanted, splits)


def test_fused_launch_override_matches_reference():
    """``forward_fused(tile=...)`` (benchmark sweeps) keeps the result of the default launch."""
    m, n, k, g = 3, 33, 1500, 40
    (packed, exponents, bias), gen = layer(n, k, g, seed=23)
    x = torch.randn(m, k, generator=gen).to(DEVICE)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    y = kernels.forward_fused(x, packed, exponents, bias, tile=(32, 16, 4, 2), **kw)
    assert relative_rms(y, reference.forward(x, packed, exponents, bias, **kw)) <= FP32_BUDGET


def test_gemv_refuses_more_rows_than_it_takes():
    (packed, exponents, _), gen = layer(5, 83, 40, seed=5)
    x = torch.randn(kernels.GEMV_MAX_ROWS + 1, 83, generator=gen).to(DEVICE)
    with pytest.raises(ValueError, match="forward_gemv: takes 1 to"):
        kernels.forward_gemv(x, packed, exponents, None, in_features=83, group_size=40, bias_frac_bits=FRAC_BITS)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_forward_is_exact_for_integer_inputs_and_extreme_exponents(m):
    """Small-integer activations and one exponent per row from the whole int8 range.

    Rows with a normal scale (E >= -126) must match the reference exactly. Subnormal scales
    (E = -128, -127) are exact on the CPU interpreter; on a GPU the 3-pass TF32 products and
    the GEMV may lose low bits of subnormal results, so those rows get a 1e-6 relative budget.
    """
    n, k, g = 9, 83, 40
    (packed, _, _), gen = layer(n, k, g, seed=99)
    row_e = torch.tensor([-128, -127, -126, -100, -1, 0, 7, 64, 110], dtype=torch.int8)
    normal = row_e >= -126
    exponents = row_e[:, None].expand(n, -(-k // g)).contiguous().to(DEVICE)
    x = torch.randint(-3, 4, (m, k), generator=gen).to(DEVICE, torch.float32)
    grad_y = torch.randint(-3, 4, (m, n), generator=gen).to(DEVICE, torch.float32)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    expected = reference.forward(x, packed, exponents, None, **kw).cpu()
    for name, path in forward_paths(m):
        actual = path(x, packed, exponents, None, **kw).cpu()
        torch.testing.assert_close(actual[:, normal], expected[:, normal], rtol=0, atol=0,
                                   msg=lambda text, name=name: f"{name}: {text}")
        torch.testing.assert_close(actual[:, ~normal], expected[:, ~normal], rtol=1e-6, atol=0)
    wide = reference.grad_x(grad_y, packed, exponents, in_features=k, group_size=g).cpu()
    actual = kernels.grad_x(grad_y, packed, exponents, in_features=k, group_size=g).cpu()
    assert relative_rms(actual, wide) <= FP32_BUDGET


def test_forward_scales_exactly_with_powers_of_two():
    """Property: forward(2 x) == 2 forward(x) bit for bit (bias off), on every path."""
    (packed, exponents, _), gen = layer(33, 127, 40, seed=3, bias=False)
    x = torch.randn(3, 127, generator=gen).to(DEVICE)
    kw = dict(in_features=127, group_size=40, bias_frac_bits=FRAC_BITS)
    for name, path in forward_paths(3) + [("gemv", kernels.forward_gemv)]:
        rows = x[:kernels.GEMV_MAX_ROWS] if name == "gemv" else x
        assert torch.equal(path(2 * rows, packed, exponents, None, **kw), 2 * path(rows, packed, exponents, None, **kw)), name


@pytest.mark.parametrize("wide", [False, pytest.param(True, marks=pytest.mark.skipif(
    DEVICE != "cuda", reason="the interpreter runs one block size"))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_two_step_bias_is_added_once_to_the_product(dtype, wide, monkeypatch):
    """The two-step forward adds the bias in fp32 to the product as cuBLAS rounded it, in one pass
    (``finish_splits``, with its narrow and its wide block): bit for bit the old ``(y.float() + bias *
    2^-B).to(dtype)``, with the bias's value rounded once from float64 and biases past 2^24 (where
    int32 -> fp32 rounds) included."""
    monkeypatch.setattr(triton_launch, "FINISH_WIDE_ELEMENTS", 0 if wide else 1 << 62)
    m, n, k, g = 70, 48, 333, 40
    (packed, exponents, bias), gen = layer(n, k, g, seed=5)
    bias[:4] = torch.tensor([2**31 - 1, -(2**31), 2**24 + 1, -(2**25) - 3], dtype=torch.int32)
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    buffer_dtype = torch.float32 if dtype == torch.float16 else dtype
    w = kernels.dequantize(packed, exponents, in_features=k, group_size=g, dtype=buffer_dtype)
    total = torch.nn.functional.linear(x.to(buffer_dtype), w).float() + (bias.double() * 2.0**-FRAC_BITS).float()
    want = total.to(dtype)
    if DEVICE == "cpu" and dtype == torch.bfloat16:  # the interpreter's fp32 -> bf16 cast truncates
        want = (total.view(torch.int32) & -(2**16)).view(torch.float32).to(dtype)
    got = forced_branch(kernels.forward_two_step, False)(x, packed, exponents, bias, **kw)
    assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("m,dtype", [(1, torch.float32), (3, torch.float32), (70, torch.float32),
                                     (40, torch.bfloat16), (70, torch.bfloat16)])
def test_a_strided_bias_gives_what_a_contiguous_one_does(m, dtype):
    """A bias that is a strided view (every other element of a longer tensor) gives every forward path
    exactly the output of the same bias made contiguous (the kernels read it with its stride or copy it;
    on a GPU M = 40 bf16 is the wgmma kernel's single-split epilogue)."""
    n, k, g = 48, 333, 40
    (packed, exponents, bias), gen = layer(n, k, g, seed=m)
    longer = torch.zeros(2 * n, dtype=torch.int32, device=bias.device)
    longer[::2] = bias
    strided = longer[::2]
    assert not strided.is_contiguous() and torch.equal(strided, bias)
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    for name, path in forward_paths(m):
        assert torch.equal(path(x, packed, exponents, strided, **kw), path(x, packed, exponents, bias, **kw)), name


@pytest.mark.skipif(DEVICE != "cuda", reason="65537 programs: too many for the interpreter")
def test_finish_takes_more_rows_than_a_grid_axis_of_65535():
    """Rows sit on the grid's first axis: 65537 rows (the second axis stops at 65535) reduce, with the
    bias, to what torch gives."""
    ws = torch.randn(2, 65537, 8, device=DEVICE)
    bias = torch.arange(-4, 4, dtype=torch.int32, device=DEVICE) * 2**16
    got = triton_launch.finish_splits(ws, bias, FRAC_BITS, torch.float32)
    assert torch.allclose(got, ws.sum(0) + bias.float() * 2.0**-FRAC_BITS, rtol=1e-6, atol=1e-6)


class _SplitBlockSpy:
    """Stands for ``triton_launch._finish_kernel``: launches it and records each launch's ``SPLIT_BLOCK``."""

    def __init__(self, kernel):
        self.kernel, self.split_blocks = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.split_blocks.append(kwargs["SPLIT_BLOCK"])
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("splits", [2, 19])
def test_finish_adds_few_programs_splits_a_tile_at_a_time(splits, monkeypatch):
    """A one-row workspace (fewer programs than ``FINISH_FEW_PROGRAMS``) is added ``FINISH_SPLIT_BLOCK`` splits
    at a time (19: a masked second tile): within 1e-6 of float64 relative to the sum of absolute values, the
    bias added, and the same bits on a second call; a workspace with enough rows is added one split at a time,
    bit for bit the fp32 sum in split order."""
    spy = _SplitBlockSpy(triton_launch._finish_kernel)
    monkeypatch.setattr(triton_launch, "_finish_kernel", spy)
    gen = torch.Generator().manual_seed(splits)
    bias = torch.randint(-(2**20), 2**20, (300,), generator=gen, dtype=torch.int32).to(DEVICE)
    ws = torch.randn(splits, 1, 300, generator=gen).to(DEVICE)
    assert 1 * -(-300 // 256) < triton_launch.FINISH_FEW_PROGRAMS
    got = triton_launch.finish_splits(ws, bias, FRAC_BITS, torch.float32)
    want = ws.double().sum(0) + bias.double() * 2.0**-FRAC_BITS
    scale = ws.double().abs().sum(0) + bias.double().abs() * 2.0**-FRAC_BITS
    assert float(((got.double() - want).abs() / scale).max()) < 1e-6
    assert torch.equal(triton_launch.finish_splits(ws, bias, FRAC_BITS, torch.float32), got)
    rows = torch.randn(splits, triton_launch.FINISH_FEW_PROGRAMS, 8, generator=gen).to(DEVICE)
    in_order = rows[0].clone()
    for split in rows[1:]:
        in_order += split
    assert torch.equal(triton_launch.finish_splits(rows, None, 0, torch.float32), in_order)
    block = triton_launch.FINISH_SPLIT_BLOCK
    assert block > 1 and spy.split_blocks == [block, block, 1]


@pytest.mark.parametrize("n", [256, 64])
def test_fp16_two_step_keeps_large_exponents(n):
    """fp16 cannot hold 2^E for E >= 16: the two-step paths (plane order at N = 256, column
    order at N = 64, both reached through ``forward`` at M = 70), the grad-x GEMV (M = 1)
    must compute in fp32, and so must the fused grad-x (M = 5)."""
    m, k, g = 70, 23, 5
    gen = torch.Generator().manual_seed(n)
    packed = random_packed(n, k, generator=gen).to(DEVICE)
    exponents = torch.randint(16, 21, (n, -(-k // g)), generator=gen).to(torch.int8).to(DEVICE)
    x = (torch.randn(m, k, generator=gen) * 2.0**-18).to(DEVICE).half()
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    y = kernels.forward(x, packed, exponents, None, **kw)
    expected = reference.forward(x.double(), packed, exponents, None, **kw)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert relative_rms(y, expected) <= BF16_BUDGET
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE).half() * 2.0**-18
    grad = kernels.grad_x(grad_y, packed, exponents, in_features=k, group_size=g)
    expected = reference.grad_x(grad_y.double(), packed, exponents, in_features=k, group_size=g)
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()
    assert relative_rms(grad, expected) <= BF16_BUDGET
    for rows in (1, 5):  # the GEMV, the fused kernel
        grad = kernels.grad_x(grad_y[:rows], packed, exponents, in_features=k, group_size=g)
        assert grad.dtype == torch.float16 and torch.isfinite(grad).all()
        assert relative_rms(grad, expected[:rows]) <= BF16_BUDGET


@pytest.mark.parametrize("tile", [None, (8, 64, 4), (4, 128, 8)])
def test_column_decode_is_bit_exact_for_any_tile(tile):
    """The two-step buffer (column order, fp32) equals the reference decode bit for bit, with
    the default tile and with launch overrides; K = 83 is not a multiple of 5 or of G."""
    n, k, g = 11, 83, 15
    (packed, exponents, _), _ = layer(n, k, g, seed=31, e_low=-40, e_high=40)
    got = kernels.dequantize(packed, exponents, in_features=k, group_size=g, dtype=torch.float32, tile=tile)
    want = reference.dequantize(packed, exponents, in_features=k, group_size=g)
    assert torch.equal(got.cpu(), want.to(torch.float32).cpu())


def test_column_decode_of_every_byte_value_in_every_position():
    """Every valid byte in every digit position, with K = 1213 (not a multiple of 5, of G or of
    the column tile): the decode equals the reference bit for bit, and the returned view skips
    the buffer's padding columns (row stride a whole number of column tiles, at least K)."""
    n, g = 5, 40
    k = 5 * 243 - 2
    packed = torch.stack([torch.roll(torch.arange(243), shift) for shift in range(n)]).to(torch.uint8).to(DEVICE)
    gen = torch.Generator().manual_seed(3)
    exponents = torch.randint(-20, 20, (n, -(-k // g)), generator=gen).to(torch.int8).to(DEVICE)
    got = kernels.dequantize(packed, exponents, in_features=k, group_size=g, dtype=torch.float32)
    want = reference.dequantize(packed, exponents, in_features=k, group_size=g)
    assert got.shape == (n, k) and got.stride(0) >= k and got.stride(1) == 1
    assert torch.equal(got.cpu(), want.to(torch.float32).cpu())


def _planes_as_columns(w: torch.Tensor) -> torch.Tensor:
    """Undo the digit-plane order of :func:`kernels.dequantize_planes`: ``[N, blocks * 5 * BB]``
    -> ``[N, blocks * BB * 5]`` in column order (padding columns past K included)."""
    block_b = kernels.plane_block()
    n = w.shape[0]
    return w.view(n, -1, 5, block_b).transpose(2, 3).reshape(n, -1)


@pytest.mark.parametrize("n,k,g", [(11, 83, 15), (37, 1500, 40), (3, 7, 5)])
def test_bf16_plane_decode_is_bit_exact_with_extreme_exponents(n, k, g):
    """The bf16 digit-plane buffer equals the reference decode bit for bit for every exponent
    (E = -128 and -127 are bf16 subnormals, E = 127 the top); a corrupt byte gives NaN in its
    five weights. On a GPU this is the PTX pair decode, on the CPU the fp32 quotients, whose
    interpreter cast to bf16 flushes subnormals to zero, so there E stops at -126."""
    (packed, exponents, _), gen = layer(n, k, g, seed=41)
    lowest = -128 if DEVICE == "cuda" else -126
    exponents = torch.randint(lowest, 128, exponents.shape, generator=gen).to(torch.int8).to(DEVICE)
    exponents[0, 0], exponents[-1, -1] = lowest, 127
    got = _planes_as_columns(kernels.dequantize_planes(packed, exponents, group_size=g, dtype=torch.bfloat16))
    want = reference.dequantize(packed, exponents, in_features=k, group_size=g).to(torch.bfloat16)
    assert torch.equal(got[:, :k].cpu(), want.cpu()) and not got[:, k:].any()
    packed = packed.clone()
    packed[n // 2, 1] = 243
    got = _planes_as_columns(kernels.dequantize_planes(packed, exponents, group_size=g, dtype=torch.bfloat16))
    nan = torch.isnan(got.float().cpu())
    assert nan[n // 2, 5:10].all() and nan.sum() == 5


@pytest.mark.skipif(DEVICE != "cuda", reason="the PTX pair decode runs only compiled on a GPU")
def test_bf16_pair_decode_matches_fp32_quotients():
    """Both decodes of the plane kernel give the same bf16 buffer, bit for bit."""
    (packed, exponents, _), gen = layer(300, 4099, 40, seed=43, e_low=-128, e_high=128)
    pairs = kernels.dequantize_planes(packed, exponents, group_size=40, dtype=torch.bfloat16, bf16_pairs=True)
    quotients = kernels.dequantize_planes(packed, exponents, group_size=40, dtype=torch.bfloat16, bf16_pairs=False)
    assert torch.equal(pairs, quotients)


@pytest.mark.skipif(DEVICE != "cuda", reason="the PTX pair decode runs only compiled on a GPU")
@pytest.mark.parametrize("m", [2, 16, 40])
def test_fused_pair_decode_matches_fp32_quotients(m):
    """The fused small-M forward gives the same bf16 output, bit for bit, whichever decode
    builds its weight tiles (the weights are identical, the products the same); K = 4099 is
    several byte blocks and split-K programs, the exponents span -60..39."""
    (packed, exponents, bias), gen = layer(300, 4099, 40, seed=47, e_low=-60, e_high=40)
    x = torch.randn(m, 4099, generator=gen).to(DEVICE, torch.bfloat16)
    kw = dict(in_features=4099, group_size=40, bias_frac_bits=FRAC_BITS)
    pairs = kernels.forward_fused(x, packed, exponents, bias, pairs=True, **kw)
    quotients = kernels.forward_fused(x, packed, exponents, bias, pairs=False, **kw)
    assert torch.isfinite(pairs).all() and torch.equal(pairs, quotients)


def test_pair_decode_refuses_what_it_cannot_do():
    """The PTX pair decode only writes bf16 and only runs compiled: asking for it otherwise
    is a clear error, not a crash inside the kernel."""
    (packed, exponents, _), _ = layer(4, 83, 40, seed=3)
    with pytest.raises(ValueError, match="pair decode"):
        kernels.dequantize_planes(packed, exponents, group_size=40, dtype=torch.float32, bf16_pairs=True)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="pair decode"):
            kernels.dequantize_planes(packed, exponents, group_size=40, dtype=torch.bfloat16, bf16_pairs=True)


def test_digit_planes_tiled_over_rows_match_a_torch_regrouping():
    """Row tiles of 16 (from 64 rows up): rows past M are zero, rows past ROWS are not written."""
    from ternary.kernels.linear.triton_base3 import digit_planes

    m, rows, k, block_b = 70, 80, 23, 16
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    kb_padded = block_b
    got = digit_planes(x, rows, kb_padded, block_b, z_form=False, dtype=torch.float32, blocked=True)
    padded = torch.zeros(rows, kb_padded * 5, device=DEVICE)
    padded[:m, :k] = x
    want = padded.view(rows, 1, block_b, 5).transpose(2, 3)
    assert got.shape == (rows, 1, 5, block_b) and torch.equal(got, want)


def test_corrupt_bytes_poison_outputs_instead_of_decoding():
    n, k, g = 5, 83, 40
    (packed, exponents, bias), gen = layer(n, k, g, seed=17)
    packed = packed.clone()
    packed[2, 4] = 250  # a whole byte block on the CPU interpreter's 16-byte tiles
    packed[4, 16] = 243  # the last, partial block
    kw = dict(in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
    for m, dtype in ((1, torch.float32), (2, torch.float32), (3, torch.float32), (1, torch.bfloat16),
                     (2, torch.bfloat16), (3, torch.bfloat16)):
        x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
        for name, path in forward_paths(m):
            y = path(x, packed, exponents, bias, **kw)
            assert torch.isnan(y[:, [2, 4]]).all(), (name, dtype)
            assert torch.isfinite(y[:, [0, 1, 3]]).all(), (name, dtype)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        paths = [(3, "planes", forced_branch(kernels.grad_x_two_step, True)),
                 (3, "columns", forced_branch(kernels.grad_x_two_step, False)),
                 (1, "gemv", kernels.grad_x_gemv), (2, "gemv", kernels.grad_x_gemv),
                 (3, "fused", kernels.grad_x_fused), (1, "fused", kernels.grad_x_fused),
                 (3, "fused_quotients", functools.partial(kernels.grad_x_fused, pairs=False))]
        for m, name, path in paths:
            grad = path(torch.randn(m, n, generator=gen).to(DEVICE, dtype), packed, exponents, in_features=k,
                        group_size=g)
            assert torch.isnan(grad[:, 20:25]).all() and torch.isnan(grad[:, 80:]).all(), (dtype, name, m)
            assert torch.isfinite(grad[:, :20]).all() and torch.isfinite(grad[:, 25:80]).all(), (dtype, name, m)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: {**a, "T_packed": a["T_packed"].to(torch.int16)}, "T_packed"),
        (lambda a: {**a, "E": a["E"][:, :1].contiguous()}, "E must be int8"),
        (lambda a: {**a, "x": a["x"][:, :-1]}, "in_features"),
        (lambda a: {**a, "bias": a["bias"].to(torch.int64)}, "bias"),
    ],
)
def test_bad_inputs_raise_naming_the_tensor(change, message):
    (packed, exponents, bias), gen = layer(5, 83, 40, seed=1)
    args = change({"x": torch.randn(2, 83, generator=gen).to(DEVICE), "T_packed": packed, "E": exponents, "bias": bias})
    with pytest.raises(ValueError, match=message):
        kernels.forward(args["x"], args["T_packed"], args["E"], args["bias"], in_features=83, group_size=40,
                        bias_frac_bits=FRAC_BITS)
