"""The bf16 kernels built on the word decode: the forwards with register-decoded weights,
``mma.sync`` for 2-16 rows (``triton_mma_forward``) and ``wgmma`` from 17 rows
(``triton_wgmma_forward``), and grad-x on ``wgmma`` with the weights decoded into shared memory
(``triton_wgmma_grad_x``).

The Gluon kernels run only compiled on a GPU; which calls they take, and that they compile for
sm_90 with the operand decoded in registers (no shared memory for ``mma.sync``; for ``wgmma`` only
the TMA-staged activations and their barriers), are checked on the CPU too (the offline compile
needs no GPU). Outputs are compared with a float64
product of the reference weights by relative RMS error, per output column within ``ROW_BUDGET``
(one bf16 rounding of each output; the products are exact and summed in fp32) or over the whole
output within ``BF16_BUDGET``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_mma_forward as mma  # noqa: E402
from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton_wgmma_forward as wgmma  # noqa: E402
from ternary.kernels.linear import triton_wgmma_grad_x as wgmma_grad_x  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_table_gemv import FRAC_BITS, float64_forward, layer  # noqa: E402

BF16_BUDGET = 1e-2
# Largest relative RMS error of one output column (weight row) over the activation rows: one bf16
# rounding of each output is at most 2^-9 relative.
ROW_BUDGET = 5e-3
GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")

# (M, N, K, G): K not a multiple of 5, of G or of the 32-byte step; fewer bytes than one step;
# N = 2 and N past a whole program; M = 2, 8 (one 8-row MMA tile), 9, 16 (two); groups of 4, 8, 12
# and 32 bytes. Every N * ceil(K / 5) is a multiple of 4, so T_packed ends on a whole word.
SHAPES = [(2, 48, 161, 40), (3, 76, 333, 40), (8, 130, 1000, 20), (9, 64, 1280, 80), (16, 200, 4096, 160),
          (5, 36, 515, 60), (16, 2, 7, 20), (16, 300, 2003, 40), (2, 130, 150, 40)]
# The wgmma kernel from 17 rows: row tiles of 32, 64 and 128 (and several 128-row tiles from 129 rows,
# the last one partial), one split (the output written by the kernel) and split-K.
WGMMA_SHAPES = SHAPES[:4] + [(17, 76, 333, 40), (32, 130, 1000, 20), (33, 64, 1280, 80), (64, 300, 2003, 40),
                             (65, 36, 515, 60), (128, 200, 4096, 160), (200, 2, 7, 20), (300, 300, 2003, 40),
                             (600, 520, 4001, 40)]


def bf16_layer(m, n, k, g, seed):
    packed, exponents, bias, gen = layer(n, k, g, seed=seed)
    return packed, exponents, bias, torch.randn(m, k, generator=gen).to(torch.bfloat16)


def run(x, packed, exponents, bias, k, g, tile=None, kernel="mma"):
    forward = kernels.forward_mma if kernel == "mma" else kernels.forward_wgmma
    return forward(x.cuda(), packed.cuda(), exponents.cuda(), None if bias is None else bias.cuda(),
                   in_features=k, group_size=g, bias_frac_bits=FRAC_BITS, tile=tile).cpu()


def per_row_rms(got, expected):
    """Largest relative RMS error over the output columns ``[M, C]`` (weight rows for a forward,
    input features for grad-x)."""
    got, expected = got.double(), expected.double()
    return float(((got - expected).norm(dim=0) / expected.norm(dim=0).clamp_min(1e-300)).max())


@pytest.mark.parametrize("module", [mma, wgmma])
def test_takes_bf16_calls_of_2_or_more_rows_on_whole_runs_and_aligned_words(module):
    packed = torch.zeros((64, 30), dtype=torch.uint8)
    x = torch.zeros((4, 150), dtype=torch.bfloat16)
    exponents = torch.zeros((64, 4), dtype=torch.int8)

    def takes(x, packed, g, exponents=exponents):
        return module.takes(x, packed, exponents, g)

    assert takes(x, packed, 40) and takes(x, packed, 20) and takes(x, packed, 160)
    assert takes(x[:2], packed, 40) and takes(torch.zeros((16, 150), dtype=torch.bfloat16), packed, 40)
    assert not takes(x[:1], packed, 40)  # one row: the table kernel
    assert takes(torch.zeros((17, 150), dtype=torch.bfloat16), packed, 40) == (module is wgmma)
    assert takes(torch.zeros((1000, 150), dtype=torch.bfloat16), packed, 40) == (module is wgmma)
    assert not takes(x.float(), packed, 40) and not takes(x.half(), packed, 40)
    assert not takes(x, packed, 15) and not takes(x, packed, 30)  # a group is not whole runs
    assert not takes(x, packed, 0) and not takes(x, packed, 4)  # G = 0..4 would pass a bytes-per-group test
    storage = torch.zeros(64 * 30 + 8, dtype=torch.uint8)
    assert takes(x, storage[4:4 + 63 * 30].view(63, 30), 40)
    assert not takes(x, storage[1:1 + 63 * 30].view(63, 30), 40)  # not 4-byte aligned
    assert not takes(x, torch.zeros((63, 31), dtype=torch.uint8), 40)  # 1953 bytes: the last word is short
    assert not takes(x, torch.zeros((30, 64), dtype=torch.uint8).T, 40)  # columns strided
    assert not takes(x, packed, 40, torch.zeros((4, 64), dtype=torch.int8).T)  # exponent columns strided
    with pytest.raises(ValueError, match=f"triton {module.__name__.rsplit('_', 2)[-2]}_forward"):
        if module is mma:
            mma.mma_forward(x, packed, exponents, group_size=15)
        else:
            wgmma.wgmma_forward(x, packed, exponents, None, group_size=15, bias_frac_bits=FRAC_BITS)


_OFFLINE_COMPILE = """
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_mma_forward as mma

