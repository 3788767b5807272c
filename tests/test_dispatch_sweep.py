"""Every row-count boundary of the Triton backend's dispatch, through the public API, on the GPU.

Each kernel has its own tests on chosen shapes; this file checks the seams between them. The row counts are
read from the dispatch's own constants (each boundary ``b`` as ``b - 1``, ``b`` and ``b + 1``), so a moved
threshold moves the sweep with it, and every call records which kernel entry points it reached (:func:`taken`):
each named boundary must change the path on some layer and dtype, and every entry point must run somewhere, so
a layer that stops reaching a kernel fails the sweep instead of thinning it. Per layer (``LAYERS``: exponents
that differ between groups and a bias as large as the outputs) and dtype:

- ``linear`` on a :class:`LinearState` with autograd: the output and ``grad_x`` against float64 products of
  the reference weights, by relative RMS error within ``BUDGETS`` and output by output within a rounding bound,
  with cuBLAS's reduced-precision split-K sums turned off; with them on (torch's default) by the RMS budget;
- ``linear`` on a :class:`DecodeLinearState` (inference) the same way, at every column-tile boundary;
- the update at the hook-row boundaries of its kernels, bit for bit against the reference on every integer
  tensor (small-integer hooks: every gradient sum is exact; outputs poisoned first).

Not swept: the decode-in-GEMM grad-x and the update's wide tiles, which only layers of 2^27 weights or 8192 hook
rows reach (their own files test them). The checker is itself checked (on the CPU too): faults injected at one
row count are reported there only. The card's sweeps are GPU only (under the interpreter they would take hours);
on the CPU one layer crosses the interpreter's own boundaries (GEMV, fused kernels, two-step with and without
digit planes).
"""

from __future__ import annotations

import re

import attrs
import pytest
import torch

from triton_guard import DEVICE  # noqa: E402  (first: sets TRITON_INTERPRET on CPU)

from ternary import DecodeLinearState, LinearState, linear  # noqa: E402
from ternary.kernels.linear import reference  # noqa: E402
from ternary.kernels.linear import triton as kernels  # noqa: E402
from ternary.kernels.linear import (triton_decode_gemm, triton_lut_gemv, triton_mma_forward,  # noqa: E402
                                    triton_tiled_gemv, triton_tiled_mma)
from ternary.kernels.update import triton as update_kernels  # noqa: E402
from ternary.kernels.update import triton_wgmma_wide, triton_wgmma_ws  # noqa: E402
from ternary.state.decode_state import decode_layout_fits  # noqa: E402
from test_triton_update import assert_bitwise, hooks, layer_state, rule, run_both  # noqa: E402
from test_triton_update import poisoned_outputs  # noqa: E402,F401  (autouse: every update output poisoned)

GPU_ONLY = pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.get_device_capability()[0] != 9,
                              reason="the paths of sm_90 cards (other cards dispatch differently)")
DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Relative RMS error against float64: one bf16 / fp16 rounding of the output is ~2^-9 / 2^-12 relative RMS
# (uniform error, /sqrt(3)); fp32 as test_triton_linear (the GEMV's quotient rewrite is looser).
BUDGETS = {torch.bfloat16: 4e-3, torch.float16: 5e-4, torch.float32: 5e-5}
# ... and every output within its own rounding bound: two roundings of the output dtype (unit roundoff ``U``) of
# the larger of the output and the product before the bias (the two-step paths round cuBLAS's product, then add
# the bias in fp32 and round again), plus ``ACCUMULATION`` times the sum of the magnitudes of the terms for the
# fp32 sums (tensor cores truncate each addition; the GEMV rewrites each byte's dot product) and half a subnormal
# step. ``ACCUMULATION`` is a statistical bound, not a worst case ((n - 1) 2^-24 would be 6e-5 at K = 1000 and
# 2.4e-4 for a grad-x over 4096 rows): it holds with room on these random layers. One wrong output, which the RMS
# over a large layer would dilute, is caught here.
U = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: 2.0**-24}
ACCUMULATION = 2e-5
# (N, K, G), K never a multiple of G (nor of 5 but in the last):
# - 1001 x 1003, G = 40: T_packed rows of 201 bytes cannot be read as aligned words, so the mma, wgmma and table
#   kernels refuse it and the GEMV, fused and two-step paths take it;
# - 257 x 999, G = 80: word-readable; the mma and wgmma forwards up to 63 rows, then (its buffer stays in L2) the
#   two-step path;
# - 1001 x 2561, G = 15: a group is three bytes (no word or run decoder); wide enough for the two-step path's
#   digit-plane order below N / 8 rows;
# - 4096 x 1002, G = 40: the decode-in-GEMM forward at its first row count (one output tile per SM);
# - 14336 x 4100, G = 40: a buffer too large for L2 (the wgmma forward up to 256 rows), the wgmma grad-x up to 64
#   rows (its workspace pays), the decode-in-GEMM forward, the digit planes in fp32 and fp16.
LAYERS = [(1001, 1003, 40), (257, 999, 80), (1001, 2561, 15), (4096, 1002, 40), (14336, 4100, 40)]
# The decode layout's layers, and 512 x 640 with G = 20 for its one-row shuffle GEMV (the table GEMV and the tiled
# mma.sync kernel need G / 5 a multiple of 8).
DECODE_LAYERS = [layer for layer in LAYERS if decode_layout_fits(layer[2])] + [(512, 640, 20)]


