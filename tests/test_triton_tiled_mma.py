"""Forwards of 2 to 64 bf16 rows over the row-tiled decode layout (``triton_tiled_mma``).

The Gluon kernel runs only compiled on a GPU; on the CPU the activation regrouping (a plain Triton
kernel) runs under the interpreter against its definition in torch, the kernel is compiled offline
for sm_90, and the dispatch falls back to the forward on ``T_packed``. Outputs are compared with a
float64 product of the reference weights and the bf16 activations: the kernel's fp32 partial sums
by relative RMS error within ``MMA_BUDGET``, the finished bf16 outputs within ``BF16_BUDGET``.
"""

from __future__ import annotations


import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary import linear  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_tiled_mma as tiled_mma  # noqa: E402
from ternary.state.decode_state import tile_rows  # noqa: E402
from ternary.state.packing import unpack  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_register_decode import _compile_offline, per_row_rms  # noqa: E402
from test_triton_table_gemv import BF16_BUDGET, FRAC_BITS, float64_forward, layer  # noqa: E402
from test_triton_tiled_gemv import decode_state  # noqa: E402

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")
# Products of trits, powers of two and bf16 values are exact; the tensor cores add them in fp32 but
# truncate each addition to the accumulator, so a program's sum may drift by up to about one ulp (2^-23)
# per 16-column product: a whole K = 4099 row in one split (257 products) measured 3.9e-6 on an H200,
# above the 2e-6 of the CUDA-core kernels, which round.
MMA_BUDGET = 3e-5
# The same for each weight row's outputs over the activation rows: one wrong weight moves a row of these
# layers by percents.
ROW_MMA_BUDGET = 1e-4

# (N, K, G, M): N = 1 and rows past whole tiles and programs, K not a multiple of 5 or of G, every group
# size the kernel takes up to 160 bytes (8, 16, 32, 64 and 160 bytes per group), M from 2 to 64 with
# one to eight column tiles (from seven the fragments are loaded in the step) and padded columns. The launches
# with one split walk every step in one program (26 at K = 4099), so the in-step form runs many steps.
SHAPES = [(1, 7, 40, 2), (33, 333, 40, 16), (1000, 4099, 40, 3), (257, 999, 80, 9), (64, 2000, 160, 16),
          (100, 3000, 320, 5), (130, 1600, 800, 13), (4096, 4096, 40, 8), (300, 161, 40, 11),
          (1, 7, 40, 17), (1000, 4099, 40, 24), (257, 999, 80, 32), (300, 161, 40, 37), (64, 2000, 160, 48),
          (1000, 4099, 40, 53), (1000, 4099, 40, 57), (33, 333, 80, 64)]


def _words(rows):
    """bf16 bit pairs of ``rows [M, C]`` (int16 views) as int32 words ``low | high << 16``."""
    bits = rows.view(torch.int16).to(torch.int32) & 0xFFFF
    return bits[..., 0::2] | (bits[..., 1::2] << 16)


