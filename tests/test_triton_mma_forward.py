"""The 2-64 row bf16 forward on ``mma.sync`` with register-decoded weights (``triton_mma_forward``).

The Gluon kernel runs only compiled on a GPU; which calls it takes, and that it compiles for
sm_90 without shared memory (the point of decoding straight into the operand registers), are
checked on the CPU too (the offline compile needs no GPU). Outputs are compared with a float64
product of the reference weights by relative RMS error within ``BF16_BUDGET`` (one bf16 rounding of
the output; the products are exact and summed in fp32).
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
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_table_gemv import FRAC_BITS, float64_forward, layer  # noqa: E402

BF16_BUDGET = 1e-2
GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="the Gluon kernel runs only compiled on a GPU")

# (M, N, K, G): K not a multiple of 5, of G or of the 32-byte step; fewer bytes than one step;
# N = 2 and N past a whole program; M = 2, 8 (one 8-row MMA tile), 9, 16 (two), 17, 32 (four) and
# 33, 64 (eight); groups of 4, 8, 12 and 32 bytes. Every N * ceil(K / 5) is a multiple of 4, so
# T_packed ends on a whole word.
SHAPES = [(2, 48, 161, 40), (3, 76, 333, 40), (8, 130, 1000, 20), (9, 64, 1280, 80), (16, 200, 4096, 160),
          (5, 36, 515, 60), (16, 2, 7, 20), (16, 300, 2003, 40), (2, 130, 150, 40), (17, 76, 333, 40),
          (32, 130, 1000, 20), (33, 64, 1280, 80), (64, 300, 2003, 40)]


def bf16_layer(m, n, k, g, seed):
    packed, exponents, bias, gen = layer(n, k, g, seed=seed)
    return packed, exponents, bias, torch.randn(m, k, generator=gen).to(torch.bfloat16)


def run(x, packed, exponents, bias, k, g, tile=None):
    return kernels.forward_mma(x.cuda(), packed.cuda(), exponents.cuda(), None if bias is None else bias.cuda(),
                               in_features=k, group_size=g, bias_frac_bits=FRAC_BITS, tile=tile).cpu()


def test_takes_bf16_calls_of_2_to_64_rows_on_whole_runs_and_aligned_words():
    packed = torch.zeros((64, 30), dtype=torch.uint8)
    x = torch.zeros((4, 150), dtype=torch.bfloat16)
    assert mma.takes(x, packed, 40) and mma.takes(x, packed, 20) and mma.takes(x, packed, 160)
    assert mma.takes(x[:2], packed, 40) and mma.takes(torch.zeros((33, 150), dtype=torch.bfloat16), packed, 40)
    assert not mma.takes(x[:1], packed, 40)  # one row: the table kernel
    assert mma.takes(torch.zeros((64, 150), dtype=torch.bfloat16), packed, 40)
    assert not mma.takes(torch.zeros((65, 150), dtype=torch.bfloat16), packed, 40)
    assert not mma.takes(x.float(), packed, 40) and not mma.takes(x.half(), packed, 40)
    assert not mma.takes(x, packed, 15) and not mma.takes(x, packed, 30)  # a group is not whole runs
    storage = torch.zeros(64 * 30 + 8, dtype=torch.uint8)
    assert mma.takes(x, storage[4:4 + 63 * 30].view(63, 30), 40)
    assert not mma.takes(x, storage[1:1 + 63 * 30].view(63, 30), 40)  # not 4-byte aligned
    assert not mma.takes(x, torch.zeros((63, 31), dtype=torch.uint8), 40)  # 1953 bytes: the last word is short
    assert not mma.takes(x, torch.zeros((30, 64), dtype=torch.uint8).T, 40)  # columns strided


_OFFLINE_COMPILE = """
import json, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from ternary.kernels.linear import triton_mma_forward as mma

names = "planes_ptr p_ptr e_ptr out_ptr M N KB NG stride_pn stride_en stride_os stride_om words_end STEPS_PER_SPLIT"
signature = dict(zip(names.split(), ["*bf16", "*u8", "*i8", "*fp32"] + ["i32"] * 10))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "BLOCK_N", "BLOCK_T", "RUN_LAYOUT", "X_LAYOUT"), "constexpr"))
report = []
for block_n, block_t, warps in ((mma.MMA_TILE[0], 16, mma.MMA_TILE[1]), (64, 8, 4), (32, 16, 2), (64, 32, 4),
                                (64, 64, 4)):
    source = GluonASTSource(mma._mma_forward_kernel, signature=signature, constexprs={
        "BYTES_PER_GROUP": 8, "BLOCK_N": block_n, "BLOCK_T": block_t, "RUN_LAYOUT": mma.run_layout(block_n, warps),
        "X_LAYOUT": mma.fragment_layout(block_t, warps)},
        attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})  # pointers 16-byte aligned, as at run time
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    report.append([compiled.metadata.shared, compiled.asm["ptx"].count("mma.sync.aligned.m16n8k16"),
                   compiled.asm["ptx"].count("ld.global.v4.b32")])
