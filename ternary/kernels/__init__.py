"""Kernels: one op per folder, each with a torch reference and fast implementations."""

from ternary.kernels.registry import BACKENDS, CHOICES, BackendError, resolve

__all__ = ["BACKENDS", "CHOICES", "BackendError", "resolve"]
