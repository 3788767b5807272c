"""The decode-in-GEMM forward and grad-x (``triton_decode_gemm``): the order its decoders take units in, its
configurations, the dispatch rule, its sm_90 build (offline, on CPU) and, on a GPU, its buffer bit for bit
against the run decode and its outputs against float64 products."""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from test_triton_register_decode import _compile_offline, float64_grad_x, per_row_rms  # noqa: E402
from test_triton_table_gemv import FRAC_BITS, float64_forward, layer  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_decode_gemm as decode_gemm  # noqa: E402
from ternary.kernels.linear import triton_run_decode  # noqa: E402
from ternary.kernels.linear.triton_launch import round_up, tma_rows  # noqa: E402
from ternary.state.packing import packed_width  # noqa: E402

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")
# bf16 output: one rounding of an fp32 sum (relative 2^-9 at most per element, ~1.7e-3 RMS measured).
OUTPUT_BUDGET = 4e-3


def _need(chunks: int, m_tiles: int, programs: int, unit: int, pieces: int, tiles_per_chunk: int) -> tuple:
    """(round, step) at which the first tile that reads the unit's chunk ``(j, c)`` reaches it: forward, output
    row block ``j`` at its chunk ``c``; grad-x, column tile ``c * tiles_per_chunk`` at its row block ``j``."""
    j, c = divmod(unit // pieces, chunks)
    if tiles_per_chunk:
        return (c * tiles_per_chunk * m_tiles) // programs, j
    return (j * m_tiles) // programs, c


@pytest.mark.parametrize("row_blocks, chunks, m_tiles, programs, pre_tiles, pre_chunks, tiles_per_chunk",
                         [(16, 4, 16, 132, 9, 2, 0), (64, 13, 16, 132, 9, 2, 0), (3, 1, 1, 3, 0, 0, 0),
                          (5, 7, 2, 4, 2, 99, 0), (1, 1, 1, 1, 1, 1, 0), (16, 4, 16, 132, 1, 2, 5),
                          (56, 4, 16, 132, 1, 2, 5), (16, 12, 8, 132, 0, 0, 5), (3, 2, 1, 2, 99, 1, 5)])
def test_unit_order_is_every_unit_left_once_in_the_order_of_need(row_blocks, chunks, m_tiles, programs, pre_tiles,
                                                                 pre_chunks, tiles_per_chunk):
    """Every unit of a chunk that was not pre-decoded appears exactly once, the pieces of a chunk together,
    and the (round, step) at which the tiles first need them never decreases, for the forward and grad-x."""
    pieces = 16
    order = decode_gemm.unit_order(row_blocks, chunks, m_tiles, programs, pieces, pre_tiles, pre_chunks,
                                   tiles_per_chunk, torch.device("cpu")).tolist()
    left = {(j * chunks + c) * pieces + q for j in range(row_blocks) for c in range(chunks) for q in range(pieces)
            if not (j < pre_tiles and c < pre_chunks)}
    assert len(order) == len(set(order)) == len(left) and set(order) == left
    needs = [_need(chunks, m_tiles, programs, unit, pieces, tiles_per_chunk) for unit in order]
    assert needs == sorted(needs)
    assert all(order[i] // pieces == order[i + pieces - 1] // pieces for i in range(0, len(order), pieces))


@pytest.mark.parametrize("config", [(3, 16, 1), (64, 16, 1), (4, 16, 1), (32, 24, 1), (8, 2, 1), (32, 0, 1),
                                    (32, 16, -1)])
def test_configs_that_do_not_fit_are_refused_by_name(config):
    """Chunks must hold whole 64-column steps and divide a warp's lanes, units whole row steps of a
    256-row block, and nothing negative is pre-decoded."""
    with pytest.raises(ValueError, match=r"triton_decode_gemm: config .* needs CHUNK_RUNS"):
        decode_gemm.check_config(config)


@pytest.mark.parametrize("config", [(8, 16, 1), (16, 16, 1)])
def test_grad_x_needs_chunks_of_whole_output_tiles(config):
    """Grad-x chunks are whole 256-column output tiles (32 runs: 1280 columns, five tiles); the forward takes
    these."""
    decode_gemm.check_config(config)
    with pytest.raises(ValueError, match=r"triton_decode_gemm: grad-x config .* whole 256-column tiles"):
        decode_gemm.check_config(config, grad_x=True)


def test_calls_it_cannot_take_are_refused_by_name():
    """A direct call the kernel cannot take (here: on CPU, where Gluon cannot run) says what it needs and what
    it got instead of failing inside the launch."""
    packed, exponents, _, _ = layer(300, 400, 40, seed=2)
    x = torch.zeros(2048, 400, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"triton_decode_gemm: takes bf16 x .* got torch.float32"):
        decode_gemm.forward(x, packed, exponents, None, in_features=400, group_size=40, bias_frac_bits=FRAC_BITS)
    with pytest.raises(ValueError, match=r"triton_decode_gemm: takes bf16 grad_y"):
        decode_gemm.grad_x(torch.zeros(2048, 300, dtype=torch.bfloat16), packed, exponents, in_features=400,
                           group_size=40)


def test_shipped_configs_fit():
    decode_gemm.check_config(decode_gemm.DECODE_GEMM_CONFIG)
    decode_gemm.check_config(decode_gemm.DECODE_GEMM_GRAD_X_CONFIG, grad_x=True)


def test_dispatch_leaves_cpu_calls_and_other_rows_to_the_other_paths():
    """On CPU (interpreted) nothing goes to the kernel; on a card only bf16 calls with ``DECODE_GEMM_ROWS``
    rows and a full round of output tiles do: a forward on a layer of at least ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS``
    weights across the whole range, on a smaller layer up to ``DECODE_GEMM_SMALL_LAYER_MAX_ROWS`` rows, and
    grad-x calls only on the large layers."""
    packed, exponents, _, _ = layer(4096, 400, 40, seed=1)
    x = torch.zeros(2048, 400, dtype=torch.bfloat16)
    assert not kernels.decode_gemm_takes(x, packed, exponents, 40)
    assert not decode_gemm.takes(x, packed, exponents, 40)
    low, high = kernels.DECODE_GEMM_ROWS
    small_most = kernels.DECODE_GEMM_SMALL_LAYER_MAX_ROWS
    assert kernels.WGMMA_MAX_ROWS < low <= small_most <= high
    if DEVICE == "cuda":
        capable = torch.cuda.get_device_capability()[0] == 9
        packed, exponents = packed.cuda(), exponents.cuda()
        big_rows = -(-kernels.DECODE_GEMM_GRAD_X_MIN_WEIGHTS // 400)  # a layer of 2^27 weights or just more
        big_packed = torch.zeros((big_rows, packed.shape[1]), dtype=torch.uint8, device="cuda")
        big_exponents = torch.zeros((big_rows, exponents.shape[1]), dtype=torch.int8, device="cuda")
        for rows, dtype, g, big, taken in [
                (low, torch.bfloat16, 40, False, True), (small_most, torch.bfloat16, 40, False, True),
                (small_most + 1, torch.bfloat16, 40, False, False), (small_most + 1, torch.bfloat16, 40, True, True),
                (high, torch.bfloat16, 40, True, True), (high + 1, torch.bfloat16, 40, True, False),
                (low - 1, torch.bfloat16, 40, True, False), (low, torch.float32, 40, False, False),
                (low, torch.bfloat16, 10, False, False)]:
            p, e = (big_packed, big_exponents) if big else (packed, exponents)
            if g != 40:
                e = torch.zeros((p.shape[0], 40), dtype=torch.int8, device="cuda")
            x = torch.zeros(rows, 400, dtype=dtype, device="cuda")
            assert kernels.decode_gemm_takes(x, p, e, g) == (taken and capable), (rows, dtype, g, big)
        few_tiles = torch.zeros(low, 400, dtype=torch.bfloat16, device="cuda")
        assert not kernels.decode_gemm_takes(few_tiles, packed[:256], exponents[:256], 40)
        # grad-x: only layers of DECODE_GEMM_GRAD_X_MIN_WEIGHTS weights, with a full round of output tiles along K
        big = kernels.DECODE_GEMM_GRAD_X_MIN_WEIGHTS // 4096
        grad_y = torch.zeros(low, 4096, dtype=torch.bfloat16, device="cuda")
        assert kernels.decode_gemm_takes(grad_y, packed, exponents, 40, big) == capable
        assert not kernels.decode_gemm_takes(grad_y, packed, exponents, 40, big - 1)
        grad_y = torch.zeros(high, 4096, dtype=torch.bfloat16, device="cuda")
        assert kernels.decode_gemm_takes(grad_y, packed, exponents, 40, big) == capable


_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_decode_gemm as d

names = ("x_desc w_desc y_desc t_ptr e_ptr w_ptr flags_ptr counter_ptr done_ptr order_ptr bias_ptr N KB NG RUNS "
         "stride_pn stride_en stride_w16 stride_b bias_scale UNITS CHUNKS PRE_TILES PRE_CHUNKS tiles m_tiles "
         "k_steps").split()
bm, bn, bk = d.BLOCK_M, d.BLOCK_N, d.BLOCK_K
report = []
for bytes_per_group, has_bias, grad_x in [(8, True, False), (8, False, False), (4, False, False), (12, True, False),
                                          (8, False, True), (4, False, True)]:
    box = [bk, bn] if grad_x else [bn, bk]
    types = [f"tensordesc<bf16[{bm}, {bk}],{d._shared_layout(bm, bk)!r}>",
             f"tensordesc<bf16[{box[0]}, {box[1]}],{d._shared_layout(*box)!r}>",
             f"tensordesc<bf16[{bm // 2}, {bn}],{d._shared_layout(bm // 2, bn)!r}>",
             "*u8", "*i8", "*i32", "*i32", "*i32", "*i32", "*i32", "*i32"] + ["i32"] * 8 + ["fp32"] + ["i32"] * 7
    chunk_runs, unit_rows, _ = d.DECODE_GEMM_GRAD_X_CONFIG if grad_x else d.DECODE_GEMM_CONFIG
    constexprs = dict(BYTES_PER_GROUP=bytes_per_group, ONE_SCALE_PER_RUN=bytes_per_group % 8 == 0,
                      HAS_BIAS=has_bias, GRAD_X=grad_x, STAGES=d.STAGES, UNIT_ROWS=unit_rows, CHUNK_RUNS=chunk_runs,
                      DECODERS=d.DECODERS, CONSUMER_REGS=d.REGISTERS[0], LOADER_REGS=d.REGISTERS[1],
                      DECODER_REGS=d.REGISTERS[2])
    signature = dict(zip(names, types)) | {name: "constexpr" for name in constexprs}
    source = GluonASTSource(d._decode_gemm_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(3, 11)})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    sass, ptx = full_sass(compiled.asm["cubin"]), compiled.asm["ptx"]
    report.append([grad_x, compiled.metadata.shared, sass.count("STL") + sass.count("LDL"),
                   sass.count("HGMMA.64x256x16.F32.BF16"), ptx.count("atom.global.add.u32"),
                   ptx.count("red.release.gpu.global.add.u32"), ptx.count("ld.volatile.global"),
                   ptx.count("fence.proxy.async.global"), ptx.count("cp.async.bulk.tensor.2d.shared::cluster"),
                   ptx.count("cp.async.bulk.tensor.2d.global.shared::cta")])
print(json.dumps(report))
"""


def test_kernel_compiles_for_sm_90_within_shared_memory_without_spills():
    """Compiled offline for sm_90 with the shipped constants (forward: groups of 8, 4 and 12 bytes, with and
    without a bias; grad-x: groups of 8 and 4 bytes): the ring and the two output tiles fit an H100's 227 KB of
    shared memory per block, nothing spills (the bias seeds the accumulator, so its columns are never live
    beside it), each consumer issues its four ``64x256x16`` products per step, the decoders claim units with an
    atomic and publish them with releases (chunk flag, units done) after a proxy fence, the loader spins with
    volatile loads and fences after them, and the ring is filled by TMA (grad-x: the ``[64, 256]`` box of
    ``w`` as four ``[64, 64]`` copies, the swizzle's width) and emptied by one TMA store per consumer."""
    for grad_x, shared, spills, products, claims, releases, spins, proxy_fences, loads, stores in _compile_offline(
            _OFFLINE_COMPILE):
        assert shared <= 227 * 1024
        assert spills == 0
        assert products == 8
        assert claims == 4 and releases == 4  # per decoder partition: claims before and in the loop; two adds
        assert spins >= 2 and proxy_fences == 4  # two decoder releases, the loader's two acquires
        assert loads == (5 if grad_x else 2) and stores == 2


def _cuda_layer(m, n, k, g, seed, corrupt=None):
    packed, exponents, bias, gen = layer(n, k, g, seed=seed)
    if corrupt is not None:
        packed[corrupt] = 250
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    return packed.cuda(), exponents.cuda(), bias.cuda(), x.cuda()


def _poison_next_buffer(n: int, k: int) -> None:
    """Leave a NaN-filled block of exactly the transient buffer's size free in the caching allocator, so the next
    ``w`` is most likely that block: a product that read any weight before its decode would then turn NaN (a
    reused buffer from an earlier call would already hold the right weights and hide it). Also leave many blocks
    of the flags' size holding ``2^30`` free, so the next flags most likely start as "every unit decoded": a call
    that did not clear them would read the NaNs."""
    runs = -(-packed_width(k) // 8)
    columns = round_up(triton_run_decode.RUN_COLUMNS * runs, triton_run_decode.ROW_ALIGN)
    torch.full((n, columns), float("nan"), dtype=torch.bfloat16, device="cuda")
    flags = -(-n // decode_gemm.BLOCK_N) * -(-runs // decode_gemm.DECODE_GEMM_CONFIG[0]) + 2
    for _ in range(64):
        torch.full((flags, ), 1 << 30, dtype=torch.int32, device="cuda")
    torch.cuda.synchronize()


# (M, N, K, G): M = 1, M not a multiple of the 128-row tile; N not a multiple of 256 and N below one
# tile; K not a multiple of 5, of G, of a run or of a 1280-column chunk; groups of 4, 8, 12 and 16 bytes.
SHAPES = [(1, 300, 4100, 60), (129, 513, 2600, 20), (300, 1000, 1001, 40), (700, 3000, 9000, 40),
          (2048, 4096, 4096, 40), (64, 17, 333, 80), (2100, 600, 12801, 40)]


@GPU_ONLY
@pytest.mark.parametrize("m, n, k, g", SHAPES)
@pytest.mark.parametrize("pre_chunks", [0, 1, 2, 99])
@pytest.mark.parametrize("with_bias", [False, True])
def test_buffer_is_the_run_decode_and_output_the_product(m, n, k, g, pre_chunks, with_bias):
    """The transient buffer equals ``dequantize_runs`` bit for bit (whether its chunks came from the
    pre-decode or the kernel's decoders) and the output is the float64 product within ``OUTPUT_BUDGET``
    per output column."""
    packed, exponents, bias, x = _cuda_layer(m, n, k, g, seed=m + n + k)
    bias = bias if with_bias else None
    config = decode_gemm.DECODE_GEMM_CONFIG[:2] + (pre_chunks,)
    _poison_next_buffer(n, k)
    y, w = decode_gemm.forward(x, packed, exponents, bias, in_features=k, group_size=g, bias_frac_bits=FRAC_BITS,
                               config=config, keep_buffer=True)
    want = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g)
    assert torch.equal(w.view(torch.int16), want.view(torch.int16))
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    assert per_row_rms(y.cpu(), float64_forward(x, packed, exponents, bias, k, g)) < OUTPUT_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("config", [(8, 64, 1), (16, 32, 0), (32, 8, 3), (32, 256, 1)])
def test_other_unit_shapes_give_the_same_output(config):
    """Every fitting configuration decodes the same buffer and, as the products and their order do not
    depend on it, gives the same output bit for bit."""
    packed, exponents, bias, x = _cuda_layer(700, 3000, 9000, 40, seed=5)
    kw = dict(in_features=9000, group_size=40, bias_frac_bits=FRAC_BITS)
    y = decode_gemm.forward(x, packed, exponents, bias, **kw)
    assert torch.equal(decode_gemm.forward(x, packed, exponents, bias, config=config, **kw).view(torch.int16),
                       y.view(torch.int16))


@GPU_ONLY
def test_a_corrupt_byte_gives_nan_in_its_output_column_only():
    """A byte > 242 of row ``r`` makes ``y[:, r]`` NaN and no other column."""
    packed, exponents, bias, x = _cuda_layer(2048, 4096, 4096, 40, seed=3, corrupt=(1000, 7))
    y = decode_gemm.forward(x, packed, exponents, bias, in_features=4096, group_size=40, bias_frac_bits=FRAC_BITS)
    bad = (~torch.isfinite(y.float())).any(0).nonzero().flatten().tolist()
    assert bad == [1000]
    assert torch.isnan(y[:, 1000].float()).all()


@GPU_ONLY
@pytest.mark.parametrize("grad_x", [False, True])
def test_rows_padded_for_tma_are_read_only_to_their_width(grad_x):
    """The activations (forward, ``K = 1001``) or ``grad_y`` (grad-x, ``N = 513``) as the ``[M, width]`` view of
    rows padded to 16 bytes with NaN past the width (the copy ``tma_rows`` makes, read in place): the
    descriptor fills zeros past the width, so the output equals the one from contiguous rows bit for bit."""
    m, n, k, g = 300, 513, 1001, 20
    packed, exponents, bias, x = _cuda_layer(m, n, k, g, seed=17)
    a = torch.randn(m, n, generator=torch.Generator().manual_seed(18)).to(torch.bfloat16).cuda() if grad_x else x
    padded = torch.full((m, round_up(a.shape[1], 8)), float("nan"), dtype=torch.bfloat16, device="cuda")
    padded[:, :a.shape[1]] = a
    view = padded[:, :a.shape[1]]
    assert tma_rows(view) is view
    if grad_x:
        call = lambda rows: decode_gemm.grad_x(rows, packed, exponents, in_features=k, group_size=g)
    else:
        call = lambda rows: decode_gemm.forward(rows, packed, exponents, bias, in_features=k, group_size=g,
                                                bias_frac_bits=FRAC_BITS)
    want = call(a)
    assert not torch.isnan(want.float()).any()
    assert torch.equal(call(view).view(torch.int16), want.view(torch.int16))


@GPU_ONLY
def test_forward_dispatch_takes_the_kernel_for_training_rows(monkeypatch):
    """``triton.forward`` with ``DECODE_GEMM_ROWS`` bf16 rows goes to the kernel on an sm_90 card (and to
    the two-step path elsewhere) and matches the float64 product either way."""
    packed, exponents, bias, x = _cuda_layer(2048, 4096, 1000, 40, seed=9)
    calls = []
    original = decode_gemm.forward
    monkeypatch.setattr(decode_gemm, "forward", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    y = kernels.forward(x, packed, exponents, bias, in_features=1000, group_size=40, bias_frac_bits=FRAC_BITS)
    assert len(calls) == (torch.cuda.get_device_capability()[0] == 9)
    assert per_row_rms(y.cpu(), float64_forward(x, packed, exponents, bias, 1000, 40)) < OUTPUT_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("m, n, k, g", SHAPES)
@pytest.mark.parametrize("pre", [0, 1, 99])
def test_grad_x_buffer_is_the_run_decode_and_output_the_product(m, n, k, g, pre):
    """Grad-x: the buffer equals ``dequantize_runs`` bit for bit (pre-decoded row blocks or not) and
    ``grad_y @ W`` is the float64 product within ``OUTPUT_BUDGET`` per output column."""
    packed, exponents, _, _ = _cuda_layer(1, n, k, g, seed=m + n + k)
    grad_y = torch.randn(m, n, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16).cuda()
    config = decode_gemm.DECODE_GEMM_GRAD_X_CONFIG[:2] + (pre,)
    _poison_next_buffer(n, k)
    got, w = decode_gemm.grad_x(grad_y, packed, exponents, in_features=k, group_size=g, config=config,
                                keep_buffer=True)
    want = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g)
    assert torch.equal(w.view(torch.int16), want.view(torch.int16))
    assert got.dtype == torch.bfloat16 and got.shape == (m, k)
    assert per_row_rms(got.cpu(), float64_grad_x(grad_y, packed, exponents, k, g)) < OUTPUT_BUDGET


@GPU_ONLY
def test_grad_x_dispatch_takes_the_kernel_for_large_layers(monkeypatch):
    """``triton.grad_x`` with ``DECODE_GEMM_ROWS`` bf16 rows on a layer of ``DECODE_GEMM_GRAD_X_MIN_WEIGHTS``
    weights goes to the kernel on an sm_90 card and matches the fp32 product of the decoded weights (cuBLAS
    without TF32, PyTorch's default); a corrupt byte ``b`` of a weight row turns exactly the output columns of
    its five weights ``5 b .. 5 b + 4`` into NaN, in every output row."""
    n, k, g = 16384, kernels.DECODE_GEMM_GRAD_X_MIN_WEIGHTS // 16384, 40
    packed, exponents, _, _ = _cuda_layer(1, n, k, g, seed=11)
    grad_y = torch.randn(2048, n, device="cuda").to(torch.bfloat16)
    calls = []
    original = decode_gemm.grad_x
    monkeypatch.setattr(decode_gemm, "grad_x", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    got = kernels.grad_x(grad_y, packed, exponents, in_features=k, group_size=g)
    assert len(calls) == (torch.cuda.get_device_capability()[0] == 9)
    weights = triton_run_decode.dequantize_runs(packed, exponents, in_features=k, group_size=g).float()
    assert per_row_rms(got.float().cpu(), (grad_y.float() @ weights).cpu()) < OUTPUT_BUDGET
    packed[5, 3] = 250
    poisoned = kernels.grad_x(grad_y, packed, exponents, in_features=k, group_size=g)
    assert torch.isnan(poisoned[:, 15:20].float()).all()
    assert torch.isfinite(poisoned[:, :15].float()).all() and torch.isfinite(poisoned[:, 20:].float()).all()


@GPU_ONLY
@pytest.mark.parametrize("grad_x", [False, True])
def test_a_first_call_inside_a_cuda_graph_capture_replays_the_eager_result(monkeypatch, grad_x):
    """The unit order of a geometry seen first inside a graph capture is built by the captured operations
    (not kept, which would keep a tensor written only on replay): the replayed output equals the eager one
    bit for bit, and an eager call after the capture (which keeps the order) too. A capture after that builds
    nothing (a spy on ``unit_order``) and replays the same output."""
    n, k, g = 4096, 1000, 40
    packed, exponents, bias, x = _cuda_layer(2048, n, k, g, seed=21)
    a = torch.randn(2048, n, device="cuda").to(torch.bfloat16) if grad_x else x

    def call(rows):
        if grad_x:
            return decode_gemm.grad_x(a[:rows], packed, exponents, in_features=k, group_size=g)
        return decode_gemm.forward(a[:rows], packed, exponents, bias, in_features=k, group_size=g,
                                   bias_frac_bits=FRAC_BITS)

    def captured_call(rows):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = call(rows)
        graph.replay()
        torch.cuda.synchronize()
        return out

    decode_gemm._ORDERS.clear()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call(300)  # compiles the kernels on another geometry
    torch.cuda.current_stream().wait_stream(stream)
    captured = captured_call(2048)
    assert len(decode_gemm._ORDERS) == 1
    eager = call(2048)
    assert len(decode_gemm._ORDERS) == 2
    assert torch.equal(captured.view(torch.int16), eager.view(torch.int16))
    built = []
    build = decode_gemm.unit_order
    monkeypatch.setattr(decode_gemm, "unit_order", lambda *key: built.append(key) or build(*key))
    again = captured_call(2048)
    assert built == [] and len(decode_gemm._ORDERS) == 2
    assert torch.equal(again.view(torch.int16), eager.view(torch.int16))


@GPU_ONLY
@pytest.mark.parametrize("programs", [1, 3, 8])
@pytest.mark.parametrize("grad_x", [False, True])
def test_few_programs_walk_many_rounds_to_the_same_output(monkeypatch, programs, grad_x):
    """With the SM count patched down, each program walks many rounds of tiles (the unit order across rounds,
    the pre-decode of a short first round, the loader's shortcut once every unit is done): the output equals
    the full card's bit for bit, and no weight is read before its decode (poisoned buffer)."""
    n, k, g = 1000, 3001, 40
    packed, exponents, bias, x = _cuda_layer(700, n, k, g, seed=programs)
    a = torch.randn(700, n, device="cuda").to(torch.bfloat16) if grad_x else x

    def call():
        _poison_next_buffer(n, k)
        if grad_x:
            return decode_gemm.grad_x(a, packed, exponents, in_features=k, group_size=g)
        return decode_gemm.forward(a, packed, exponents, bias, in_features=k, group_size=g, bias_frac_bits=FRAC_BITS)

    full_card = call()
    monkeypatch.setattr(decode_gemm, "sm_count", lambda device: programs)
    few = call()
    assert torch.isfinite(few.float()).all()
    assert torch.equal(few.view(torch.int16), full_card.view(torch.int16))
