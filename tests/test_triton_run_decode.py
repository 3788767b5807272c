"""The two-step buffer decoded eight bytes at a time (``triton_run_decode``): bit for bit against the
reference decode on the GPU; what it refuses, everywhere. The PTX itself is run on the CPU over every
byte value by ``test_base3_asm.py::test_run_decode_gives_every_byte_its_columns``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from test_base3_asm import MASK, run_asm  # noqa: E402
from test_triton_register_decode import _compile_offline  # noqa: E402

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_run_decode  # noqa: E402
from ternary.kernels.linear.triton_launch import round_up  # noqa: E402
from ternary.state.packing import byte_to_trits_table, packed_width, random_packed  # noqa: E402

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
@pytest.mark.parametrize("byte", [0, 37, 1499])
def test_a_corrupt_byte_gives_nan_in_exactly_its_columns(byte):
    """A byte > 242 at the start, middle or end of a row turns its five weights (those inside K)
    into NaN and nothing else; the other rows are untouched."""
    n, k, g = 9, 7497, 40
    packed, exponents = _layer(n, k, g, seed=5)
    want = _want(packed, exponents, k, g)
    for value in (243, 255):
        bad = packed.clone()
        bad[4, byte] = value
        got = kernels.dequantize(bad, exponents, in_features=k, group_size=g).cpu()
        nan = torch.isnan(got)
        inside = range(5 * byte, min(5 * byte + 5, k))
        assert nan[4, list(inside)].all() and nan.sum() == len(inside)
        assert torch.equal(got[~nan], want[~nan])


@GPU
@pytest.mark.parametrize("tile", [(1, 32, 1), (8, 16, 4), (2, 128, 8), (16, 32, 4)])
def test_run_decode_launch_tiles_agree(tile):
    """Launch overrides (rows and runs per program, warps; four runs per thread in the last) give the
    same buffer, with N and the run count not multiples of the tile."""
    n, k, g = 67, 2999, 40
    packed, exponents = _layer(n, k, g, seed=9)
    got = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g, tile=tile)
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))


@GPU
@pytest.mark.parametrize("m", [64, 300])
def test_two_step_paths_use_the_run_decode_and_match_the_reference(m, monkeypatch):
    """bf16 forward and grad-x from the two-step path take the run decode (in column order, below
    N / PLANES_ROWS_PER_OUTPUT rows too) and match float64 references within the bf16 budget of
    ``test_triton_linear``."""
    decoded = []
    real = triton_run_decode.dequantize_runs
    monkeypatch.setattr(triton_run_decode, "dequantize_runs", lambda *a, **kw: decoded.append(1) or real(*a, **kw))
    n, k, g = 2048, 1500, 40
    packed, exponents = _layer(n, k, g, seed=m)
    exponents = exponents.clamp(-6, 4)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, k, generator=gen).to(DEVICE, torch.bfloat16)
    grad_y = torch.randn(m, n, generator=gen).to(DEVICE, torch.bfloat16)
    w = reference.dequantize(packed.cpu(), exponents.cpu(), in_features=k, group_size=g).double()
    y = kernels.forward_two_step(x, packed, exponents, None, in_features=k, group_size=g, bias_frac_bits=16)
    gx = kernels.grad_x_two_step(grad_y, packed, exponents, in_features=k, group_size=g)
    assert len(decoded) == 2  # m = 64 is below N / PLANES_ROWS_PER_OUTPUT = 256, where planes used to apply
    for got, want in ((y, x.double().cpu() @ w.T), (gx, grad_y.double().cpu() @ w)):
        error = (got.double().cpu() - want).norm() / want.norm()
        assert error <= 1e-2


def test_launch_tiles_cover_a_row_with_one_run_a_thread():
    """For every row width: a tile ``check_tile`` accepts, one row a program and one run a thread, covering
    the row with fewer than twice its runs (at least one warp), or ``RUN_DECODE_TILE`` for wide rows."""
    for runs in range(1, 2100):
        tile = triton_run_decode.launch_tile(runs)
        triton_run_decode.check_tile(tile)
        block_n, block_r, warps = tile
        assert block_n == 1 and block_r == 32 * warps
        if block_r < triton_run_decode.RUN_DECODE_TILE[1]:
            assert runs <= block_r and (block_r == 32 or runs > block_r // 2)
        else:
            assert tile == triton_run_decode.RUN_DECODE_TILE


def test_run_decode_refuses_what_it_cannot_do():
    """fp32 buffers, group sizes that split a 4-byte run between scales, and the CPU or the
    interpreter are refused by ``takes``; asking for the decode anyway, with tensors that do not fit
    ``in_features``, or with a tile that breaks the lane pairing is a clear error."""
    packed, exponents = _layer(4, 83, 15, seed=1)
    wide, _ = _layer(4, 160, 40, seed=1)
    with pytest.raises(ValueError, match=r"T_packed \[4, 32\].*in_features=83"):
        triton_run_decode.dequantize_runs(wide, exponents[:, :3], in_features=83, group_size=40)
    for tile in ((1, 16, 1), (0, 64, 1), (2, 1, 1), (1, 48, 1), (1, 64, 3)):
        with pytest.raises(ValueError, match="tile"):
            triton_run_decode.check_tile(tile)
    triton_run_decode.check_tile(triton_run_decode.RUN_DECODE_TILE)
    with pytest.raises(ValueError, match="tile"):
        kernels.dequantize(packed, exponents[:, :3], in_features=83, group_size=40, runs=True, tile=(16, 256, 4))
    assert not triton_run_decode.takes(packed, 15, torch.bfloat16)
    assert not triton_run_decode.takes(packed, 40, torch.float32)
    with pytest.raises(ValueError, match="group_size=15"):
        triton_run_decode.dequantize_runs(packed, exponents, in_features=83, group_size=15)
    with pytest.raises(ValueError, match="bf16 only"):
        kernels.dequantize(packed, exponents, in_features=83, group_size=40, dtype=torch.float32, runs=True)
    words = torch.empty((4, 64), dtype=torch.int32, device=DEVICE)
    for clear in (torch.zeros(5, dtype=torch.int64, device=DEVICE), torch.zeros((5, 2), dtype=torch.int32,
                                                                                 device=DEVICE)[:, 0]):
        with pytest.raises(ValueError, match="clear must be a contiguous int32"):
            triton_run_decode.launch(packed, exponents, words, group_size=40, tile=(1, 32, 1), clear=clear)
    if DEVICE == "cpu":
        assert not triton_run_decode.takes(packed, 40, torch.bfloat16)
        exponents = exponents[:, :3].clamp(-20, 20)  # the interpreter's bf16 casts flush subnormals
        got = kernels.dequantize(packed, exponents, in_features=83, group_size=40)  # the per-weight decode
        assert torch.equal(got, _want(packed, exponents, 83, 40))


_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ternary.kernels.linear import triton_run_decode as runs

names = "p_ptr e_ptr w_ptr zero_ptr N KB NG RUNS ZEROS stride_pn stride_en stride_w16".split()
signature = dict(zip(names, ["*u8", "*i8", "*i32", "*i32"] + ["i32"] * 8))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "ONE_SCALE_PER_RUN", "BLOCK_N", "BLOCK_R", "CLEARS"), "constexpr"))
report = []
for (block_n, block_r, warps), bytes_per_group, clears in ((runs.RUN_DECODE_TILE, 8, False),
                                                           (runs.RUN_DECODE_TILE, 8, True), ((1, 32, 1), 4, False),
                                                           ((1, 64, 2), 8, True), ((1, 128, 4), 8, False),
                                                           ((2, 128, 8), 12, True), ((16, 32, 4), 8, False)):
    constexprs = {"BYTES_PER_GROUP": bytes_per_group, "ONE_SCALE_PER_RUN": bytes_per_group % 8 == 0,
                  "BLOCK_N": block_n, "BLOCK_R": block_r, "CLEARS": clears}
    source = ASTSource(runs._run_decode_kernel, signature=signature, attrs={(2,): [["tt.divisibility", 16]]},
                       constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    layouts = re.findall(r"#blocked\\d* = #ttg.blocked<\\{sizePerThread = \\[(\\d+)\\], threadsPerWarp = \\[(\\d+)\\]",
                         compiled.asm["ttgir"])
    sass = full_sass(compiled.asm["cubin"])
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
def test_a_launch_with_clear_zeroes_it_and_decodes_the_same():
    """``clear`` (1000 words of ``2^30``, a slice between guards) is all zero after the launch, the guards are
    untouched, and the buffer equals a launch without it."""
    packed, exponents = _layer(37, 1500, 40, seed=13)
    runs = -(-packed.shape[1] // triton_run_decode.RUN_BYTES)
    words = [torch.zeros((37, 20 * runs), dtype=torch.int32, device=DEVICE) for _ in range(2)]
    storage = torch.full((1064, ), 1 << 30, dtype=torch.int32, device=DEVICE)
    tile = triton_run_decode.launch_tile(runs)
    triton_run_decode.launch(packed, exponents, words[0], group_size=40, tile=tile)
    triton_run_decode.launch(packed, exponents, words[1], group_size=40, tile=tile, clear=storage[32:1032])
    assert (storage[32:1032] == 0).all() and (storage[:32] == 1 << 30).all() and (storage[1032:] == 1 << 30).all()
    assert torch.equal(words[0], words[1])


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


class _AsmResults:
    def __init__(self, outputs):
        self.outputs = outputs

    def get_result(self, index):
        return self.outputs[index]


def _modelled_inline_asm(builder, asm, constraints, values, types, is_pure, pack):
    """The interpreter's inline asm, run by the NumPy model of ``test_base3_asm``: element ``i`` of the
    program's tile is lane ``i`` (what the offline compile test pins for the compiled kernel)."""
    from triton.runtime.interpreter import TensorHandle

    outputs = sum(1 for c in constraints.split(",") if c.startswith("="))
    shape = np.asarray(values[0].data).shape
    operands = {f"${outputs + i}": (np.asarray(v.data).reshape(-1).astype(np.int64) & 0xFFFFFFFF).astype(np.uint64)
                for i, v in enumerate(values)}
    registers = run_asm(asm, operands)
    return _AsmResults([TensorHandle((registers[f"${i}"] & MASK).astype(np.uint32).view(np.int32).reshape(shape),
                                     triton.language.int32) for i in range(outputs)])


