"""``ternary train``: train the byte-level model on text."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import click

from apps.commands.model_options import SHAPE_FLAGS, build_config, model_shape_options, prepare_runtime, runtime_options

_EXISTING = click.Path(exists=True, path_type=str)


@click.command("train")
@click.option("--data", type=_EXISTING, default=None,
              help="Text file or folder of text files (default: the Python standard library's sources).")
@model_shape_options
@runtime_options
@click.option("--ctx", type=click.IntRange(min=1), default=None, help="Context length (default: the preset's).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--accum", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batches whose hooks make ONE update.")
@click.option("--steps", type=click.IntRange(min=0), default=200, show_default=True, help="Total updates.")
@click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--eval-batches", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--save-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Snapshot every N steps (0: only at the end); needs --out.")
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, help="Snapshots kept in --out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default=None, help="Snapshot folder.")
@click.option("--resume", type=_EXISTING, default=None,
              help="Snapshot file or folder to continue from (model, data, seed and batch come from it; "
                   "--data may point at the same data moved elsewhere).")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None, help="Cut the corpus at this many bytes.")
@click.option("--check-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Under torchrun: check every N steps that all ranks hold identical state.")
@click.option("--theta-t", type=click.IntRange(1, 127), default=None,
              help="Votes a trit banks before it steps (default: the preset's rule).")
@click.option("--theta-e", type=click.IntRange(1, 127), default=None,
              help="Net group votes before an exponent steps (default: the preset's rule).")
@click.option("--bias-step", type=click.IntRange(0, 2**30), default=None,
              help="Bias change per update in fixed-point units (default: the preset's rule).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object summarising the run.")
def train(**values) -> None:
    """Train on text with held-out bits per byte, snapshots and exact resume."""
    from ternary.distributed import StateDivergedError
    from ternary.io import SnapshotError
    from ternary.training import DataError, TrainingStopped, TrainOptions
    from ternary.training import train as run_training
    from ternary.training.parallel import start, stop

    from ternary.model import preset_rule

    config = build_config(values)
    rule_flags = {key: values[key] for key in ("theta_t", "theta_e", "bias_step")}
    if values["resume"] is not None and any(v is not None for v in rule_flags.values()):
        raise click.UsageError("--theta-t/--theta-e/--bias-step cannot change a resumed run (its rule comes from the snapshot)")
    if values["resume"] is not None:
        _warn_ignored_on_resume()
    rule = preset_rule(values["preset"], **rule_flags)
    prepare_runtime(values, grad_enabled=True)
    out = values["out"]
    if out is None and values["resume"] is not None:
        resume = Path(values["resume"])
        out = str(resume if resume.is_dir() else resume.parent)
    if values["save_every"] and out is None:
        raise click.UsageError("--save-every needs --out DIR")
    parallel, device = start(values["device"])
    try:
        options = TrainOptions(
            config=config, data=values["data"], ctx=values["ctx"], batch=values["batch"], accum=values["accum"],
            steps=values["steps"], eval_every=values["eval_every"], eval_batches=values["eval_batches"],
            save_every=values["save_every"], keep=values["keep"], out=out, device=device,
            backend=values["backend"], seed=values["seed"], resume=values["resume"], dtype=values["dtype"],
            max_bytes=values["max_bytes"], progress=not values["no_progress"], check_every=values["check_every"],
            rule=rule,
        )
        summary = run_training(options, parallel)
    except (DataError, SnapshotError, TrainingStopped, StateDivergedError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:  # a snapshot that could not be written (the disk filled up, the folder went away)
        raise click.ClickException(f"snapshot not written: {error}") from None
    finally:
        stop(parallel)
    if parallel is not None and not parallel.is_main:
        return
    if values["as_json"]:
        click.echo(json.dumps(summary_dict(summary, options)))
        return
    last = f"{summary.last_loss:.4f} nats/byte" if summary.last_loss is not None else "n/a (no steps run)"
    click.echo(f"corpus: {summary.corpus}")
    steady = f", {summary.steady_tokens_per_second:.0f} after the first step" if summary.steady_tokens_per_second else ""
    click.echo(f"steps {summary.start_step}..{summary.step}: last training loss {last}, "
               f"{summary.tokens_per_second:.0f} tokens/s{steady}")
    if summary.validation:
        (first_step, first), (last_step, last_bpb) = summary.validation[0], summary.validation[-1]
        click.echo(f"validation: {first:.4f} bits/byte at step {first_step} -> {last_bpb:.4f} at step {last_step}")
    if summary.snapshots:
        click.echo(f"snapshot: {summary.snapshots[-1]}")


def _warn_ignored_on_resume() -> None:
    """Say on stderr which flags given on the command line a resume overrides with the snapshot's values (the
    model's shape, and the run-defining flags but --data, which a resume keeps)."""
    from ternary.training.loop import RUN_DEFINING

    context = click.get_current_context()
    from_snapshot = SHAPE_FLAGS + tuple(name for name in RUN_DEFINING if name != "data")
    given = [f"--{name.replace('_', '-')}" for name in from_snapshot
             if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        click.echo(f"warning: {', '.join(given)} ignored: a resumed run takes the model, context, batch, seed, dtype "
                   "and corpus cut from its snapshot", err=True)


def summary_dict(summary, options) -> dict:
    """The run's outcome as plain values (no state)."""
    import torch

    device = torch.device(options.device)
    return {
        "corpus": summary.corpus,
        "start_step": summary.start_step,
        "step": summary.step,
        "last_loss_nats": summary.last_loss,
        "validation_bits_per_byte": [list(v) for v in summary.validation],
        "tokens_per_second": summary.tokens_per_second,
        "steady_tokens_per_second": summary.steady_tokens_per_second,
        "snapshots": list(summary.snapshots),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "options": {k: v for k, v in options.flags().items() if k != "rule"},
        "rule": attrs.asdict(summary.rule),
    }
