"""The ``wgmma`` update (Gluon, sm_90 only: the persistent, warp-specialised kernel of
``triton_wgmma_ws`` built from ``triton_wgmma``'s parts) against the torch reference, bit for bit.

Hooks are small integers in bf16 / fp16, so every gradient sum is exact in any order and the
reference's signs are the only right answer. The kernel has no interpreter: its launches are
skipped without an sm_90 GPU, while the dispatch rule (:func:`triton_wgmma.takes`), the host
checks and an offline sm_90 compile of the kernel run everywhere.
"""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

import triton  # noqa: E402

from test_triton_update import FIELDS, assert_bitwise, hooks, layer_state, rule  # noqa: E402
from test_triton_register_decode import _compile_offline  # noqa: E402
from ternary.kernels.update import (UpdatedTensors, reference, triton_wgmma, triton_wgmma_wide,  # noqa: E402
                                    triton_wgmma_ws)
from ternary.kernels.update import triton as kernels  # noqa: E402

needs_wgmma = pytest.mark.skipif(not kernels.wgmma_runs(torch.empty(0, device=DEVICE)),
                                 reason="the wgmma update runs on sm_90 GPUs only (Gluon has no interpreter)")

# (M, N, K, G): M = 1, N = 1, K not a multiple of 5 or of G (the kernel takes even K), row and
# byte tails of the 64-row x 64-byte tiles, hook rows that are not a multiple of the 64-row step,
# every group size whose groups lie inside one 64-byte block, and a partial last byte at an odd index
# (K = 1016: byte 203, the second of its lane's pair).
SHAPES = [(1, 1, 8, 5), (64, 128, 160, 40), (100, 200, 334, 40), (130, 257, 1002, 20), (3, 130, 646, 160),
          (700, 64, 90, 10), (513, 300, 1200, 80), (65, 129, 204, 40), (70, 90, 1290, 320), (70, 150, 1016, 40),
          (200, 100, 1250, 40), (65, 70, 300, 20)]  # the last two: K past the last block's padding (first-block sums)


# Both tile shapes of the kernel: 64 weight rows (``triton_wgmma_ws``) and 128 (``triton_wgmma_wide``), called
# directly whatever ``kernels.update`` would pick for the layer.
KERNELS = {"64_rows": triton_wgmma_ws.ws_update, "wide": triton_wgmma_wide.wide_update}
TILE_ROWS = {"64_rows": triton_wgmma_ws.WS_UPDATE_TILE[1], "wide": triton_wgmma_wide.WIDE_UPDATE_TILE[1]}
each_kernel = pytest.mark.parametrize("kernel_name", list(KERNELS))


def cpu_layer_state(n: int, k: int, g: int, gen: torch.Generator) -> dict:
    """``layer_state`` on the CPU, for the refusals that run before any kernel."""
    return {name: tensor.cpu() for name, tensor in layer_state(n, k, g, gen).items()}


def poisoned_like(state: dict) -> UpdatedTensors:
    """Output buffers full of garbage, so an unwritten entry cannot pass."""
    return UpdatedTensors(*[None if state[name] is None else torch.full_like(state[name], -77) for name in FIELDS])


def test_bias_sums_go_to_the_last_block_exactly_when_its_last_product_lies_past_k():
    """``last_block_past_k`` against the columns ``fetch_step`` gives the ``[.., BLOCK_B]`` box of the last byte
    block's tiles (``5 BLOCK_B b + 4 BLOCK_B ..``): true iff every one of them is ``>= K``, for every ``K`` up
    to 3000 and three block widths; the test shapes cover both answers."""
    for block_b in (16, 32, 64):
        for k in range(1, 3001):
            last = triton.cdiv(triton.cdiv(k, 5), block_b) - 1
            first_high = 5 * block_b * last + 4 * block_b
            past_k = all(column >= k for column in range(first_high, first_high + block_b))
            assert triton_wgmma.last_block_past_k(k, block_b) == past_k
    answers = {triton_wgmma.last_block_past_k(k, triton_wgmma.WGMMA_BLOCK_B) for _, _, k, _ in SHAPES}
    assert answers == {True, False}