def _table_weights(packed, exponents, k, g):
    """bf16 ``T * 2^E`` by the byte table, NaN in the five columns of a corrupt byte."""
    table = byte_to_trits_table().numpy().astype(np.float64)
    p = packed.cpu().numpy().astype(np.int64)
    trits = table[np.minimum(p, 242)]
    trits[p > 242] = np.nan
    scale = np.repeat(2.0 ** exponents.cpu().numpy().astype(np.float64), g, axis=1)[:, :k]
    return torch.from_numpy(trits.reshape(p.shape[0], -1)[:, :k] * scale).to(torch.bfloat16)


@pytest.mark.skipif(DEVICE != "cpu", reason="the Triton interpreter runs the kernel with its PTX modelled in NumPy")
@pytest.mark.parametrize("n,k,g,tile,corrupt,zeros", [
    (1, 7, 40, (1, 32, 1), (), 0),
    (6, 79, 20, (8, 4, 1), ((5, 15, 243),), 1),  # two runs per row, the second one short
    (11, 83, 20, (2, 16, 1), ((0, 0, 255), (10, 16, 250)), 0),  # an odd number of runs per row
    (5, 1213, 60, (1, 64, 2), ((2, 242, 243),), 129),  # runs straddle scale groups; the last byte corrupt
    (9, 747, 40, (1, 32, 1), ((4, 37, 255), (8, 148, 243)), 96),  # three whole blocks of zeros
])
def test_the_kernel_writes_exactly_its_runs(monkeypatch, n, k, g, tile, corrupt, zeros):
    """The compiled kernel's indexing and masks, run on the CPU: ``T_packed`` and ``E`` as offset views
    into storage poisoned around them, the buffer between guard words. Every word of the row's runs is
    written, bit-exact (NaN in exactly the five columns of a corrupt byte), and nothing else is: not
    the row padding past the runs, not the guards, whether the row has an odd or even run count. With
    ``zeros``, the same launch clears exactly that many words of a guarded ``clear`` tensor."""
    from triton.runtime.interpreter import InterpreterBuilder

    monkeypatch.setattr(InterpreterBuilder, "create_inline_asm", _modelled_inline_asm, raising=False)
    gen = torch.Generator().manual_seed(k)
    packed = random_packed(n, k, generator=gen)
    for row, byte, value in corrupt:
        packed[row, byte] = value
    exponents = torch.randint(-128, 128, (n, -(-k // g)), generator=gen).to(torch.int8)
    kb, groups = packed.shape[1], exponents.shape[1]
    wide_p = torch.full((n, kb + 9), 255, dtype=torch.uint8)
    wide_p[:, 4:4 + kb] = packed
    wide_e = torch.full((n, groups + 3), 127, dtype=torch.int8)
    wide_e[:, 1:1 + groups] = exponents
    columns = round_up(round_up(k, triton_run_decode.RUN_COLUMNS), triton_run_decode.ROW_ALIGN)
    sentinel, guard = 0x12345678, 64  # as two bf16 lanes, values no weight can take (mantissas non-zero)
    storage = torch.full((2 * guard + n * columns // 2,), sentinel, dtype=torch.int32)
    words = storage[guard:guard + n * columns // 2].view(n, columns // 2)
    flags = torch.full((2 * guard + zeros,), -7, dtype=torch.int32)
    clear = flags[guard:guard + zeros] if zeros else None
    triton_run_decode.launch(wide_p[:, 4:4 + kb], wide_e[:, 1:1 + groups], words, group_size=g, tile=tile,
                             clear=clear)
    if zeros:
        assert (clear == 0).all() and (flags[:guard] == -7).all() and (flags[guard + zeros:] == -7).all()
    runs = -(-kb // triton_run_decode.RUN_BYTES)
    assert (storage[:guard] == sentinel).all() and (storage[-guard:] == sentinel).all()
    assert (words[:, :20 * runs] != sentinel).all() and (words[:, 20 * runs:] == sentinel).all()
    # past K the run holds the padding digits (zeros) and bytes read as 121 (zeros), but a corrupt
    # last byte is NaN in all its five columns, inside K or not
    width = triton_run_decode.RUN_COLUMNS * runs
    padded = torch.cat([packed, torch.full((n, 8 * runs - kb), 121, dtype=torch.uint8)], dim=1)
    padded_e = torch.cat([exponents, torch.zeros((n, -(-width // g) - groups), dtype=torch.int8)], dim=1)
    got = words.view(torch.bfloat16)[:, :width]
    want = _table_weights(padded, padded_e, width, g)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got[~torch.isnan(got)].view(torch.int16), want[~torch.isnan(want)].view(torch.int16))
