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
from ternary.kernels.linear.tilelang_decode import poison_corrupt, scale_bits, trit_digit, weight_bits
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
