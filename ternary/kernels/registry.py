"""Backend selection: which implementation of each op runs a call.

``TERNARY_BACKEND`` (alias ``ARB_TERNARY_BACKEND``) or a ``backend=`` keyword picks
``auto``, ``tilelang``, ``triton`` or ``torch``. On CUDA, ``auto`` takes the first
available backend of :data:`AUTO_CUDA_ORDER` (the measured winner first), where
TileLang counts only while no gradient is being taken (unless
``TERNARY_TILELANG_TRAINING=1``) and until a non-finite output disabled it; else the
torch reference. An explicit choice never falls back: if it cannot run, the call raises.

``TERNARY_TILELANG_CHECK_FINITE`` (alias ``ARB_TILELANG_CHECK_FINITE``, default 1): the
linear bridge checks every TileLang forward output. When ``auto`` chose TileLang and
the output is NaN/Inf while the next backend's is finite, TileLang is disabled for the
process (one :class:`TileLangFallbackWarning`) and the call is recomputed there; when
``tilelang`` was forced, the call raises. :func:`resolve` returns a
:class:`ResolvedBackend` so the bridge can tell the two cases apart.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "tilelang")
CHOICES = ("auto",) + BACKENDS

ENV_BACKEND = ("TERNARY_BACKEND", "ARB_TERNARY_BACKEND")
ENV_TILELANG_TRAINING = ("TERNARY_TILELANG_TRAINING", "ARB_TILELANG_TRAINING")
ENV_TILELANG_CHECK_FINITE = ("TERNARY_TILELANG_CHECK_FINITE", "ARB_TILELANG_CHECK_FINITE")

# Order in which `auto` tries the fast backends on CUDA: the faster one for inference first.
# Measured in `ternary bench kernels` runs with auto, tilelang and triton rows on the same card
# (benchmarks/results/h100/kernels_*.json, bf16, H100): Triton's forward is faster at every
# M on 4096 x 4096, 4096 x 14336 and 8192 x 8192, and at M = 1, 16, 512, 2048, 8192 on every
# shape. The TileLang kernel alone is faster only at M = 64-128 on 14336 x 4096 (97 vs 119 us)
# and 16384 x 16384 (389-417 vs 485 us); there, an `auto` call that took TileLang measured
# slower than Triton (16384^2, M = 64: 647 us), because the finite check on TileLang outputs
# costs a reduction and a host sync. So Triton comes first everywhere.
AUTO_CUDA_ORDER = ("triton", "tilelang")

_OP_MODULES = {
    "linear": "ternary.kernels.linear",
    "update": "ternary.kernels.update",
}
# The direct update has no TileLang kernel: TileLang rows run the Triton update
# (a GEMM whose integer epilogue applies the rule; one implementation to keep bit-exact
# with the reference is enough, and it is the Triton one: see ternary/kernels/linear/tilelang.py).
_IMPLEMENTATION = {
    ("update", "tilelang"): "triton",
}


class BackendError(RuntimeError):
    """A backend was asked for that is unknown, not installed or cannot run here."""


class TileLangFallbackWarning(RuntimeWarning):
    """``auto`` stopped using TileLang in this process after a non-finite output."""


class ResolvedBackend(str):
    """A concrete backend name (compares equal to the plain name) that also records
    whether ``auto`` chose it (``automatic``) or the caller forced it."""

    automatic: bool

    def __new__(cls, name: str, *, automatic: bool) -> ResolvedBackend:
        resolved = super().__new__(cls, name)
        resolved.automatic = automatic
        return resolved


def env_value(names: tuple[str, ...], default: str) -> str:
    """First set variable among ``names`` (the TERNARY_ name wins over its ARB_ alias)."""
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip() != "":
            return value.strip()
    return default


def env_flag(names: tuple[str, ...], default: bool) -> bool:
    value = env_value(names, "1" if default else "0").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BackendError(f"{names[0]}={value!r}: expected 0 or 1")


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by keyword, else by environment, validated."""
    source = "backend=" if backend is not None else f"{ENV_BACKEND[0]}="
    name = backend if backend is not None else env_value(ENV_BACKEND, "auto")
    name = name.strip().lower()
    if name not in CHOICES:
        raise BackendError(f"unknown backend {source}{name!r}; valid choices: {', '.join(CHOICES)}")
    return name


@functools.cache
def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why backend ``name`` cannot run on ``device``, or None if it can."""
    if name == "torch":
        return None
    if not installed(name):
        return f"the {name!r} package is not installed (pip install 'true-ternary[{name}]')"
    if name == "triton" and device.type != "cuda" and not triton_interpreted():
        return f"triton needs a CUDA device (got {device}) or TRITON_INTERPRET=1"
    if name == "tilelang" and device.type != "cuda":
        return f"tilelang needs a CUDA device (got {device})"
    return None


_TILELANG_DISABLED = False


def tilelang_disabled() -> bool:
    return _TILELANG_DISABLED


def disable_tilelang(reason: str) -> None:
    """Stop ``auto`` from choosing TileLang for the rest of the process (warns once)."""
    global _TILELANG_DISABLED
    if not _TILELANG_DISABLED:
        _TILELANG_DISABLED = True
        warnings.warn(f"TileLang disabled for this process: {reason}", TileLangFallbackWarning, stacklevel=3)


def check_finite_enabled() -> bool:
    return env_flag(ENV_TILELANG_CHECK_FINITE, True)


def backend_after_tilelang(device: torch.device) -> str:
    """Where ``auto`` goes when TileLang is not taken: Triton on CUDA, else torch."""
    if device.type == "cuda" and unavailable_reason("triton", device) is None:
        return "triton"
    return "torch"


def resolve(backend: str | None, device: torch.device, *, grad_enabled: bool) -> ResolvedBackend:
    """Concrete backend for one call on ``device``; raises :class:`BackendError`."""
    name = requested_backend(backend)
    if name != "auto":
        reason = unavailable_reason(name, device)
        if reason is not None:
            raise BackendError(f"backend {name!r} was requested but {reason}; valid choices: {', '.join(CHOICES)}")
        if name == "tilelang" and grad_enabled and not env_flag(ENV_TILELANG_TRAINING, False):
            raise BackendError(
                "backend 'tilelang' was requested while gradients are being taken; "
                f"set {ENV_TILELANG_TRAINING[0]}=1 to allow TileLang in training"
            )
        return ResolvedBackend(name, automatic=False)
    tilelang_ok = not grad_enabled or env_flag(ENV_TILELANG_TRAINING, False)
    tilelang_ok = tilelang_ok and not tilelang_disabled()
    if device.type == "cuda":
        for candidate in AUTO_CUDA_ORDER:
            if (candidate != "tilelang" or tilelang_ok) and unavailable_reason(candidate, device) is None:
                return ResolvedBackend(candidate, automatic=True)
    return ResolvedBackend("torch", automatic=True)


def implementation(op: str, backend: str) -> ModuleType:
    """The module implementing ``op`` for ``backend`` (imported lazily)."""
    if op not in _OP_MODULES:
        raise KeyError(f"unknown op {op!r}; known: {sorted(_OP_MODULES)}")
    source = _IMPLEMENTATION.get((op, backend), backend)
    module = "reference" if source == "torch" else source
    try:
        return importlib.import_module(f"{_OP_MODULES[op]}.{module}")
    except ImportError as error:
        raise BackendError(f"backend {backend!r} for op {op!r} failed to import: {error}") from error
