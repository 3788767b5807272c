"""The real click app: ``ternary smoke``, ``train`` and ``generate`` on the tiny preset (CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from apps.cli import main

SMALL = ["--dim", "24", "--layers", "1", "--experts", "3", "--codebook", "8", "--threads", "1"]
TEXT = "to be or not to be, that is the question. " * 60


@pytest.fixture(autouse=True)
def restore_threads():
    """``--threads`` sets torch's thread count for the process; put it back after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def smoke_json(*flags: str) -> dict:
    result = invoke("smoke", "--json", "--ctx", "8", "--batch", "2", *SMALL, *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_smoke_json_has_every_field_and_a_zero_audit():
    report = smoke_json("--backward")
    assert set(report) >= {"loss", "forward_s", "backward_update_s", "peak_memory_bytes", "peak_memory_kind", "audit", "run"}
    for timing in (report["forward_s"], report["backward_update_s"]):
        assert set(timing) == {"cold", "cached"} and all(v > 0 for v in timing.values())
    audit = report["audit"]
    assert audit["trainable_float_parameters"] == 0 and audit["float_buffers"] == 0
    assert audit["hooks_left_after_update"] == 0 and audit["ok"] is True
    assert math.isfinite(report["loss"]) and report["peak_memory_bytes"] > 0
    assert report["run"]["backend"] == "torch" and report["run"]["ctx"] == 8


def test_smoke_text_output_names_each_figure():
    result = invoke("smoke", "--ctx", "4", "--batch", "1", *SMALL)
    assert result.exit_code == 0
    for word in ("loss:", "forward: cold", "peak memory:", "trainable float parameters 0", "float buffers 0"):
        assert word in result.output


@pytest.mark.parametrize(
    "flags",
    [["--no-moe"], ["--no-vq"], ["--no-graph"], ["--max-moe-iters", "1"], ["--max-moe-iters", "2"],
     ["--max-moe-iters", "3"], ["--no-moe", "--no-vq"]],
    ids=lambda f: " ".join(f),
)
def test_each_flag_combination_runs_forward_and_backward(flags):
    report = smoke_json("--backward", *flags)
    config = report["run"]["config"]
    assert math.isfinite(report["loss"]) and report["audit"]["ok"]
    assert config["moe"] == ("--no-moe" not in flags)
    assert config["vq"] == ("--no-vq" not in flags)
    assert config["graph"] == ("--no-vq" not in flags and "--no-graph" not in flags)
    if "--max-moe-iters" in flags:
        assert config["max_moe_iters"] == int(flags[1])


def test_train_lowers_validation_loss_and_generate_samples_from_its_snapshot(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    result = invoke("train", "--data", str(data), "--ctx", "24", "--batch", "8", "--steps", "30", "--eval-every", "15",
                    "--save-every", "15", "--out", str(out), "--no-progress", *SMALL)
    assert result.exit_code == 0, result.output
    values = [float(line.split()[3]) for line in result.output.splitlines() if line.startswith("step ")]
    assert len(values) == 3 and values[-1] < values[0] - 0.5, result.output
    snapshots = sorted(p.name for p in out.iterdir())
    assert snapshots == ["step-000000015.safetensors", "step-000000030.safetensors"]
    generated = CliRunner().invoke(main, ["generate", "--snapshot", str(out / snapshots[-1]), "--prompt", "to be",
                                          "--tokens", "17", "--threads", "1"])
    assert generated.exit_code == 0, generated.output
    assert len(generated.stdout_bytes) == 17
    from_folder = CliRunner().invoke(main, ["generate", "--snapshot", str(out), "--tokens", "5", "--temperature", "0"])
    assert from_folder.exit_code == 0 and len(from_folder.stdout_bytes) == 5


@pytest.mark.parametrize(
    "args,message",
    [
        (["smoke", "--ctx", "-3"], "Invalid value for '--ctx'"),
        (["smoke", "--backend", "nope"], "Invalid value for '--backend'"),
        (["train", "--backend", "nope"], "Invalid value for '--backend'"),
        (["smoke", "--backend", "tilelang"], "'--backend'"),
        (["train", "--ctx", "0"], "Invalid value for '--ctx'"),
        (["train", "--data", "/no/such/corpus.txt"], "'/no/such/corpus.txt' does not exist"),
        (["train", "--save-every", "5"], "--save-every needs --out"),
        (["train", "--theta-t", "0"], "Invalid value for '--theta-t'"),
        (["train", "--bias-step", str(2**31)], "Invalid value for '--bias-step'"),
        (["train", "--resume", ".", "--theta-e", "8"], "cannot change a resumed run"),
        (["smoke", "--dim", "30"], "dim=30"),
        (["generate", "--snapshot", "/no/such.safetensors"], "does not exist"),
        (["generate"], "Missing option '--snapshot'"),
    ],
)
def test_bad_flags_end_with_one_clear_error_line(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_generate_rejects_a_file_that_is_not_a_snapshot(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a snapshot")
    result = CliRunner().invoke(main, ["generate", "--snapshot", str(bogus)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: --snapshot")


def test_train_takes_the_preset_rule_and_rule_flags(tmp_path):
    from ternary.model import PRESET_RULES

    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    common = ["train", "--data", str(data), "--ctx", "8", "--batch", "2", "--steps", "1", "--eval-every", "5",
              "--eval-batches", "1", "--no-progress", "--json", *SMALL]
    def summary(*flags: str) -> dict:
        return json.loads(next(line for line in invoke(*common, *flags).output.splitlines() if line.startswith("{")))

    default = summary()
    assert {k: default["rule"][k] for k in PRESET_RULES["tiny"]} == PRESET_RULES["tiny"]
    chosen = summary("--theta-t", "5", "--bias-step", "7")
    assert (chosen["rule"]["theta_t"], chosen["rule"]["bias_step"]) == (5, 7)
    assert chosen["rule"]["theta_e"] == default["rule"]["theta_e"]
    out = tmp_path / "run"
    invoke(*common, "--theta-t", "5", "--out", str(out))
    resumed = json.loads(next(line for line in invoke(*common[:5], "--steps", "2", "--resume", str(out), "--eval-every",
                                                      "5", "--eval-batches", "1", "--no-progress", "--json",
                                                      *SMALL).output.splitlines() if line.startswith("{")))
    assert resumed["step"] == 2 and resumed["rule"]["theta_t"] == 5


def test_preset_rules_are_the_swept_choices():
    from ternary.model import preset_rule

    assert (preset_rule("tiny").theta_t, preset_rule("small").theta_t) == (16, 32)
    assert preset_rule("small", theta_t=None, theta_e=8).theta_e == 8 and preset_rule("small", theta_e=8).theta_t == 32
    with pytest.raises(ValueError, match="unknown preset"):
        preset_rule("huge")


def tiny_train(tmp_path, *flags: str):
    data = tmp_path / "text.txt"
    if not data.exists():
        data.write_text(TEXT)
    return CliRunner().invoke(main, ["train", "--data", str(data), "--ctx", "8", "--batch", "2", "--no-progress",
                                     "--eval-every", "100", *SMALL, *flags])


def one_error_line(result, exit_code: int = 1) -> str:
    """The one ``Error:`` line of a failed command (1: a run refused or stopped, 2: a flag refused by click)."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == exit_code and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_a_new_run_refuses_an_out_folder_that_holds_snapshots_and_leaves_them_alone(tmp_path):
    assert tiny_train(tmp_path, "--steps", "2", "--out", str(tmp_path / "run")).exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    error = one_error_line(tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")))
    assert f"--out {tmp_path / 'run'}: already holds snapshots (newest step-000000002.safetensors)" in error
    assert "--resume" in error
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_an_out_folder_that_cannot_be_made_is_refused_before_training(tmp_path):
    (tmp_path / "afile").write_text("a file")
    result = tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "afile" / "sub"))
    assert f"--out {tmp_path / 'afile' / 'sub'}: cannot write snapshots there" in one_error_line(result)
    assert "validation" not in result.output  # refused before the first evaluation


def test_a_resume_keeps_its_new_snapshot_past_a_damaged_later_one(tmp_path):
    """``--keep 1`` after resuming from a folder whose newest file is damaged: the new snapshot stays, and so does
    the damaged one (numbered above it); the good one it resumed from is the one rotated out."""
    run = tmp_path / "run"
    assert tiny_train(tmp_path, "--steps", "2", "--out", str(run)).exit_code == 0
    (run / "step-000000009.safetensors").write_bytes((run / "step-000000002.safetensors").read_bytes()[:-5])
    with pytest.warns(UserWarning, match=r"skipping unreadable snapshot: .*step-000000009.safetensors.*truncated"):
        result = tiny_train(tmp_path, "--steps", "3", "--resume", str(run), "--keep", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in run.iterdir()) == ["step-000000003.safetensors", "step-000000009.safetensors"]


def test_a_snapshot_that_cannot_be_written_ends_with_one_error_line(tmp_path, monkeypatch):
    from ternary.io import rotation
    from ternary.io.errors import SnapshotWriteError

    def full_disk(path, *args, **kwargs):
        raise SnapshotWriteError(f"{path}: write failed; the previous file is untouched (No space left on device)")

    monkeypatch.setattr(rotation, "save", full_disk)
    error = one_error_line(tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")))
    assert "snapshot not written" in error and "step-000000001.safetensors: write failed" in error


def test_data_that_cannot_be_read_is_named(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT)
    (folder / "b.txt").symlink_to(tmp_path / "gone.txt")
    error = one_error_line(tiny_train(tmp_path, "--steps", "1", "--data", str(folder)))
    assert f"cannot read {folder / 'b.txt'}" in error
    assert "neither a regular file nor a folder" in one_error_line(tiny_train(tmp_path, "--data", "/dev/null"))
    small = tmp_path / "small.txt"
    small.write_text("tiny")
    assert f"corpus {small} of 4 bytes is too small for a context of 8 bytes (--ctx)" in one_error_line(
        tiny_train(tmp_path, "--data", str(small)))


def test_generate_refuses_a_temperature_that_is_not_finite_and_passes_raw_prompt_bytes(tmp_path):
    assert tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")).exit_code == 0
    snapshot = str(tmp_path / "run")
    for value in ("nan", "inf"):
        result = CliRunner().invoke(main, ["generate", "--snapshot", snapshot, "--temperature", value])
        assert "Invalid value for '--temperature': must be a finite number" in one_error_line(result, exit_code=2)
    raw = CliRunner().invoke(main, ["generate", "--snapshot", snapshot, "--prompt", "\udcff\udcfe to be", "--tokens",
                                    "3", "--temperature", "0", "--threads", "1"])
    assert raw.exit_code == 0 and len(raw.stdout_bytes) == 3, raw.output


def test_a_resume_finds_moved_data_through_data_and_says_when_it_is_gone(tmp_path):
    assert tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")).exit_code == 0
    moved = tmp_path / "moved.txt"
    (tmp_path / "text.txt").rename(moved)
    error = one_error_line(CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--steps", "2",
                                                     "--no-progress"]))
    assert f"the data it was trained on, {tmp_path / 'text.txt'}, is gone; pass --data" in error
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--steps", "2", "--no-progress",
                                       "--data", str(moved)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir())[-1] == "step-000000002.safetensors"


def test_snapshots_without_training_metadata_are_named(tmp_path):
    from ternary import load, save
    from ternary.training.loop import META_KIND

    assert tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")).exit_code == 0
    state, _ = load(tmp_path / "run" / "step-000000001.safetensors")
    save(tmp_path / "kind_only.safetensors", state, meta={"kind": META_KIND})
    error = one_error_line(CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "kind_only.safetensors")]))
    assert "kind_only.safetensors: its training metadata has no 'options'" in error
    result = CliRunner().invoke(main, ["generate", "--snapshot", str(tmp_path / "kind_only.safetensors")])
    error = one_error_line(result)
    assert "kind_only.safetensors: its metadata has no 'config'" in error


@pytest.mark.parametrize("flag", ["--workers", "--batch", "--ctx"])
def test_prewarm_refuses_counts_below_one(flag):
    result = CliRunner().invoke(main, ["prewarm", "--preset", "tiny", flag, "0"])
    assert f"Invalid value for '{flag}'" in one_error_line(result, exit_code=2)


def test_a_resume_says_which_given_flags_the_snapshot_overrides(tmp_path):
    assert tiny_train(tmp_path, "--steps", "1", "--out", str(tmp_path / "run")).exit_code == 0
    result = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--steps", "2", "--no-progress",
                                       "--batch", "7", "--dim", "32", "--eval-every", "100"])
    assert result.exit_code == 0, result.output
    assert "warning: --dim, --batch ignored: a resumed run takes the model" in result.output
    quiet = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "run"), "--steps", "3", "--no-progress"])
    assert quiet.exit_code == 0 and "warning:" not in quiet.output