@needs_wgmma
@each_kernel
@pytest.mark.parametrize("m,n,k,g", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_wgmma_update_matches_reference_bit_for_bit(kernel_name, m, n, k, g, dtype, with_bias):
    gen = torch.Generator().manual_seed(m * 1009 + n * 17 + k + g)
    state = layer_state(n, k, g, gen, bias=with_bias)
    x, grad_y = hooks(m, n, k, gen)
    static = rule(k, g)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **static)
    actual = KERNELS[kernel_name](*args, x.to(dtype), grad_y.to(dtype), poisoned_like(state), **static)
    assert_bitwise(expected, actual)
    assert not torch.equal(expected.T_packed.cpu(), state["T_packed"].cpu()), "test drew no trit step"


@needs_wgmma
@each_kernel
@pytest.mark.parametrize("k", [1200, 1002])
def test_ws_update_reads_hooks_that_are_views(kernel_name, k):
    """``x`` (read by TMA as it is, in natural column order) as a column slice of a wider buffer: rows
    ``K + 24`` apart (16-byte multiples for K = 1200, so TMA reads the view in place) or at an odd
    offset (not 16-byte aligned, so it is copied first), or rows padded to the next 16 bytes (the copy
    ``tma_rows`` makes, read in place), with 300 hook rows: bit for bit against the reference on the
    contiguous hooks. The columns around the slice hold large values, so a box that read past ``K`` into
    them instead of filling zeros would change the signs."""
    m, n, g = 300, 200, 40
    gen = torch.Generator().manual_seed(k)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    padded = [(-(-k // 8) * 8, 0)] if k % 8 else []
    for width, offset in [(k + 24, 0), (k + 24, 1)] + padded:
        wide = torch.full((m, width), 4096.0, dtype=torch.bfloat16, device=DEVICE)
        wide[:, offset:offset + k] = x
        actual = KERNELS[kernel_name](*args, wide[:, offset:offset + k], grad_y.bfloat16(), poisoned_like(state),
                                           **rule(k, g))
        assert_bitwise(expected, actual)


@needs_wgmma
def test_update_on_the_wgmma_path_refuses_corrupt_state_after_its_kernel_without_writing_any_input():
    """``update()`` queues its ``T_packed`` check and reads it after the kernels: with 16-bit hooks
    of 64+ rows the warp-specialised kernel runs on the corrupt byte first, and still the byte is
    named and nothing it read is written."""
    from ternary.state.packing import CorruptStateError

    m, n, k, g = 130, 257, 1002, 40
    gen = torch.Generator().manual_seed(23)
    state = layer_state(n, k, g, gen)
    state["T_packed"][200, 150] = 250
    before = {name: tensor.clone() for name, tensor in state.items()}
    x, grad_y = hooks(m, n, k, gen)
    with pytest.raises(CorruptStateError, match=r"byte 250 at index \(200, 150\)"):
        kernels.update(*[state[name] for name in FIELDS], x.to(torch.bfloat16), grad_y.to(torch.bfloat16),
                       **rule(k, g))
    torch.cuda.synchronize()
    for name, tensor in state.items():
        assert torch.equal(tensor, before[name]), name


@needs_wgmma
@each_kernel
@pytest.mark.parametrize("m", [64, 150, 256, 257, 6 * 64 + 1])
def test_ws_update_carries_its_ring_and_hand_over_across_the_tiles_of_each_program(kernel_name, m):
    """A layer of several tiles per SM, so each persistent program runs the ring's phases, the signs'
    hand-over and the rule's loads ahead across tile boundaries, with 1, 3, 4, 5 and 7 hook-row steps per
    tile (the 64-row kernel's ring has 4 slots, the wide one's 3: the ring's first fills span several
    tiles, exactly one, and not a whole number of tiles): bit for bit against the reference."""
    k, g = 6002, 40
    n = 2100 * TILE_ROWS[kernel_name] // 64
    tiles = triton.cdiv(n, TILE_ROWS[kernel_name]) * triton.cdiv(triton.cdiv(k, 5), triton_wgmma.WGMMA_BLOCK_B)
    assert tiles >= 3 * torch.cuda.get_device_properties(DEVICE).multi_processor_count
    gen = torch.Generator().manual_seed(11 + m)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    actual = KERNELS[kernel_name](*args, x.bfloat16(), grad_y.bfloat16(), poisoned_like(state), **rule(k, g))
    assert_bitwise(expected, actual)


@needs_wgmma
@each_kernel
def test_ws_update_addresses_t_accum_rows_past_2_gib(kernel_name):
    """``T_accum`` and its new copy as row views 2^30 + 2 bytes apart, so the last row starts past
    2^31: offsets computed in int32 would wrap and write before the buffer (4.3 GB of GPU memory)."""
    m, n, k, g = 64, 3, 80, 40
    gen = torch.Generator().manual_seed(12)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    row = 2**30 + 2
    spread = []
    for source in (state["T_accum"], None):
        buffer = torch.full(((n - 1) * row + k,), 55, dtype=torch.int8, device=DEVICE)
        view = buffer.as_strided((n, k), (row, 1))
        if source is not None:
            view.copy_(source)
        spread.append(view)
    args[FIELDS.index("T_accum")] = spread[0]
    outputs = poisoned_like(state)._replace(T_accum=spread[1])
    actual = KERNELS[kernel_name](*args, x.bfloat16(), grad_y.bfloat16(), outputs, **rule(k, g))
    assert_bitwise(expected, actual)


@needs_wgmma
@each_kernel
def test_wgmma_update_saturation_and_limits_over_whole_ranges(kernel_name):
    """Accumulators at int8 limits, E at and beyond e_min / e_max, bias near int32 limits."""
    gen = torch.Generator().manual_seed(47)
    n, k, g = 133, 284, 40
    state = layer_state(n, k, g, gen, wide=True)
    x, grad_y = hooks(90, n, k, gen)
    args = [state[name] for name in FIELDS]
    for static in (rule(k, g, theta_t=127, theta_e=127, e_min=-128, e_max=127, bias_step=2**30),
                   rule(k, g, theta_t=1, theta_e=1, e_min=-2, e_max=1)):
        expected = reference.update(*args, x, grad_y, **static)
        actual = KERNELS[kernel_name](*args, x.bfloat16(), grad_y.bfloat16(), poisoned_like(state), **static)
        assert_bitwise(expected, actual)


@needs_wgmma
@pytest.mark.parametrize("m,k", [(kernels.WGMMA_UPDATE_MIN_ROWS - 1, 300), (kernels.WGMMA_UPDATE_MIN_ROWS, 300),
                                 (kernels.WGMMA_UPDATE_MIN_ROWS, 301), (4 * kernels.WGMMA_UPDATE_MIN_ROWS + 1, 300)])
def test_update_dispatches_training_rows_to_wgmma(monkeypatch, m, k):
    """``kernels.update`` sends 16-bit hooks of ``WGMMA_UPDATE_MIN_ROWS`` rows or more to the
    ``wgmma`` kernel when ``K`` is even, the rest to its own; both match the reference."""
    calls = []
    original = triton_wgmma_ws.ws_update

    def spy(*args, **kwargs):
        calls.append(args[5].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_wgmma_ws, "ws_update", spy)
    monkeypatch.setattr(kernels, "_new_like", lambda tensor: torch.full_like(tensor, -77))
    gen = torch.Generator().manual_seed(m + k)
    n, g = 70, 40
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    assert_bitwise(expected, kernels.update(*args, x.bfloat16(), grad_y.bfloat16(), **rule(k, g)))
    assert calls == ([m] if m >= kernels.WGMMA_UPDATE_MIN_ROWS and k % 2 == 0 else [])


def test_wide_tiles_take_layers_of_many_tiles_and_many_hook_rows():
    """``triton_wgmma_wide.takes``: from ``WIDE_MIN_ROWS`` hook rows and ``WIDE_MIN_ROUNDS`` 128-row tiles per
    SM, counting partial tiles of rows and bytes as whole; below either, the 64-row kernel."""
    rows, rounds = triton_wgmma_wide.WIDE_MIN_ROWS, triton_wgmma_wide.WIDE_MIN_ROUNDS
    programs = 132
    byte_blocks = 52  # K = 16384: 3277 bytes, the last block partial
    row_tiles = triton.cdiv(rounds * programs, byte_blocks)  # just enough tiles
    n = row_tiles * 128 - 127  # the last row tile holds one row
    assert triton_wgmma_wide.takes(n, 3277, rows, programs)
    assert not triton_wgmma_wide.takes(n, 3277, rows - 1, programs)
    assert not triton_wgmma_wide.takes(n - 128, 3277, rows, programs)
    assert not triton_wgmma_wide.takes(n, 3277, rows, programs + programs // rounds + 1)
    assert triton_wgmma_wide.takes(16384, 3277, 8192, 132) and not triton_wgmma_wide.takes(4096, 820, 8192, 132)


@needs_wgmma
def test_update_sends_layers_the_wide_tiles_take_to_them(monkeypatch):
    """With the thresholds lowered to a small layer, ``kernels.update`` runs the wide kernel (and only then):
    bit for bit against the reference either way."""
    calls = []
    original = triton_wgmma_wide.wide_update

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_wgmma_wide, "wide_update", spy)
    monkeypatch.setattr(triton_wgmma_wide, "WIDE_MIN_ROWS", 128)
    monkeypatch.setattr(triton_wgmma_wide, "WIDE_MIN_ROUNDS", 1)
    monkeypatch.setattr(kernels, "_new_like", lambda tensor: torch.full_like(tensor, -77))
    programs = torch.cuda.get_device_properties(DEVICE).multi_processor_count
    k, g = 2000, 40  # 7 byte blocks
    for m, n, taken in [(128, 128 * triton.cdiv(programs, 7), True), (127, 128 * triton.cdiv(programs, 7), False),
                        (128, 128 * (triton.cdiv(programs, 7) - 1), False)]:
        gen = torch.Generator().manual_seed(m + n)
        state = layer_state(n, k, g, gen)
        x, grad_y = hooks(m, n, k, gen)
        args = [state[name] for name in FIELDS]
        calls.clear()
        assert_bitwise(reference.update(*args, x, grad_y, **rule(k, g)),
                       kernels.update(*args, x.bfloat16(), grad_y.bfloat16(), **rule(k, g)))
        assert calls == ([(n, 400)] if taken else [])


@needs_wgmma
def test_wgmma_update_reads_strided_hooks(monkeypatch):
    """``x`` as a column slice and ``grad_y`` as an aligned slice of a wider tensor (row stride
    above N, read in place by TMA and by the bias sum) give the same update as contiguous hooks."""
    monkeypatch.setattr(kernels, "_new_like", lambda tensor: torch.full_like(tensor, -77))
    m, n, k, g = kernels.WGMMA_UPDATE_MIN_ROWS, 72, 300, 40
    gen = torch.Generator().manual_seed(5)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    wide_x = torch.zeros(m, k + 13, dtype=torch.bfloat16, device=DEVICE)
    wide_x[:, 13:] = x
    wide_g = torch.zeros(m, n + 8, dtype=torch.bfloat16, device=DEVICE)
    wide_g[:, :n] = grad_y
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    assert_bitwise(expected, kernels.update(*args, wide_x[:, 13:], wide_g[:, :n], **rule(k, g)))


@pytest.mark.parametrize("group_size", [15, 30, 640])
def test_wgmma_update_refuses_groups_that_straddle_its_byte_blocks(group_size):
    """Checked before any launch (so on CPU too), naming G: groups of 3, 6 or 128 bytes would
    straddle the kernel's 64-byte blocks; ``takes`` refuses them as well."""
    gen = torch.Generator().manual_seed(group_size)
    k = 2 * group_size
    state = cpu_layer_state(4, k, group_size, gen)
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 4, k, gen))
    assert not triton_wgmma.takes(x, grad_y, state["T_accum"], group_size)
    with pytest.raises(ValueError, match=f"groups of G={group_size} straddle"):
        triton_wgmma_ws.ws_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state),
                                  **rule(k, group_size))