def _around(*boundaries: int) -> list[int]:
    """``b - 1``, ``b`` and ``b + 1`` of each boundary (at least one row), sorted, once each."""
    return sorted({m for b in boundaries for m in (b - 1, b, b + 1) if m >= 1})


FORWARD, GRAD_X = 0, 1
# Each boundary: (its row count b, the path it splits, whether the lower path takes b itself: ``..._MAX_ROWS``, or
# the upper one takes it: ``..._MIN_ROWS``). Boundaries that share a row count are told apart by the path they split.
BOUNDARIES = {
    "GEMV_MAX_ROWS (forward)": (kernels.GEMV_MAX_ROWS, FORWARD, True),
    "GEMV_MAX_ROWS (grad-x)": (kernels.GEMV_MAX_ROWS, GRAD_X, True),
    "MMA_MAX_ROWS": (triton_mma_forward.MMA_MAX_ROWS, FORWARD, True),
    "GRAD_X_FUSED_ROWS": (kernels.GRAD_X_FUSED_ROWS, GRAD_X, True),
    "WGMMA_GRAD_X_MAX_ROWS": (kernels.WGMMA_GRAD_X_MAX_ROWS, GRAD_X, True),
    "TWO_STEP_MIN_ROWS": (kernels.TWO_STEP_MIN_ROWS, FORWARD, False),
    "WGMMA_MAX_ROWS": (kernels.WGMMA_MAX_ROWS, FORWARD, True),
    "DECODE_GEMM_ROWS[0]": (kernels.DECODE_GEMM_ROWS[0], FORWARD, False),
    "DECODE_GEMM_SMALL_LAYER_MAX_ROWS": (kernels.DECODE_GEMM_SMALL_LAYER_MAX_ROWS, FORWARD, True),
}
FORWARD_ROWS = _around(1, *(rows for rows, _, _ in BOUNDARIES.values()))
DECODE_BOUNDARIES = {"TILED_MMA_MIN_ROWS": (triton_tiled_mma.TILED_MMA_MIN_ROWS, FORWARD, False),
                     "TILED_MMA_MAX_ROWS": (triton_tiled_mma.TILED_MMA_MAX_ROWS, FORWARD, True)}
# The tiled kernel also compiles per column tile of 8 rows (launch, unrolling, where it loads the fragments).
DECODE_ROWS = _around(1, *(rows for rows, _, _ in DECODE_BOUNDARIES.values()),
                      *(8 * tiles for tiles in triton_tiled_mma.TILED_MMA_LAUNCHES))
# 256: the update's hook rows per step double above it (``update_kernels._tiles``).
UPDATE_ROWS = _around(1, update_kernels.WGMMA_UPDATE_MIN_ROWS, 256)


def _name(module, function: str) -> str:
    """``module.function`` below ``ternary.kernels`` (``linear.triton.forward_mma``, ``update.triton.hook_planes``)."""
    return f"{module.__name__.removeprefix('ternary.kernels.')}.{function}"


