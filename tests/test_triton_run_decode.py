"""The two-step buffer decoded eight bytes at a time (``triton_run_decode``): bit for bit against the
reference decode on the GPU; what it refuses, everywhere. The PTX itself is run on the CPU over every
byte value by ``test_base3_asm.py::test_run_decode_gives_every_byte_its_columns``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from test_triton_register_decode import _compile_offline  # noqa: E402

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_run_decode  # noqa: E402
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
    assert got.stride(0) == triton_run_decode.buffer_columns(k)
    assert torch.equal(got.cpu(), _want(packed, exponents, k, g))
    past_k = got.as_strided((n, got.stride(0) - k), (got.stride(0), 1), got.storage_offset() + k)
    assert (past_k.view(torch.int16) == 0).all()  # +0.0: the bytes past the row read as zero weights


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
@pytest.mark.parametrize("block", [32, 128, 256, 512])
def test_run_decode_blocks_agree(block):
    """Runs per program other than ``BLOCK_RUNS`` give the same buffer, with neither N nor the runs of a row
    nor N times them a multiple of the block."""
    n, k, g = 67, 2999, 40
    packed, exponents = _layer(n, k, g, seed=9)
    got = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g, block=block)
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


def test_buffer_rows_are_whole_runs_and_lines_and_no_wider():
    """For every K up to 3000: ``Kp`` holds every run of the row, is a whole number of runs and of 128-byte
    lines (so rows lie back to back and the decode's spans are contiguous), and is the narrowest such."""
    for k in range(1, 3000):
        columns = triton_run_decode.buffer_columns(k)
        runs = -(-packed_width(k) // triton_run_decode.RUN_BYTES)
        assert columns % triton_run_decode.RUN_COLUMNS == 0 and columns % triton_run_decode.ROW_ALIGN == 0
        assert triton_run_decode.RUN_COLUMNS * runs <= columns < triton_run_decode.RUN_COLUMNS * runs + 320


def test_run_decode_refuses_what_it_cannot_do():
    """fp32 buffers, group sizes that split a 4-byte run between scales, and the CPU or the
    interpreter are refused by ``takes``; asking for the decode anyway, with tensors that do not fit
    ``in_features``, a block that is not a power of two from 32 to 512 runs, a ``clear`` that is not
    contiguous int32 or a buffer too narrow for the runs is a clear error."""
    packed, exponents = _layer(4, 83, 15, seed=1)
    wide, _ = _layer(4, 160, 40, seed=1)
    with pytest.raises(ValueError, match=r"T_packed \[4, 32\].*in_features=83"):
        triton_run_decode.dequantize_runs(wide, exponents[:, :3], in_features=83, group_size=40)
    for block in (0, 16, 48, 96, 1024):
        with pytest.raises(ValueError, match=f"block = {block} runs"):
            triton_run_decode.check_block(block)
    triton_run_decode.check_block(triton_run_decode.BLOCK_RUNS)
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
            triton_run_decode.launch(packed, exponents, words, group_size=40, block=32, clear=clear)
    with pytest.raises(ValueError, match=r"words \[4, 59\].*cannot hold 4 rows of 3 runs"):
        triton_run_decode.launch(packed, exponents, words[:, :59], group_size=40)
    with pytest.raises(ValueError, match=r"words \[4, 64\].*whole_rows: contiguous rows of exactly 160 words"):
        triton_run_decode.launch(packed, exponents, words, group_size=40, whole_rows=True)
    if DEVICE == "cpu":
        assert not triton_run_decode.takes(packed, 40, torch.bfloat16)
        exponents = exponents[:, :3].clamp(-20, 20)  # the interpreter's bf16 casts flush subnormals
        got = kernels.dequantize(packed, exponents, in_features=83, group_size=40)  # the per-weight decode
        assert torch.equal(got, _want(packed, exponents, 83, 40))


_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_run_decode as runs

names = "p_ptr e_ptr w_ptr zero_ptr N KB NG ZEROS stride_pn stride_en stride_wn".split()
signature = dict(zip(names, ["*u8", "*i8", "*i32", "*i32"] + ["i32"] * 7))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "ONE_SCALE_PER_RUN", "ROW_RUNS", "CONTIGUOUS", "BLOCK_R", "CLEARS"),
                               "constexpr"))
report = []
for block, bytes_per_group, row_runs, contiguous, clears in ((runs.BLOCK_RUNS, 8, 104, True, False),
                                                             (runs.BLOCK_RUNS, 8, 64, False, True),
                                                             (32, 4, 3, True, False), (512, 12, 359, False, False),
                                                             (128, 16, 411, True, True)):
    constexprs = {"BYTES_PER_GROUP": bytes_per_group, "ONE_SCALE_PER_RUN": bytes_per_group % 8 == 0,
                  "ROW_RUNS": row_runs, "CONTIGUOUS": contiguous, "BLOCK_R": block, "CLEARS": clears}
    source = GluonASTSource(runs._run_decode_kernel, signature=signature, constexprs=constexprs,
                            attrs={(2,): [["tt.divisibility", 16]], (10,): [["tt.divisibility", 16]]})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": block // 32})
    sass = full_sass(compiled.asm["cubin"])
    report.append([block, compiled.metadata.shared] + [sass.count(op) for op in (
        "STS.128", "LDS.128", "STG.E.EL.128", "BAR.SYNC", "SHFL", "LDL", "STL", "LDG.E.U8")])
