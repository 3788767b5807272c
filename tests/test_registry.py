"""Backend names, environment variables and explicit-choice errors."""

from __future__ import annotations

import pytest
import torch

from ternary import BackendError, LinearState, linear
from ternary.kernels import registry


def test_unknown_backend_lists_choices() -> None:
    with pytest.raises(BackendError, match=r"unknown backend backend='cuda'.*auto, torch, triton, tilelang"):
        registry.requested_backend("cuda")


def test_env_variable_and_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERNARY_BACKEND", raising=False)
    monkeypatch.setenv("ARB_TERNARY_BACKEND", "torch")
    assert registry.requested_backend() == "torch"
    monkeypatch.setenv("TERNARY_BACKEND", "auto")
    assert registry.requested_backend() == "auto"
    monkeypatch.setenv("TERNARY_BACKEND", "bogus")
    with pytest.raises(BackendError, match="TERNARY_BACKEND='bogus'"):
        registry.requested_backend()


def test_keyword_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERNARY_BACKEND", "bogus")
    assert registry.requested_backend("torch") == "torch"


def test_auto_on_cpu_is_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERNARY_BACKEND", raising=False)
    monkeypatch.delenv("ARB_TERNARY_BACKEND", raising=False)
    assert registry.resolve(None, torch.device("cpu"), grad_enabled=True) == "torch"
    assert registry.resolve("auto", torch.device("cpu"), grad_enabled=False) == "torch"


def test_explicit_unavailable_choice_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "installed", lambda name: False)
    with pytest.raises(BackendError, match=r"'tilelang' was requested but the 'tilelang' package is not installed"):
        registry.resolve("tilelang", torch.device("cpu"), grad_enabled=False)
    layer = LinearState.random(5, 2)
    with pytest.raises(BackendError, match="'triton' was requested"):
        linear(layer, torch.randn(1, 5), backend="triton")


def test_triton_on_cpu_needs_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "installed", lambda name: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in registry.unavailable_reason("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert registry.unavailable_reason("triton", torch.device("cpu")) is None