print(json.dumps(report))
"""


def test_run_layout_is_the_operand_layout_and_the_kernel_needs_no_shared_memory():
    """Compiled offline for sm_90 (a fresh process: the CPU tests run the Triton interpreter,
    which replaces the language functions): the run layout reshaped to ``[BLOCK_N, 32]`` and the
    fragment-order activation rows relabelled to ``[32, BLOCK_T]`` convert trivially to the MMA
    operand layouts (the kernel asserts both, so a mismatch fails to compile), nothing goes through
    shared memory, the activations arrive as 16-byte loads and both loops issue the five digit
    products."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", _OFFLINE_COMPILE], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for shared, products, vector_loads in json.loads(done.stdout.splitlines()[-1]):
        assert shared == 0 and products >= 10 and vector_loads >= 10  # activations as 16-byte loads


@pytest.mark.parametrize("m,k", [(3, 333), (16, 7), (9, 1280), (16, 161), (33, 515), (64, 160)])
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
@pytest.mark.parametrize("m,n,k,g", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_mma_forward_matches_float64(m, n, k, g, with_bias):
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=m * 31 + n + k + g)
    bias = bias if with_bias else None
    assert mma.takes(x, packed, g)
    got = run(x, packed, exponents, bias, k, g)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    assert relative_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < BF16_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("tile", [(64, 4, 8), (32, 2, 16), (256, 8, 4), (128, 4, 1)])
def test_launch_overrides_keep_the_result(tile):
    m, n, k, g = 16, 300, 2003, 40
    packed, exponents, bias, x = bf16_layer(m, n, k, g, seed=9)
    got = run(x, packed, exponents, bias, k, g, tile=tile)
    assert relative_rms(got, float64_forward(x, packed, exponents, bias, k, g)) < BF16_BUDGET


@GPU_ONLY
@pytest.mark.parametrize("m", [3, 16])
def test_corrupt_bytes_poison_their_rows_and_extreme_exponents_stay_exact(m):
    """Every corrupt value 243..255, at a row's first byte, its last (the masked tail step) and
    inside, makes exactly those rows NaN; exponents 127, 126, -127 and -128 stay exact
    (activations of the huge-scale columns scaled so nothing overflows)."""
    n, k, g = 300, 2003, 40
    packed, exponents, _, x = bf16_layer(m, n, k, g, seed=m)
    kb = packed.shape[1]
    corrupt = {row: ([0, kb - 1, 77][row % 3], 243 + row % 13) for row in range(5, 5 + 13 * 9, 9)}
    exponents[3, :20] = 127
    exponents[3, 20:40] = 126
    exponents[4, :] = -128
    exponents[6, ::2] = -127
    x[:, :40 * 40] = x[:, :40 * 40] * 2.0**-120
    clean = packed.clone()
    for row, (column, value) in corrupt.items():
        packed[row, column] = value
        clean[row, column] = 121
    got = run(x, packed, exponents, None, k, g)
    bad = torch.zeros(n, dtype=torch.bool)
    bad[list(corrupt)] = True
    assert torch.isnan(got[:, bad]).all() and torch.isfinite(got[:, ~bad]).all()
    expected = float64_forward(x, clean, exponents, None, k, g)
    assert relative_rms(got[:, ~bad], expected[:, ~bad]) < BF16_BUDGET


@GPU_ONLY
def test_dispatch_takes_the_mma_kernel_only_for_its_calls(monkeypatch):
    calls = []
    original = kernels.forward_mma
    monkeypatch.setattr(kernels, "forward_mma", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    for m, n, g, dtype, takes in ((4, 96, 40, torch.bfloat16, True), (16, 96, 20, torch.bfloat16, True),
                                  (64, 96, 40, torch.bfloat16, True), (4, 96, 40, torch.float32, False),
                                  (4, 96, 15, torch.bfloat16, False), (1, 96, 40, torch.bfloat16, False),
                                  (65, 96, 40, torch.bfloat16, False),
                                  (4, 77, 40, torch.bfloat16, False)):  # 77 * 201 bytes end mid-word
        packed, exponents, bias, gen = layer(n, 1001, g, seed=m + g)
        x = torch.randn(m, 1001, generator=gen).to(dtype)
        got = kernels.forward(x.cuda(), packed.cuda(), exponents.cuda(), bias.cuda(), in_features=1001,
                              group_size=g, bias_frac_bits=FRAC_BITS)
        assert (len(calls) == 1) == takes, (m, n, g, dtype)
        calls.clear()
        budget = BF16_BUDGET if dtype == torch.bfloat16 else 5e-5
        assert relative_rms(got, float64_forward(x, packed, exponents, bias, 1001, g)) < budget
