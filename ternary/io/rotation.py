"""A folder of numbered snapshots: keep the last K, find the latest complete one, resume.

Files are named ``step-000000123.safetensors`` (see :func:`snapshot_name`). Each is
written atomically, so a file with that name is complete; a run killed mid-write leaves
at most a hidden ``.step-*.tmp`` file, which the next save in the folder removes.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from ternary.io.atomic import TEMP_SUFFIX
from ternary.io.errors import SnapshotError
from ternary.io.snapshot import load, save

_NAME = re.compile(r"^step-(\d{9,})\.safetensors$")


def snapshot_name(step: int) -> str:
    """File name of the snapshot taken after ``step`` updates."""
    if step < 0:
        raise ValueError(f"snapshot step must be >= 0, got {step}")
    return f"step-{step:09d}.safetensors"


def list_snapshots(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of the numbered snapshots in ``folder``, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files left by a writer that was killed; returns what was removed."""
    stale = [p for p in Path(folder).glob(f".step-*.safetensors.*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_numbered(
    folder: str | os.PathLike[str], state: Any, *, step: int, meta: dict[str, Any] | None = None, keep: int | None = 3
) -> Path:
    """Save ``state`` as ``folder/step-<step>.safetensors``; then keep it and the newest ``keep - 1`` of the
    snapshots numbered below it (``keep`` None: all).

    Older snapshots are deleted only after the new one is safely on disk. Snapshots numbered above ``step``
    (another run's, or an unreadable one a resume skipped) are never deleted, and never displace the new one.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 (or None for all), got {keep}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    path = save(root / snapshot_name(step), state, meta=meta)
    if keep is not None:
        older = [old for number, old in list_snapshots(root) if number < step]
        for old in older[:max(0, len(older) - (keep - 1))]:
            old.unlink(missing_ok=True)
    return path


def _newest_loadable(folder: str | os.PathLike[str]) -> tuple[tuple[Path, Any, dict[str, Any]] | None, list[str]]:
    """The newest snapshot that loads, and the errors of the newer ones that did not."""
    skipped = []
    for _, path in reversed(list_snapshots(folder)):
        try:
            state, meta = load(path)
        except SnapshotError as error:
            skipped.append(str(error))
            continue
        return (path, state, meta), skipped
    return None, skipped


def latest_snapshot(folder: str | os.PathLike[str]) -> tuple[Path, Any, dict[str, Any]] | None:
    """Newest snapshot in ``folder`` that loads cleanly, as ``(path, state, meta)``; None if there is none.

    Newer snapshots that fail validation are skipped with a warning naming each and why.
    """
    found, skipped = _newest_loadable(folder)
    for reason in skipped:
        warnings.warn(f"skipping unreadable snapshot: {reason}", stacklevel=2)
    return found


def resume_from(path: str | os.PathLike[str]) -> tuple[Path, Any, dict[str, Any]]:
    """Resolve ``--resume DIR|FILE``: a file is loaded as is; a folder gives its latest good snapshot.

    Raises :class:`SnapshotError` if the file is bad or the folder holds no loadable snapshot
    (the message then carries the newest snapshot's error).
    """
    target = Path(path)
    if not target.is_dir():
        state, meta = load(target)
        return target, state, meta
    found, skipped = _newest_loadable(target)
    if found is None:
        reason = f"; newest: {skipped[0]}" if skipped else ""
        raise SnapshotError(f"{target}: no loadable step-*.safetensors snapshot in this folder{reason}")
    for reason in skipped:
        warnings.warn(f"skipping unreadable snapshot: {reason}", stacklevel=2)
    return found