def reference_fragments(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``fragments`` by its definition: lane ``(g, q)``, column tile ``c``, activation row ``8 c + g``;
    words ``2 u, 2 u + 1`` columns ``5 j .. 5 j + 3`` of byte ``j = 32 s + 8 q + u``, words ``16 + 2 v + h``
    column ``5 j + 4`` of bytes ``j = 32 s + 8 q + 4 v + 2 h`` and ``j + 1``; zero past ``K`` and ``M``."""
    m, k = x.shape
    tiles = -(-m // 8)
    padded = torch.zeros(tiles * 8, steps * 160, dtype=torch.bfloat16)
    padded[:m, :k] = x.cpu()
    by_byte = padded.view(tiles * 8, steps, 4, 8, 5)  # [row, step, q, byte of the lane, digit]
    low = by_byte[..., :4].reshape(tiles * 8, steps, 4, 8 * 4)  # bytes u, digits 0..3
    digit4 = by_byte[..., 4].reshape(tiles * 8, steps, 4, 8)  # bytes 0..7, digit 4
    words = torch.cat([_words(low), _words(digit4)], dim=-1)  # [row, step, q, 20]
    words = words.view(tiles, 8, steps, 4, 20).permute(2, 0, 1, 3, 4)  # [step, tile, g, q, 20]
    return words.reshape(steps, tiles, 32, 20)


@pytest.mark.parametrize("m,k", [(2, 7), (9, 333), (16, 1601), (5, 160), (37, 333), (48, 800), (61, 900)])
def test_fragments_put_each_activation_where_the_lanes_read_it(m, k):
    steps = -(-(-(-k // 5)) // 32)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + k)).to(torch.bfloat16)
    got = tiled_mma.fragments(x.to(DEVICE), steps).cpu()
    assert torch.equal(got, reference_fragments(x, steps))


def test_digit_table_holds_each_byte_values_first_four_trits_in_every_copy():
    """The kept digit table the kernel copies into shared memory: for every valid byte value and each of
    its 16 copies, word 0 holds the bf16 pair ``(t0, t1)`` of its trits and word 1 ``(t2, t3)``, equal to
    ``unpack``'s; every byte past 242 reads NaN in all four halves; a second call returns the kept tensor."""
    table = tiled_mma.digit_table(torch.device("cpu"))
    assert table.shape == (256, 16, 2) and table.dtype == torch.int32 and table.numel() == tiled_mma.TABLE_WORDS
    assert tiled_mma.digit_table(torch.device("cpu")) is table
    halves = table.view(torch.bfloat16).float().reshape(256, 16, 4)
    trits = unpack(torch.arange(243, dtype=torch.uint8)[:, None], 5)[:, :4].float()
    assert torch.equal(halves[:243], trits[:, None, :].expand(243, 16, 4))
    assert torch.isnan(halves[243:]).all()


def test_fragments_read_strided_activations():
    x = torch.randn(6, 900, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    wide = torch.zeros(6, 1000, dtype=torch.bfloat16)
    wide[:, 50:950] = x
    view = wide.to(DEVICE)[:, 50:950]
    assert not view.is_contiguous()
    assert torch.equal(tiled_mma.fragments(view, 6).cpu(), reference_fragments(x, 6))


@pytest.mark.parametrize("rows,g,takes", [(2, 40, True), (16, 40, True), (16, 160, True), (5, 480, True),
                                          (17, 40, True), (64, 40, True), (1, 40, False), (65, 40, False),
                                          (8, 20, False), (8, 10, False)])
def test_takes_bf16_rows_2_to_64_with_whole_lane_runs_per_group(rows, g, takes):
    assert tiled_mma.takes(torch.zeros(rows, 10, dtype=torch.bfloat16), g) == takes
    assert not tiled_mma.takes(torch.zeros(rows, 10, dtype=torch.float32), g)


_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_tiled_mma as tiled

names = ("digit_table fragment_ptr t_ptr e_ptr out_ptr M N BLOCKS CHUNKS EWORDS STEPS stride_os stride_om "
         "STEPS_PER_SPLIT").split()
signature = dict(zip(names, ["*i32", "*i32", "*u8", "*i8", "*fp32"] + ["i32"] * 9))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "TILES", "AHEAD"), "constexpr"))
report = []
launches = [(8, 1, 4, 0), (32, 2, 2, 0), (64, 1, 8, 0)]
launches += [(8, tiles, warps, cap) for tiles, (warps, _, cap) in sorted(tiled.TILED_MMA_LAUNCHES.items())]
for bytes_per_group, tiles, warps, cap in launches:
    source = GluonASTSource(tiled._tiled_mma_kernel, signature=signature,
                            constexprs={"BYTES_PER_GROUP": bytes_per_group, "TILES": tiles,
                                        "AHEAD": tiles <= tiled.FRAGMENTS_AHEAD_TILES},
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(5)})
    options = {"num_warps": warps, **({"maxnreg": cap} if cap else {})}
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    ptx = compiled.asm["ptx"]
    sass = full_sass(compiled.asm["cubin"]).splitlines()
    # the scale words' stores, offset past the digit table in the instruction (today one stmatrix)
    scale_stores = [line for line in ptx.splitlines() if f"+{4 * tiled.TABLE_WORDS}]" in line
                    and ("st.shared" in line or "stmatrix" in line)]
    report.append([compiled.metadata.shared, ptx.count("mma.sync.aligned.m16n8k16"), ptx.count("ld.shared.v2.b32"),
                   ptx.count("ld.shared.b32"), ptx.count("ld.global.v4.b32"), len(scale_stores),
                   sum("STL" in line for line in sass), warps,
                   next(i for i, line in enumerate(sass) if "BAR.SYNC" in line), tiles])
