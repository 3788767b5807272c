"""``ternary train`` under torchrun on CPU (gloo, 2 ranks): ranks agree, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.utils._pytree as pytree

import ternary

ARGS = ["train", "--preset", "tiny", "--dim", "40", "--layers", "1", "--ctx", "16", "--batch", "2",
        "--steps", "3", "--eval-every", "3", "--eval-batches", "1", "--max-bytes", "60000",
        "--check-every", "1", "--no-progress", "--threads", "1", "--json"]


@pytest.mark.slow
def test_torchrun_two_ranks_train_and_agree(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
               "-m", "apps.cli", *ARGS, "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    assert summaries[0]["step"] == 3
    snapshots = sorted((tmp_path / "ddp").glob("*.safetensors"))
    assert [p.name for p in snapshots] == ["step-000000003.safetensors"]
    state, meta = ternary.load(snapshots[0])
    assert ternary.audit(state).ok and meta["step"] == 3
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "apps.cli", *ARGS, "--out", str(single)], check=True, env=env,
                   capture_output=True, timeout=600)
    alone, _ = ternary.load(next(single.glob("*.safetensors")))
    leaves = zip(pytree.tree_leaves(state), pytree.tree_leaves(alone))
    assert any(not (a == b).all() for a, b in leaves)  # the second rank's votes changed the result
