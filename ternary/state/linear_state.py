"""The state record of one ternary linear layer: integer tensors only.

Logical weight ``W[n, k] = T[n, k] * 2^E[n, k // G]`` with ``T`` in {-1, 0, +1}.
The bias, when present, is int32 fixed point: ``value = bias * 2^-bias_frac_bits``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from ternary.state.packing import check_packed, pack, packed_width, random_packed, unpack
from ternary.state.pytree import pytree_record

DEFAULT_GROUP_SIZE = 40
DEFAULT_BIAS_FRAC_BITS = 16
INT8_MIN, INT8_MAX = -128, 127


def groups_per_row(in_features: int, group_size: int) -> int:
    """Number of scale groups along K (the last one may be partial)."""
    return -(-in_features // group_size)


def check_field_shapes(record: Any, expected: dict[str, tuple[int, ...]]) -> None:
    """Raise ``ValueError`` naming the first tensor field of ``record`` (a layer record with
    ``out_features``, ``in_features``, ``group_size``) whose shape is not ``expected[name]``."""
    for name, shape in expected.items():
        actual = tuple(getattr(record, name).shape)
        if actual != shape:
            raise ValueError(
                f"{type(record).__name__}.{name}: expected shape {list(shape)} for out_features={record.out_features}, "
                f"in_features={record.in_features}, group_size={record.group_size}; got {list(actual)}"
            )


def _dtype(expected: torch.dtype) -> Any:
    def check(record: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None and attribute.name == "bias":
            return
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{type(record).__name__}.{attribute.name}: expected a tensor, got {type(value).__name__}")
        if value.dtype != expected:
            raise TypeError(f"{type(record).__name__}.{attribute.name}: expected dtype {expected}, got {value.dtype}")

    return check


def _positive(record: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{type(record).__name__}.{attribute.name} must be a positive int, got {value!r}")


def _group_size(record: Any, attribute: attrs.Attribute, value: int) -> None:
    _positive(record, attribute, value)
    if value % 5:
        raise ValueError(f"{type(record).__name__}.group_size must be a multiple of 5 (one scale per packed byte), got {value}")


@pytree_record(child_fields=("T_packed", "E", "E_accum", "T_accum", "bias"))
@attrs.frozen(eq=False, kw_only=True)
class LinearState:
    """Persistent state of one ternary linear layer.

    Tensors: ``T_packed`` uint8 ``[N, ceil(K/5)]``, ``E`` int8 ``[N, ceil(K/G)]``,
    ``E_accum`` int8 ``[N, ceil(K/G)]``, ``T_accum`` int8 ``[N, K]``, ``bias`` int32 ``[N]``
    or None. Static: ``in_features`` (K), ``out_features`` (N), ``group_size`` (G, a
    multiple of 5), ``bias_frac_bits`` (B).
    """

    T_packed: torch.Tensor = attrs.field(validator=_dtype(torch.uint8))
    E: torch.Tensor = attrs.field(validator=_dtype(torch.int8))
    E_accum: torch.Tensor = attrs.field(validator=_dtype(torch.int8))
    T_accum: torch.Tensor = attrs.field(validator=_dtype(torch.int8))
    bias: torch.Tensor | None = attrs.field(default=None, validator=_dtype(torch.int32))
    in_features: int = attrs.field(validator=_positive)
    out_features: int = attrs.field(validator=_positive)
    group_size: int = attrs.field(default=DEFAULT_GROUP_SIZE, validator=_group_size)
    bias_frac_bits: int = attrs.field(default=DEFAULT_BIAS_FRAC_BITS)

    def __attrs_post_init__(self) -> None:
        n, k = self.out_features, self.in_features
        groups = groups_per_row(k, self.group_size)
        expected = {
            "T_packed": (n, packed_width(k)),
            "E": (n, groups),
            "E_accum": (n, groups),
            "T_accum": (n, k),
        }
        if self.bias is not None:
            expected["bias"] = (n,)
        check_field_shapes(self, expected)
        if not 0 <= self.bias_frac_bits <= 30:
            raise ValueError(f"LinearState.bias_frac_bits must be in [0, 30], got {self.bias_frac_bits}")

    @property
    def device(self) -> torch.device:
        return self.T_packed.device

    @property
    def num_groups(self) -> int:
        return groups_per_row(self.in_features, self.group_size)

    @classmethod
    def random(
        cls,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        group_size: int = DEFAULT_GROUP_SIZE,
        bias_frac_bits: int = DEFAULT_BIAS_FRAC_BITS,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> "LinearState":
        """Uniform random trits written straight into packed form; ``2^E ~ sqrt(1.5 / K)``.

        The scale keeps the output variance near the input variance (trits are
        uniform, so ``E[T^2] = 2/3``). No ``[N, K]`` float temporary is created.
        """
        for name, value in (("in_features", in_features), ("out_features", out_features), ("group_size", group_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LinearState.random: {name} must be a positive int, got {value!r}")
        groups = groups_per_row(in_features, group_size)
        exponent = round(math.log2(math.sqrt(1.5 / in_features)))
        return cls(
            T_packed=random_packed(out_features, in_features, generator=generator, device=device),
            E=torch.full((out_features, groups), exponent, dtype=torch.int8, device=device),
            E_accum=torch.zeros((out_features, groups), dtype=torch.int8, device=device),
            T_accum=torch.zeros((out_features, in_features), dtype=torch.int8, device=device),
            bias=torch.zeros(out_features, dtype=torch.int32, device=device) if bias else None,
            in_features=in_features,
            out_features=out_features,
            group_size=group_size,
            bias_frac_bits=bias_frac_bits,
        )

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        group_size: int = DEFAULT_GROUP_SIZE,
        bias_frac_bits: int = DEFAULT_BIAS_FRAC_BITS,
    ) -> "LinearState":
        """Quantise a float ``weight [N, K]`` (and ``bias [N]``).

        Per group the scale is the power of two nearest (in log2) to the group's mean
        ``|w|``; a weight becomes ``sign(w)`` when ``|w| > scale / 2``, else 0.
        """
        if weight.dim() != 2 or not weight.dtype.is_floating_point:
            raise ValueError(f"from_float: weight must be a 2-D float tensor [N, K], got {weight.dtype} {tuple(weight.shape)}")
        n, k = weight.shape
        groups = groups_per_row(k, group_size)
        w = weight.detach().float()
        padded = torch.zeros((n, groups * group_size), dtype=torch.float32, device=w.device)
        padded[:, :k] = w.abs()
        counts = torch.full((groups,), float(group_size), device=w.device)
        counts[-1] = k - (groups - 1) * group_size
        mean_abs = padded.view(n, groups, group_size).sum(-1) / counts
        tiny = torch.finfo(torch.float32).tiny
        exponent = torch.round(torch.log2(mean_abs.clamp_min(tiny))).clamp(INT8_MIN, INT8_MAX)
        scale = torch.exp2(exponent).repeat_interleave(group_size, dim=1)[:, :k]
        trits = torch.where(w.abs() > scale / 2, torch.sign(w), torch.zeros_like(w)).to(torch.int8)
        bias_int = None
        if bias is not None:
            if bias.shape != (n,):
                raise ValueError(f"from_float: bias must have shape [{n}], got {list(bias.shape)}")
            fixed = torch.round(bias.detach().double() * 2.0**bias_frac_bits)
            bias_int = fixed.clamp(-(2**31), 2**31 - 1).to(torch.int32)
        return cls(
            T_packed=pack(trits),
            E=exponent.to(torch.int8),
            E_accum=torch.zeros((n, groups), dtype=torch.int8, device=w.device),
            T_accum=torch.zeros((n, k), dtype=torch.int8, device=w.device),
            bias=bias_int,
            in_features=k,
            out_features=n,
            group_size=group_size,
            bias_frac_bits=bias_frac_bits,
        )

    def trits(self) -> torch.Tensor:
        """Unpacked trits ``[N, K]`` int8 (validates the packed bytes)."""
        return unpack(self.T_packed, self.in_features)

    def scale(self) -> torch.Tensor:
        """Per-weight scale ``2^E`` expanded to ``[N, K]`` float32 (exact for every int8 E)."""
        return torch.exp2(self.E.float()).repeat_interleave(self.group_size, dim=1)[:, : self.in_features]

    def to_float(self) -> torch.Tensor:
        """Dense logical weight ``W = T * 2^E`` as float32 ``[N, K]`` (for inspection and tests)."""
        return self.trits().float() * self.scale()

    def bias_value(self) -> torch.Tensor | None:
        """Bias as float32 ``[N]`` (``bias * 2^-B``), or None."""
        if self.bias is None:
            return None
        return self.bias.double().mul(2.0**-self.bias_frac_bits).float()

    def validate(self, name: str = "LinearState") -> None:
        """Check the packed bytes (raises naming ``name``.T_packed and the offset)."""
        check_packed(self.T_packed, f"{name}.T_packed")
