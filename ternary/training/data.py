"""Text corpora as bytes, the held-out split, and deterministic batches.

With no path the corpus is the Python standard library's own ``.py`` sources
(present wherever Python runs, so nothing is downloaded): the files under
``sysconfig.get_paths()["stdlib"]`` in sorted path order, skipping
``site-packages``, test suites and hidden folders, joined by newlines and cut at
:data:`DEFAULT_CORPUS_BYTES`. A given Python version therefore always yields the
same corpus. The last :data:`HELD_OUT_FRACTION` of the bytes is the held-out split.

Training windows depend only on ``(seed, step, micro)``: no generator state is
carried from step to step, so a run resumed at step ``s`` sees the same batches as
one that never stopped.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import attrs
import numpy as np
import torch

DEFAULT_CORPUS_BYTES = 4 * 2**20
HELD_OUT_FRACTION = 0.05
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class DataError(ValueError):
    """A corpus path is missing, empty or too small for the requested context."""


@attrs.frozen(eq=False)
class Corpus:
    """``data``: all bytes (uint8 ``[L]``); ``source``: where they came from; ``files``: how many files were read."""

    data: torch.Tensor
    source: str
    files: int


def _visible_files(root: Path, suffix: str | None) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        found += [
            Path(folder) / n for n in names if not n.startswith(".") and (suffix is None or n.endswith(suffix))
        ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_joined(files: list[Path], limit: int | None) -> tuple[bytes, int]:
    """Files joined by newlines, cut at ``limit``; and how many files were read."""
    parts, total = [], 0
    for path in files:
        if limit is not None and total >= limit:
            break
        try:
            parts.append(path.read_bytes())
        except OSError as error:
            raise DataError(f"--data: cannot read {path} ({error.strerror or error})") from None
        total += len(parts[-1]) + 1
    joined = b"\n".join(parts)
    return (joined if limit is None else joined[:limit]), len(parts)


def default_corpus_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(path: str | os.PathLike[str] | None = None, *, max_bytes: int | None = None) -> Corpus:
    """Bytes of a text file, of every visible file under a folder (sorted), or of the default corpus.

    ``max_bytes`` cuts the corpus (the default corpus is always cut at
    :data:`DEFAULT_CORPUS_BYTES`). Raises :class:`DataError` naming the path.
    """
    if path is None:
        root = default_corpus_root()
        files = _visible_files(root, ".py")
        limit = min(DEFAULT_CORPUS_BYTES, max_bytes or DEFAULT_CORPUS_BYTES)
        source = f"python stdlib sources ({root}, first {limit} bytes)"
    else:
        root = Path(path)
        if not root.exists():
            raise DataError(f"--data {path}: no such file or folder")
        if not (root.is_file() or root.is_dir()):
            raise DataError(f"--data {path}: neither a regular file nor a folder")
        files = [root] if root.is_file() else _visible_files(root, None)
        limit, source = max_bytes, str(root)
    if not files:
        raise DataError(f"--data {path}: the folder holds no files")
    raw, read = _read_joined(files, limit)
    if not raw:
        raise DataError(f"--data {path}: the corpus is empty")
    return Corpus(data=torch.frombuffer(bytearray(raw), dtype=torch.uint8), source=source, files=read)


def split_corpus(data: torch.Tensor, context: int, source: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, held_out)``: the held-out part is the last 5% of the bytes (at least one window);
    ``source`` names the corpus in the error raised when it is too small."""
    window = context + 1
    held = max(window, int(data.numel() * HELD_OUT_FRACTION))
    if data.numel() - held < window:
        named = f" {source}" if source else ""
        raise DataError(
            f"corpus{named} of {data.numel()} bytes is too small for a context of {context} bytes (--ctx): "
            f"need at least {2 * window} bytes (a training and a held-out window)"
        )
    return data[:-held], data[-held:]


def window_seed(seed: int, step: int, micro: int) -> int:
    """A 63-bit seed derived from ``(seed, step, micro)`` by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, step, micro]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def training_windows(data: torch.Tensor, batch: int, context: int, *, seed: int, step: int, micro: int = 0):
    """Random windows ``[batch, context + 1]`` (long) of ``data``, a pure function of ``(seed, step, micro)``."""
    generator = torch.Generator().manual_seed(window_seed(seed, step, micro))
    starts = torch.randint(0, data.numel() - context, (batch,), generator=generator)
    return torch.stack([data[s : s + context + 1] for s in starts.tolist()]).long()


def evaluation_windows(data: torch.Tensor, batch: int, context: int, batches: int) -> list[torch.Tensor]:
    """Up to ``batches`` fixed batches ``[<=batch, context + 1]`` of evenly spaced windows over ``data``."""
    count = min(batch * batches, (data.numel() - 1) // context)
    starts = torch.linspace(0, data.numel() - context - 1, count).long().tolist()
    windows = torch.stack([data[s : s + context + 1] for s in starts]).long()
    return list(windows.split(batch))
