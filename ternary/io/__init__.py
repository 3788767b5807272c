"""Snapshots of integer state (safetensors, atomic writes) and what changed between two."""

from ternary.io.diff import StateDiff, StructureMismatchError, diff
from ternary.io.errors import SnapshotError, SnapshotWriteError
from ternary.io.rotation import latest_snapshot, list_snapshots, resume_from, save_numbered, snapshot_name
from ternary.io.snapshot import E_RANGE, FORMAT_VERSION, load, save

__all__ = [
    "E_RANGE",
    "FORMAT_VERSION",
    "SnapshotError",
    "SnapshotWriteError",
    "StateDiff",
    "StructureMismatchError",
    "diff",
    "latest_snapshot",
    "list_snapshots",
    "load",
    "resume_from",
    "save",
    "save_numbered",
    "snapshot_name",
]