def test_wgmma_update_refuses_outputs_whose_strides_differ_from_their_inputs():
    """One row stride serves an input and its new copy: a new ``E`` with padded rows is refused by
    name before any launch, where the kernel would have written it at the input's stride."""
    gen = torch.Generator().manual_seed(9)
    state = cpu_layer_state(4, 80, 40, gen)
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 4, 80, gen))
    new = poisoned_like(state)._replace(E=torch.zeros(4, 3, dtype=torch.int8)[:, :2])
    with pytest.raises(ValueError, match="the new E's strides"):
        triton_wgmma_ws.ws_update(*[state[name] for name in FIELDS], x, grad_y, new, **rule(80, 40))


@pytest.mark.parametrize("x_dtype,g_dtype,group_size,k,taken", [
    (torch.bfloat16, torch.bfloat16, 40, 80, True), (torch.float16, torch.float16, 160, 320, True),
    (torch.bfloat16, torch.bfloat16, 5, 6, True), (torch.float32, torch.float32, 40, 80, False),
    (torch.bfloat16, torch.float32, 40, 80, False), (torch.bfloat16, torch.float16, 40, 80, False),
    (torch.bfloat16, torch.bfloat16, 15, 30, False), (torch.bfloat16, torch.bfloat16, 30, 60, False),
    (torch.bfloat16, torch.bfloat16, 320, 640, True), (torch.bfloat16, torch.bfloat16, 640, 1280, False),
    (torch.bfloat16, torch.bfloat16, 40, 81, False),
])
def test_wgmma_update_takes_16_bit_hooks_with_groups_inside_a_block(x_dtype, g_dtype, group_size, k, taken):
    x = torch.zeros(4, k, dtype=x_dtype)
    grad_y = torch.zeros(4, 3, dtype=g_dtype)
    T_accum = torch.zeros(3, k, dtype=torch.int8)
    assert triton_wgmma.takes(x, grad_y, T_accum, group_size) is taken


