"""Every row-count boundary of the Triton backend's dispatch, through the public API, on the GPU.

Each kernel has its own tests on chosen shapes; this file checks the seams between them. The row counts are
read from the dispatch's own constants (each boundary ``b`` as ``b - 1``, ``b`` and ``b + 1``), so a moved
threshold moves the sweep with it. Per layer (odd ``N`` and ``K``, ``K`` not a multiple of 5 or of ``G``, ``G``
that the word and tile decoders take and one that they do not, exponents that differ between groups, a bias)
and dtype:

- ``linear`` on a :class:`LinearState` with autograd: the output and ``grad_x`` against float64 products of
  the reference weights, by relative RMS error within ``BUDGETS`` and output by output within a rounding bound
  (two roundings of the output dtype plus fp32 accumulation), with cuBLAS's reduced-precision split-K sums
  turned off; with them on (torch's default) by the RMS budget;
- ``linear`` on a :class:`DecodeLinearState` (inference) the same way, for the rows its tiled kernels take;
- the update at the hook-row boundaries of its kernels, bit for bit against the reference on every integer
  tensor (small-integer hooks: every gradient sum is exact).

The checker is itself checked (on the CPU too): faults injected at one row count are reported there only. The
sweeps are GPU only: under the interpreter they would take hours, and the CPU dispatch has one path.
H200 (thirty-fourth session): 25 passed in 13 s on a warm machine, 4 minutes with the compiles.
"""

from __future__ import annotations

import attrs
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary import DecodeLinearState, LinearState, linear  # noqa: E402
from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import triton_mma_forward, triton_tiled_mma  # noqa: E402
from ternary.kernels.update import triton as update_kernels  # noqa: E402
from test_triton_linear import relative_rms  # noqa: E402
from test_triton_update import assert_bitwise, hooks, layer_state, rule, run_both  # noqa: E402

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda", reason="a sweep of compiled kernels: GPU only")

# Relative RMS error against float64: one bf16 / fp16 rounding of the output is ~2^-9 / 2^-12 relative RMS
# (uniform error, /sqrt(3)); fp32 as test_triton_linear (the GEMV's quotient rewrite is looser).
BUDGETS = {torch.bfloat16: 4e-3, torch.float16: 5e-4, torch.float32: 5e-5}
# ... and every output within its own rounding bound: two roundings of the output dtype (unit roundoff ``U``) of
# the larger of the output and the product before the bias (the two-step paths round cuBLAS's product, then add
# the bias and round again), plus fp32 accumulation of ``ACCUMULATION`` times the sum of the magnitudes of the
# terms (tensor cores truncate each addition; the GEMV rewrites each byte's dot product). One wrong output, which
# the RMS over a large layer would dilute, is caught here.
U = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
ACCUMULATION = 2e-5
# (N, K, G): odd N and K, K not a multiple of 5 or of G; G = 40 and 80 take every decoder (word runs, decode
# tiles), G = 15 none of them (groups straddle bytes). The 4096-row layer gives the decode-in-GEMM one output
# tile per SM at its first row count.
LAYERS = [(1001, 1003, 40), (257, 999, 80), (300, 161, 15), (4096, 1002, 40)]


def _around(*boundaries: int) -> list[int]:
    """``b - 1``, ``b`` and ``b + 1`` of each boundary (at least one row), sorted, once each."""
    return sorted({m for b in boundaries for m in (b - 1, b, b + 1) if m >= 1})


FORWARD_ROWS = _around(1, kernels.GEMV_MAX_ROWS, triton_mma_forward.MMA_MAX_ROWS, kernels.GRAD_X_FUSED_ROWS,
                       kernels.WGMMA_GRAD_X_MAX_ROWS, kernels.TWO_STEP_MIN_ROWS, kernels.WGMMA_MAX_ROWS,
                       kernels.DECODE_GEMM_ROWS[0], kernels.DECODE_GEMM_SMALL_LAYER_MAX_ROWS)
# The tiled kernel compiles per column tile of 8 rows (launch, unrolling, where it loads the fragments).
DECODE_ROWS = _around(1, triton_tiled_mma.TILED_MMA_MIN_ROWS,
                      *(8 * tiles for tiles in triton_tiled_mma.TILED_MMA_LAUNCHES))