# The kernels' entry points the dispatch picks among, recorded by :func:`taken`.
ENTRY_POINTS = {
    kernels: ("forward_table_gemv", "forward_gemv", "forward_mma", "forward_wgmma", "forward_fused",
              "forward_two_step", "grad_x_gemv", "grad_x_wgmma", "grad_x_fused", "grad_x_two_step"),
    triton_decode_gemm: ("forward", "grad_x"),
    triton_lut_gemv: ("lut_gemv",), triton_tiled_gemv: ("tiled_gemv",), triton_tiled_mma: ("tiled_mma",),
    triton_wgmma_ws: ("ws_update",), triton_wgmma_wide: ("wide_update",), update_kernels: ("hook_planes",),
}
# Reached only by layers of DECODE_GEMM_GRAD_X_MIN_WEIGHTS (2^27) weights (the wide update, by WIDE_MIN_ROWS hook
# rows, is not swept either).
NOT_SWEPT = {_name(triton_decode_gemm, "grad_x")}


@pytest.fixture
def taken(monkeypatch) -> list[str]:
    """The entry points of ``ENTRY_POINTS`` called since the list was last cleared, in call order, and
    ``planes`` where a two-step call decoded in digit-plane order (``update.triton.hook_planes`` marks the Triton
    update)."""
    log: list[str] = []

    def recorded(name, function):
        def call(*args, **kwargs):
            log.append(name)
            return function(*args, **kwargs)
        return call

    for module, functions in ENTRY_POINTS.items():
        for function in functions:
            monkeypatch.setattr(module, function, recorded(_name(module, function), getattr(module, function)))
    plane_order = kernels._plane_order

    def planes(*args, **kwargs):
        chosen = plane_order(*args, **kwargs)
        if chosen:
            log.append("planes")
        return chosen

    monkeypatch.setattr(kernels, "_plane_order", planes)
    return log


