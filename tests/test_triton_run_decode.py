"""The two-step buffer decoded eight bytes at a time (``triton_run_decode``): bit for bit against the
reference decode on the GPU; what it refuses, everywhere. The PTX itself is run on the CPU over every
byte value by ``test_base3_asm.py::test_run_decode_gives_every_byte_its_columns``."""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from test_triton_register_decode import _compile_offline  # noqa: E402

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_run_decode  # noqa: E402
from ternary.state.packing import packed_width, random_packed  # noqa: E402

GPU = pytest.mark.skipif(DEVICE != "cuda", reason="the run decode is inline PTX: compiled GPUs only")


def _layer(n: int, k: int, g: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    packed = random_packed(n, k, generator=gen)
    exponents = torch.randint(-128, 128, (n, -(-k // g)), generator=gen).to(torch.int8)
    exponents[0, 0], exponents[-1, -1] = -128, 127  # bf16 subnormal and the top
    return packed.to(DEVICE), exponents.to(DEVICE)


def _want(packed, exponents, k, g):
    return reference.dequantize(packed.cpu(), exponents.cpu(), in_features=k, group_size=g).to(torch.bfloat16)


@GPU
@pytest.mark.parametrize("n,k,g", [(1, 7, 40), (11, 83, 20), (37, 1500, 40), (5, 1213, 60), (300, 4099, 80),
                                   (70, 333, 20)])
def test_run_decode_is_bit_exact_for_every_exponent(n, k, g):
    """K not a multiple of 5, 40 or G; G = 20 (two scales per run), 40, 60 (runs straddle groups), 80;
    E from -128 (bf16 subnormal) to 127. The view is ``[N, K]`` over rows of whole runs and lines."""
    packed, exponents = _layer(n, k, g, seed=k + g)
    got = kernels.dequantize(packed, exponents, in_features=k, group_size=g)
    assert got.dtype == torch.bfloat16 and got.shape == (n, k) and got.stride(1) == 1
    runs = -(-packed_width(k) // triton_run_decode.RUN_BYTES)
    assert got.stride(0) % 64 == 0 and got.stride(0) >= triton_run_decode.RUN_COLUMNS * runs
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))


@GPU
def test_run_decode_of_every_byte_value_in_every_position():
    """Every valid byte in each of the eight positions of a run (rows of 243 bytes shifted by one per
    row), against the reference and against the per-weight decode, bit for bit."""
    n, g = 16, 40
    k = 5 * 243 - 3
    packed = torch.stack([torch.roll(torch.arange(243), shift) for shift in range(n)]).to(torch.uint8).to(DEVICE)
    exponents = torch.randint(-20, 20, (n, -(-k // g)), generator=torch.Generator().manual_seed(2)).to(torch.int8)
    exponents = exponents.to(DEVICE)
    got = kernels.dequantize(packed, exponents, in_features=k, group_size=g)
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))
    per_weight = kernels.dequantize(packed, exponents, in_features=k, group_size=g, runs=False)
    assert torch.equal(got, per_weight)


@GPU
@pytest.mark.parametrize("column", [0, 37, 1499])
def test_a_corrupt_byte_gives_nan_in_exactly_its_columns(column):
    """A byte > 242 at the start, middle or end of a row turns its five weights (those inside K)
    into NaN and nothing else; the other rows are untouched."""
    n, k, g = 9, 7497, 40
    packed, exponents = _layer(n, k, g, seed=5)
    want = _want(packed, exponents, k, g)
    for value in (243, 255):
        bad = packed.clone()
        bad[4, column] = value
        got = kernels.dequantize(bad, exponents, in_features=k, group_size=g).cpu()
        nan = torch.isnan(got)
        inside = range(5 * column, min(5 * column + 5, k))
        assert nan[4, list(inside)].all() and nan.sum() == len(inside)
        assert torch.equal(got[~nan], want[~nan])


@GPU
@pytest.mark.parametrize("tile", [(1, 32, 1), (8, 16, 4), (2, 128, 8)])
def test_run_decode_launch_tiles_agree(tile):
    """Launch overrides (rows and runs per program, warps) give the same buffer, with N and the run
    count not multiples of the tile."""
    n, k, g = 67, 2999, 40
    packed, exponents = _layer(n, k, g, seed=9)
    got = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g, tile=tile)
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))


@GPU
@pytest.mark.parametrize("m", [64, 300])
def test_two_step_paths_use_the_run_decode_and_match_the_reference(m):
    """bf16 forward and grad-x from the two-step path (digit-plane order below N / 8 rows, column order
    above) against float64 references, within the bf16 budget of ``test_triton_linear``."""
    n, k, g = 2048, 1500, 40
    packed, exponents = _layer(n, k, g, seed=m)
    exponents = exponents.clamp(-6, 4)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, k, generator=gen).to(DEVICE, torch.bfloat16)
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE, torch.bfloat16)
    w = reference.dequantize(packed.cpu(), exponents.cpu(), in_features=k, group_size=g).double()
    y = kernels.forward_two_step(x, packed, exponents, None, in_features=k, group_size=g, bias_frac_bits=16)
    gx = kernels.grad_x_two_step(grad_y, packed, exponents, in_features=k, group_size=g)
    for got, want in ((y, x.double().cpu() @ w.T), (gx, grad_y.double().cpu() @ w)):
        error = (got.double().cpu() - want).norm() / want.norm()
        assert error <= 1e-2


