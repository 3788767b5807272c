"""Backend selection and the TileLang finite-check fallback, with availability and
finiteness mocked (runs on CPU: a fake ``tilelang`` linear module stands in for the kernels)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ternary.kernels import registry
from ternary.kernels.linear import bridge, reference
from ternary.kernels.linear.bridge import LinearStatic, TernaryLinearFunction
from ternary.kernels.registry import BackendError, ResolvedBackend, TileLangFallbackWarning
from ternary.state.linear_state import LinearState

CUDA = torch.device("cuda")  # a device object only: nothing runs on it here
ENV = (
    "TERNARY_BACKEND", "ARB_TERNARY_BACKEND", "TERNARY_TILELANG_TRAINING", "ARB_TILELANG_TRAINING",
    "TERNARY_TILELANG_CHECK_FINITE", "ARB_TILELANG_CHECK_FINITE",
)


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(registry, "_TILELANG_DISABLED", False)


def packages(monkeypatch: pytest.MonkeyPatch, *present: str) -> None:
    monkeypatch.setattr(registry, "installed", lambda name: name in present)


# --- resolve ---------------------------------------------------------------------------


@pytest.mark.parametrize("training_var", ["TERNARY_TILELANG_TRAINING", "ARB_TILELANG_TRAINING"])
def test_auto_takes_tilelang_only_outside_training_unless_allowed(monkeypatch, training_var) -> None:
    packages(monkeypatch, "tilelang", "triton")
    monkeypatch.setattr(registry, "AUTO_CUDA_ORDER", ("tilelang", "triton"))
    assert registry.resolve("auto", CUDA, grad_enabled=False) == "tilelang"
    assert registry.resolve("auto", CUDA, grad_enabled=True) == "triton"
    monkeypatch.setenv(training_var, "1")
    assert registry.resolve("auto", CUDA, grad_enabled=True) == "tilelang"


def test_auto_follows_the_measured_order(monkeypatch) -> None:
    packages(monkeypatch, "tilelang", "triton")
    first, second = registry.AUTO_CUDA_ORDER
    assert registry.resolve("auto", CUDA, grad_enabled=False) == first
    packages(monkeypatch, second)
    assert registry.resolve("auto", CUDA, grad_enabled=False) == second


def test_auto_without_fast_backends_or_on_cpu_is_torch(monkeypatch) -> None:
    packages(monkeypatch, "tilelang")
    assert registry.resolve("auto", CUDA, grad_enabled=True) == "torch"
    assert registry.resolve("auto", torch.device("cpu"), grad_enabled=False) == "torch"
    packages(monkeypatch)
    assert registry.resolve("auto", CUDA, grad_enabled=False) == "torch"


def test_disabled_tilelang_is_skipped_by_auto_but_not_by_a_forced_choice(monkeypatch) -> None:
    packages(monkeypatch, "tilelang")
    assert registry.resolve("auto", CUDA, grad_enabled=False) == "tilelang"
    monkeypatch.setattr(registry, "_TILELANG_DISABLED", True)
    assert registry.resolve("auto", CUDA, grad_enabled=False) == "torch"
    assert registry.resolve("tilelang", CUDA, grad_enabled=False) == "tilelang"


def test_resolved_backend_records_who_chose(monkeypatch) -> None:
    packages(monkeypatch, "tilelang")
    auto = registry.resolve(None, CUDA, grad_enabled=False)
    forced = registry.resolve("tilelang", CUDA, grad_enabled=False)
    assert (auto, auto.automatic) == ("tilelang", True)
    assert (forced, forced.automatic) == ("tilelang", False)
    monkeypatch.setenv("ARB_TERNARY_BACKEND", "tilelang")
    assert registry.resolve(None, CUDA, grad_enabled=False).automatic is False


def test_forced_tilelang_in_training_raises_unless_allowed(monkeypatch) -> None:
    packages(monkeypatch, "tilelang")
    with pytest.raises(BackendError, match="TERNARY_TILELANG_TRAINING=1"):
        registry.resolve("tilelang", CUDA, grad_enabled=True)
    monkeypatch.setenv("ARB_TILELANG_TRAINING", "1")
    assert registry.resolve("tilelang", CUDA, grad_enabled=True) == "tilelang"


def test_forced_tilelang_not_installed_or_not_cuda_raises(monkeypatch) -> None:
    packages(monkeypatch)
    with pytest.raises(BackendError, match="'tilelang' package is not installed"):
        registry.resolve("tilelang", CUDA, grad_enabled=False)
    packages(monkeypatch, "tilelang")
    with pytest.raises(BackendError, match="tilelang needs a CUDA device"):
        registry.resolve("tilelang", torch.device("cpu"), grad_enabled=False)


def test_check_finite_flag_and_alias(monkeypatch) -> None:
    assert registry.check_finite_enabled()
    monkeypatch.setenv("ARB_TILELANG_CHECK_FINITE", "0")
    assert not registry.check_finite_enabled()
    monkeypatch.setenv("TERNARY_TILELANG_CHECK_FINITE", "1")
    assert registry.check_finite_enabled()
    monkeypatch.setenv("TERNARY_TILELANG_CHECK_FINITE", "maybe")
    with pytest.raises(BackendError, match="TERNARY_TILELANG_CHECK_FINITE"):
        registry.check_finite_enabled()


# --- the bridge's finite check and fallback -------------------------------------------------


class FakeTileLang:
    """Stands in for ``ternary.kernels.linear.tilelang``: the reference, optionally poisoned."""

    def __init__(self, poison: bool) -> None:
        self.poison = poison
        self.forward_calls = 0
        self.grad_calls = 0

    def forward(self, x, T_packed, E, bias, **kw):
        self.forward_calls += 1
        y = reference.forward(x, T_packed, E, bias, **kw)
        if self.poison:
            y = y.clone()
            y[-1, 0] = float("nan")
        return y

    def grad_x(self, grad_y, T_packed, E, **kw):
        self.grad_calls += 1
        return reference.grad_x(grad_y, T_packed, E, **kw)


def fake_backends(monkeypatch, poison: bool) -> FakeTileLang:
    fake = FakeTileLang(poison)
    real = registry.implementation
    monkeypatch.setattr(bridge, "implementation", lambda op, name: fake if name == "tilelang" else real(op, name))
    return fake


def layer_and_input(gen: torch.Generator, rows: int = 3) -> tuple[LinearState, torch.Tensor]:
    layer = LinearState.random(37, 6, bias=True, generator=gen)
    return layer, torch.randn(rows, 37, generator=gen)


def run(layer: LinearState, x: torch.Tensor, backend: str) -> torch.Tensor:
    static = LinearStatic(layer.in_features, layer.group_size, layer.bias_frac_bits)
    return TernaryLinearFunction.apply(x, None, layer.T_packed, layer.E, layer.bias, static, backend)


def expected(layer: LinearState, x: torch.Tensor) -> torch.Tensor:
    return reference.forward(x, layer.T_packed, layer.E, layer.bias, in_features=layer.in_features,
                             group_size=layer.group_size, bias_frac_bits=layer.bias_frac_bits)


def test_auto_non_finite_output_falls_back_and_disables_tilelang_once(monkeypatch, gen) -> None:
    fake = fake_backends(monkeypatch, poison=True)
    layer, x = layer_and_input(gen)
    auto = ResolvedBackend("tilelang", automatic=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = run(layer, x, auto)
        second = run(layer, x[:1], auto)
    assert torch.equal(first, expected(layer, x)) and torch.equal(second, expected(layer, x[:1]))
    assert fake.forward_calls == 2
    assert registry.tilelang_disabled()
    fallback_warnings = [w for w in caught if issubclass(w.category, TileLangFallbackWarning)]
    assert len(fallback_warnings) == 1
    assert "'torch'" in str(fallback_warnings[0].message)


def test_after_a_fallback_backward_runs_on_the_fallback(monkeypatch, gen) -> None:
    fake = fake_backends(monkeypatch, poison=True)
    layer, x = layer_and_input(gen, rows=4)
    x.requires_grad_(True)
    grad_y = torch.randn(4, 6, generator=gen)
    with pytest.warns(TileLangFallbackWarning):
        run(layer, x, ResolvedBackend("tilelang", automatic=True)).backward(grad_y)
    assert fake.grad_calls == 0
    want = reference.grad_x(grad_y, layer.T_packed, layer.E, in_features=37, group_size=layer.group_size)
    assert torch.equal(x.grad, want)


def test_forced_tilelang_non_finite_output_raises(monkeypatch, gen) -> None:
    fake_backends(monkeypatch, poison=True)
    layer, x = layer_and_input(gen)
    with pytest.raises(BackendError, match="NaN/Inf.*TERNARY_TILELANG_CHECK_FINITE=0"):
        run(layer, x, ResolvedBackend("tilelang", automatic=False))
    assert not registry.tilelang_disabled()


@pytest.mark.parametrize("automatic", [True, False])
def test_check_switched_off_returns_the_tilelang_output(monkeypatch, gen, automatic) -> None:
    fake_backends(monkeypatch, poison=True)
    monkeypatch.setenv("TERNARY_TILELANG_CHECK_FINITE", "0")
    layer, x = layer_and_input(gen)
    y = run(layer, x, ResolvedBackend("tilelang", automatic=automatic))
    assert torch.isnan(y[-1, 0]) and not registry.tilelang_disabled()


def test_non_finite_input_does_not_blame_tilelang(monkeypatch, gen) -> None:
    fake = fake_backends(monkeypatch, poison=False)
    layer, x = layer_and_input(gen)
    x[1, 5] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TileLangFallbackWarning)
        y = run(layer, x, ResolvedBackend("tilelang", automatic=True))
    assert not torch.isfinite(y[1]).all() and torch.isfinite(y[[0, 2]]).all()
    assert not registry.tilelang_disabled() and fake.forward_calls == 1


def test_finite_output_is_returned_unchanged(monkeypatch, gen) -> None:
    fake = fake_backends(monkeypatch, poison=False)
    layer, x = layer_and_input(gen)
    y = run(layer, x, ResolvedBackend("tilelang", automatic=True))
    assert torch.equal(y, expected(layer, x))
    assert fake.forward_calls == 1 and not registry.tilelang_disabled()


def test_fallback_goes_to_triton_on_cuda_when_available(monkeypatch) -> None:
    packages(monkeypatch, "tilelang", "triton")
    assert registry.backend_after_tilelang(CUDA) == "triton"
    packages(monkeypatch, "tilelang")
    assert registry.backend_after_tilelang(CUDA) == "torch"
    assert registry.backend_after_tilelang(torch.device("cpu")) == "torch"


def test_vmap_keeps_the_backend_token(monkeypatch, gen) -> None:
    fake = fake_backends(monkeypatch, poison=False)
    layer, _ = layer_and_input(gen)
    xs = torch.randn(2, 3, 37, generator=gen)
    static = LinearStatic(layer.in_features, layer.group_size, layer.bias_frac_bits)
    token = ResolvedBackend("tilelang", automatic=True)
    ys = torch.func.vmap(lambda x: TernaryLinearFunction.apply(
        x, None, layer.T_packed, layer.E, layer.bias, static, token))(xs)
    assert torch.equal(ys, torch.stack([expected(layer, x) for x in xs]))
    assert fake.forward_calls == 2