print(json.dumps(report))
"""


def test_stores_go_through_shared_memory_in_whole_pieces():
    """Compiled offline for sm_90, on both kinds of buffer, with and without ``clear``, from one warp to 512 runs
    a program: each run is staged by five 16-byte shared stores and leaves as five 16-byte global stores
    (evict-last) after five 16-byte shared loads, with two barriers (one between the two staging stores, which
    overlap as views, and the one before the loads), no shuffles, no spills; 80 shared bytes a run (the
    allocation is rounded to 128); nine or ten byte loads (one or two scale words)."""
    for block, shared, stores, loads, global_stores, barriers, shuffles, spill_loads, spill_stores, byte_loads in (
            _compile_offline(_OFFLINE_COMPILE)):
        assert (stores, loads, global_stores) == (5, 5, 5), block
        assert barriers == 2 and shuffles == 0 and spill_loads == spill_stores == 0, block
        assert shared == 128 * block, block
        assert byte_loads in (9, 10), block


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
    triton_run_decode.launch(packed, exponents, words[0], group_size=40)
    triton_run_decode.launch(packed, exponents, words[1], group_size=40, clear=storage[32:1032])
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


def _table_weights(packed, exponents, k, g):
    """bf16 ``T * 2^E`` by the byte table, NaN in the five columns of a corrupt byte."""
    table = byte_to_trits_table().numpy().astype(np.float64)
    p = packed.cpu().numpy().astype(np.int64)
    trits = table[np.minimum(p, 242)]
    trits[p > 242] = np.nan
    scale = np.repeat(2.0 ** exponents.cpu().numpy().astype(np.float64), g, axis=1)[:, :k]
    return torch.from_numpy(trits.reshape(p.shape[0], -1)[:, :k] * scale).to(torch.bfloat16)


@GPU
@pytest.mark.parametrize("n,k,g,block,corrupt,zeros", [
    (1, 7, 40, 32, (), 0),
    (6, 79, 20, 32, ((5, 15, 243),), 1),  # two runs per row, the second one short
    (11, 83, 20, 64, ((0, 0, 255), (10, 16, 250)), 0),  # an odd number of runs per row
    (5, 1213, 60, 64, ((2, 242, 243),), 129),  # runs straddle scale groups; the last byte corrupt
    (9, 747, 40, 256, ((4, 37, 255), (8, 148, 243)), 96),  # one program for the whole layer
    (33, 2999, 40, 128, ((32, 599, 250),), 1000),
])
@pytest.mark.parametrize("whole_rows,wider", [(True, 0), (False, 0), (False, 4), (False, 32)])
def test_the_kernel_writes_exactly_its_runs(n, k, g, block, corrupt, zeros, whole_rows, wider):
    """``T_packed`` and ``E`` as offset views into storage poisoned around them, the buffer between guard
    words, its rows ``20 round_up(runs, 8) + wider`` words apart. With ``whole_rows`` (the run decode's own
    buffer, rows back to back) every word is written, the runs past the bytes as zeros; without (each piece
    finds its row; rows 4 words wider keep the stride off 16-word multiples, 32 wider on them, where the
    stores are 16 bytes wide) exactly the words of the row's runs are, and nothing past them. Either way
    bit-exact (NaN in exactly the five columns of a corrupt byte, inside K or not: the last run holds the
    padding digits, zeros), the guards untouched, and with ``zeros`` exactly that many words of a guarded
    ``clear`` tensor zeroed."""
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
    runs = -(-kb // triton_run_decode.RUN_BYTES)
    row_words = triton_run_decode.buffer_columns(k) // 2 + wider
    sentinel, guard = 0x12345678, 64  # as two bf16 lanes, values no weight can take (mantissas non-zero)
    storage = torch.full((2 * guard + n * row_words,), sentinel, dtype=torch.int32, device=DEVICE)
    words = storage[guard:guard + n * row_words].view(n, row_words)
    flags = torch.full((2 * guard + zeros,), -7, dtype=torch.int32, device=DEVICE)
    clear = flags[guard:guard + zeros] if zeros else None
    wide_p, wide_e = wide_p.to(DEVICE), wide_e.to(DEVICE)
    triton_run_decode.launch(wide_p[:, 4:4 + kb], wide_e[:, 1:1 + groups], words, group_size=g,
                             whole_rows=whole_rows, block=block, clear=clear)
    if zeros:
        assert (clear == 0).all() and (flags[:guard] == -7).all() and (flags[guard + zeros:] == -7).all()
    assert (storage[:guard] == sentinel).all() and (storage[-guard:] == sentinel).all()
    written = row_words if whole_rows else 20 * runs
    assert (words[:, :written] != sentinel).all() and (words[:, written:] == sentinel).all()
    width = 2 * written
    padded = torch.cat([packed, torch.full((n, 8 * (width // 40) - kb), 121, dtype=torch.uint8)], dim=1)
    padded_e = torch.cat([exponents, torch.zeros((n, -(-width // g) - groups), dtype=torch.int8)], dim=1)
    got = words.view(torch.bfloat16)[:, :width].cpu()
    want = _table_weights(padded, padded_e, width, g)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got[~torch.isnan(got)].view(torch.int16), want[~torch.isnan(want)].view(torch.int16))
