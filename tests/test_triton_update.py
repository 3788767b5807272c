"""Triton direct update against the torch reference, bit for bit on integer state.

Hooks are small integers (fp32 or bf16), so every gradient sum is exact in any order and
the reference's signs are the only right answer. On CPU the kernels run under
``TRITON_INTERPRET=1``; on a GPU compiled.
"""

from __future__ import annotations

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from ternary.kernels.update import reference  # noqa: E402
from ternary.kernels.update import triton as kernels  # noqa: E402
from ternary.kernels.update.triton_rule import byte_trits, step_trit  # noqa: E402
from ternary.kernels.linear.triton_launch import tma_rows  # noqa: E402
from ternary.state.packing import CorruptStateError, random_packed, unpack  # noqa: E402

FIELDS = ("T_packed", "E", "E_accum", "T_accum", "bias")


def layer_state(n: int, k: int, g: int, gen: torch.Generator, *, bias: bool = True, wide: bool = False):
    """Random state; ``wide`` draws accumulators and exponents over their whole ranges."""
    groups = -(-k // g)
    acc_range = (-128, 128) if wide else (-4, 5)
    state = {
        "T_packed": random_packed(n, k, generator=gen),
        "E": torch.randint(-128 if wide else -3, 128 if wide else 4, (n, groups), generator=gen).to(torch.int8),
        "E_accum": torch.randint(*acc_range, (n, groups), generator=gen).to(torch.int8),
        "T_accum": torch.randint(*acc_range, (n, k), generator=gen).to(torch.int8),
        "bias": torch.randint(-(2**31), 2**31 - 1, (n,), generator=gen, dtype=torch.int32) if bias else None,
    }
    return {name: None if t is None else t.to(DEVICE) for name, t in state.items()}


def hooks(m: int, n: int, k: int, gen: torch.Generator, dtype=torch.float32):
    x = torch.randint(-2, 3, (m, k), generator=gen).to(DEVICE, dtype)
    grad_y = torch.randint(-2, 3, (m, n), generator=gen).to(DEVICE, dtype)
    return x, grad_y


def rule(k: int, g: int, **overrides) -> dict:
    static = dict(in_features=k, group_size=g, theta_t=2, theta_e=2, e_min=-3, e_max=3, bias_step=64)
    return {**static, **overrides}


def run_both(state: dict, x: torch.Tensor, grad_y: torch.Tensor, static: dict):
    args = [state[name] for name in FIELDS] + [x, grad_y]
    return reference.update(*args, **static), kernels.update(*args, **static)


def assert_bitwise(expected, actual) -> None:
    for name in FIELDS:
        want, got = getattr(expected, name), getattr(actual, name)
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got.cpu(), want.cpu()), f"{name}: {(got.cpu() != want.cpu()).sum()} entries differ"


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Fill every output buffer with garbage first, so an unwritten entry cannot pass."""

    def poisoned(tensor: torch.Tensor) -> torch.Tensor:
        return torch.full_like(tensor, 77 if tensor.dtype == torch.uint8 else -77)

    monkeypatch.setattr(kernels, "_new_like", poisoned)


# (M, N, K, G): odd K, N = 1, M = 1, groups inside one tile (G = 5, 10, 40) and
# straddling tiles (G = 15, 30: the atomic score path).
SHAPES = [(1, 5, 7, 5), (3, 33, 83, 40), (17, 1, 127, 40), (17, 33, 83, 15), (5, 20, 50, 10), (40, 7, 127, 30)]


@pytest.mark.parametrize("m,n,k,g", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_update_matches_reference_bit_for_bit(m, n, k, g, with_bias):
    gen = torch.Generator().manual_seed(m * 1009 + n * 17 + k + g)
    state = layer_state(n, k, g, gen, bias=with_bias)
    x, grad_y = hooks(m, n, k, gen)
    expected, actual = run_both(state, x, grad_y, rule(k, g))
    assert_bitwise(expected, actual)
    assert not torch.equal(expected.T_packed.cpu(), state["T_packed"].cpu()), "test drew no trit step"


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                    (torch.bfloat16, torch.bfloat16)])
def test_update_at_training_rows_for_every_hook_dtype(dtypes):
    """M above the small-M tile (256) picks the training tile, whose shared memory depends on
    the operand width: fp32, mixed and bf16 hooks must all launch and match bit for bit."""
    n, k, g = 70, 300, 40
    m = 300 if DEVICE == "cpu" else 1000
    gen = torch.Generator().manual_seed(23)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    expected, actual = run_both(state, x.to(dtypes[0]), grad_y.to(dtypes[1]), rule(k, g))
    assert_bitwise(expected, actual)


@pytest.mark.parametrize("g", [40, 15])
def test_update_saturation_and_limits_over_whole_ranges(g):
    """Accumulators at int8 limits, E at and beyond e_min / e_max, bias near int32 limits."""
    gen = torch.Generator().manual_seed(7 + g)
    n, k = 33, 83
    state = layer_state(n, k, g, gen, wide=True)
    x, grad_y = hooks(9, n, k, gen)
    for static in (rule(k, g, theta_t=127, theta_e=127, e_min=-128, e_max=127, bias_step=2**30),
                   rule(k, g, theta_t=1, theta_e=1, e_min=-2, e_max=1)):
        expected, actual = run_both(state, x, grad_y, static)
        assert_bitwise(expected, actual)


def test_update_reads_hooks_the_descriptors_cannot_address():
    """``grad_y`` is read through a tensor descriptor, which needs unit column stride and distinct,
    16-byte aligned rows: a transposed view, a view starting one element into its storage and a
    broadcast row (stride 0) are copied first, and give the same state bit for bit."""
    gen = torch.Generator().manual_seed(31)
    m, n, k, g = 9, 24, 90, 40
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(m, n, k, gen)
    expected, _ = run_both(state, x, grad_y, rule(k, g))
    transposed = grad_y.T.contiguous().T
    offset = torch.empty(m * n + 1, dtype=grad_y.dtype, device=grad_y.device)[1:].view(m, n)
    offset.copy_(grad_y)
    for view in (transposed, offset):
        assert tma_rows(view) is not view
        _, actual = run_both(state, x, view, rule(k, g))
        assert_bitwise(expected, actual)
    broadcast = grad_y[:1].expand(m, n)
    assert tma_rows(broadcast) is not broadcast
    expected, actual = run_both(state, x, broadcast, rule(k, g))
    assert_bitwise(expected, actual)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tma_rows_gives_the_same_values_in_aligned_rows(dtype):
    """Aligned tensors pass through; others come back equal, with unit column stride, rows a multiple of 16
    bytes apart from an aligned start, in storage of their own; an empty tensor as one zero row."""
    base = torch.arange(7 * 13, dtype=torch.float32, device=DEVICE).to(dtype).view(7, 13)
    aligned = torch.zeros((7, 16), dtype=dtype, device=DEVICE)
    assert tma_rows(aligned) is aligned
    offset = torch.empty(7 * 13 + 1, dtype=dtype, device=DEVICE)[1:].view(7, 13)
    offset.copy_(base)
    for tensor in (base, base.T.contiguous().T, offset, base[:1].expand(7, 13), base[:, 1:12]):
        rows = tma_rows(tensor)
        assert torch.equal(rows, tensor) and rows.stride(1) == 1
        assert rows.data_ptr() % 16 == 0 and rows.stride(0) * rows.element_size() % 16 == 0
        assert rows.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    empty = tma_rows(base[:0])
    assert empty.shape == (1, 13) and not empty.any()


def test_update_bf16_hooks_and_empty_hooks():
    gen = torch.Generator().manual_seed(5)
    n, k, g = 20, 83, 40
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(17, n, k, gen, dtype=torch.bfloat16)
    assert_bitwise(*run_both(state, x, grad_y, rule(k, g)))
    x0, gy0 = hooks(0, n, k, gen)
    assert_bitwise(*run_both(state, x0, gy0, rule(k, g)))


def test_update_descends_and_leaves_inputs_untouched():
    """Sign convention: a positive gradient moves a trit toward -1; inputs are not written."""
    gen = torch.Generator().manual_seed(3)
    n, k, g = 4, 10, 5
    state = layer_state(n, k, g, gen, bias=True)
    state["T_packed"] = random_packed(n, k, generator=gen).to(DEVICE).fill_(121)  # all trits 0
    state["T_accum"] = torch.zeros(n, k, dtype=torch.int8, device=DEVICE)
    before = {name: t.clone() for name, t in state.items()}
    x = torch.ones(1, k, device=DEVICE)
    grad_y = torch.tensor([[1.0, -1.0, 0.0, 2.0]], device=DEVICE)
    new = kernels.update(*[state[f] for f in FIELDS], x, grad_y, **rule(k, g, theta_t=1))
    trits = unpack(new.T_packed, k).cpu()
    assert (trits[0] == -1).all() and (trits[1] == 1).all() and (trits[2] == 0).all() and (trits[3] == -1).all()
    assert new.bias[0] == before["bias"][0] - 64 and new.bias[1] == before["bias"][1] + 64
    for name, tensor in state.items():
        assert torch.equal(tensor, before[name]), name


def test_update_refuses_corrupt_state_after_its_kernels_without_writing_any_input():
    """The corrupt-byte check is read after the kernels are queued: it still raises, naming the
    byte, and the inputs the kernels read are unchanged."""
    gen = torch.Generator().manual_seed(1)
    state = layer_state(5, 83, 40, gen)
    state["T_packed"][3, 2] = 243
    before = {name: tensor.clone() for name, tensor in state.items()}
    x, grad_y = hooks(3, 5, 83, gen)
    with pytest.raises(CorruptStateError, match=r"byte 243 at index \(3, 2\)"):
        kernels.update(*[state[f] for f in FIELDS], x, grad_y, **rule(83, 40))
    for name, tensor in state.items():
        assert torch.equal(tensor, before[name]), name


def test_update_bad_hook_shape_names_the_hook():
    gen = torch.Generator().manual_seed(2)
    state = layer_state(5, 83, 40, gen)
    x, grad_y = hooks(3, 5, 83, gen)
    with pytest.raises(ValueError, match="grad_y"):
        kernels.update(*[state[f] for f in FIELDS], x, grad_y[:, :4], **rule(83, 40))


@triton.jit
def _record_tiles(out_ptr, ROW_TILES: tl.constexpr, BYTE_BLOCKS: tl.constexpr, GROUP_N: tl.constexpr):
    pid_n, pid_b = kernels.tile_of_program(ROW_TILES, BYTE_BLOCKS, GROUP_N)
    tl.store(out_ptr + 2 * tl.program_id(0), pid_n)
    tl.store(out_ptr + 2 * tl.program_id(0) + 1, pid_b)


@pytest.mark.parametrize("row_tiles,byte_blocks,group_n", [(5, 4, 2), (7, 3, 16), (12, 5, 4), (1, 6, 3)])
def test_program_order_visits_every_tile_once_in_groups(row_tiles, byte_blocks, group_n):
    """The 1-D grid's program -> tile map is a bijection, and programs come in runs of
    ``GROUP_N`` row tiles (the last group partial) that sweep all byte blocks."""
    programs = row_tiles * byte_blocks
    out = torch.empty(2 * programs, dtype=torch.int32, device=DEVICE)
    _record_tiles[(programs,)](out, ROW_TILES=row_tiles, BYTE_BLOCKS=byte_blocks, GROUP_N=group_n)
    tiles = [tuple(pair) for pair in out.view(-1, 2).cpu().tolist()]
    assert sorted(tiles) == [(n, b) for n in range(row_tiles) for b in range(byte_blocks)]
    for pid, (n, b) in enumerate(tiles):
        assert n // group_n == pid // (group_n * byte_blocks)


def test_grouped_program_order_matches_reference(monkeypatch):
    """Several row-tile groups, the last one partial (GROUP_N = 2 over 5 row tiles)."""
    monkeypatch.setattr(kernels, "GROUP_N", 2)
    n, k, g = 70, 300, 40
    gen = torch.Generator().manual_seed(29)
    state = layer_state(n, k, g, gen)
    x, grad_y = hooks(9, n, k, gen)
    assert_bitwise(*run_both(state, x, grad_y, rule(k, g)))


@triton.jit
def _byte_trits_kernel(out_ptr):
    byte = tl.arange(0, 256)
    t0, t1, t2, t3, t4 = byte_trits(byte)
    tl.store(out_ptr + byte * 5, t0)
    tl.store(out_ptr + byte * 5 + 1, t1)
    tl.store(out_ptr + byte * 5 + 2, t2)
    tl.store(out_ptr + byte * 5 + 3, t3)
    tl.store(out_ptr + byte * 5 + 4, t4)


def test_byte_trits_decode_every_valid_byte():
    """The kernels' integer decode gives ``unpack``'s five trits for each of the 243 valid bytes."""
    out = torch.empty(256 * 5, dtype=torch.int32, device=DEVICE)
    _byte_trits_kernel[(1,)](out)
    every = torch.arange(243, dtype=torch.uint8).reshape(243, 1)
    assert torch.equal(out.view(256, 5)[:243].cpu(), unpack(every, 5).to(torch.int32))


@triton.jit
def _step_trit_kernel(t_ptr, acc_ptr, vote_ptr, new_t_ptr, new_acc_ptr, theta_t, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    t, acc = step_trit(tl.load(t_ptr + i), tl.load(acc_ptr + i), tl.load(vote_ptr + i), theta_t)
    tl.store(new_t_ptr + i, t)
    tl.store(new_acc_ptr + i, acc)


@pytest.mark.parametrize("theta_t", [1, 2, 5, 127])
def test_step_trit_matches_the_reference_on_every_input(theta_t):
    """Every trit x accumulator x vote combination (3 x 256 x 3) against ``reference.step_trits``."""
    t, acc, vote = torch.meshgrid(torch.arange(-1, 2), torch.arange(-128, 128), torch.arange(-1, 2), indexing="ij")
    t, acc, vote = (v.reshape(-1).to(torch.int32) for v in (t, acc, vote))
    size = t.numel()
    outs = [torch.empty(size, dtype=torch.int32, device=DEVICE) for _ in range(2)]
    _step_trit_kernel[(size // 256,)](t.to(DEVICE), acc.to(DEVICE), vote.to(DEVICE), *outs, theta_t, BLOCK=256)
    want_t, want_acc = reference.step_trits(t.to(torch.int8), acc.to(torch.int8), vote, theta_t)
    assert torch.equal(outs[0].cpu(), want_t.to(torch.int32))
    assert torch.equal(outs[1].cpu(), want_acc.to(torch.int32))


def test_update_refuses_a_trit_threshold_below_one():
    """The kernels' signed step assumes theta_t >= 1 (``UpdateRule`` enforces it too)."""
    gen = torch.Generator().manual_seed(9)
    state = layer_state(5, 20, 10, gen)
    x, grad_y = hooks(3, 5, 20, gen)
    with pytest.raises(ValueError, match="theta_t=0 must be at least 1"):
        kernels.update(*[state[f] for f in FIELDS], x, grad_y, **rule(20, 10, theta_t=0))