def test_wgmma_update_refuses_t_accum_at_an_odd_address():
    """``T_accum`` is read as 16-bit pieces: a view starting at an odd byte is refused by name."""
    gen = torch.Generator().manual_seed(4)
    state = cpu_layer_state(4, 80, 40, gen)
    state["T_accum"] = torch.zeros(4 * 80 + 1, dtype=torch.int8)[1:].view(4, 80)
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 4, 80, gen))
    assert not triton_wgmma.takes(x, grad_y, state["T_accum"], 40)
    with pytest.raises(ValueError, match="T_accum needs even K, an even start"):
        triton_wgmma_ws.ws_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state), **rule(80, 40))


def test_wgmma_update_refuses_odd_k_behind_an_even_row_stride():
    """A one-row view with odd K counts as contiguous whatever its row stride: the pair at the last
    column would reach past the row, so the kernel must not take it."""
    gen = torch.Generator().manual_seed(6)
    state = cpu_layer_state(1, 81, 40, gen)
    state["T_accum"] = torch.zeros(2, 82, dtype=torch.int8)[0:1, :81]
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 1, 81, gen))
    assert not triton_wgmma.takes(x, grad_y, state["T_accum"], 40)
    with pytest.raises(ValueError, match="T_accum needs even K"):
        triton_wgmma_ws.ws_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state), **rule(81, 40))