# 256: the update's hook rows per step double above it (``update_kernels._tiles``).
UPDATE_ROWS = _around(1, update_kernels.WGMMA_UPDATE_MIN_ROWS, 256)


@pytest.fixture(autouse=True)
def full_precision_reductions():
    """cuBLAS may add split-K partial sums in bf16 / fp16 where torch allows it (its default, which ``F.linear``
    gets as well): the two-step paths then round more than twice. The sweep checks the rounding of the paths
    themselves, so it turns that off; with torch's default the RMS budgets still hold
    (:func:`test_bf16_sweep_keeps_the_rms_budget_with_reduced_precision_reductions`)."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_bf16_reduced_precision_reduction, matmul.allow_fp16_reduced_precision_reduction
    matmul.allow_bf16_reduced_precision_reduction = matmul.allow_fp16_reduced_precision_reduction = False
    yield
    matmul.allow_bf16_reduced_precision_reduction, matmul.allow_fp16_reduced_precision_reduction = saved


def _layer(n: int, k: int, g: int) -> LinearState:
    """A random layer whose exponents differ from group to group (three either side of the initial one) and
    whose bias is about as large as the outputs (``LinearState.random`` starts with one exponent, no bias)."""
    gen = torch.Generator().manual_seed(n * 7 + k + g)
    state = LinearState.random(k, n, group_size=g, bias=True, generator=gen, device=DEVICE)
    exponents = state.E + torch.randint(-3, 4, state.E.shape, generator=gen, dtype=torch.int8).to(DEVICE)
    one = 2**state.bias_frac_bits
    bias = torch.randint(-one, one + 1, (n,), generator=gen, dtype=torch.int32).to(DEVICE)
    return attrs.evolve(state, E=exponents, bias=bias)


def _float64_weights(state: LinearState) -> torch.Tensor:
    """``W [N, K]`` in float64 (exact: trits times powers of two)."""
    return reference.dequantize(state.T_packed.cpu(), state.E.cpu(), in_features=state.in_features,
                                group_size=state.group_size).double()


def _miss(actual: torch.Tensor, expected: torch.Tensor, product: torch.Tensor, magnitude: torch.Tensor,
          dtype: torch.dtype, elementwise: bool) -> str | None:
    """Why ``actual`` misses the float64 ``expected`` (``product`` the same before the bias, ``magnitude`` the
    sum of the magnitudes of its terms): its relative RMS error, or (``elementwise``) the outputs past their
    rounding bound; or None."""
    error = relative_rms(actual, expected)
    if not error <= BUDGETS[dtype]:
        return f"error {error:.2e}"
    if not elementwise:
        return None
    bound = 2 * U[dtype] * torch.maximum(expected.abs(), product.abs()) + ACCUMULATION * magnitude
    past = (actual.double().cpu() - expected).abs() > bound
    if bool(past.any()):
        first = [int(i) for i in past.nonzero()[0]]
        return f"{int(past.sum())} outputs past their rounding bound, the first at {first}"
    return None


def _errors(layer: tuple[int, int, int], dtype: torch.dtype, rows: list[int], decode: bool,
            elementwise: bool = True) -> list[str]:
    """One line per row count whose output (or ``grad_x``) misses the budget or has the wrong dtype / shape."""
    state = _layer(*layer)
    weights = _float64_weights(state)
    decoded = DecodeLinearState.from_layer(state) if decode else None
    gen = torch.Generator().manual_seed(sum(layer))
    failures = []
    for m in rows:
        x = torch.randn(m, state.in_features, generator=gen).to(DEVICE, dtype)
        if decode:
            with torch.no_grad():
                y = linear(decoded, x, backend="triton")
        else:
            x.requires_grad_(True)
            y = linear(state, x, backend="triton")
        if y.dtype != dtype or y.shape != (m, state.out_features):
            failures.append(f"M={m}: output {y.dtype} {list(y.shape)}")
            continue
        x64 = x.detach().cpu().double()
        product, magnitude = x64 @ weights.T, x64.abs() @ weights.abs().T
        expected = product + state.bias.cpu().double() * 2.0 ** -state.bias_frac_bits
        miss = _miss(y.detach(), expected, product, magnitude, dtype, elementwise)
        if miss:
            failures.append(f"M={m}: forward {miss}")
        if decode:
            continue
        grad_y = torch.randn(m, state.out_features, generator=gen).to(DEVICE, dtype)
        (grad_x,) = torch.autograd.grad(y, x, grad_y)
        product = grad_y.cpu().double() @ weights
        magnitude = grad_y.cpu().double().abs() @ weights.abs()
        same_dtype = grad_x.dtype == dtype
        miss = _miss(grad_x, product, product, magnitude, dtype, elementwise) if same_dtype else str(grad_x.dtype)
        if miss:
            failures.append(f"M={m}: grad_x {miss}")
    return failures


def test_sweeps_cross_every_boundary_they_name():
    """The sweeps reach past the last boundary and hold each boundary's neighbours."""
    assert kernels.DECODE_GEMM_ROWS[0] + 1 in FORWARD_ROWS and triton_tiled_mma.TILED_MMA_MAX_ROWS + 1 in DECODE_ROWS
    assert all(8 * tiles + 1 in DECODE_ROWS for tiles in triton_tiled_mma.TILED_MMA_LAUNCHES)
    assert {63, 64, 65} <= set(UPDATE_ROWS) and 1 in FORWARD_ROWS and 1 in DECODE_ROWS


