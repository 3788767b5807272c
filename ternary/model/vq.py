"""VQ bottleneck: a ternary codebook, nearest code per token, integer usage counts.

The codebook is a layer record with ``out_features = codes`` and ``in_features = dim``:
row ``c`` is code ``c``. Code vectors are read with :func:`ternary.embedding`, so the
codebook learns through the ordinary vote update (only codes that were picked get
votes), from the language-model loss and from the codebook term ``|q - sg(z)|^2``
that pulls each picked code toward the tokens that chose it.
"""

from __future__ import annotations

import attrs
import torch

from ternary.functional import embedding
from ternary.kernels.linear.reference import dequantize
from ternary.state.linear_state import LinearState
from ternary.state.pytree import pytree_record

INT32_MAX = 2**31 - 1


@pytree_record(child_fields=("codebook", "usage"))
@attrs.frozen(eq=False)
class VqState:
    """``codebook``: layer ``[codes, dim]``; ``usage``: int32 ``[codes]``, how often each code was picked."""

    codebook: LinearState
    usage: torch.Tensor

    @classmethod
    def random(cls, dim: int, codes: int, *, group_size: int, generator: torch.Generator, device=None) -> "VqState":
        """Random trits with scale 1 (``E = 0``): code rows have RMS ~0.8, like normalised tokens."""
        book = LinearState.random(dim, codes, bias=False, group_size=group_size, generator=generator, device=device)
        book = attrs.evolve(book, E=torch.zeros_like(book.E))
        return cls(codebook=book, usage=torch.zeros(codes, dtype=torch.int32, device=device))


def code_vectors(state: VqState) -> torch.Tensor:
    """Dense codebook ``[codes, dim]`` float32 (no hooks; for distances and graph messages)."""
    book = state.codebook
    return dequantize(book.T_packed, book.E, in_features=book.in_features, group_size=book.group_size)


def nearest_codes(code_rows: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Index ``[M]`` of the nearest row of ``code_rows [C, D]`` (Euclidean) for each row of ``z [M, D]``.

    Ties go to the lowest index.
    """
    z32 = z.detach().float()
    distance = (code_rows * code_rows).sum(-1)[None, :] - 2.0 * z32 @ code_rows.T + (z32 * z32).sum(-1, keepdim=True)
    return distance.argmin(-1)


def quantize(state: VqState, z: torch.Tensor, code_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code ``picked [M]`` (long) for each row of ``z [M, D]`` and its vector ``q [M, D]``.

    ``code_rows`` is :func:`code_vectors` of ``state``. ``q`` is read through
    :func:`ternary.embedding`, so the picked codebook rows get hooks.
    """
    picked = nearest_codes(code_rows, z)
    return picked, embedding(state.codebook, picked, dtype=z.dtype)


def codebook_term(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mean |q - sg(z)|^2``: pulls picked codes toward their tokens (gradient reaches the codebook rows)."""
    return (q.float() - z.detach().float()).pow(2).mean()


def record_usage(state: VqState, picked: torch.Tensor) -> VqState:
    """New state with ``usage`` increased by how often each code occurs in ``picked`` (saturating int32)."""
    counts = torch.bincount(picked.reshape(-1), minlength=state.usage.shape[0])
    usage = (state.usage.to(torch.int64) + counts).clamp(max=INT32_MAX).to(torch.int32)
    return attrs.evolve(state, usage=usage)
