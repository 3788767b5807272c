"""The one-row forward by one shared-memory table lookup per byte (``triton_lut_gemv``).

The Gluon kernel is compiled offline for sm_90 (its shared memory, the table writes and the instruction
counts) and runs only on a GPU, where it is compared with a float64 product of the reference weights by
relative RMS error with the budgets of the other one-row kernels (``test_triton_table_gemv``): fp32
activations ``FP32_BUDGET``, bf16 ``BF16_BUDGET``; with small-integer activations every byte value's
product is exact, and the kernel must match float64 bit for bit.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_lut_gemv as lut  # noqa: E402
from ternary.kernels.linear import triton_tiled_gemv as tiled  # noqa: E402
from ternary.state.decode_state import tile_rows  # noqa: E402
from test_base3_asm import _prmt  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_register_decode import _compile_offline  # noqa: E402
from test_triton_table_gemv import BF16_BUDGET, FP32_BUDGET, FRAC_BITS, corrupt_layer, float64_forward  # noqa: E402
from test_triton_tiled_gemv import check_one_row_against_float64, decode_state  # noqa: E402

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")


def test_address_selectors_place_the_byte_over_its_lane_offset():
    """Each lookup's ``prmt`` selector turns weight byte ``u`` and offset byte ``u`` (``4 * column``, below
    128) into ``byte * 256 + offset`` with zero high bytes: the byte tables' row pitch is 256 bytes."""
    rng = random.Random(0)
    for u, text in enumerate(lut._ADDRESS_SELECT):
        for _ in range(500):
            word = rng.getrandbits(32)
            offsets = sum(4 * rng.randrange(32) << (8 * i) for i in range(4))
            got = int(_prmt(np.array([word]), np.array([offsets]), int(text, 16))[0])
            assert got == ((word >> (8 * u)) & 0xFF) * 256 + ((offsets >> (8 * u)) & 0xFF)


