"""Errors raised by snapshot reading and writing."""

from __future__ import annotations


class SnapshotError(ValueError):
    """A snapshot cannot be trusted or does not fit; the message names the file and the tensor."""


class SnapshotWriteError(OSError):
    """Writing a snapshot failed; the file that was there before is untouched."""
