"""The one-row forward by warp-shuffle lookup tables (``triton_table_gemv``).

The Gluon kernel runs only compiled on a GPU; its table-building kernel (plain Triton) and the
launch rules also run on the CPU. Float outputs are compared with a float64 product of the
reference weights by relative RMS error: fp32 activations ``FP32_BUDGET`` (every table entry
is a sum of three exact products, the sums run in fp32; measured 0.3-2e-7 on the H100), bf16
activations ``BF16_BUDGET`` (one bf16 rounding of the output).
"""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_table_gemv as table_gemv  # noqa: E402
from ternary.state.packing import byte_to_trits_table, random_packed  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402

FP32_BUDGET = 2e-6
BF16_BUDGET = 1e-2
FRAC_BITS = 16
GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")

# (N, K, G): every one fits the kernel (N * ceil(K / 5) a multiple of 16). K not a multiple of
# 5 or of G, N = 16, group sizes of 1, 2, 4, 8 and 64 bytes (steps of 32 bytes holding 32, 16,
# 8 or 4 groups, or lying inside one group), rows past a whole program.
SHAPES = [(256, 200, 40), (1000, 4099, 40), (512, 640, 20), (300, 1000, 80), (128, 5, 5), (16, 4096, 40),
          (48, 161, 40), (1024, 1001, 320), (2048, 3003, 10)]


def float64_forward(x, packed, exponents, bias, k, g):
    weights = reference.dequantize(packed.cpu(), exponents.cpu(), in_features=k, group_size=g).double()
    y = x.cpu().double() @ weights.T
    return y if bias is None else y + bias.cpu().double() * 2.0**-FRAC_BITS