@needs_wgmma
@each_kernel
def test_wgmma_update_writes_nothing_past_its_outputs(kernel_name):
    """Every output is a view at the head of a larger buffer whose tail holds a sentinel: the
    16-bit ``T_accum`` pieces and the byte stores at the K and N tails must leave it untouched."""
    gen = torch.Generator().manual_seed(8)
    m, n, k, g = 96, 130, 334, 40
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    buffers, outputs = [], []
    for name in FIELDS:
        buffer = torch.full((state[name].numel() + 64,), 55, dtype=state[name].dtype, device=DEVICE)
        buffers.append(buffer)
        outputs.append(buffer[:state[name].numel()].view(state[name].shape))
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    actual = KERNELS[kernel_name](*args, x.bfloat16(), grad_y.bfloat16(), UpdatedTensors(*outputs), **rule(k, g))
    assert_bitwise(expected, actual)
    for name, buffer in zip(FIELDS, buffers):
        assert torch.all(buffer[-64:] == 55), f"{name}: written past its end"


_WS_OFFLINE_COMPILE = """
from offline_sass import full_sass
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
from ternary.kernels.update import triton_wgmma_ws as ws

block_m, block_n, block_b, stages, warps = ws.WS_UPDATE_TILE
boxes = ([block_m, block_n], [block_m, 4 * block_b], [block_m, block_b])
names = ("g_desc xl_desc xh_desc p_ptr ta_ptr e_ptr ea_ptr bias_ptr new_p_ptr new_ta_ptr new_e_ptr new_ea_ptr "
         "new_bias_ptr M N K KB NG stride_pn stride_tn stride_en theta_t theta_e e_min e_max bias_step").split()
types = [f"tensordesc<bf16[{box[0]}, {box[1]}],{gl.NVMMASharedLayout.get_default_for(box, gl.bfloat16)!r}>"
         for box in boxes]
types += ["*u8", "*i8", "*i8", "*i8", "*i32", "*u8", "*i8", "*i8", "*i8", "*i32"] + ["i32"] * 13
report = []
for bytes_per_group, has_bias, padding in ([(size, True, False) for size in (1, 2, 4, 8, 16, 32, 64)]
                                           + [(size, True, True) for size in (1, 8)] + [(8, False, False)]):
    constexprs = dict(BYTES_PER_GROUP=bytes_per_group, HAS_BIAS=has_bias, BLOCK_M=block_m, BLOCK_N=block_n,
                      BLOCK_B=block_b, STAGES=stages, GROUP_N=8, RULE_ROWS=ws.WS_RULE_ROWS,
                      PRODUCT_REGISTERS=ws.WS_PRODUCT_REGISTERS, LAST_PAST_K=padding)
    signature = dict(zip(names, types)) | {name: "constexpr" for name in constexprs}
    source = GluonASTSource(ws._ws_vote_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(3, 13)})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    sass, ptx = full_sass(compiled.asm["cubin"]), compiled.asm["ptx"].splitlines()
    products = ["HGMMA.64x%dx16.F32.BF16" % width for width in (4 * block_b, block_b, 8)]
    arrives = [i for i, line in enumerate(ptx) if "mbarrier.arrive.shared::cta.b64" in line]
    fenced = [i for i in arrives if any("bar.sync" in line for line in ptx[i - 4:i])]
    # a copy into the ring after products were committed must come after a wait for them
    committed, seen_products, refills, early = False, False, 0, 0
    for line in ptx:
        if "wgmma.commit_group" in line:
            committed = seen_products = True
        elif "wgmma.wait_group" in line:
            committed = False
        elif "cp.async.bulk.tensor" in line:
            early += committed
            refills += seen_products
    lines = sass.splitlines()
    wgmma_lines = [i for i, line in enumerate(lines) if "HGMMA" in line]
    step_loops = "\\n".join(lines[wgmma_lines[0]:wgmma_lines[-1] + 1])
    # shared-memory traffic and barriers in order, repeats collapsed: the signs' regrouping must be
    # natural stores, barrier, reloads, barrier, plane stores, barrier, hand-over
    marks = {"st.shared.v2.b8": "store", "ld.shared.v4.b32": "reload", "st.shared.v4.b32": "planes",
             "bar.sync": "barrier", "mbarrier.arrive.shared": "arrive"}
    order = []
    for line in ptx:
        for key, mark in marks.items():
            if key in line and (not order or order[-1] != mark):
                order.append(mark)
    report.append([bytes_per_group, has_bias, padding, compiled.metadata.shared, sass.count("STL") + sass.count("LDL"),
                   step_loops.count("STL") + step_loops.count("LDL"), [sass.count(product) for product in products],
                   len(arrives), len(fenced), refills, early, " ".join(order)])
print(json.dumps(report))
"""