def test_balanced_splits_give_every_split_work_at_the_least_cost():
    """Every split has steps, and no other split count has fewer (steps per split) x (program waves)."""
    def cost(steps, splits, row_blocks, slots):
        per_split = -(-steps // splits)
        return per_split * -(-(row_blocks * -(-steps // per_split)) // slots)

    for steps in (1, 2, 7, 26, 103, 449):
        for row_blocks in (1, 3, 8, 16, 64):
            for slots in (132, 264, 396):
                splits = lut.balanced_splits(steps, row_blocks, slots)
                per_split = -(-steps // splits)
                assert 1 <= splits <= steps and (splits - 1) * per_split < steps
                best = min(cost(steps, s, row_blocks, slots) for s in range(1, steps + 1))
                assert cost(steps, splits, row_blocks, slots) == best
    assert lut.balanced_splits(103, 8, 264) == 26  # four steps per program, 208 programs in one wave


def test_int32_offsets_bound_the_layers_the_kernel_takes():
    """``T_tiles`` words must stay below 2^31."""
    def tiles(blocks, chunks):
        return torch.empty((blocks, chunks, 32, 16), dtype=torch.uint8, device="meta")

    assert lut.fits_int32_offsets(tiles(4096, 2048))
    assert lut.fits_int32_offsets(tiles(1 << 12, (1 << 12) - 1))
    assert not lut.fits_int32_offsets(tiles(1 << 12, 1 << 12))  # 2^33 bytes of tiles, 2^31 words


def test_groups_that_split_a_lane_run_are_refused():
    x = torch.zeros(1, 100)
    tiles = tile_rows(torch.full((4, 20), 121, dtype=torch.uint8), torch.zeros((4, 5), dtype=torch.int8), 20)
    with pytest.raises(ValueError, match="group_size=20 needs G / 5 to be a multiple of 8"):
        lut.lut_gemv(x, *tiles, out_features=4, group_size=20, tile=(1,))


_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_lut_gemv as lut

names = "x_ptr t_ptr e_ptr out_ptr N K ROWS CHUNKS EWORDS STEPS stride_os STEPS_PER_SPLIT".split()
signature = dict(zip(names, ["*bf16", "*u8", "*i8", "*fp32"] + ["i32"] * 8))
signature["BYTES_PER_GROUP"] = "constexpr"
report = []
for bytes_per_group in (8, 16, 64):
    source = GluonASTSource(lut._lut_gemv_kernel, signature=signature, constexprs={"BYTES_PER_GROUP": bytes_per_group},
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": lut.LUT_WARPS})
    ptx, sass = compiled.asm["ptx"], full_sass(compiled.asm["cubin"])
    scale_stores = [line for line in ptx.splitlines() if f"+{lut._SCALES_AT}]" in line
                    and ("st.shared" in line or "stmatrix" in line)]
    lookups = [line for line in ptx.splitlines() if "prmt.b32 a," in line and "ld.shared.f32" in line]
    entry_stores = [line for line in ptx.splitlines() if "st.shared.f32 [a+" in line]
    readbacks = [line for line in ptx.splitlines() if "add.u32 a, a, %r" in line and "ld.shared.f32" in line]
    report.append([compiled.metadata.shared, sum("[a+0]; }" in line for line in lookups),
                   sum("[a+128]; }" in line for line in lookups), len(entry_stores),
                   sum(line.lstrip().startswith("{") and "@p st.shared" in line for line in entry_stores),
                   sorted({int(line.split("[a+")[1].split("]")[0]) % 256 for line in entry_stores}), len(readbacks),
                   ptx.count(f"[a+{lut._SCALE_ADDRESS}]; }}"), len(scale_stores), ptx.count("ld.shared.v4.b32 {"),
                   ptx.count(f"cp.async.cg.shared.global [a+{lut._RING_ADDRESS}]"),
                   ptx.count(f"cp.async.ca.shared.global [a+{lut._EXPONENT_RING_ADDRESS}]"),
                   ptx.count("cp.async.commit_group"), ptx.count("cp.async.wait_group 1"), sass.count("BAR.SYNC"),
                   sass.count("STL")])
print(json.dumps(report))
"""


def test_kernel_compiles_for_sm90_with_its_buffers_at_their_fixed_offsets():
    """Compiled offline for sm_90: the shared memory is exactly the two 32 KB byte-table buffers, the 32 KB ring
    of rows, the 4 KB ring of exponent words and the 1 KB of scales, in that order (the PTX reads and writes all
    but the scales' first store at fixed offsets from ``global_smem``, so the scales must land where the lookups
    read them). Each table write (the first step's before the loop, then one per step into the other buffer) is
    31 stores per thread, one of them predicated, with 4 read-backs; four stores (one predicated) poison the
    corrupt values. Per turn of two steps, for each of the two blocks of two rows per lane: 32 lookups per row
    in the step's buffer, one scale read per row and group, two 16-byte ring reads and copies per row and one
    exponent copy per row, one commit and one wait; one barrier per step and one after the last wait; no
    spills."""
    report = _compile_offline(_OFFLINE_COMPILE)
    for bytes_per_group, (shared, buffer0, buffer1, entry_stores, predicated, columns, readbacks, scales,
                          scale_stores, ring_reads, ring_copies, exponent_copies, commits, waits, barriers,
                          spills) in zip((8, 16, 64), report, strict=True):
        rows = lut.LUT_ROWS_PER_LANE * lut.LUT_BLOCKS  # per lane and step
        groups = 32 // min(bytes_per_group, 32)
        assert shared == 2 * 32 * 1024 + lut.LUT_PROGRAM_ROWS * (32 + 4) + 1024 == lut._SCALES_AT + 1024
        assert scale_stores == 1
        assert buffer0 == buffer1 == 32 * rows
        assert entry_stores == 3 * 31 + 4 and predicated == 3 + 1 and readbacks == 3 * 4
        assert columns == [0, 128]  # whole rows of 256 bytes; buffer 1 at 128
        assert scales == 2 * groups * rows
        assert ring_reads == 2 * 2 * rows
        assert ring_copies == 3 * 2 * rows and exponent_copies == 3 * rows  # the first step's, then one per step
        assert commits >= 3 * lut.LUT_BLOCKS and waits == 2 * lut.LUT_BLOCKS  # a commit may be duplicated per branch
        assert barriers == 3
        assert spills == 0


@GPU_ONLY
@pytest.mark.parametrize("n,k,g", [(1, 7, 40), (33, 333, 40), (1000, 4099, 40), (257, 999, 80), (64, 2000, 160),
                                   (100, 3000, 320), (50, 5000, 480), (5000, 2000, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", [(lut.LUT_PROGRAMS_PER_SM,), (lut.LUT_PROGRAMS_PER_SM_SMALL,), (0,)])
def test_lut_gemv_matches_float64(n, k, g, dtype, tile):
    """N = 1, rows past a whole tile and a whole program, K not a multiple of 5 or of G, groups of 8,
    16, 32, 64 and 96 bytes; the two shipped launches and one split (many steps, both table buffers and
    the ring's refills in one program)."""
    check_one_row_against_float64(n, k, g, dtype, tile)


@GPU_ONLY
@pytest.mark.parametrize("tile", [(lut.LUT_PROGRAMS_PER_SM,), (0,)])
def test_lut_gemv_poisons_rows_of_corrupt_bytes_and_keeps_extreme_exponents(tile):
    """Bytes 243 and 255 at a row's first and last column and 250 inside make those rows NaN and no
    other; exponents 127 and -128 stay exact (activations scaled so nothing overflows)."""
    packed, exponents, x, check = corrupt_layer()
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, 40))
    check(kernels.forward_decode(x.cuda(), packed.cuda(), exponents.cuda(), T_tiles, E_tiles, None,
                                 in_features=x.shape[1], group_size=40, bias_frac_bits=FRAC_BITS, tile=tile))


@GPU_ONLY
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile,sms,splits", [((0,), None, 1), ((2,), None, 5), ((2,), 1, 2)])
def test_lut_gemv_reads_every_byte_value_exactly(dtype, tile, sms, splits, monkeypatch):
    """Row ``v`` holds byte ``v`` at every column of five steps (K = 647: the last step partly past ``K``), so
    every table entry is read, each column's by its own lane: in both buffers by one split of five steps and by
    a split of three and one of two starting at step 3 (one SM, two programs), in buffer 0 by five one-step
    splits. With activations in -8..8 and exponents in -2..2 every product and sum is exact in fp32: the 243
    valid rows equal float64 bit for bit (the all-zero byte 121 gives exactly 0), and the 13 corrupt ones are
    NaN."""
    if sms is not None:
        monkeypatch.setattr(lut, "sm_count", lambda device: sms)
    k, g = 647, 40
    gen = torch.Generator().manual_seed(5)
    packed = torch.arange(256, dtype=torch.int32).to(torch.uint8)[:, None].repeat(1, -(-k // 5))
    exponents = torch.randint(-2, 3, (256, -(-k // g)), generator=gen).to(torch.int8)
    x = torch.randint(-8, 9, (1, k), generator=gen).to(dtype)
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
    ws = lut.lut_gemv(x.cuda(), T_tiles, E_tiles, out_features=256, group_size=g, tile=tile)
    assert ws.shape[0] == splits
    got = ws.sum(0)[0].cpu()
    expected = float64_forward(x.float(), packed[:243], exponents[:243], None, k, g)[0]
    assert torch.equal(got[:243].double(), expected)
    assert expected.abs().max() > 100 and got[121] == 0
    assert torch.isnan(got[243:]).all()


@GPU_ONLY
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_lut_gemv_reads_strided_activations_of_every_float_dtype(dtype):
    """Every third element of a longer row (the kernel gets a contiguous copy) gives the same bits as that row
    made contiguous, within the dtype's budget of float64 (fp16 inputs at the bf16 budget: same products in fp32)."""
    n, k, g = 300, 1001, 40
    state, gen = decode_state(n, k, g, seed=13)
    wide = torch.randn(1, 3 * k, generator=gen).to(dtype).cuda()
    strided = wide[:, ::3]
    assert strided.stride(-1) == 3
    kw = dict(out_features=n, group_size=g, tile=(lut.LUT_PROGRAMS_PER_SM,))
    got = lut.lut_gemv(strided, state.T_tiles, state.E_tiles, **kw)
    assert torch.equal(got, lut.lut_gemv(strided.contiguous(), state.T_tiles, state.E_tiles, **kw))
    expected = float64_forward(strided.cpu().float(), state.T_packed, state.E, None, k, g)
    assert relative_rms(got.sum(0).cpu(), expected) < (FP32_BUDGET if dtype == torch.float32 else BF16_BUDGET)


@GPU_ONLY
def test_lut_gemv_scales_by_every_exponent():
    """Each of the 256 int8 exponents in its own row (two activation scales, so that every exponent meets one
    where its row's terms are normal fp32), each row compared with float64 on its own: the error within
    ``1e-5`` of the sum of the row's absolute terms (the dot product's own error scale, which a cancelling
    row's result is not; a wrong exponent is off by at least the row's value)."""
    n, k, g = 256, 400, 40
    state, gen = decode_state(n, k, g, seed=11)
    packed = state.T_packed.cpu()
    exponents = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8)[:, None].repeat(1, k // g)
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
    checked = torch.zeros(n, dtype=torch.bool)
    for scale in (2.0**-60, 2.0**60):
        x = torch.randn(1, k, generator=gen) * scale
        expected = float64_forward(x, packed, exponents, None, k, g)[0]
        magnitude = (x.double().abs() @ reference.dequantize(packed, exponents, in_features=k, group_size=g)
                     .double().abs().T)[0]
        got = kernels.forward_decode(x.cuda(), packed.cuda(), exponents.cuda(), T_tiles, E_tiles, None,
                                     in_features=k, group_size=g, bias_frac_bits=FRAC_BITS,
                                     tile=(lut.LUT_PROGRAMS_PER_SM,)).cpu()[0].double()
        normal = (magnitude > 2.0**-100) & (magnitude < 2.0**120)
        error = ((got - expected).abs() / magnitude)[normal]
        assert error.max() < 1e-5, int(torch.nonzero(normal)[error.argmax()]) - 128
        checked |= normal
    assert checked.all()


@GPU_ONLY
@pytest.mark.parametrize("sms", [1, 3])
def test_lut_gemv_walks_many_steps_per_split(monkeypatch, sms):
    """Few SMs give few splits of many steps, starting past step 0 with odd counts (13 and 13; 5 x 5 and 1):
    the ring's refills and both table buffers run in every program."""
    monkeypatch.setattr(lut, "sm_count", lambda device: sms)
    check_one_row_against_float64(1000, 4099, 40, torch.float32, (lut.LUT_PROGRAMS_PER_SM,))


@GPU_ONLY
def test_one_row_tiles_of_another_length_are_refused():
    state, gen = decode_state(64, 500, 40, seed=2)
    with pytest.raises(ValueError, match=r"tile=\(2, 2\) for one row must be"):
        kernels.forward_decode(torch.randn(1, 500, generator=gen).cuda(), state.T_packed, state.E, state.T_tiles,
                               state.E_tiles, None, in_features=500, group_size=40, bias_frac_bits=FRAC_BITS,
                               tile=(2, 2))


@GPU_ONLY
def test_forward_decode_takes_the_lut_kernel_when_groups_are_whole_lane_runs(monkeypatch):
    calls = []
    for module, name in ((lut, "lut_gemv"), (tiled, "tiled_gemv")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **kw: calls.append(_n) or _o(*a, **kw))
    for n, k, g, taken in ((4096, 10240, 40, "lut_gemv"), (4096, 10240, 20, "tiled_gemv"), (1000, 4099, 80, "lut_gemv"),
                           (33, 333, 10, "tiled_gemv")):
        state, gen = decode_state(n, k, g, seed=4)
        x = torch.randn(1, k, generator=gen).cuda()
        got = kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, state.E_tiles, state.bias,
                                     in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)
        assert calls == [taken], (n, k, g)
        calls.clear()
        assert relative_rms(got.cpu(), float64_forward(x.cpu(), state.T_packed.cpu(), state.E.cpu(),
                                                       state.bias.cpu(), k, g)) < FP32_BUDGET