def test_the_sweep_names_the_row_counts_a_fault_hits(monkeypatch):
    """The checker itself: a forward that drops the bias at 17 rows and a grad-x that loses its last input
    column at 16 rows are reported at those row counts and nowhere else."""
    forward, grad_x = kernels.forward, kernels.grad_x

    def faulty_forward(x, T_packed, E, bias, **kwargs):
        return forward(x, T_packed, E, None if x.shape[0] == 17 else bias, **kwargs)

    def faulty_grad_x(grad_y, *args, **kwargs):
        out = grad_x(grad_y, *args, **kwargs)
        return torch.cat([out[:, :-1], out[:, -1:] * 0], 1) if grad_y.shape[0] == 16 else out

    monkeypatch.setattr(kernels, "forward", faulty_forward)
    monkeypatch.setattr(kernels, "grad_x", faulty_grad_x)
    failures = _errors((40, 161, 15), torch.float32, [15, 16, 17], decode=False)
    assert [line.split(" ")[:2] for line in failures] == [["M=16:", "grad_x"], ["M=17:", "forward"]], failures


@GPU_ONLY
@pytest.mark.parametrize("layer", LAYERS, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_linear_and_grad_x_match_float64_across_the_dispatch(layer, dtype):
    failures = _errors(layer, dtype, FORWARD_ROWS, decode=False)
    assert not failures, f"{layer} {dtype}: " + "; ".join(failures)


@GPU_ONLY
def test_bf16_sweep_keeps_the_rms_budget_with_reduced_precision_reductions():
    """With torch's default (cuBLAS may add split-K partial sums in bf16, as it may for ``F.linear``) single
    outputs round more than twice, but the RMS budget holds on every path."""
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True  # the fixture restores the setting
    for layer in LAYERS:
        failures = _errors(layer, torch.bfloat16, FORWARD_ROWS, decode=False, elementwise=False)
        assert not failures, f"{layer}: " + "; ".join(failures)


@GPU_ONLY
@pytest.mark.parametrize("layer", [s for s in LAYERS if s[2] % 40 == 0], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_decode_state_forward_matches_float64_across_the_dispatch(layer, dtype):
    failures = _errors(layer, dtype, DECODE_ROWS, decode=True)
    assert not failures, f"{layer} {dtype}: " + "; ".join(failures)


@GPU_ONLY
@pytest.mark.parametrize("n,k,g", [(257, 1000, 40), (130, 999, 15)], ids=["even_k", "odd_k"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_update_matches_reference_bit_for_bit_across_the_dispatch(n, k, g, dtype):
    gen = torch.Generator().manual_seed(n + k)
    for m in UPDATE_ROWS:
        state = layer_state(n, k, g, gen)
        x, grad_y = hooks(m, n, k, gen, dtype)
        expected, actual = run_both(state, x, grad_y, rule(k, g))
        assert_bitwise(expected, actual)