def test_ws_update_compiles_for_sm_90_within_shared_memory_without_spills_and_with_fenced_arrivals():
    """Compiled offline for sm_90 with the shipped constants, every group size the kernel takes with
    a bias and one without:

    - the ring and the signs' buffer fit an H100's 227 KB of shared memory per block;
    - nothing touches local memory in the product warps' step loops, and without a bias (G = 40)
      nowhere; with a bias at most four local loads or stores in the whole kernel, eight at G = 5 (the
      product's second step loop, for the bias's column sums, takes registers the rule warps then miss;
      the 12 warps' split between a 216-register product and a rule of the rest is what makes that
      hold). Counted on the whole SASS (``offline_sass``): Triton's own disassembly stops after 64 KB
      of code, about half of this kernel. Not held, so not compiled here: G = 5 without a bias, whose
      rule spills 13 words per tile;
    - each step issues the four ``64x256`` and four ``64x64`` products of its 64 hook rows, and in
      the step loop of the tiles that sum ``grad_y`` for the bias four ``64x8`` more; with the sums in the
      last block's tiles, whose ``64x64`` lies past ``K`` (``LAST_PAST_K``, compiled at G = 5 and 40), that
      loop's ``64x8`` take the place of its ``64x64``;
    - each ``mbarrier.arrive`` (the signs handed over by the product warps, the signs released by
      the rule warps), which one thread performs for its whole partition, comes right after a
      barrier of that partition, so no warp of it can still be writing or reading the signs
      (Triton's lowering of the arrive emits that barrier; this guards the kernel against a compiler
      that stops doing so). The ring needs no arrive: the warps that read a slot refill it, and in
      the PTX every copy after the first products comes after a wait for the products committed
      before it (a slot refilled before its readers retire would fail here);
    - the product warps regroup the signs (``sign_planes``) as natural stores, barrier, reloads,
      barrier, plane stores, barrier, hand-over, so no lane reloads a word before it is stored or
      overwrites one before it is reloaded (Triton's barrier analysis places the inner two)."""
    report = _compile_offline(_WS_OFFLINE_COMPILE)
    assert sorted((size, has_bias, padding) for size, has_bias, padding, *_ in report) == sorted(
        [(size, True, False) for size in (1, 2, 4, 8, 16, 32, 64)] + [(1, True, True), (8, True, True),
                                                                      (8, False, False)])
    for (bytes_per_group, has_bias, padding, shared, spills, loop_spills, products, arrives, fenced, refills, early,
         order) in report:
        loops = 2 if has_bias else 1  # with a bias, the tiles with column sums have their own step loop
        assert shared <= 227 * 1024
        assert loop_spills == 0
        assert spills <= (0 if not has_bias else 8 if bytes_per_group == 1 else 4)
        assert products == ([8, 4, 4] if padding else [4 * loops, 4 * loops, 4 * (loops - 1)])
        assert arrives == fenced == 2
        assert refills > 0 and early == 0
        assert "store barrier reload barrier planes barrier arrive" in order


