"""Exact resume through the real CLI: a run SIGKILLed during a snapshot write and again between
writes, then resumed (from a folder and from a file), ends bit for bit where an uninterrupted
run with the same seed and flags ends."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ternary.io import diff, list_snapshots, load
from ternary.state import leaf_paths

STEPS = 5
TIMEOUT_S = 300

# Installed in the child before the CLI runs: the KILL_AT_WRITE-th snapshot write stops after
# half of the bytes (flushed to disk), touches KILL_MARKER and hangs until it is killed.
KILL_HOOK = '''
import os, pathlib, time
import ternary.io.atomic as atomic

_real_write, _writes = atomic._write_fully, [0]


def _write_then_hang(fd, data):
    _writes[0] += 1
    if _writes[0] == int(os.environ["KILL_AT_WRITE"]):
        _real_write(fd, data[: len(data) // 2])
        os.fsync(fd)
        pathlib.Path(os.environ["KILL_MARKER"]).touch()
        time.sleep(3600)
    _real_write(fd, data)


atomic._write_fully = _write_then_hang
'''


def train_args(data: Path, out: Path) -> list[str]:
    return [
        "train", "--data", str(data), "--dim", "16", "--layers", "1", "--experts", "2", "--top-k", "1",
        "--codebook", "8", "--ctx", "16", "--batch", "2", "--accum", "2", "--steps", str(STEPS),
        "--eval-every", "1000", "--eval-batches", "1", "--save-every", "1", "--keep", "2",
        "--threads", "1", "--seed", "11", "--no-progress", "--out", str(out),
    ]


def resume_args(source: Path) -> list[str]:
    """Resume flags: snapshot cadence and threads are per-run flags, so they are given again."""
    return ["train", "--resume", str(source), "--steps", str(STEPS), "--save-every", "1", "--keep", "2",
            "--threads", "1", "--no-progress"]


def command(args: list[str], *, hook: bool = False, fresh: bool = False) -> list[str]:
    """The real CLI in a child process. ``fresh`` runs start from a fixed global torch RNG state
    (torch seeds it randomly per process), so the RNG state carried in snapshot metadata can be
    compared across runs; resumed runs start from a random one and must restore it."""
    preamble = ("import kill_hook; " if hook else "") + ("import torch; torch.manual_seed(1234); " if fresh else "")
    return [sys.executable, "-c", f"{preamble}from apps.cli import main; main()", *args]


def run_to_end(args: list[str], env: dict[str, str], *, fresh: bool = False) -> None:
    done = subprocess.run(command(args, fresh=fresh), env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]


def kill_when(process: subprocess.Popen, ready) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (the process must still be running then)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        assert process.poll() is None, f"the run ended (rc {process.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def steps_saved(folder: Path) -> list[int]:
    return [step for step, _ in list_snapshots(folder)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Corpus, kill hook, and the uninterrupted run every interrupted run is compared with."""
    root = tmp_path_factory.mktemp("resume")
    (root / "corpus.txt").write_text((Path(__file__).read_text() * 20)[:30_000])
    (root / "kill_hook.py").write_text(KILL_HOOK)
    run_to_end(train_args(root / "corpus.txt", root / "straight"), child_env(root), fresh=True)
    return root


def child_env(root: Path) -> dict[str, str]:
    paths = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def assert_same_final_snapshots(straight: Path, resumed: Path) -> None:
    assert steps_saved(straight) == steps_saved(resumed) == [STEPS - 1, STEPS]
    for step in (STEPS - 1, STEPS):
        name = f"step-{step:09d}.safetensors"
        expected, expected_meta = load(straight / name)
        actual, actual_meta = load(resumed / name)
        differing = [
            path
            for (path, a), (_, b) in zip(leaf_paths(expected), leaf_paths(actual), strict=True)
            if a.dtype != b.dtype or not torch.equal(a, b)
        ]
        assert not differing, f"{name}: {differing} differ after resume"
        assert diff(expected, actual).unchanged
        assert actual_meta["step"] == expected_meta["step"] == step
        assert torch.equal(actual_meta["torch_rng_state"], expected_meta["torch_rng_state"])


@pytest.mark.slow
def test_sigkill_during_and_between_snapshot_writes_then_resume_is_exact(tmp_path, workspace):
    env, corpus = child_env(workspace), workspace / "corpus.txt"
    straight, broken = workspace / "straight", tmp_path / "broken"

    # 1. killed while writing the snapshot of step 2: half a temp file, step 1 intact
    marker = tmp_path / "writing"
    first = subprocess.Popen(
        command(train_args(corpus, broken), hook=True, fresh=True),
        env=dict(env, KILL_AT_WRITE="2", KILL_MARKER=str(marker)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    kill_when(first, marker.exists)
    assert steps_saved(broken) == [1]
    assert list(broken.glob(".step-000000002.safetensors.*.tmp")), "the kill should leave a half-written temp file"
    assert load(broken / "step-000000001.safetensors")[1]["step"] == 1

    # 2. resumed from the folder, killed between writes right after step 3 is on disk
    second = subprocess.Popen(command(resume_args(broken)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(second, lambda: 3 in steps_saved(broken))
    assert not list(broken.glob(".*.tmp")), "the resumed run's first save removes the stale temp file"
    assert max(steps_saved(broken)) in (3, 4)

    # 3. resumed from a file (the step-3 snapshot, or step 4 if the kill came late) to the end
    resume_file = broken / f"step-{max(steps_saved(broken)):09d}.safetensors"
    run_to_end(resume_args(resume_file), env)

    assert_same_final_snapshots(straight, broken)
    last_step = diff(broken / f"step-{STEPS - 1:09d}.safetensors", broken / f"step-{STEPS:09d}.safetensors")
    assert not last_step.unchanged and last_step.total.t_accum[0] != last_step.total.t_accum[1], "training moved nothing"


def wait_for_random_moment(process: subprocess.Popen, folder: Path, chooser: random.Random) -> None:
    """Return while a snapshot temp file exists (half of the time, when one is caught), or a random
    delay after the next snapshot lands; or when the process has ended."""
    catch_write, delay = chooser.random() < 0.5, chooser.uniform(0.0, 0.5)
    newest = max(steps_saved(folder), default=0)
    while process.poll() is None:
        if catch_write and any(folder.glob(".step-*.tmp")):
            return
        landed = max(steps_saved(folder), default=0) - newest
        if landed >= (2 if catch_write else 1):
            time.sleep(0.0 if catch_write else delay)
            return
        time.sleep(0.002)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path, workspace):
    """Kill at random moments until a run finishes on its own; each restart resumes from the folder
    (or starts afresh if nothing was saved yet)."""
    env, folder, chooser = child_env(workspace), tmp_path / "run", random.Random(2026)
    kills = 0
    for _ in range(3):
        saved = steps_saved(folder)
        args = resume_args(folder) if saved else train_args(workspace / "corpus.txt", folder)
        process = subprocess.Popen(
            command(args, fresh=not saved), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_random_moment(process, folder, chooser)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        kills += 1
    assert kills >= 1
    run_to_end(resume_args(folder), env)
    assert_same_final_snapshots(workspace / "straight", folder)
