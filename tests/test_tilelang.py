"""TileLang backend on CPU: the integer decode formula the kernels use (exhaustively),
that each program lowers and compiles for sm_90a with tensor-core instructions, the
prewarm command and the launchers' input checks. Running the kernels needs a GPU: see
``benchmarks/tilelang_check.py`` (correctness over the whole int8 E range, training run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ternary.kernels.linear import tilelang as backend
from ternary.kernels.linear.tilelang_decode import (
    FP32_EXPONENT_BIAS,
    SPLIT_EXACT_MIN_EXPONENT,
    SPLIT_PEAK_EXPONENT,
    float32_power_bits,
    poison_corrupt,
    scale_bits,
    split_row_shift,
    trit_digit,
    weight_bits,
)
from ternary.kernels.registry import installed
from ternary.state.packing import MAX_VALID_BYTE, byte_to_trits_table

needs_tilelang = pytest.mark.skipif(not installed("tilelang"), reason="tilelang is not installed (pip install tilelang==0.1.15)")
ARCH = "sm_90a"


def bits_to_float(bits: torch.Tensor) -> torch.Tensor:
    """int bf16 bit patterns (0..65535) -> float32 values."""
    signed = torch.where(bits >= 2**15, bits - 2**16, bits).to(torch.int16)
    return signed.view(torch.bfloat16).to(torch.float32)


def decode(bytes_: torch.Tensor, positions: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    """The kernels' decode, run on torch integers."""
    byte, magnitude = poison_corrupt(bytes_, scale_bits(exponents, torch.where), torch.where)
    return bits_to_float(weight_bits(trit_digit(byte, positions, torch.where), magnitude, torch.where))


def test_decode_is_exact_for_every_byte_position_and_int8_exponent() -> None:
    byte = torch.arange(MAX_VALID_BYTE + 1, dtype=torch.int32).view(-1, 1, 1)
    position = torch.arange(5, dtype=torch.int32).view(1, -1, 1)
    exponent = torch.arange(-128, 128, dtype=torch.int32).view(1, 1, -1)
    got = decode(byte, position, exponent)
    trits = byte_to_trits_table()[: MAX_VALID_BYTE + 1].to(torch.float32).view(-1, 5, 1)
    want = torch.ldexp(trits, exponent.to(torch.float32))  # exact, subnormal 2^-127 and 2^-128 included
    assert got.shape == (243, 5, 256)
    assert torch.equal(got, want)
    assert not got.isnan().any() and (got[:, :, -1].abs().max() == 2.0**127)
    assert got[:, :, 0].abs().max() == 2.0**-128


def test_corrupt_bytes_decode_to_nan_at_every_position() -> None:
    corrupt = torch.arange(MAX_VALID_BYTE + 1, 256, dtype=torch.int32).view(-1, 1, 1)
    got = decode(corrupt, torch.arange(5, dtype=torch.int32).view(1, -1, 1), torch.tensor([[[-128, 0, 127]]]))
    assert got.isnan().all()


