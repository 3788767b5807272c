"""The ``wgmma`` update kernel (Gluon, sm_90 only) against the torch reference, bit for bit.

Hooks are small integers in bf16 / fp16, so every gradient sum is exact in any order and the
reference's signs are the only right answer. The kernel has no interpreter: its launches are
skipped without an sm_90 GPU, while the dispatch rule (:func:`triton_wgmma.takes`) is
checked everywhere.
"""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from test_triton_update import FIELDS, assert_bitwise, hooks, layer_state, rule  # noqa: E402
from ternary.kernels.update import UpdatedTensors, reference, triton_wgmma  # noqa: E402
from ternary.kernels.update import triton as kernels  # noqa: E402

needs_wgmma = pytest.mark.skipif(not kernels.wgmma_runs(torch.empty(0, device=DEVICE)),
                                 reason="the wgmma update runs on sm_90 GPUs only (Gluon has no interpreter)")

# (M, N, K, G): M = 1, N = 1, K not a multiple of 5 or of G (the kernel takes even K), row and
# byte tails of the 128-row x 32-byte tiles, hook rows that are not a multiple of the 64-row step,
# and every group size whose groups lie inside one 32-byte block.
SHAPES = [(1, 1, 8, 5), (64, 128, 160, 40), (100, 200, 334, 40), (130, 257, 1002, 20), (3, 130, 646, 160),
          (700, 64, 90, 10), (513, 300, 1200, 80), (65, 129, 204, 40)]


def poisoned_like(state: dict) -> UpdatedTensors:
    """Output buffers full of garbage, so an unwritten entry cannot pass."""
    return UpdatedTensors(*[None if state[name] is None else torch.full_like(state[name], -77) for name in FIELDS])


@needs_wgmma
@pytest.mark.parametrize("m,n,k,g", SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("tile", [triton_wgmma.WGMMA_UPDATE_NARROW_TILE, triton_wgmma.WGMMA_UPDATE_TILE])
def test_wgmma_update_matches_reference_bit_for_bit(m, n, k, g, dtype, with_bias, tile):
    gen = torch.Generator().manual_seed(m * 1009 + n * 17 + k + g)
    state = layer_state(n, k, g, gen, bias=with_bias)
    x, grad_y = hooks(m, n, k, gen)
    static = rule(k, g)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **static)
    actual = triton_wgmma.wgmma_update(*args, x.to(dtype), grad_y.to(dtype), poisoned_like(state), tile=tile,
                                       **static)
    assert_bitwise(expected, actual)
    assert not torch.equal(expected.T_packed.cpu(), state["T_packed"].cpu()), "test drew no trit step"


@needs_wgmma
def test_wgmma_update_saturation_and_limits_over_whole_ranges():
    """Accumulators at int8 limits, E at and beyond e_min / e_max, bias near int32 limits."""
    gen = torch.Generator().manual_seed(47)
    n, k, g = 133, 284, 40
    state = layer_state(n, k, g, gen, wide=True)
    x, grad_y = hooks(90, n, k, gen)
    args = [state[name] for name in FIELDS]
    for static in (rule(k, g, theta_t=127, theta_e=127, e_min=-128, e_max=127, bias_step=2**30),
                   rule(k, g, theta_t=1, theta_e=1, e_min=-2, e_max=1)):
        expected = reference.update(*args, x, grad_y, **static)
        for tile in (triton_wgmma.WGMMA_UPDATE_NARROW_TILE, triton_wgmma.WGMMA_UPDATE_TILE):
            actual = triton_wgmma.wgmma_update(*args, x.bfloat16(), grad_y.bfloat16(), poisoned_like(state),
                                               tile=tile, **static)
            assert_bitwise(expected, actual)


@needs_wgmma
@pytest.mark.parametrize("m,k", [(kernels.WGMMA_UPDATE_MIN_ROWS - 1, 300), (kernels.WGMMA_UPDATE_MIN_ROWS, 300),
                                 (kernels.WGMMA_UPDATE_MIN_ROWS, 301)])