def layer(n, k, g, seed):
    gen = torch.Generator().manual_seed(seed)
    packed = random_packed(n, k, generator=gen)
    exponents = torch.randint(-8, 4, (n, -(-k // g)), generator=gen).to(torch.int8)
    bias = torch.randint(-(2**20), 2**20, (n,), generator=gen, dtype=torch.int32)
    return packed, exponents, bias, gen


def test_tables_give_every_byte_its_dot_product():
    """Entry ``lo`` of ``low`` plus entry ``hi`` of ``high`` is the byte's trits dotted with its five
    activations for every valid byte (float64 check); corrupt bytes fetch NaN; columns past ``K``
    read zero activations."""
    k = 23  # 5 byte columns, the last with 3 real columns
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, k, generator=gen).to(DEVICE)
    columns = 8  # two programs of TABLE_BLOCK_C columns
    tables = torch.empty((columns // 2, 32, 4), dtype=torch.float32, device=DEVICE)
    table_gemv.tables_kernel[(columns // table_gemv.TABLE_BLOCK_C,)](x[0], tables, k,
                                                                     BLOCK_C=table_gemv.TABLE_BLOCK_C)
    tables = tables.cpu().double()
    trits = byte_to_trits_table(torch.device("cpu")).double()
    padded = torch.nn.functional.pad(x.cpu().double()[0], (0, 5 * columns - k))
    byte = torch.arange(256)
    hi = (byte * 19) >> 9
    assert torch.equal(hi, byte // 27)
    for column in range(columns):
        low = tables[column // 2, :, 2 * (column % 2)]
        high = tables[column // 2, :, 2 * (column % 2) + 1]
        got = low[byte - 27 * hi] + high[hi]
        want = trits @ padded[5 * column:5 * column + 5]
        assert torch.isnan(got[243:]).all() and torch.isnan(high[9:]).all()
        assert torch.allclose(got[:243], want[:243], rtol=1e-6, atol=1e-6), column
        if 5 * column >= k:
            assert (got[:243] == 0).all()


def test_step_size_holds_whole_groups_or_lies_in_one():
    for bytes_per_group in range(1, 70):
        step = table_gemv.step_bytes(bytes_per_group)
        if step is None:
            assert all(cb % bytes_per_group and bytes_per_group % cb for cb in table_gemv.TABLE_STEP_BYTES)
        else:
            assert step % 16 == 0 and (step % bytes_per_group == 0 or bytes_per_group % step == 0)
    assert table_gemv.step_bytes(8) == 32 and table_gemv.step_bytes(48) == 16 and table_gemv.step_bytes(12) is None


def test_fits_only_aligned_layers_whose_storage_covers_the_last_chunk():
    exponents = torch.zeros((64, 4), dtype=torch.int8)
    assert table_gemv.fits(torch.zeros((64, 30), dtype=torch.uint8), exponents, 40)  # 1920 bytes
    assert not table_gemv.fits(torch.zeros((63, 30), dtype=torch.uint8), exponents[:63], 40)  # 1890: last chunk short
    storage = torch.zeros(64 * 30 + 16, dtype=torch.uint8)
    assert table_gemv.fits(storage[:63 * 30].view(63, 30), exponents[:63], 40)  # the storage reaches on
    assert not table_gemv.fits(storage[1:1 + 63 * 30].view(63, 30), exponents[:63], 40)  # not 16-byte aligned
    assert not table_gemv.fits(torch.zeros((30, 64), dtype=torch.uint8).T, exponents, 40)  # columns strided
    assert not table_gemv.fits(torch.zeros((64, 30), dtype=torch.uint8), torch.zeros((63, 5), dtype=torch.int8), 40)
    assert not table_gemv.fits(torch.zeros((64, 30), dtype=torch.uint8), exponents, 60)  # 12-byte groups


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the interpreter's dispatch")
def test_interpreter_dispatch_keeps_the_quotient_gemv(monkeypatch):
    called = []
    monkeypatch.setattr(kernels, "forward_table_gemv", lambda *a, **k: called.append(1))
    packed, exponents, bias, gen = layer(64, 150, 40, seed=1)
    x = torch.randn(1, 150, generator=gen)
    out = kernels.forward(x, packed, exponents, bias, in_features=150, group_size=40, bias_frac_bits=FRAC_BITS)
    assert not called and out.shape == (1, 64)


@GPU_ONLY
@pytest.mark.parametrize("n,k,g", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tile", [None, (1, 4, 0), (2, 2, 3), (4, 4, 1)])
def test_table_gemv_matches_float64(n, k, g, dtype, tile):
    packed, exponents, bias, gen = layer(n, k, g, seed=n + k + g)
    x = torch.randn(1, k, generator=gen).to(dtype)
    expected = float64_forward(x, packed, exponents, bias, k, g)
    packed, exponents = packed.cuda(), exponents.cuda()
    assert table_gemv.fits(packed, exponents, g)
    got = kernels.forward_table_gemv(x.cuda(), packed, exponents, bias.cuda(), in_features=k, group_size=g,
                                     bias_frac_bits=FRAC_BITS, tile=tile)
    assert got.dtype == dtype and got.shape == (1, n)
    assert relative_rms(got, expected) < (FP32_BUDGET if dtype == torch.float32 else BF16_BUDGET)


@GPU_ONLY
def test_table_gemv_poisons_rows_of_corrupt_bytes_and_keeps_extreme_exponents():
    """Bytes 243 and 255 at a row's first and last column and 250 inside make those rows NaN and
    no other; exponents 127 and -128 stay exact (activations scaled so nothing overflows)."""
    packed, exponents, x, check = corrupt_layer()
    check(kernels.forward_table_gemv(x.cuda(), packed.cuda(), exponents.cuda(), None, in_features=x.shape[1],
                                     group_size=40, bias_frac_bits=FRAC_BITS))


def corrupt_layer():
    """``(packed, exponents, x, check)`` of a 1000 x 4099 layer (G = 40) with bytes 243 and 255 at a
    row's first and last column and 250 inside, and exponents 127 and -128 in two other rows;
    ``check(y)`` asserts that exactly the corrupt rows of a one-row forward ``y`` are NaN and the
    rest match float64 within ``FP32_BUDGET`` (activations scaled so that nothing overflows)."""
    n, k, g = 1000, 4099, 40
    packed, exponents, _, gen = layer(n, k, g, seed=5)
    corrupt = {7: (0, 243), 999: (-1, 255), 500: (333, 250)}
    exponents[3, 5:] = 127
    exponents[4, :5] = -128
    x = torch.randn(1, k, generator=gen) * 1e-30
    x[0, :200] = torch.randn(200, generator=gen)
    clean = packed.clone()
    for row, (column, value) in corrupt.items():
        packed[row, column] = value
        clean[row, column] = 121
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(corrupt)] = True
    expected = float64_forward(x, clean, exponents, None, k, g)[0]

    def check(y: torch.Tensor) -> None:
        got = y.cpu()[0]
        assert torch.isnan(got[bad]).all() and torch.isfinite(got[~bad]).all()
        assert relative_rms(got[~bad], expected[~bad]) < FP32_BUDGET

    return packed, exponents, x, check


@GPU_ONLY
def test_dispatch_takes_the_table_kernel_only_where_it_fits(monkeypatch):
    calls = []
    original = kernels.forward_table_gemv
    monkeypatch.setattr(kernels, "forward_table_gemv", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    for n, takes in ((1024, True), (1023, False)):  # 1023 * 200 bytes: the last chunk is short
        packed, exponents, bias, gen = layer(n, 1000, 40, seed=n)
        x = torch.randn(1, 1000, generator=gen)
        expected = float64_forward(x, packed, exponents, bias, 1000, 40)
        got = kernels.forward(x.cuda(), packed.cuda(), exponents.cuda(), bias.cuda(), in_features=1000, group_size=40,
                              bias_frac_bits=FRAC_BITS)
        assert (len(calls) == 1) == takes
        calls.clear()
        assert relative_rms(got, expected) < 5e-5