_WIDE_OFFLINE_COMPILE = """
from offline_sass import innermost_loops, sass_instructions
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
from ternary.kernels.update import triton_wgmma, triton_wgmma_wide as wide

block_m, block_n, stages, rule_warps, rule_rows = wide.WIDE_UPDATE_TILE
block_b = triton_wgmma.WGMMA_BLOCK_B
boxes = ([block_m, block_n], [block_m, 4 * block_b], [block_m, block_b])
names = ("g_desc xl_desc xh_desc p_ptr ta_ptr table_ptr e_ptr ea_ptr bias_ptr new_p_ptr new_ta_ptr new_e_ptr "
         "new_ea_ptr new_bias_ptr M N K KB NG stride_pn stride_tn stride_en theta_high theta_low hold theta_e e_min "
         "e_max bias_step").split()
types = [f"tensordesc<bf16[{box[0]}, {box[1]}],{gl.NVMMASharedLayout.get_default_for(box, gl.bfloat16)!r}>"
         for box in boxes]
types += ["*u8", "*i8", "*i32", "*i8", "*i8", "*i32", "*u8", "*i8", "*i8", "*i8", "*i32"] + ["i32"] * 15
report = []
for bytes_per_group, has_bias, padding in ([(size, True, False) for size in (1, 2, 4, 8, 16, 32, 64)]
                                           + [(size, True, True) for size in (1, 8)] + [(8, False, False)]):
    constexprs = dict(BYTES_PER_GROUP=bytes_per_group, HAS_BIAS=has_bias, BLOCK_M=block_m, BLOCK_N=block_n,
                      BLOCK_B=block_b, STAGES=stages, GROUP_N=8, RULE_WARPS=rule_warps, RULE_ROWS=rule_rows,
                      PRODUCT_REGISTERS=wide.WIDE_REGISTERS[0], LOADER_REGISTERS=wide.WIDE_REGISTERS[1],
                      RULE_REGISTERS=wide.WIDE_REGISTERS[2], LAST_PAST_K=padding)
    signature = dict(zip(names, types)) | {name: "constexpr" for name in constexprs}
    source = GluonASTSource(wide._wide_vote_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(3, 14)})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    instructions = sass_instructions(compiled.asm["cubin"])
    lines = [text for _, text in instructions]
    spilled = lambda code: sum("STL" in line or "LDL" in line for line in code)
    loops = innermost_loops(instructions)
    steps = [loop for loop in loops if any("HGMMA" in line for line in loop)]
    parts = [loop for loop in loops if any("HSET2" in line for line in loop)]
    widths = [sum(f"HGMMA.64x{width}x16.F32.BF16" in line for line in lines) for width in (256, 64, 8)]
    ptx = compiled.asm["ptx"].splitlines()
    arrives = [i for i, line in enumerate(ptx) if "mbarrier.arrive.shared::cta.b64" in line]
    fenced = [i for i in arrives if any("bar.sync" in line for line in ptx[i - 4:i])]
    report.append([bytes_per_group, has_bias, padding, compiled.metadata.shared, spilled(lines),
                   [spilled(loop) for loop in steps], [spilled(loop) for loop in parts], widths, len(arrives),
                   len(fenced)])
print(json.dumps(report))
"""