def test_update_dispatches_training_rows_to_wgmma(monkeypatch, m, k):
    """``kernels.update`` sends 16-bit hooks of ``WGMMA_UPDATE_MIN_ROWS`` rows or more to the
    ``wgmma`` kernel when ``K`` is even, the rest to its own; both match the reference."""
    calls = []
    original = triton_wgmma.wgmma_update

    def spy(*args, **kwargs):
        calls.append(args[5].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_wgmma, "wgmma_update", spy)
    monkeypatch.setattr(kernels, "_new_like", lambda tensor: torch.full_like(tensor, -77))
    gen = torch.Generator().manual_seed(m + k)
    n, g = 70, 40
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    args = [state[name] for name in FIELDS]
    expected = reference.update(*args, x, grad_y, **rule(k, g))
    assert_bitwise(expected, kernels.update(*args, x.bfloat16(), grad_y.bfloat16(), **rule(k, g)))
    assert calls == ([m] if m >= kernels.WGMMA_UPDATE_MIN_ROWS and k % 2 == 0 else [])


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


def test_wgmma_update_refuses_a_tile_that_splits_groups():
    """Checked before any launch (so on CPU too): 16-byte blocks would split G = 160 groups."""
    gen = torch.Generator().manual_seed(3)
    state = {name: tensor.cpu() for name, tensor in layer_state(4, 320, 160, gen).items()}
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 4, 320, gen))
    with pytest.raises(ValueError, match="splits the groups of G=160"):
        triton_wgmma.wgmma_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state),
                                  tile=(64, 64, 16, 4, 4), **rule(320, 160))


@pytest.mark.parametrize("x_dtype,g_dtype,group_size,k,taken", [
    (torch.bfloat16, torch.bfloat16, 40, 80, True), (torch.float16, torch.float16, 160, 320, True),
    (torch.bfloat16, torch.bfloat16, 5, 6, True), (torch.float32, torch.float32, 40, 80, False),
    (torch.bfloat16, torch.float32, 40, 80, False), (torch.bfloat16, torch.float16, 40, 80, False),
    (torch.bfloat16, torch.bfloat16, 15, 30, False), (torch.bfloat16, torch.bfloat16, 30, 60, False),
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
    state = {name: tensor.cpu() for name, tensor in layer_state(4, 80, 40, gen).items()}
    state["T_accum"] = torch.zeros(4 * 80 + 1, dtype=torch.int8)[1:].view(4, 80)
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 4, 80, gen))
    assert not triton_wgmma.takes(x, grad_y, state["T_accum"], 40)
    with pytest.raises(ValueError, match="T_accum needs even K, an even start"):
        triton_wgmma.wgmma_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state), **rule(80, 40))


def test_wgmma_update_refuses_odd_k_behind_an_even_row_stride():
    """A one-row view with odd K counts as contiguous whatever its row stride: the pair at the last
    column would reach past the row, so the kernel must not take it."""
    gen = torch.Generator().manual_seed(6)
    state = {name: tensor.cpu() for name, tensor in layer_state(1, 81, 40, gen).items()}
    state["T_accum"] = torch.zeros(2, 82, dtype=torch.int8)[0:1, :81]
    x, grad_y = (hook.cpu().bfloat16() for hook in hooks(2, 1, 81, gen))
    assert not triton_wgmma.takes(x, grad_y, state["T_accum"], 40)
    with pytest.raises(ValueError, match="T_accum needs even K"):
        triton_wgmma.wgmma_update(*[state[name] for name in FIELDS], x, grad_y, poisoned_like(state), **rule(81, 40))


@needs_wgmma
def test_wgmma_update_writes_nothing_past_its_outputs():
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
    actual = triton_wgmma.wgmma_update(*args, x.bfloat16(), grad_y.bfloat16(), UpdatedTensors(*outputs), **rule(k, g))
    assert_bitwise(expected, actual)
    for name, buffer in zip(FIELDS, buffers):
        assert torch.all(buffer[-64:] == 55), f"{name}: written past its end"
