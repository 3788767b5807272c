"""Shared by the Triton test modules: run compiled on a GPU, under the interpreter on CPU.

``import triton_guard`` first in a module: it sets ``TRITON_INTERPRET=1`` when there is no
GPU (before any kernel is defined) and skips the whole module when Triton is missing or
cannot run. ``DEVICE`` is where the tensors of those tests live.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