def test_wide_update_compiles_for_sm_90_within_shared_memory_and_without_spills_in_its_step_loops():
    """Compiled offline for sm_90 with the shipped constants (whole SASS, loops found by their backward
    branches), every group size with a bias and G = 40 without:

    - three 56 KB slots and the 40 KB of signs fit an H100's 227 KB of shared memory per block;
    - each product warpgroup issues the four ``64x256`` and four ``64x64`` products of a 64-row step, and in
      the step loop of the tiles that sum ``grad_y`` for the bias four ``64x8`` more (in place of its ``64x64``
      with ``LAST_PAST_K``: the sums in the last block, compiled at G = 5 and 40); no step loop (two per
      warpgroup with a bias, one without) touches local memory;
    - without a bias the rule's part loop does not either, and the kernel has at most four local loads or
      stores. With one, the 2 x 192 registers of the products leave the rule warps too few: its part loop (32
      passes a tile) spills up to 12 instructions at G >= 20, 34 at G = 10 and 72 at G = 5, and the kernel up to
      33 / 61 / 120 (measured; a cost of the bias's tiles' registers that the benchmark's rows include);
    - each plain ``mbarrier.arrive`` (ring slots freed and signs handed over by the products, signs released by
      the rule; the loader's are TMA's expect-tx arrives) comes right after a barrier of its partition, which one
      thread's arrive for the partition needs."""
    loop_bounds = {1: 72, 2: 34}
    kernel_bounds = {1: 120, 2: 61}
    report = _compile_offline(_WIDE_OFFLINE_COMPILE)
    assert sum(padding for _, _, padding, *_ in report) == 2
    for (bytes_per_group, has_bias, padding, shared, spills, step_spills, part_spills, widths, arrives,
         fenced) in report:
        sums = 2 if has_bias else 1  # with a bias, the tiles with column sums have their own step loop
        assert shared <= 227 * 1024
        assert step_spills == [0] * (2 * sums)
        assert len(part_spills) == 1
        assert part_spills[0] <= (loop_bounds.get(bytes_per_group, 12) if has_bias else 0)
        assert spills <= (kernel_bounds.get(bytes_per_group, 33) if has_bias else 4)
        assert widths == ([16, 8, 8] if padding else [8 * sums, 8 * sums, 8 * (sums - 1)])
        assert arrives == fenced > 0


@needs_wgmma
def test_wide_update_captured_in_a_cuda_graph_replays_the_reference_with_its_table_kept_or_not():
    """The wide kernel's trit table is built by device operations. Captured in a CUDA graph after an eager call,
    the graph reads the kept table; captured with none kept, it builds one inside the capture and keeps none.
    Both replays give the reference update bit for bit, and an eager call after them too."""
    from ternary.kernels.update import pair_rule

    m, n, k, g = 200, 300, 1002, 40
    gen = torch.Generator().manual_seed(31)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    static = rule(k, g)
    expected = reference.update(*args, x, grad_y, **static)
    x, grad_y = x.bfloat16(), grad_y.bfloat16()
    triton_wgmma_wide.wide_update(*args, x, grad_y, poisoned_like(state), **static)  # compiled outside the captures
    key = (x.device, k % 5)
    for kept in (True, False):
        if not kept:
            pair_rule._TABLES.pop(key)
        outputs = poisoned_like(state)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            triton_wgmma_wide.wide_update(*args, x, grad_y, outputs, **static)
        assert (key in pair_rule._TABLES) is kept
        graph.replay()
        torch.cuda.synchronize()
        assert_bitwise(expected, outputs)
    assert_bitwise(expected, triton_wgmma_wide.wide_update(*args, x, grad_y, poisoned_like(state), **static))