def test_run_decode_refuses_what_it_cannot_do():
    """fp32 buffers, group sizes that split a 4-byte run between scales, and the CPU or the
    interpreter are refused by ``takes``; asking for the decode anyway is a clear error."""
    packed, exponents = _layer(4, 83, 15, seed=1)
    assert not triton_run_decode.takes(packed, 15, torch.bfloat16)
    assert not triton_run_decode.takes(packed, 40, torch.float32)
    with pytest.raises(ValueError, match="group_size=15"):
        triton_run_decode.dequantize_runs(packed, exponents, in_features=83, group_size=15)
    with pytest.raises(ValueError, match="bf16 only"):
        kernels.dequantize(packed, exponents, in_features=83, group_size=40, dtype=torch.float32, runs=True)
    if DEVICE == "cpu":
        assert not triton_run_decode.takes(packed, 40, torch.bfloat16)
        exponents = exponents[:, :3].clamp(-20, 20)  # the interpreter's bf16 casts flush subnormals
        got = kernels.dequantize(packed, exponents, in_features=83, group_size=40)  # the per-weight decode
        assert torch.equal(got, _want(packed, exponents, 83, 40))


_OFFLINE_COMPILE = """
import json, re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ternary.kernels.linear import triton_run_decode as runs

names = "p_ptr e_ptr w_ptr N KB NG RUNS stride_pn stride_en stride_w16".split()
signature = dict(zip(names, ["*u8", "*i8", "*i32"] + ["i32"] * 7))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "BLOCK_N", "BLOCK_R"), "constexpr"))
report = []
for (block_n, block_r, warps), bytes_per_group in ((runs.RUN_DECODE_TILE, 8), ((1, 32, 1), 4), ((2, 128, 8), 12)):
    source = ASTSource(runs._run_decode_kernel, signature=signature, attrs={(2,): [["tt.divisibility", 16]]},
                       constexprs={"BYTES_PER_GROUP": bytes_per_group, "BLOCK_N": block_n, "BLOCK_R": block_r})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    layouts = re.findall(r"#blocked\\d* = #ttg.blocked<\\{sizePerThread = \\[(\\d+)\\], threadsPerWarp = \\[(\\d+)\\]",
                         compiled.asm["ttgir"])
    sass = compiled.asm["sass"]
    report.append([layouts, compiled.metadata.shared, sass.count("SHFL.BFLY"), sass.count("STG.E.EL.128"),
                   block_n * block_r // (32 * warps)])
print(json.dumps(report))
"""


def test_runs_sit_one_per_lane_so_that_pairs_are_neighbouring_lanes():
    """Compiled offline for sm_90: the kernel's one-dimensional tiles give each lane one element in turn
    (``sizePerThread = [1]``, 32 lanes per warp), which the shuffles of the run decode rely on to find
    the neighbouring run in lane ``L ^ 1``; nothing goes through shared memory; each run costs eight
    shuffles and five 16-byte stores (evict-last)."""
    for layouts, shared, shuffles, stores, runs_per_thread in _compile_offline(_OFFLINE_COMPILE):
        assert layouts == [["1", "32"]]
        assert shared == 0
        assert (shuffles, stores) == (8 * max(runs_per_thread, 1), 5 * max(runs_per_thread, 1))


@GPU
def test_layers_the_run_decode_takes_never_decode_in_digit_planes():
    """The two-step paths pick digit-plane order below ``N / PLANES_ROWS_PER_OUTPUT`` rows only where
    the run decode cannot build the buffer (another group size or buffer dtype): it writes columns as
    fast as the plane decode writes planes, so planes would only add the regrouping."""
    n, k = 4096, 4099
    packed = random_packed(n, k, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    rows = n // kernels.PLANES_ROWS_PER_OUTPUT - 1
    assert not kernels._plane_order(rows, packed, 40, torch.bfloat16)
    assert kernels._plane_order(rows, packed, 15, torch.bfloat16)
    assert kernels._plane_order(rows, packed, 40, torch.float32)
    assert not kernels._plane_order(rows + 1, packed, 15, torch.bfloat16)


@GPU
def test_run_decode_reads_row_padded_and_offset_views():
    """``T_packed`` and ``E`` as views into wider, offset storage (rows not aligned to anything): the
    run decode reads them through their row strides, byte by byte, and equals the reference."""
    n, k, g = 23, 1001, 40
    packed, exponents = _layer(n, k, g, seed=12)
    wide_p = torch.full((n, packed.shape[1] + 13), 255, dtype=torch.uint8, device=DEVICE)
    wide_p[:, 5:5 + packed.shape[1]] = packed
    wide_e = torch.zeros((n, exponents.shape[1] + 3), dtype=torch.int8, device=DEVICE)
    wide_e[:, 1:1 + exponents.shape[1]] = exponents
    view_p, view_e = wide_p[:, 5:5 + packed.shape[1]], wide_e[:, 1:1 + exponents.shape[1]]
    got = kernels.dequantize(view_p, view_e, in_features=k, group_size=g)
    assert not torch.isnan(got).any()  # the 255s around the view are never read
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))
