"""Atomic file replacement: temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ternary.io.errors import SnapshotWriteError

TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path``: ``.<name>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def _write_fully(fd: int, data: memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    offset = 0
    while offset < len(data):
        offset += os.write(fd, data[offset:])


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(error: OSError, message: str) -> SnapshotWriteError:
    cause = error.strerror or str(error) or type(error).__name__
    if error.errno is None:
        return SnapshotWriteError(f"{message} ({cause})")
    return SnapshotWriteError(error.errno, f"{message} ({cause})")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> Path:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix.

    On any failure (disk full, permissions, ...) the temporary file is removed, the old
    file is untouched, and :class:`SnapshotWriteError` names ``path`` and the cause.
    """
    target = Path(path)
    tmp = temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise _write_error(error, f"{target}: cannot create a temporary file beside it") from error
    try:
        try:
            _write_fully(fd, memoryview(data).cast("B"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(error, f"{target}: write failed; the previous file is untouched") from error
        raise
    _fsync_folder(target.parent)
    return target