names = "planes_ptr p_ptr e_ptr out_ptr M N KB NG stride_pn stride_en stride_os stride_om words_end STEPS_PER_SPLIT"
signature = dict(zip(names.split(), ["*bf16", "*u8", "*i8", "*fp32"] + ["i32"] * 10))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "BLOCK_N", "BLOCK_T", "RUN_LAYOUT", "X_LAYOUT"), "constexpr"))
report = []
for block_n, block_t, warps in ((mma.MMA_TILE[0], 16, mma.MMA_TILE[1]), (64, 8, 4), (32, 16, 2), (128, 16, 4)):
    source = GluonASTSource(mma._mma_forward_kernel, signature=signature, constexprs={
        "BYTES_PER_GROUP": 8, "BLOCK_N": block_n, "BLOCK_T": block_t, "RUN_LAYOUT": mma.run_layout(block_n, warps),
        "X_LAYOUT": mma.fragment_layout(block_t, warps)},
        attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})  # pointers 16-byte aligned, as at run time
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    report.append([compiled.metadata.shared, compiled.asm["ptx"].count("mma.sync.aligned.m16n8k16"),
                   compiled.asm["ptx"].count("ld.global.v4.b32")])
print(json.dumps(report))
"""


def _compile_offline(script: str):
    """The JSON report on the last line of ``script``, run in a fresh process without
    ``TRITON_INTERPRET`` (the CPU tests run the Triton interpreter, which replaces the language
    functions), with the project and the tests' folder (``offline_sass``) importable."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    here = Path(__file__).resolve()
    env["PYTHONPATH"] = os.pathsep.join([str(here.parents[1]), str(here.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_run_layout_is_the_operand_layout_and_the_kernel_needs_no_shared_memory():
    """Compiled offline for sm_90: the run layout reshaped to ``[BLOCK_N, 32]`` and the
    fragment-order activation rows relabelled to ``[32, BLOCK_T]`` convert trivially to the MMA
    operand layouts (the kernel asserts both, so a mismatch fails to compile), nothing goes through
    shared memory, the activations arrive as 16-byte loads and both loops issue the five digit
    products."""
    report = _compile_offline(_OFFLINE_COMPILE)
    tiles = ((mma.MMA_TILE[0], 16, mma.MMA_TILE[1]), (64, 8, 4), (32, 16, 2), (128, 16, 4))
    for (block_n, block_t, warps), (shared, products, vector_loads) in zip(tiles, report, strict=True):
        # two loops (whole steps, tail step), each: 5 digits x 2 k-halves x block_t / 8 column tiles x
        # row tiles per warp products, and one 16-byte activation load per digit and 8 columns
        assert shared == 0, (block_n, block_t, warps)
        assert products == 2 * 5 * 2 * (block_t // 8) * (block_n // (16 * warps)), (block_n, block_t, warps)
        assert vector_loads == 2 * 5 * (block_t // 8), (block_n, block_t, warps)


@pytest.mark.parametrize("m,k", [(3, 333), (16, 7), (9, 1280), (16, 161)])
def test_fragment_planes_put_each_activation_where_the_lanes_read_it(m, k):
    """``fragment_planes`` (a Triton kernel: interpreted on the CPU) against the same regrouping in
    torch: step ``s``, digit ``d``, token ``t``, byte ``j = 16 h + 4 q + i`` at
    ``((t // 8) * 32 + (t % 8) * 4 + q) * 8 + 4 h + i``; zero past ``K`` and for padded tokens."""
    block_t = max(8, 1 << (m - 1).bit_length())
    steps = -(-(-(-k // 5)) // mma.MMA_STEP_BYTES)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(DEVICE, torch.bfloat16)
    got = mma.fragment_planes(x, block_t, steps).cpu()
    padded = torch.zeros(block_t, steps * mma.MMA_STEP_BYTES * 5, dtype=torch.bfloat16)
    padded[:m, :k] = x.cpu()
    # [t_hi, t_lo, s, h, q, i, d] -> [s, d, t_hi, t_lo, q, h, i]
    digits = padded.view(block_t // 8, 8, steps, 2, 4, 4, 5)
    want = digits.permute(2, 6, 0, 1, 4, 3, 5).reshape(steps, 5, block_t * mma.MMA_STEP_BYTES)
    assert torch.equal(got, want)


@GPU_ONLY
@pytest.mark.parametrize("kernel,m,n,k,g", [("mma", *shape) for shape in SHAPES]
                         + [("wgmma", *shape) for shape in WGMMA_SHAPES])
@pytest.mark.parametrize("with_bias", [True, False])
def test_register_decode_forward_matches_float64(kernel, m, n, k, g, with_bias):
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=m * 31 + n + k + g)
    bias = bias if with_bias else None
    assert (mma if kernel == "mma" else wgmma).takes(x, packed, exponents, g)
    got = run(x, packed, exponents, bias, k, g, kernel=kernel)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    assert per_row_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < ROW_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("kernel,m,tile", [("mma", 16, (64, 4, 8)), ("mma", 16, (32, 2, 16)), ("mma", 16, (256, 8, 4)),
                                           ("mma", 16, (128, 4, 1)), ("wgmma", 16, (16, 64, 4, 2, 16)),
                                           ("wgmma", 40, (64, 128, 8, 4, 2)), ("wgmma", 40, (16, 64, 4, 3, 1)),
                                           ("wgmma", 130, (128, 256, 8, 2, 1)), ("wgmma", 130, (32, 64, 4, 2, 64)),
                                           ("wgmma", 300, (256, 128, 8, 2, 1))])
def test_launch_overrides_keep_the_result(kernel, m, tile):
    """Other tiles, one split or many, row tiles smaller or larger than M."""
    n, k, g = 300, 2003, 40
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=9)
    got = run(x, packed, exponents, bias, k, g, tile=tile, kernel=kernel)
    assert relative_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < BF16_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("stages", [2, 3, 4])
@pytest.mark.parametrize("m", [24, 130])
def test_wgmma_ring_runs_many_steps_in_one_program(stages, m):
    """One split (0 programs per SM asked) over 3277 bytes: 103 steps per program, so every slot of
    the ring is refilled and waited for at both barrier phases many times; the output is written
    by the kernel with its bias."""
    n, k, g = 96, 16383, 40
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=stages + m)
    got = run(x, packed, exponents, bias, k, g, tile=(32 if m < 32 else 128, 64, 4, stages, 0), kernel="wgmma")
    assert per_row_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < ROW_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("kernel,m", [("mma", 3), ("mma", 16), ("wgmma", 17), ("wgmma", 40), ("wgmma", 200)])
def test_corrupt_bytes_poison_exactly_their_rows(kernel, m):
    """Every corrupt value 243..255, at a row's first byte, its last (the masked tail step) or
    inside, makes exactly those rows NaN; the others match float64 row by row."""
    n, k, g = 300, 2003, 40
    packed, exponents, _, x = bf16_layer(m, n, k, g, seed=m)
    kb = packed.shape[1]
    corrupt = {row: ([0, kb - 1, 77][i % 3], 243 + i) for i, row in enumerate(range(5, 5 + 13 * 9, 9))}
    clean = packed.clone()
    for row, (column, value) in corrupt.items():
        packed[row, column] = value
        clean[row, column] = 121
    got = run(x, packed, exponents, None, k, g, kernel=kernel)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(corrupt)] = True
    assert torch.isnan(got[:, bad]).all() and torch.isfinite(got[:, ~bad]).all()
    assert per_row_rms(got[:, ~bad], float64_forward(x, clean, exponents, None, k, g)[:, ~bad]) < ROW_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("kernel,m", [("mma", 16), ("wgmma", 40)])
@pytest.mark.parametrize("exponent", [127, 126, -126, -127, -128])
def test_extreme_exponents_are_exact(kernel, m, exponent):
    """Weights ``T * 2^E`` at the ends of the int8 range (bf16 subnormals at -127 and -128) decode
    exactly: every other group has the extreme exponent and the rest one 3 steps inward, and the
    activations are scaled by ``2^-E`` (clamped to 2^120), so every product is an ordinary number
    and the rows match float64 to one bf16 rounding."""
    n, k, g = 64, 1003, 40
    packed, exponents, _, x = bf16_layer(m, n, k, g, seed=exponent + 200)
    exponents[:, ::2] = exponent
    exponents[:, 1::2] = exponent + (3 if exponent < 0 else -3)
    x = (x.double() * 2.0 ** max(-120, min(120, -exponent))).to(torch.bfloat16)
    got = run(x, packed, exponents, None, k, g, kernel=kernel)
    expected = float64_forward(x, packed, exponents, None, k, g)
    assert torch.isfinite(got).all() and per_row_rms(got, expected) < ROW_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("kernel,m", [("mma", 5), ("wgmma", 5), ("wgmma", 70)])
def test_padded_and_offset_views_read_only_their_bytes(kernel, m):
    """A row-padded ``T_packed`` view (padding bytes 255, which would be corrupt if decoded) and a
    view starting 4 bytes into its storage give the contiguous layer's result."""
    n, k, g = 70, 1003, 40
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=7)
    kb = packed.shape[1]
    padded = torch.full((n, kb + 3), 255, dtype=torch.uint8, device="cuda")
    padded[:, :kb] = packed.cuda()
    storage = torch.zeros(4 + n * kb + 4, dtype=torch.uint8, device="cuda")
    offset = storage[4:4 + n * kb].view(n, kb)
    offset.copy_(packed.cuda())
    expected = float64_forward(x, packed, exponents, bias, k, g)
    for view in (padded[:, :kb], offset):
        assert mma.takes(x[:16], view, exponents, g) and wgmma.takes(x, view, exponents, g)
        got = run(x, view, exponents, bias, k, g, kernel=kernel)
        assert torch.isfinite(got).all() and per_row_rms(got, expected) < ROW_BUDGET


@GPU_ONLY
def test_dispatch_takes_each_register_decode_kernel_only_for_its_calls(monkeypatch):
    """2-16 bf16 rows go to the mma.sync kernel, 17 to ``WGMMA_MAX_ROWS`` to the wgmma kernel, when
    the layer allows word reads and whole-run groups (and is not one the two-step path takes from 64
    rows: none here); every other call keeps the older paths."""
    monkeypatch.setattr(kernels, "TWO_STEP_BYTES_PER_ROW", 0)
    calls = []
    for name in ("forward_mma", "forward_wgmma"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _name=name, _original=original, **kw:
                            calls.append(_name) or _original(*a, **kw))
    for m, n, g, dtype, taken in ((4, 96, 40, torch.bfloat16, "forward_mma"),
                                  (16, 96, 20, torch.bfloat16, "forward_mma"),
                                  (17, 96, 40, torch.bfloat16, "forward_wgmma"),
                                  (kernels.WGMMA_MAX_ROWS, 96, 40, torch.bfloat16, "forward_wgmma"),
                                  (kernels.WGMMA_MAX_ROWS + 1, 96, 40, torch.bfloat16, None),
                                  (4, 96, 40, torch.float32, None), (40, 96, 40, torch.float32, None),
                                  (4, 96, 15, torch.bfloat16, None), (40, 96, 15, torch.bfloat16, None),
                                  (1, 96, 40, torch.bfloat16, None),
                                  (4, 77, 40, torch.bfloat16, None), (40, 77, 40, torch.bfloat16, None)):
        # 77 * 201 bytes end mid-word
        packed, exponents, bias, gen = layer(n, 1001, g, seed=m + g)
        x = torch.randn(m, 1001, generator=gen).to(dtype)
        got = kernels.forward(x.cuda(), packed.cuda(), exponents.cuda(), bias.cuda(), in_features=1001,
                              group_size=g, bias_frac_bits=FRAC_BITS)
        assert calls == ([taken] if taken else []), (m, n, g, dtype)
        calls.clear()
        budget = BF16_BUDGET if dtype == torch.bfloat16 else 5e-5
        assert relative_rms(got, float64_forward(x, packed, exponents, bias, 1001, g)) < budget


@GPU_ONLY
def test_small_layers_leave_wgmma_for_the_two_step_path_from_64_rows(monkeypatch):
    """From ``TWO_STEP_MIN_ROWS`` rows the wgmma kernel leaves layers whose bf16 buffer ``2 N K`` is at
    most ``M * TWO_STEP_BYTES_PER_ROW`` bytes to the two-step path: on each side of that bound, and
    never below 64 rows; both paths match the float64 forward."""
    calls = []
    for name in ("forward_wgmma", "forward_two_step"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _name=name, _original=original, **kw:
                            calls.append(_name) or _original(*a, **kw))
    n, k, g = 96, 1001, 40
    packed, exponents, bias, gen = layer(n, k, g, seed=3)
    buffer = 2 * n * k
    for m, per_row, taken in ((64, -(-buffer // 64), "forward_two_step"), (64, buffer // 64 - 1, "forward_wgmma"),
                              (128, -(-buffer // 128), "forward_two_step"), (128, buffer // 128 - 1, "forward_wgmma"),
                              (63, buffer, "forward_wgmma"), (kernels.WGMMA_MAX_ROWS, buffer, "forward_two_step")):
        monkeypatch.setattr(kernels, "TWO_STEP_BYTES_PER_ROW", per_row)
        x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
        got = kernels.forward(x.cuda(), packed.cuda(), exponents.cuda(), bias.cuda(), in_features=k, group_size=g,
                              bias_frac_bits=FRAC_BITS)
        assert calls == [taken], (m, per_row)
        calls.clear()
        assert relative_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < BF16_BUDGET


@pytest.mark.parametrize("m,k,block_t", [(3, 333, 8), (17, 7, 32), (40, 1280, 64), (130, 161, 128), (5, 515, 16)])
def test_wgmma_planes_put_each_activation_in_its_operand_column(m, k, block_t):
    """``wgmma_planes`` (a Triton kernel: interpreted on the CPU) against the same regrouping in
    torch: row ``(5 s + d) T + t`` (``T`` the padded row count), column ``16 h + 8 a + 2 q + e``
    holding ``x[t, 5 (32 s + 16 h + 4 q + 2 a + e) + d]``; zero past ``K`` and for padded rows."""
    t_pad = -(-m // block_t) * block_t
    steps = -(-(-(-k // 5)) // wgmma.WGMMA_STEP_BYTES)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(DEVICE, torch.bfloat16)
    got = wgmma.wgmma_planes(x, t_pad, steps, block_t).cpu()
    padded = torch.zeros(t_pad, steps * wgmma.WGMMA_STEP_BYTES * 5, dtype=torch.bfloat16)
    padded[:m, :k] = x.cpu()
    # [t, s, h, q, a, e, d] -> [s, d, t, h, a, q, e]
    digits = padded.view(t_pad, steps, 2, 4, 2, 2, 5)
    want = digits.permute(1, 6, 0, 2, 4, 3, 5).reshape(steps * 5 * t_pad, wgmma.WGMMA_STEP_BYTES)
    assert torch.equal(got, want)


_WGMMA_OFFLINE_COMPILE = """
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_wgmma_forward as wgmma

names = ("x_desc p_ptr e_ptr bias_ptr out_ptr M N KB NG stride_pn stride_en stride_os stride_om words_end "
         "STEPS_PER_SPLIT T_PAD bias_scale").split()
report = []
for block_t, block_n, warps, stages, partial in ((16, 64, 4, 2, True), (32, 128, 4, 4, True), (64, 128, 8, 4, False),
                                                 (128, 128, 4, 2, False)):
    desc = "tensordesc<bf16[%d, 32],%r>" % (block_t, wgmma.x_layout(block_t))
    signature = dict(zip(names, [desc, "*u8", "*i8", "*i32", "*fp32" if partial else "*bf16"] + ["i32"] * 11
                         + ["fp32"]))
    constexprs = {"BYTES_PER_GROUP": 8, "BLOCK_N": block_n, "BLOCK_T": block_t, "STAGES": stages,
                  "RUN_LAYOUT": wgmma.run_layout(block_n, warps), "PARTIAL": partial, "HAS_BIAS": True}
    signature.update(dict.fromkeys(constexprs, "constexpr"))
    source = GluonASTSource(wgmma._wgmma_forward_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(1, 5)})
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}).asm["ptx"]
    report.append([ptx.count("wgmma.mma_async.sync.aligned.m64n%dk16.f32.bf16.bf16" % block_t),
                   ptx.count("cp.async.bulk.tensor.2d"), ptx.count("ld.shared"), ptx.count("st.shared")])
print(json.dumps(report))
"""


def test_wgmma_kernel_decodes_into_registers_and_stages_only_the_activations():
    """Compiled offline for sm_90: both loops issue 5 digits x 2 k-halves x 64-row operand tiles
    per warpgroup of ``wgmma`` with the weights in registers (the column permutation of
    ``operand`` moves no data through shared memory: no shared loads or stores at all), and the
    activations arrive by TMA, five boxes per step in the prologue's ``STAGES`` steps and in each
    loop's refill."""
    tiles = ((16, 64, 4, 2), (32, 128, 4, 4), (64, 128, 8, 4), (128, 128, 4, 2))
    for (block_t, block_n, warps, stages), (products, copies, loads, stores) in zip(
            tiles, _compile_offline(_WGMMA_OFFLINE_COMPILE), strict=True):
        assert products == 2 * 5 * 2 * block_n // (16 * warps), (block_t, block_n, warps)
        assert copies == 5 * stages + 2 * 5, (block_t, block_n, warps)
        assert loads == 0 and stores == 0, (block_t, block_n, warps)


def float64_grad_x(grad_y, packed, exponents, k, g):
    weights = reference.dequantize(packed.cpu(), exponents.cpu(), in_features=k, group_size=g).double()
    return grad_y.cpu().double() @ weights


def run_grad_x(grad_y, packed, exponents, k, g, tile=None):
    return kernels.grad_x_wgmma(grad_y.cuda(), packed.cuda(), exponents.cuda(), in_features=k, group_size=g,
                                tile=tile).cpu()


# (M, N, K, G): N = 76 (rows 152 bytes apart: grad_y is copied for TMA) and N past one 64-row step;
# K not a multiple of 5, of G or of the 64-byte block; M = 2, 3, 16, 17 (a 32-row tile), 64 and 130
# (row tiles of 64, the last partial).
GRAD_X_SHAPES = [(2, 64, 160, 40), (3, 100, 333, 20), (16, 76, 1001, 40), (17, 520, 4001, 40),
                 (64, 96, 16383, 40), (130, 300, 2003, 60), (40, 1000, 700, 20)]


@GPU_ONLY
@pytest.mark.parametrize("m,n,k,g", GRAD_X_SHAPES)
@pytest.mark.parametrize("tile", [None, (16, 2, 8, 4), (32, 3, 0, 4), (128, 2, 1, 8), (64, 3, 0, 8)])
def test_wgmma_grad_x_matches_float64(m, n, k, g, tile):
    """Every output column within one bf16 rounding of float64, for the default launch, 16- to
    128-row tiles, 4 and 8 warps, many splits and one split (0 programs per SM asked: every weight
    row step in one program, so the ring turns over many times)."""
    packed, exponents, _, gen = layer(n, k, g, seed=m + n + k)
    grad_y = torch.randn(m, n, generator=gen).to(torch.bfloat16)
    got = run_grad_x(grad_y, packed, exponents, k, g, tile)
    assert got.dtype == torch.bfloat16 and got.shape == (m, k)
    assert per_row_rms(got, float64_grad_x(grad_y, packed, exponents, k, g)) < ROW_BUDGET


@GPU_ONLY
def test_wgmma_grad_x_reads_strided_grad_y():
    """A column slice of a wider tensor (rows TMA can address only after a copy) gives the
    contiguous result."""
    m, n, k, g = 24, 96, 1003, 40
    packed, exponents, _, gen = layer(n, k, g, seed=5)
    wide = torch.randn(m, n + 3, generator=gen).to(torch.bfloat16)
    expected = float64_grad_x(wide[:, 1:n + 1], packed, exponents, k, g)
    assert per_row_rms(run_grad_x(wide.cuda()[:, 1:n + 1], packed, exponents, k, g), expected) < ROW_BUDGET


@GPU_ONLY
def test_wgmma_grad_x_corrupt_bytes_poison_exactly_their_columns():
    """Corrupt values 243..255 at a row's first byte, at each byte position of a run (the last one
    sets the flags' sign bit), two in one run, in the last (partial) block and in the last weight
    row make exactly their five output columns NaN."""
    m, n, k, g = 40, 300, 2003, 40
    packed, exponents, _, gen = layer(n, k, g, seed=3)
    grad_y = torch.randn(m, n, generator=gen).to(torch.bfloat16)
    kb = packed.shape[1]
    clean = packed.clone()
    places = [(5, 0, 243), (100, 77, 249), (200, 130, 255), (201, 131, 244), (42, 204, 245), (42, 207, 246),
              (n - 1, kb - 1, 250)]
    bad = torch.zeros(k, dtype=torch.bool)
    for row, column, value in places:
        packed[row, column] = value
        clean[row, column] = 121
        bad[5 * column:5 * column + 5] = True
    got = run_grad_x(grad_y, packed, exponents, k, g)
    assert torch.isnan(got[:, bad]).all() and torch.isfinite(got[:, ~bad]).all()
    expected = float64_grad_x(grad_y, clean, exponents, k, g)
    assert per_row_rms(got[:, ~bad], expected[:, ~bad]) < ROW_BUDGET


@GPU_ONLY
def test_grad_x_dispatch_takes_the_wgmma_kernel_only_for_its_calls(monkeypatch):
    """bf16 grad_y of 3 to ``WGMMA_GRAD_X_MAX_ROWS`` rows on word-readable layers go to the wgmma
    kernel where its workspace pays; fp32, one or two rows, more rows, unreadable layers, a 4096^2
    layer at 64 rows (workspace 6x the weights) and a 512 x 4096 layer at 16 rows (5x) keep the
    older paths."""
    calls = []
    original = kernels.grad_x_wgmma
    monkeypatch.setattr(kernels, "grad_x_wgmma", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    for m, n, k, dtype, taken in ((3, 512, 4096, torch.bfloat16, True), (16, 4096, 4096, torch.bfloat16, True),
                                  (64, 4096, 16000, torch.bfloat16, True),
                                  (kernels.WGMMA_GRAD_X_MAX_ROWS + 1, 4096, 16000, torch.bfloat16, False),
                                  (2, 512, 4096, torch.bfloat16, False), (16, 4096, 4096, torch.float32, False),
                                  (16, 77, 1001, torch.bfloat16, False), (64, 4096, 4096, torch.bfloat16, False),
                                  (16, 512, 4096, torch.bfloat16, False)):
        packed, exponents, _, gen = layer(n, k, 40, seed=m + n)
        grad_y = torch.randn(m, n, generator=gen).to(dtype)
        assert wgmma_grad_x.takes(grad_y, packed, exponents, 40) == (dtype == torch.bfloat16 and m >= 2 and n != 77)
        got = kernels.grad_x(grad_y.cuda(), packed.cuda(), exponents.cuda(), in_features=k, group_size=40)
        assert (len(calls) == 1) == taken, (m, n, k, dtype)
        calls.clear()
        budget = BF16_BUDGET if dtype == torch.bfloat16 else 5e-5
        assert relative_rms(got, float64_grad_x(grad_y, packed, exponents, k, 40)) < budget


_GRAD_X_OFFLINE_COMPILE = """
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
from ternary.kernels.linear import triton_wgmma_grad_x as gx

names = "g_desc p_ptr e_ptr out_ptr M N KB NG stride_pn stride_en stride_os stride_om words_end STEPS_PER_SPLIT"
report = []
for block_t, stages, warps in ((16, 2, 4), (64, 3, 4), (128, 2, 8)):
    desc = "tensordesc<bf16[%d, 64],%r>" % (block_t, gx.g_layout(block_t))
    signature = dict(zip(names.split(), [desc, "*u8", "*i8", "*fp32"] + ["i32"] * 10))
    constexprs = {"BYTES_PER_GROUP": 8, "BLOCK_T": block_t, "STAGES": stages, "RUN_LAYOUT": gx.run_layout(warps),
                  "W_LAYOUT": gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)}
    signature.update(dict.fromkeys(constexprs, "constexpr"))
    source = GluonASTSource(gx._grad_x_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(1, 4)})
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps}).asm["ptx"]
    n = block_t // (warps // 4)
    report.append([ptx.count("wgmma.mma_async.sync.aligned.m64n%dk16.f32.bf16.bf16" % n),
                   ptx.count("cp.async.bulk.tensor.2d"), ptx.count("st.shared.v2.b32")])
print(json.dumps(report))
"""


def test_wgmma_grad_x_kernel_issues_its_products_from_the_decoded_tiles():
    """Compiled offline for sm_90: each weight-row step issues 5 digits x 4 k-steps of ``wgmma``
    (``[64 bytes, 16 rows] @ [16 rows, BLOCK_T / warpgroups]``, the warpgroups splitting the
    ``grad_y`` rows), stores the five decoded tiles with 8-byte shared stores (four bytes' bf16 pair
    registers per store), and ``grad_y`` arrives by TMA, one box per step in the prologue and in the
    refill."""
    for (block_t, stages, warps), (products, copies, stores) in zip(
            ((16, 2, 4), (64, 3, 4), (128, 2, 8)), _compile_offline(_GRAD_X_OFFLINE_COMPILE), strict=True):
        assert products == 5 * 4, (block_t, warps)
        assert copies == stages + 1, (block_t, warps)
        assert stores == 5 * (64 * 64 // 4) // (32 * warps), (block_t, warps)
