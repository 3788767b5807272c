"""Atomic writes: a failing writer leaves the previous snapshot intact and no temp file; rotation."""

from __future__ import annotations

import errno
import os

import pytest
import torch

import ternary
from ternary.io import SnapshotError, SnapshotWriteError, load, save
from ternary.io import atomic
from ternary.io.rotation import latest_snapshot, list_snapshots, resume_from, save_numbered


def layer(gen: torch.Generator, k: int = 17, n: int = 5) -> ternary.LinearState:
    return ternary.LinearState.random(k, n, group_size=10, generator=gen)


def same_state(a: ternary.LinearState, b: ternary.LinearState) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("T_packed", "E", "E_accum", "T_accum", "bias"))


def half_then_disk_full(fd: int, data: memoryview) -> None:
    os.write(fd, data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def fail_with(error: BaseException):
    def failing(*args, **kwargs):
        raise error

    return failing


FAILURES = {
    "disk full mid-write": ("ternary.io.atomic._write_fully", half_then_disk_full, "No space left"),
    "fsync error": ("os.fsync", fail_with(OSError(errno.EIO, "Input/output error")), "Input/output error"),
    "rename refused": ("os.replace", fail_with(PermissionError(errno.EACCES, "Permission denied")), "Permission denied"),
    "cannot create temp": ("os.open", fail_with(PermissionError(errno.EACCES, "Permission denied")), "temporary file"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failing_writer_keeps_previous_snapshot(tmp_path, gen, monkeypatch, case):
    target = tmp_path / "snap.safetensors"
    old = layer(gen)
    save(target, old, meta={"step": 1})
    before = target.read_bytes()
    where, replacement, message = FAILURES[case]
    monkeypatch.setattr(where, replacement)
    with pytest.raises(SnapshotWriteError, match=message) as info:
        save(target, layer(gen), meta={"step": 2})
    monkeypatch.undo()
    assert str(target) in str(info.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.safetensors"]
    state, meta = load(target)
    assert meta == {"step": 1} and same_state(state, old)


def test_interrupt_during_write_removes_temp_and_propagates(tmp_path, gen, monkeypatch):
    target = tmp_path / "snap.safetensors"
    save(target, layer(gen))
    before = target.read_bytes()
    monkeypatch.setattr(atomic, "_write_fully", fail_with(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save(target, layer(gen))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snap.safetensors"]


def test_short_writes_are_completed(tmp_path, gen, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    state = layer(gen)
    target = save(tmp_path / "slow.safetensors", state)
    monkeypatch.undo()
    assert same_state(load(target)[0], state)


def test_rotation_keeps_the_last_k_and_removes_stale_temps(tmp_path, gen):
    folder = tmp_path / "run"
    states = {}
    for step in (5, 10, 15, 20):
        states[step] = layer(gen)
        save_numbered(folder, states[step], step=step, meta={"step": step}, keep=2)
    assert [s for s, _ in list_snapshots(folder)] == [15, 20]
    stale = folder / ".step-000000025.safetensors.abcdef.tmp"
    stale.write_bytes(b"half a snapshot")
    save_numbered(folder, states[20], step=25, keep=2)
    assert not stale.exists()
    assert [s for s, _ in list_snapshots(folder)] == [20, 25]


def test_latest_skips_a_damaged_newest_snapshot(tmp_path, gen):
    folder = tmp_path / "run"
    good = layer(gen)
    save_numbered(folder, good, step=1, meta={"step": 1}, keep=None)
    newest = save_numbered(folder, layer(gen), step=2, meta={"step": 2}, keep=None)
    newest.write_bytes(newest.read_bytes()[:-3])
    with pytest.warns(UserWarning, match="step-000000002.safetensors.*truncated"):
        path, state, meta = latest_snapshot(folder)
    assert path.name == "step-000000001.safetensors" and meta == {"step": 1} and same_state(state, good)


def test_resume_from_folder_falls_back_past_a_damaged_snapshot(tmp_path, gen):
    folder = tmp_path / "run"
    save_numbered(folder, layer(gen), step=1, meta={"step": 1})
    save_numbered(folder, layer(gen), step=2, meta={"step": 2}).write_bytes(b"")
    with pytest.warns(UserWarning, match="step-000000002.safetensors: truncated"):
        assert resume_from(folder)[2] == {"step": 1}


def test_resume_from_file_or_folder(tmp_path, gen):
    folder = tmp_path / "run"
    first = save_numbered(folder, layer(gen), step=3, meta={"step": 3})
    save_numbered(folder, layer(gen), step=30, meta={"step": 30})
    assert resume_from(folder)[2] == {"step": 30}
    assert resume_from(first)[2] == {"step": 3}
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotError, match="no loadable"):
        resume_from(tmp_path / "empty")
    with pytest.raises(SnapshotError, match="no such snapshot file"):
        resume_from(tmp_path / "missing.safetensors")
    (tmp_path / "empty" / "step-000000004.safetensors").write_bytes(b"\x80\x04junk")
    with pytest.raises(SnapshotError, match=r"no loadable.*; newest: .*step-000000004.safetensors: is a Python pickle"):
        resume_from(tmp_path / "empty")


def test_keep_must_be_positive(tmp_path, gen):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        save_numbered(tmp_path, layer(gen), step=0, keep=0)


def test_rotation_never_deletes_the_new_snapshot_or_any_numbered_above_it(tmp_path, gen):
    """A folder holding another run's later snapshots (or an unreadable one a resume skipped): saving at a lower
    step keeps the new file and every snapshot numbered above it; only older ones beyond ``keep`` go."""
    folder = tmp_path / "run"
    later = {step: save_numbered(folder, layer(gen), step=step, keep=None).read_bytes() for step in (100, 200, 300)}
    (folder / "step-000000099.safetensors").write_text("not a snapshot")
    new = save_numbered(folder, layer(gen), step=2, keep=1)
    assert new.exists()
    for step in (3, 4, 5):
        save_numbered(folder, layer(gen), step=step, keep=2)
    assert [s for s, _ in list_snapshots(folder)] == [4, 5, 99, 100, 200, 300]
    assert all((folder / f"step-{step:09d}.safetensors").read_bytes() == data for step, data in later.items())
