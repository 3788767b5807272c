"""Snapshots of integer state and what changed between two.

- :func:`save` / :func:`load`: one safetensors file per state tree (never pickle), written
  atomically and validated in full on load (see :mod:`ternary.io.snapshot` for the format).
- :func:`save_numbered`, :func:`latest_snapshot`, :func:`resume_from`: a folder of
  ``step-<n>.safetensors`` files keeping the newest K, as ``train --save-every/--resume`` use.
- :func:`diff`: per-layer trit transitions, exponent steps, accumulator histograms and bias
  changes between two trees or snapshot files (``ternary diff A B``).
"""

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