print(json.dumps(report))
"""


def test_every_column_tile_count_the_kernel_takes_has_a_launch():
    assert set(tiled_mma.TILED_MMA_LAUNCHES) == set(range(1, -(-tiled_mma.TILED_MMA_MAX_ROWS // 8) + 1))


@pytest.mark.parametrize("tile", [(4,), (4, 3, 168, 1), ()])
def test_a_launch_of_the_wrong_length_is_refused_before_anything_runs(tile):
    state, gen = decode_state(64, 500, 40, seed=3)
    x = torch.randn(24, 500, generator=gen).to(torch.bfloat16).to(DEVICE)
    with pytest.raises(ValueError, match=r"tiled_mma: tile=.* must be \(warps, programs per SM\)"):
        tiled_mma.tiled_mma(x, state.T_tiles, state.E_tiles, out_features=64, group_size=40, tile=tile)


def test_kernel_compiles_for_sm90_with_the_tables_as_its_only_shared_memory():
    """Compiled offline for sm_90: the kernel's shared memory is exactly the 32 KB digit table and the
    1 KB of scale words stored right after it (its PTX reads both at fixed offsets from ``global_smem``,
    the start of that memory, so no other buffer may come first or between). Each thread copies its
    share of the digit table with 16-byte loads, and what precedes the tables' barrier stays short
    (computing the table there took ~580 instructions). Per step, 10 products per operand tile and
    column tile (8 for digits 0..3, 2 for digit 4), 8 table reads and one scale read per row (4 rows per
    lane) and 5 16-byte activation loads per column tile; one column tile takes two steps a turn (their
    loads alternate between two register sets), more take one; from seven column tiles the activations are
    loaded in the step (none before the loop). Every launch of ``TILED_MMA_LAUNCHES`` and a few others
    compile; only four column tiles under their 168-register cap spill (two words, stored before the loop and
    reloaded every step)."""
    report = _compile_offline(_OFFLINE_COMPILE)
    assert [row[-1] for row in report] == [1, 2, 1] + sorted(tiled_mma.TILED_MMA_LAUNCHES)
    for shared, products, lookups, scales, vector_loads, scale_stores, spills, warps, prologue, tiles in report:
        steps = 2 if tiles == 1 else 1  # steps in the loop's body
        table_copies = tiled_mma.TABLE_WORDS // (4 * 32 * warps)  # 16-byte loads per thread
        assert shared == 4 * tiled_mma.TABLE_WORDS + 256 * 4 == 256 * 16 * 8 + 256 * 4
        assert scale_stores >= 1
        assert products == 2 * tiles * 10 * steps
        assert lookups == 4 * 8 * steps
        assert scales == 4 * steps
        # the table's copy, the first step's loads (ahead only), then the next steps' or this step's in the loop
        ahead = tiles <= tiled_mma.FRAGMENTS_AHEAD_TILES
        assert vector_loads == table_copies + ((1 + steps) if ahead else steps) * 5 * tiles
        assert prologue < 150 + 8 * table_copies, prologue
        assert spills == (2 if (tiles, warps) == (4, 4) else 0), (tiles, warps, spills)


def _forward(state, x, tile=None):
    return kernels.forward_decode(x, state.T_packed, state.E, state.T_tiles, state.E_tiles, state.bias,
                                  in_features=state.in_features, group_size=state.group_size,
                                  bias_frac_bits=FRAC_BITS, tile=tile)


@GPU_ONLY
@pytest.mark.parametrize("n,k,g,m", SHAPES)
@pytest.mark.parametrize("tile", [None, (4, 1), (2, 3), (8, 0), (4, 0)])
def test_tiled_mma_matches_float64(n, k, g, m, tile):
    """Partial sums and the finished forward (bias added, bf16) against float64; launch tiles with
    small and large programs and one split (``0``: many steps in one program, each next step's loads
    in flight)."""
    state, gen = decode_state(n, k, g, seed=n + k + g + m)
    x = (torch.randn(m, k, generator=gen) * torch.exp(torch.randn(m, k, generator=gen))).to(torch.bfloat16)
    sums = tiled_mma.tiled_mma(x.cuda(), state.T_tiles, state.E_tiles, out_features=n, group_size=g, tile=tile)
    assert sums.shape[1:] == (m, n)
    expected = float64_forward(x, state.T_packed, state.E, None, k, g)
    assert relative_rms(sums.sum(0), expected) < MMA_BUDGET
    assert per_row_rms(sums.sum(0).cpu(), expected) < ROW_MMA_BUDGET
    got = _forward(state, x.cuda(), tile=tile)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    assert relative_rms(got, float64_forward(x, state.T_packed, state.E, state.bias, k, g)) < BF16_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("m,one_split", [(17, False), (24, False), (32, False), (40, False), (48, False),
                                         (56, False), (64, False), (24, True), (56, True), (64, True)])
def test_column_tiles_add_rows_without_changing_any(m, one_split):
    """Each column tile of 8 activation rows has its own accumulators: the partial sums of an ``m``-row call
    (three to eight column tiles on their own launch of ``TILED_MMA_LAUNCHES``, from seven with the fragments
    loaded in the step) equal bit for bit those of 8-row calls on the same rows with that launch (one column
    tile, two steps a turn, fragments loaded a step ahead). The default launches give each split one step
    here; with one split (8 warps, no cap) every program walks all 26 steps."""
    n, k, g = 1000, 4099, 40
    state, gen = decode_state(n, k, g, seed=m)
    x = (torch.randn(m, k, generator=gen) * 4).to(torch.bfloat16).cuda()
    launch = (8, 0) if one_split else tiled_mma.TILED_MMA_LAUNCHES[-(-m // 8)]
    whole = tiled_mma.tiled_mma(x, state.T_tiles, state.E_tiles, out_features=n, group_size=g,
                                tile=launch if one_split else None)
    parts = [tiled_mma.tiled_mma(x[i:i + 8], state.T_tiles, state.E_tiles, out_features=n, group_size=g, tile=launch)
             for i in range(0, m, 8)]
    assert (whole.shape[0] == 1) == one_split  # several splits (each compared), or one that walks every step
    assert torch.equal(whole.view(torch.int32), torch.cat(parts, dim=1).view(torch.int32))


@GPU_ONLY
def test_a_launch_of_the_wrong_length_is_refused_for_several_rows():
    state, gen = decode_state(64, 500, 40, seed=3)
    x = torch.randn(24, 500, generator=gen).to(torch.bfloat16).cuda()
    with pytest.raises(ValueError, match=r"tile=\(4,\) for 24 rows must be \(warps, programs per SM\)"):
        _forward(state, x, tile=(4,))


@GPU_ONLY
@pytest.mark.parametrize("m", [6, 12, 40, 60])
def test_tiled_mma_poisons_exactly_the_rows_of_corrupt_bytes(m):
    """Bytes 243, 255 and 250 at a row's first, last and a middle column make those rows NaN for every
    activation row and no other; the other rows match float64. One column tile (two steps a turn), two,
    five and eight (fragments in the step)."""
    n, k, g = 1000, 4099, 40
    packed, exponents, _, gen = layer(n, k, g, seed=5)
    corrupt = {7: (0, 243), 999: (-1, 255), 500: (333, 250)}
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    clean = packed.clone()
    for row, (column, value) in corrupt.items():
        packed[row, column] = value
        clean[row, column] = 121
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
    got = tiled_mma.tiled_mma(x.cuda(), T_tiles, E_tiles, out_features=n, group_size=g).sum(0).cpu()
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(corrupt)] = True
    assert torch.isnan(got[:, bad]).all() and torch.isfinite(got[:, ~bad]).all()
    assert relative_rms(got[:, ~bad], float64_forward(x, clean, exponents, None, k, g)[:, ~bad]) < MMA_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("m", [4, 12, 30])
@pytest.mark.parametrize("exponent,scale", [(127, -120), (-127, 100), (-128, 100), (-126, 100)])
def test_tiled_mma_keeps_extreme_exponents_exact(exponent, scale, m):
    """Every group at ``exponent`` (``2^-127`` and ``2^-128`` are bf16 subnormals: the scale words, their
    products with the trits and the tensor-core inputs must keep them), activations scaled by
    ``2^scale`` so that the outputs are normal fp32; one column tile, two and four."""
    n, k, g = 64, 800, 40
    packed, exponents, _, gen = layer(n, k, g, seed=exponent & 255)
    exponents.fill_(exponent)
    x = (torch.randn(m, k, generator=gen) * 2.0**scale).to(torch.bfloat16)
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
    got = tiled_mma.tiled_mma(x.cuda(), T_tiles, E_tiles, out_features=n, group_size=g).sum(0).cpu()
    expected = float64_forward(x, packed, exponents, None, k, g)
    nonzero = expected[expected != 0]  # an output can cancel to exactly 0 (seen once in 30 x 64)
    assert nonzero.numel() > 0.99 * expected.numel() and nonzero.abs().min() > 2.0**-126  # normal fp32
    assert per_row_rms(got, expected) < ROW_MMA_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("m", [3, 12])
def test_tiled_mma_scales_by_every_exponent(m):
    """Row ``r`` of 256 has every group at exponent ``r - 128``, so each of the 256 scale words is read
    by one row. Two calls keep every row's output a normal fp32: activations ``~2^-10`` for the rows
    at exponents from -100 on, ``~2^100`` for those up to 20; each row matches float64 in both calls
    that cover it."""
    n, k, g = 256, 1000, 40
    packed, exponents, _, gen = layer(n, k, g, seed=17 + m)
    row_exponent = torch.arange(n) - 128
    exponents.copy_(row_exponent.to(torch.int8)[:, None].expand_as(exponents))
    T_tiles, E_tiles = (t.cuda() for t in tile_rows(packed, exponents, g))
    x = torch.randn(m, k, generator=gen)
    checked = torch.zeros(n, dtype=torch.bool)
    for scale, rows in ((-10, row_exponent >= -100), (100, row_exponent <= 20)):
        scaled = (x * 2.0**scale).to(torch.bfloat16)
        got = tiled_mma.tiled_mma(scaled.cuda(), T_tiles, E_tiles, out_features=n, group_size=g).sum(0).cpu()
        expected = float64_forward(scaled, packed, exponents, None, k, g)
        assert per_row_rms(got[:, rows], expected[:, rows]) < ROW_MMA_BUDGET
        checked |= rows
    assert checked.all()


@GPU_ONLY
def test_forward_decode_takes_the_tiled_mma_for_bf16_rows_2_to_64(monkeypatch):
    """bf16 with 2..64 rows and whole lane runs per group take the kernel; fp32, one row, 65 rows and
    G = 20 do not (they run the tiled GEMV or the forward on ``T_packed``); every result matches."""
    calls = []
    original = tiled_mma.tiled_mma
    monkeypatch.setattr(tiled_mma, "tiled_mma", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    for g, rows, dtype, takes in ((40, 2, torch.bfloat16, True), (40, 16, torch.bfloat16, True),
                                  (40, 17, torch.bfloat16, True), (40, 64, torch.bfloat16, True),
                                  (40, 65, torch.bfloat16, False), (40, 1, torch.bfloat16, False),
                                  (40, 8, torch.float32, False), (20, 8, torch.bfloat16, False)):
        state, gen = decode_state(513, 1001, g, seed=rows)
        x = torch.randn(rows, 1001, generator=gen).to(dtype)
        got = _forward(state, x.cuda())
        assert (len(calls) == 1) == takes, (g, rows, dtype)
        calls.clear()
        budget = BF16_BUDGET if dtype == torch.bfloat16 else 5e-5
        assert relative_rms(got, float64_forward(x, state.T_packed, state.E, state.bias, 1001, g)) < budget


@GPU_ONLY
def test_linear_takes_a_batch_of_tokens_with_the_default_backend():
    state, gen = decode_state(257, 999, 40, seed=4)
    x = torch.randn(2, 3, 999, generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        got = linear(state, x.cuda())
    assert got.shape == (2, 3, 257) and got.dtype == torch.bfloat16
    expected = float64_forward(x.reshape(6, 999), state.T_packed, state.E, state.bias, 999, 40)
    assert relative_rms(got.reshape(6, 257), expected) < BF16_BUDGET


@GPU_ONLY
def test_misaligned_tiles_are_refused_for_several_rows():
    state, gen = decode_state(64, 500, 40, seed=2)
    x = torch.randn(4, 500, generator=gen).to(torch.bfloat16).cuda()
    storage = torch.empty(state.T_tiles.numel() + 1, dtype=torch.uint8, device="cuda")
    shifted = storage[1:].view(state.T_tiles.shape)
    shifted.copy_(state.T_tiles)
    with pytest.raises(ValueError, match="T_tiles must be contiguous on cuda:0 and start 16-byte aligned"):
        kernels.forward_decode(x, state.T_packed, state.E, shifted, state.E_tiles, None, in_features=500, group_size=40,
                               bias_frac_bits=FRAC_BITS)


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the interpreter's dispatch")
def test_interpreter_dispatch_runs_the_forward_on_t_packed_for_several_rows(monkeypatch):
    called = []
    monkeypatch.setattr(tiled_mma, "tiled_mma", lambda *a, **k: called.append(1))
    state, gen = decode_state(64, 150, 40, seed=1)
    x = torch.randn(4, 150, generator=gen).to(torch.bfloat16)
    got = _forward(state, x)
    assert not called
    assert relative_rms(got, float64_forward(x, state.T_packed, state.E, state.bias, 150, 40)) < BF16_BUDGET