def split_fp32(x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The fp32 programs' split on torch: ``(x * 2^shift, [hi, mid, lo])`` (no FTZ on either side)."""
    value = x * float32_power_bits(shift).view(torch.float32)[:, None]
    hi = value.to(torch.bfloat16)
    rest = value - hi.float()
    mid = rest.to(torch.bfloat16)
    lo = (rest - mid.float()).to(torch.bfloat16)
    return value, [hi, mid, lo]


def test_split_row_shift_puts_small_rows_at_the_target_and_leaves_the_rest() -> None:
    peaks = torch.tensor([0.0, 1.0, 3e38, 2.0**127, 2.0**-40, 2.0**-41, 2.0**-119, 2.0**-149, 2.0**-126,
                          float("inf"), float("nan")])
    shift = backend.row_shifts(peaks.view(-1, 1))
    assert shift.dtype == torch.int32
    assert shift.tolist() == [0, 0, -1, -1, 0, 1, 79, 109, 86, 0, 0]
    scaled = peaks[:-2] * float32_power_bits(shift[:-2]).view(torch.float32)
    small = (peaks[:-2] < 2.0**SPLIT_PEAK_EXPONENT) & (peaks[:-2] > 0)
    assert ((scaled[small] >= 2.0**SPLIT_PEAK_EXPONENT) & (scaled[small] < 2.0**(SPLIT_PEAK_EXPONENT + 1))).all()
    exponents = torch.arange(-300, 300)
    assert torch.equal(split_row_shift(exponents, torch.where).clamp(-1, 109), split_row_shift(exponents, torch.where))
    assert (split_row_shift(exponents, torch.where)[exponents > FP32_EXPONENT_BIAS] == -1).all()


def test_fp32_split_is_exact_after_the_row_shift_at_every_magnitude(gen) -> None:
    """Rows at every fp32 magnitude (2^-149 .. 2^127, subnormal inputs included): after the row
    shift the three bf16 pieces add up to the scaled row exactly, for every element within 2^70
    of its row's peak. Without the shift, rows near 2^-120 lose bits (the GPU check's fp32
    failure in the E band 112..127)."""
    magnitudes = torch.arange(-149, 127, 3, dtype=torch.float64)
    x = torch.randn(len(magnitudes), 333, generator=gen, dtype=torch.float64) * torch.exp2(magnitudes)[:, None]
    x = x.float()
    x[-1, 0] = torch.finfo(torch.float32).max  # bf16 rounding alone would make this Inf
    shift = backend.row_shifts(x)
    value, pieces = split_fp32(x, shift)
    assert torch.equal(value.double(), x.double() * torch.exp2(shift.double())[:, None])  # the scaling is exact
    total = sum(piece.double() for piece in pieces)
    assert all(piece.isfinite().all() for piece in pieces)
    peak = x.abs().amax(dim=1, keepdim=True)
    in_domain = x.abs() >= peak * 2.0**-70
    assert torch.equal(total[in_domain], value.double()[in_domain])
    assert (value.abs()[in_domain & (x != 0)] >= 2.0**SPLIT_EXACT_MIN_EXPONENT).all()
    _, unshifted = split_fp32(x, torch.zeros_like(shift))
    lost = sum(piece.double() for piece in unshifted) != x.double()
    assert lost[(magnitudes < -115) & (magnitudes > -140)].any(dim=1).all()


def test_fp32_split_gemm_meets_the_budget_in_the_band_that_failed(gen) -> None:
    """Emulates the GPU check's failing case (fp32, E in 112..127, x near 2^-119): exact products
    of the pieces summed in float64, rounded to fp32 once, against the float64 truth."""
    m, n, k = 65, 130, 333
    x = (torch.randn(m, k, generator=gen) * 2.0**-119).float()
    exponents = torch.randint(112, 128, (n, k), generator=gen).double()
    w = torch.randint(-1, 2, (n, k), generator=gen).double() * torch.exp2(exponents)
    truth = (x.double() @ w.T).float().double()

    def worst(shift: torch.Tensor) -> float:
        _, pieces = split_fp32(x, shift)
        acc = (sum(piece.double() for piece in pieces) @ w.T).float()
        y = (acc * float32_power_bits(-shift).view(torch.float32)[:, None]).double()
        return float(((y - truth).norm(dim=1) / truth.norm(dim=1)).max())

    assert worst(torch.zeros(m, dtype=torch.int32)) > 2e-5  # what the GPU measured (2.3-2.5e-5)
    assert worst(backend.row_shifts(x)) <= 1e-7


def test_buckets_and_tiles() -> None:
    assert [backend.m_bucket(m) for m in (1, 64, 65, 8192)] == ["small", "small", "large", "large"]
    for op in backend.OPS:
        for dtype in backend.DTYPE_NAMES.values():
            for bucket in backend.M_BUCKETS:
                tile = backend.tile_for(backend.KernelSpec(op, 8, 8, 40, dtype, False, 0, bucket, ARCH))
                assert tile.block_k % 80 == 0 and tile.block_m % 64 == 0  # whole bytes; wgmma rows


def test_launchers_reject_cpu_tensors_and_bad_state(gen) -> None:
    from ternary.state.linear_state import LinearState

    layer = LinearState.random(37, 6, bias=True, generator=gen)
    kw = dict(in_features=37, group_size=layer.group_size)
    with pytest.raises(ValueError, match="must be on a CUDA device"):
        backend.forward(torch.randn(2, 37), layer.T_packed, layer.E, layer.bias, bias_frac_bits=16, **kw)
    with pytest.raises(ValueError, match=r"x has shape \[2, 36\]; expected \[M, 37\]"):
        backend.forward(torch.randn(2, 36), layer.T_packed, layer.E, None, bias_frac_bits=16, **kw)
    with pytest.raises(ValueError, match=r"grad_y has shape \[2, 5\]; expected \[M, 6\]"):
        backend.grad_x(torch.randn(2, 5), layer.T_packed, layer.E, **kw)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One TileLang cache for this module (compiles are shared between tests)."""
    path = tmp_path_factory.mktemp("tilelang-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("TILELANG_CACHE_DIR", str(path))
    yield path
    patch.undo()


def kernel_source(spec: backend.KernelSpec) -> str:
    return backend.compiled(spec).get_kernel_source()


def wgmma_operands(source: str) -> list[tuple[str, str]]:
    """``(A, B)`` operand types of every Hopper wgmma the kernel issues."""
    return re.findall(r"wgmma_ss<tl::DataType::(\w+), tl::DataType::(\w+)", source)


@needs_tilelang
def test_bf16_forward_compiles_to_wgmma_with_tma(cache_dir) -> None:
    spec = backend.KernelSpec("forward", 64, 160, 40, "bfloat16", True, 16, "large", ARCH)
    source = kernel_source(spec)
    operands = wgmma_operands(source)
    assert operands and set(operands) == {("kBFloat16", "kBFloat16")}
    assert "tma_load" in source  # activations arrive by TMA; weights are decoded by producer warps
    assert "exp2" not in source and "half_t" not in source  # scales are built from bits, never fp16


@needs_tilelang
def test_fp32_grad_x_splits_into_three_bf16_gemms(cache_dir) -> None:
    spec = backend.KernelSpec("grad_x", 19, 37, 40, "float32", False, 0, "small", ARCH)
    source = kernel_source(spec)
    operands = wgmma_operands(source)
    assert len(operands) >= 3 and set(operands) == {("kBFloat16", "kBFloat16")}  # hi, mid, lo: no tf32
    assert "tma_load" not in source  # split programs use the cp.async pipeline (see tilelang_programs)
    # rows are scaled by 2^Shift before the split and by 2^-Shift after, powers of two built from bits
    assert "const int* __restrict__ Shift" in source
    assert re.search(r"\(\w+ \+ 127\) << 23", source) and re.search(r"\(127 - \w+\[.*\]\) << 23", source)


@needs_tilelang
def test_prewarm_fills_the_cache_and_a_second_run_adds_nothing(cache_dir, tmp_path, monkeypatch) -> None:
    from apps.cli import main

    kernels_dir = tmp_path / "cache"
    args = ["prewarm", "--shape", "1,8,45,5", "--dtype", "bfloat16", "--cache-dir", str(kernels_dir), "--json"]
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(kernels_dir))  # restored after the test
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert [k["kernel"] for k in report["kernels"]] == ["forward+bias N=8 K=45 G=5 bfloat16 M-small sm_90a"]
    written = sorted(p for p in kernels_dir.rglob("*") if p.is_file() and ".staging" not in p.parts)
    assert any(p.suffix in (".so", ".cubin") for p in written)
    monkeypatch.setattr(backend, "_KERNELS", {})  # a fresh process: only the disk cache is left
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert sorted(p for p in kernels_dir.rglob("*") if p.is_file() and ".staging" not in p.parts) == written


@needs_tilelang
@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --preset NAME or at least one --shape"),
        (["--shape", "1,2,3"], "expected four positive integers M,N,K,G"),
        (["--shape", "1,2,3,7"], "G=7 must be a multiple of 5"),
        (["--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_prewarm_bad_arguments_name_the_flag(args, message) -> None:
    from apps.cli import main

    result = CliRunner().invoke(main, ["prewarm", *args])
    assert result.exit_code != 0 and message in result.output


def test_prewarm_without_tilelang_says_so(monkeypatch) -> None:
    from apps.cli import main
    from ternary.kernels import registry

    monkeypatch.setattr(registry, "installed", lambda name: name != "tilelang")
    result = CliRunner().invoke(main, ["prewarm", "--shape", "1,8,45,5"])
    assert result.exit_code != 0 and "tilelang is not installed" in result.output


def test_preset_specs_cover_every_layer_for_forward_and_training() -> None:
    import torch.utils._pytree as pytree

    from ternary.kernels import prewarm as warm
    from ternary.model.config import preset
    from ternary.model.network import init_model
    from ternary.state.linear_state import LinearState

    layers = warm.model_layers("tiny", rows=8 * 64)
    state = init_model(preset("tiny"))
    leaves = [s for s in pytree.tree_leaves(state, is_leaf=lambda n: isinstance(n, LinearState))
              if isinstance(s, LinearState)]
    assert {(s.out_features, s.in_features) for s in leaves} == {(l.out_features, l.in_features) for l, _ in layers}
    assert all(buckets == backend.M_BUCKETS for _, buckets in layers)
    inference = warm.specs_for(layers, ("bfloat16",), training=False, arch=ARCH)
    training = warm.specs_for(layers, ("bfloat16",), training=True, arch=ARCH)
    assert {s.op for s in inference} == {"forward"}
    assert {s.op for s in training} == {"forward", "grad_x"} and set(inference) <= set(training)
    shapes = {(s.out_features, s.in_features, s.bucket) for s in inference}
    assert {(s.out_features, s.in_features, s.bucket) for s in training if s.op == "grad_x"} == shapes
    assert warm.model_layers("tiny", rows=16)[0][1] == ("small",)


# ----------------------------------------------------------------------------- the GPU run's pieces on CPU


def test_bench_kernels_options() -> None:
    from benchmarks.kernels import BenchConfig, parse_args

    config, out = parse_args(["--out", "x", "--shapes", "4096x4096,16384x16384", "--rows", "1,16,128,2048,8192",
                              "--update-rows", "none", "--backends", "auto,tilelang,triton", "--no-gemlite"])
    assert out == Path("x") and config.update_rows == () and not config.gemlite and config.compile_times
    assert config.shapes == ((4096, 4096), (16384, 16384)) and config.rows == (1, 16, 128, 2048, 8192)
    assert config.backends == ("auto", "tilelang", "triton")
    assert BenchConfig().backends == ("auto", "triton", "tilelang")  # `ternary bench kernels` gets all three rows
    with pytest.raises(SystemExit):
        parse_args(["--backends", "auto,cuda"])


def fake_kernels_report(compile_times: dict | None = None) -> dict:
    rows = []
    for m in (1, 2048):
        rows += [
            dict(op="forward", N=64, K=80, M=m, impl="bf16_cublas", us=10.0),
            dict(op="forward", N=64, K=80, M=m, impl="auto", us=11.0, picks="triton", rel_err_vs_naive=0.0),
            dict(op="forward", N=64, K=80, M=m, impl="triton", us=11.0, rel_err_vs_naive=0.0),
            dict(op="forward", N=64, K=80, M=m, impl="tilelang", us=40.0, rel_err_vs_naive=0.5),
            dict(op="grad_x", N=64, K=80, M=m, impl="bf16_cublas", us=10.0),
            dict(op="grad_x", N=64, K=80, M=m, impl="tilelang", error="RuntimeError('boom')"),
        ]
    report = dict(environment=dict(device="fake GPU", torch="2", triton="3"), rows=rows)
    if compile_times:
        report["compile_times"] = compile_times
    return report


def test_gpu_run_summary_from_json_files(tmp_path) -> None:
    """What benchmarks/tilelang_gpu.sh prints last, from the files the GPU run writes."""
    from benchmarks.kernels import format_table
    from benchmarks.tilelang_check import summarize

    times = dict(kernels=[dict(kernel="forward N=64 K=80 G=40 bfloat16 M-small sm_90a", cold_s=9.5, cached_s=0.05)],
                 cold=dict(total_kernel_seconds=9.5, wall_seconds=10.0, process_wall_seconds=14.0),
                 cached=dict(total_kernel_seconds=0.05, wall_seconds=1.0, process_wall_seconds=4.0))
    report = fake_kernels_report(times)
    table = format_table(report)
    assert "auto[triton]=11.0 (0.91x)" in table and "tilelang=40.0 (0.25x) WRONG?" in table
    assert "tilelang=ERROR" in table and "cold 10.0 s wall" in table
    (tmp_path / "kernels.json").write_text(json.dumps(report))
    case = dict(dtype="float32", band=[112, 127], shape=[65, 130, 333, 40], forward_err=1e-7, reference_err=1e-7,
                grad_x_err=2e-7, finite_pattern_ok=True, ok=True)
    check = dict(device="fake GPU", torch="2", tilelang="0.1.15", precompile=12.0, correctness=[case],
                 corrupt_byte_poisons=True,
                 fp32_domain=[dict(case="small rows", **case),
                              dict(case="mixed row, outside the domain (not budgeted)",
                                   **{**case, "forward_err": 2e-5})])
    (tmp_path / "tilelang_check.json").write_text(json.dumps(check))
    text = summarize(tmp_path)
    assert "float32   cases   1" in text and "correctness: 1 ok, 0 failing" in text
    assert "fp32 domain, small rows" in text and "recorded" in text
    lines = text.splitlines()
    auto_line = next(line for line in lines if line.startswith("forward") and " 2048 " in line)
    assert "[triton] 11.0 (0.91x)" in auto_line and "40.0 (0.25x)!" in auto_line
    assert any(line.startswith("grad_x") and "ERROR" in line for line in lines)
    assert lines[-1].strip().startswith("forward N=64 K=80") and "9.50" in lines[-1]


@needs_tilelang
def test_bench_compile_times_cold_then_cached(tmp_path) -> None:
    """The benchmark's compile table: ternary prewarm twice in fresh processes on one empty cache."""
    import os

    from benchmarks.kernels import BenchConfig, compile_times

    config = BenchConfig(shapes=((8, 45),), rows=(1,), update_rows=(), backends=("tilelang",))
    before = os.environ.get("TILELANG_CACHE_DIR")
    try:
        times = compile_times(config, tmp_path / "cold", arch=ARCH)
        assert os.environ["TILELANG_CACHE_DIR"] == str((tmp_path / "cold").resolve())
    finally:
        if before is None:
            os.environ.pop("TILELANG_CACHE_DIR", None)
        else:
            os.environ["TILELANG_CACHE_DIR"] = before
    assert times["shapes"] == ["1,8,45,40"]
    assert [k["kernel"] for k in times["kernels"]] == [f"{op} N=8 K=45 G=40 bfloat16 M-small {ARCH}"
                                                        for op in ("forward", "grad_x")]
    assert all(k["cached_s"] is not None and k["cached_s"] < k["cold_s"] for k in times["kernels"])
    assert times["cached"]["wall_seconds"] < times["cold"]["wall_seconds"]
    with pytest.raises(ValueError, match="not empty"):
        compile_times(config, tmp_path / "cold", arch=ARCH)