@pytest.fixture(autouse=True)
def full_precision_products(monkeypatch):
    """cuBLAS may add split-K partial sums in bf16 where torch allows it (its default, which ``F.linear`` gets as
    well): the bf16 two-step paths then round more than twice. The sweep checks the rounding of the paths
    themselves, so it turns that off, and TF32 too (fp16 runs its two-step product in fp32); with torch's default
    the RMS budgets still hold (:func:`test_bf16_sweep_keeps_the_rms_budget_with_reduced_precision_sums`)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _layer(n: int, k: int, g: int) -> LinearState:
    """A random layer whose exponents differ from group to group (three either side of the initial one) and
    whose bias is about as large as the outputs (``LinearState.random`` starts with one exponent, no bias)."""
    gen = torch.Generator().manual_seed(n * 7 + k + g)
    state = LinearState.random(k, n, group_size=g, bias=True, generator=gen, device=DEVICE)
    exponents = state.E + torch.randint(-3, 4, state.E.shape, generator=gen, dtype=torch.int8).to(DEVICE)
    one = 2**state.bias_frac_bits
    bias = torch.randint(-one, one + 1, (n,), generator=gen, dtype=torch.int32).to(DEVICE)
    return attrs.evolve(state, E=exponents, bias=bias)


def _miss(actual: torch.Tensor, expected: torch.Tensor, product: torch.Tensor, magnitude: torch.Tensor,
          dtype: torch.dtype, elementwise: bool) -> str | None:
    """Why ``actual`` misses the float64 ``expected`` (``product`` the same before the bias, ``magnitude`` the
    sum of the magnitudes of its terms): its relative RMS error, or (``elementwise``) the outputs past their
    rounding bound; or None."""
    error = actual.double() - expected
    relative = float(error.norm() / expected.norm().clamp_min(1e-300))
    if not relative <= BUDGETS[dtype]:
        return f"error {relative:.2e}"
    if not elementwise:
        return None
    bound = (2 * U[dtype] * torch.maximum(expected.abs(), product.abs()) + ACCUMULATION * magnitude
             + torch.finfo(dtype).smallest_normal * U[dtype])
    past = error.abs() > bound
    if bool(past.any()):
        first = [int(i) for i in past.nonzero()[0]]
        return f"{int(past.sum())} outputs past their rounding bound, the first at {first}"
    return None


def _sweep(layer: tuple[int, int, int], dtype: torch.dtype, rows: list[int], decode: bool, log: list[str] | None,
           paths: dict, elementwise: bool = True) -> list[str]:
    """One line per row count whose output (or ``grad_x``) misses its bounds or has the wrong dtype / shape; the
    entry points each call reached (``log``: :func:`taken`, or None) go to ``paths[(layer, dtype, m)]`` as
    ``(forward, grad_x)`` tuples."""
    state = _layer(*layer)
    weights = reference.dequantize(state.T_packed, state.E, in_features=state.in_features,
                                   group_size=state.group_size).double()
    magnitudes = weights.abs()  # for every row count's bound, formed once
    bias = state.bias.double() * 2.0 ** -state.bias_frac_bits
    decoded = DecodeLinearState.from_layer(state) if decode else None
    gen = torch.Generator().manual_seed(sum(layer))
    failures = []
    for m in rows:
        x = torch.randn(m, state.in_features, generator=gen).to(DEVICE, dtype)
        if log is not None:
            log.clear()
        if decode:
            with torch.no_grad():
                y = linear(decoded, x, backend="triton")
        else:
            x.requires_grad_(True)
            y = linear(state, x, backend="triton")
        forward_path = tuple(dict.fromkeys(log or ()))
        if y.dtype != dtype or y.shape != (m, state.out_features):
            failures.append(f"M={m}: output {y.dtype} {list(y.shape)}")
            continue
        x64 = x.detach().double()
        product = x64 @ weights.T
        miss = _miss(y.detach(), product + bias, product, x64.abs() @ magnitudes.T, dtype, elementwise)
        if miss:
            failures.append(f"M={m}: forward {miss}")
        grad_path = ()
        if not decode:
            grad_y = torch.randn(m, state.out_features, generator=gen).to(DEVICE, dtype)
            if log is not None:
                log.clear()
            (grad_x,) = torch.autograd.grad(y, x, grad_y)
            grad_path = tuple(dict.fromkeys(log or ()))
            g64 = grad_y.double()
            product = g64 @ weights
            magnitude = g64.abs() @ magnitudes
            same_dtype = grad_x.dtype == dtype
            miss = _miss(grad_x, product, product, magnitude, dtype, elementwise) if same_dtype else str(grad_x.dtype)
            if miss:
                failures.append(f"M={m}: grad_x {miss}")
        paths[(layer, dtype, m)] = (forward_path, grad_path)
    return [f"{layer} {dtype} {line}" for line in failures]


def _uncrossed(boundaries: dict[str, tuple[int, int, bool]], paths: dict) -> list[str]:
    """The boundaries (``BOUNDARIES``' form) at which no layer and dtype of ``paths`` takes one path at the last row
    count below and another at the first above, on the side the boundary splits."""
    keys = {(layer, dtype) for layer, dtype, _ in paths}

    def splits(rows: int, side: int, up_to: bool) -> bool:
        low = rows if up_to else rows - 1
        return any((*key, low) in paths and (*key, low + 1) in paths
                   and paths[(*key, low)][side] != paths[(*key, low + 1)][side] for key in keys)

    return [name for name, boundary in boundaries.items() if not splits(*boundary)]


def _planes_end(paths: dict, side: int) -> bool:
    """Whether some layer and dtype decodes in digit-plane order on ``side`` at the row count before
    :func:`_plane_end` and not at it."""
    for layer, dtype, m in paths:
        if m == _plane_end(layer[0]) - 1 and (layer, dtype, m + 1) in paths:
            if "planes" in paths[(layer, dtype, m)][side] and "planes" not in paths[(layer, dtype, m + 1)][side]:
                return True
    return False


def _never_taken(paths: dict, names: set[str]) -> set[str]:
    """The entry points of ``names`` that no recorded call reached."""
    reached = {name for forward, grad in paths.values() for name in forward + grad}
    return names - reached


def _plane_end(n: int) -> int:
    """The first row count at which the two-step path of an ``n``-row layer stops decoding in digit-plane order
    (planes while ``M * PLANES_ROWS_PER_OUTPUT < N``, where the layer takes them at all)."""
    return -(-n // kernels.PLANES_ROWS_PER_OUTPUT)


def _rows_with_planes(n: int) -> list[int]:
    """``FORWARD_ROWS`` and the rows around the digit-plane boundary of an ``n``-row layer."""
    return sorted(set(FORWARD_ROWS) | set(_around(_plane_end(n))))


# The interpreter's dispatch (no Gluon kernels; CI runs it): the GEMV, the fused kernels and the two-step path with
# and without digit planes, on one layer wide enough for the planes (``plane_block()`` is 16 bytes there).
INTERPRETER_LAYER = (600, 400, 15)
INTERPRETER_BOUNDARIES = {name: BOUNDARIES[name] for name in ("GEMV_MAX_ROWS (forward)", "GEMV_MAX_ROWS (grad-x)",
                                                              "GRAD_X_FUSED_ROWS", "TWO_STEP_MIN_ROWS")}


def test_sweeps_hold_each_boundary_and_its_neighbours():
    assert all({b - 1, b, b + 1} <= set(FORWARD_ROWS) for b, _, _ in BOUNDARIES.values())
    assert all({8 * tiles, 8 * tiles + 1} <= set(DECODE_ROWS) for tiles in triton_tiled_mma.TILED_MMA_LAUNCHES)
    assert {update_kernels.WGMMA_UPDATE_MIN_ROWS - 1, update_kernels.WGMMA_UPDATE_MIN_ROWS} <= set(UPDATE_ROWS)
    for n, _, _ in LAYERS:
        assert {_plane_end(n) - 1, _plane_end(n)} <= set(_rows_with_planes(n)), n
    assert 1 in DECODE_ROWS


def test_the_sweep_names_the_row_counts_a_fault_hits(monkeypatch):
    """The checker itself: a forward that is 0.1 % off in one middle-sized output at 15 rows (below the RMS
    budget, past the output's rounding bound), drops the bias at 17 rows, and a grad-x that loses its last input
    column at 16 rows are reported at those row counts and nowhere else."""
    forward, grad_x = kernels.forward, kernels.grad_x

    def faulty_forward(x, T_packed, E, bias, **kwargs):
        y = forward(x, T_packed, E, None if x.shape[0] == 17 else bias, **kwargs)
        if x.shape[0] == 15:
            flat = y.view(-1)
            flat[flat.abs().argsort()[flat.numel() // 2]] *= 1.001
        return y

    def faulty_grad_x(grad_y, *args, **kwargs):
        out = grad_x(grad_y, *args, **kwargs)
        return torch.cat([out[:, :-1], out[:, -1:] * 0], 1) if grad_y.shape[0] == 16 else out

    monkeypatch.setattr(kernels, "forward", faulty_forward)
    monkeypatch.setattr(kernels, "grad_x", faulty_grad_x)
    failures = _sweep((40, 161, 15), torch.float32, [14, 15, 16, 17], decode=False, log=None, paths={})
    found = [re.search(r"M=(\d+): (\w+)", line).groups() for line in failures]
    assert found == [("15", "forward"), ("16", "grad_x"), ("17", "forward")], failures
    assert "rounding bound" in failures[0], failures


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's paths (the card's sweep is the test below)")
def test_interpreter_dispatch_matches_float64_across_its_seams(taken):
    """fp32 under the interpreter at the rows around its dispatch's boundaries: within the bounds, each boundary
    changing the path, each of its entry points reached, the digit planes ending on both sides (about 95 s on two
    cores)."""
    paths: dict = {}
    rows = _around(*(b for b, _, _ in INTERPRETER_BOUNDARIES.values()), _plane_end(INTERPRETER_LAYER[0]))
    failures = _sweep(INTERPRETER_LAYER, torch.float32, rows, False, taken, paths)
    assert not failures, "; ".join(failures)
    assert not _uncrossed(INTERPRETER_BOUNDARIES, paths), _uncrossed(INTERPRETER_BOUNDARIES, paths)
    assert _planes_end(paths, FORWARD) and _planes_end(paths, GRAD_X), paths
    points = {_name(kernels, f) for f in ("forward_gemv", "forward_fused", "forward_two_step", "grad_x_gemv",
                                          "grad_x_fused", "grad_x_two_step")}
    assert not _never_taken(paths, points), _never_taken(paths, points)


@GPU_ONLY
def test_linear_and_grad_x_match_float64_across_the_dispatch(taken):
    """Every layer and dtype at every boundary's rows: within the bounds, each boundary changing the path
    somewhere, every forward and grad-x entry point reached."""
    paths: dict = {}
    failures = [line for layer in LAYERS for dtype in DTYPES
                for line in _sweep(layer, dtype, _rows_with_planes(layer[0]), False, taken, paths)]
    assert not failures, "; ".join(failures)
    assert not _uncrossed(BOUNDARIES, paths), _uncrossed(BOUNDARIES, paths)
    assert _planes_end(paths, FORWARD) and _planes_end(paths, GRAD_X), "a side never ends its digit planes"
    linear_points = {_name(module, f) for module in (kernels, triton_decode_gemm) for f in ENTRY_POINTS[module]}
    linear_points -= NOT_SWEPT
    assert not _never_taken(paths, linear_points), _never_taken(paths, linear_points)


@GPU_ONLY
def test_bf16_sweep_keeps_the_rms_budget_with_reduced_precision_sums(monkeypatch):
    """With torch's default (cuBLAS may add split-K partial sums in bf16, as it may for ``F.linear``) single
    outputs of the paths that call cuBLAS round more than twice, but the RMS budget holds."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction", True)
    rows = [m for m in FORWARD_ROWS if m > kernels.GRAD_X_FUSED_ROWS]
    failures = [line for layer in LAYERS
                for line in _sweep(layer, torch.bfloat16, rows, False, None, {}, elementwise=False)]
    assert not failures, "; ".join(failures)


@GPU_ONLY
def test_decode_state_forward_matches_float64_across_the_dispatch(taken):
    """A ``DecodeLinearState`` at every column-tile boundary, bf16 and fp32 (which runs on ``T_packed``): within
    the bounds, both boundaries changing the path, all three decode-layout kernels reached."""
    paths: dict = {}
    failures = [line for layer in DECODE_LAYERS for dtype in (torch.bfloat16, torch.float32)
                for line in _sweep(layer, dtype, DECODE_ROWS, True, taken, paths)]
    assert not failures, "; ".join(failures)
    assert not _uncrossed(DECODE_BOUNDARIES, paths), _uncrossed(DECODE_BOUNDARIES, paths)
    decode_points = {_name(module, f) for module in (triton_lut_gemv, triton_tiled_gemv, triton_tiled_mma)
                     for f in ENTRY_POINTS[module]}
    assert not _never_taken(paths, decode_points), _never_taken(paths, decode_points)


@GPU_ONLY
@pytest.mark.parametrize("n,k,g,wgmma", [(257, 1002, 40, True), (130, 999, 40, False), (130, 1000, 15, False)],
                         ids=["even_k", "odd_k", "groups_straddle_blocks"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_update_matches_reference_bit_for_bit_across_the_dispatch(n, k, g, wgmma, dtype, taken):
    """The update at its hook-row boundaries, bit for bit. bf16 hooks change to the wgmma kernel at
    ``WGMMA_UPDATE_MIN_ROWS`` where it takes the layer (even ``K``: 16-bit accumulator pieces; groups inside its
    64-byte blocks); everything else stays on the Triton vote kernel."""
    gen = torch.Generator().manual_seed(n + k)
    kernels_taken = {}
    for m in UPDATE_ROWS:
        state = layer_state(n, k, g, gen)
        x, grad_y = hooks(m, n, k, gen, dtype)
        taken.clear()
        expected, actual = run_both(state, x, grad_y, rule(k, g))
        kernels_taken[m] = tuple(dict.fromkeys(taken))
        assert_bitwise(expected, actual)
    on_wgmma = {m for m, path in kernels_taken.items() if _name(triton_wgmma_ws, "ws_update") in path}
    on_vote = {m for m, path in kernels_taken.items() if _name(update_kernels, "hook_planes") in path}
    if wgmma and dtype == torch.bfloat16:
        assert on_wgmma == {m for m in UPDATE_ROWS if m >= update_kernels.WGMMA_UPDATE_MIN_ROWS}, kernels_taken
    else:
        assert not on_wgmma, kernels_taken
    assert on_vote == set(UPDATE_ROWS) - on_wgmma, kernels_taken
