"""Shared test setup. Triton kernels run under the interpreter when there is no GPU;
the variable must be set before any Triton kernel is defined, hence here."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator: every test draws fresh but reproducible inputs."""
    return torch.Generator().manual_seed(1234)


def random_trits(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Trits ``[N, K]`` int8, uniform in {-1, 0, +1}."""
    return torch.randint(-1, 2, (n, k), generator=generator, dtype=torch.int8)


@pytest.fixture
def one_thread():
    """One torch thread: tiny models gain nothing from threads, and on a loaded 2-core machine OpenMP waits dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
